#!/usr/bin/env bash
# The one command to run on the GPU machine: install the carried peer wheels (.whl/:
# fla-core, flash-linear-attention, mlstm-kernels, einops; pure Python, no network
# needed), print the GPU, then check and time everything, keeping the log next to the
# results:
#
#     OUT=<results folder> bash scripts/device_bench.sh [more `attnforms bench` options]
#
# Writes $OUT/<date>-<gpu>.json, $OUT/<date>-<gpu>.png and $OUT/bench.log. The run
# stops starting new measurements after --budget-s seconds (default 450), so it fits in
# one 10-minute call; its exit status is 1 when one of our kernels fails the gate.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
site=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD/src"
nvidia-smi -L
PYTHONUNBUFFERED=1 python3 -m attnforms bench --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
