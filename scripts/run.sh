#!/usr/bin/env bash
# Parity's main job on the embedded default: no Docker, no Supabase account.
# `parity demo` starts the embedded PostgreSQL under $PARITY_HOME/demo, plays a few past
# hours of dual-written traffic with injected faults and a canary rollout, reconciles them,
# and opens the Dagster UI (webserver + daemon) on 127.0.0.1; Ctrl-C stops everything.
# Extra arguments go to `parity demo` (e.g. --hours 5, --port 3001, --no-ui).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PARITY_HOME="${PARITY_HOME:-$PWD/.parity}"
exec .venv/bin/parity demo --port "${PARITY_UI_PORT:-3000}" "$@"
