#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
bash scripts/install-postgrest.sh
.venv/bin/ruff check parity assets checks orchestration tests benchmarks scripts
.venv/bin/ruff format --check parity assets checks orchestration tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# The log reader and checksum verification once more without the native kernel.
PARITY_NO_NATIVE=1 .venv/bin/python -m pytest -q tests/io tests/checks
