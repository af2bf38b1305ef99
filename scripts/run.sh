#!/usr/bin/env bash
# Parity's main job on the embedded default: no Docker, no Supabase account.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PARITY_HOME="${PARITY_HOME:-$PWD/.parity}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PARITY_HOME/dagster}"
mkdir -p "$DAGSTER_HOME"
.venv/bin/parity db migrate
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${PARITY_UI_PORT:-3000}"
