#!/usr/bin/env bash
# vmm on one machine.
#   ./run_local.sh                                   set up .venv, generate a sample, extract it, print a summary
#   ./run_local.sh --input videos.jsonl --output out/ [more vmm extract flags]
#   ./run_local.sh --setup-only                      only create/update .venv
# Runs Beam's DirectRunner with one worker process per core unless you pass other runner flags.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${VMM_VENV:-.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.vmm-installed"

setup_venv() {
  if [ -x "$VENV/bin/vmm" ] && [ -f "$STAMP" ] && [ ! setup.py -nt "$STAMP" ]; then
    return
  fi
  echo "run_local.sh: setting up $VENV (first run takes a few minutes)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # torch/torchvision first and pinned: this pair is served locally and open_clip needs both.
  "$VENV/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/pip" install -q -e ".[test]"
  touch "$STAMP"
}

setup_venv
if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi

args=("$@")
has_flag() { local f; for f in "${args[@]}"; do case "$f" in "$1"|"$1"=*) return 0;; esac; done; return 1; }

if ! has_flag --input; then
  SAMPLE=".vmm/sample"
  if [ ! -f "$SAMPLE/manifest.jsonl" ]; then
    "$VENV/bin/vmm" make-sample --output "$SAMPLE"
  fi
  args+=(--input "$SAMPLE/manifest.jsonl")
  has_flag --output || args+=(--output out/sample --overwrite)
  if ! has_flag --clip-pretrained; then
    # The quickstart must work offline: use the default weights when they can be had, else say why.
    if ! why=$("$VENV/bin/vmm" check-weights 2>/dev/null); then
      echo "run_local.sh: default CLIP weights unavailable -> running the sample with --clip-pretrained none" >&2
      echo "run_local.sh: ($why)" >&2
      args+=(--clip-pretrained none)
    fi
  fi
fi

if ! has_flag --runner; then
  workers=$(nproc 2>/dev/null || echo 2)
  args+=(--runner DirectRunner --direct_num_workers "$workers" --direct_running_mode multi_processing)
fi

exec "$VENV/bin/vmm" extract "${args[@]}"
