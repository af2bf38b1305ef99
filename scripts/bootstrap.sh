#!/usr/bin/env bash
# Create .venv with Python 3.11+ and install Parity into it (editable, so code changes need
# no reinstall). Idempotent and quick when nothing changed: the install is skipped while
# pyproject.toml, the extras asked for and the Python are those of the last install.
# Usage: bash scripts/bootstrap.sh [extras]   e.g. bash scripts/bootstrap.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "parity: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}
if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.parity-install
# What an install depends on: the dependency list, the native kernel's build and sources
# (an editable install compiles them once), and the interpreter. Each line of the stamp is
# "<that hash> <extras>"; the base install is part of every extras install.
wanted="$( (cat pyproject.toml setup.py parity/io/native/*.[ch] 2>/dev/null || true; .venv/bin/python -VV) |
  .venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ -x .venv/bin/parity ] && [ -f "$stamp" ]; then
  if { [ -z "$extras" ] && grep -q "^$wanted " "$stamp"; } || grep -qx "$wanted $extras" "$stamp"; then
    exit 0
  fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
echo "$wanted $extras" >> "$stamp"
