#!/usr/bin/env bash
# vmm on one machine.
#   ./run_local.sh                                   set up .venv, generate a sample, extract it, print a summary
#   ./run_local.sh --input videos.jsonl --output out/ [more vmm extract flags]
#   ./run_local.sh --setup-only                      only create/update .venv
# VMM_VENV (default .venv) and VMM_HOME (default .vmm: the sample and its dictionaries) move those folders.
# Runs Beam's DirectRunner with one worker thread per core, in one process that holds one copy of
# each model, unless you pass other runner flags (see the README).
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
  HOME_DIR="${VMM_HOME:-.vmm}"
  SAMPLE="$HOME_DIR/sample"
  if [ ! -f "$SAMPLE/manifest.jsonl" ]; then
    "$VENV/bin/vmm" make-sample --output "$SAMPLE"
  fi
  args+=(--input "$SAMPLE/manifest.jsonl")
  has_flag --output || args+=(--output out/sample --overwrite)
  model_args=()
  if ! has_flag --clip-pretrained; then
    # The quickstart must work offline: use the default weights when they can be had, else say why.
    if ! why=$("$VENV/bin/vmm" check-weights 2>/dev/null); then
      echo "run_local.sh: default CLIP weights unavailable -> running the sample with --clip-pretrained none" >&2
      echo "run_local.sh: ($why)" >&2
      model_args+=(--clip-pretrained none)
    fi
  fi
  args+=("${model_args[@]}")
  # Small visual dictionaries learnt from the sample itself, so the quickstart output has tokens.
  # (The sample has ~11 keyframes: far fewer vectors per entry than a real dictionary wants.)
  if ! has_flag --codebook; then
    "$VENV/bin/vmm" train-codebook --input "$SAMPLE/manifest.jsonl" --output "$HOME_DIR/dict_frame" \
      --k 4 --min-points-per-centroid 2 "${model_args[@]}" --no-progress
    "$VENV/bin/vmm" train-codebook --input "$SAMPLE/manifest.jsonl" --output "$HOME_DIR/dict_patch" \
      --k 64 --level patch --min-points-per-centroid 8 "${model_args[@]}" --no-progress
    args+=(--codebook "$HOME_DIR/dict_frame" --patch-codebook "$HOME_DIR/dict_patch")
  fi
fi

if ! has_flag --runner; then
  args+=(--runner DirectRunner)
  has_flag --direct_num_workers || args+=(--direct_num_workers "$(nproc 2>/dev/null || echo 2)")
  has_flag --direct_running_mode || args+=(--direct_running_mode multi_threading)
fi

exec "$VENV/bin/vmm" extract "${args[@]}"
