#!/usr/bin/env bash
# Sets up .venv (same as ./run_local.sh) and runs the whole test suite, slow tiers included.
#   tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
./run_local.sh --setup-only
exec "${VMM_VENV:-.venv}/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
