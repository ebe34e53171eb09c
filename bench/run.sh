#!/usr/bin/env bash
# End-to-end benchmark (issue 8): the vmm pipeline vs a naive loop vs the floor of model calls.
#   bench/run.sh --quick    # under 10 minutes on 2 cores: 10 s + 1 min generated videos, 3 real files
#   bench/run.sh            # full: 10 s, 1 min and 10 min generated videos, all real media, 1/10/100 copies
#   bench/run.sh --quick --repeat 3   # the main set 3 times, the sides' order rotating: min/median/max
#   bench/run.sh --media-set          # what each side reads on every real file (OCR recall, WER)
# Inputs are generated once into bench/results/e2e/ (ignored by git). See bench/e2e.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VMM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    ./run_local.sh --setup-only
fi
exec "$VENV/bin/python" -m bench.e2e "$@"
