#!/usr/bin/env bash
# The one command to run on the GPU machine: install the carried peer wheels (.whl/:
# fla-core, flash-linear-attention, mlstm-kernels, einops; pure Python, no network
# needed; the softmax peers are torch's own and need none), print the GPU, then check
# and time the ops the options choose (all by default, which no longer fits one
# 10-minute call: pass one family's --ops, see the README), keeping the log next to the
# results:
#
#     OUT=<results folder> bash scripts/device_bench.sh [more `attnforms bench` options]
#
# e.g. the softmax ops of issue 6 (about 5-8 minutes, bench/NOTES-softmax.md):
#
#     OUT=<dir> bash scripts/device_bench.sh --shapes S1,S2,decode \
#         --ops softmax_new_mod,softmax_causal,softmax_window,softmax_alibi,softmax_decode
#
# BENCH_SETTINGS='mlstm:OUTPUT_PRODUCTS="bf16"' runs it with those launcher constants (a
# setting measured before it becomes the default; scripts/bench_with_settings.py).
#
# Writes $OUT/<date>-<gpu>.json, $OUT/<date>-<gpu>.png and $OUT/bench.log. The run
# stops starting new measurements after --budget-s seconds (default 450), so it fits in
# one 10-minute call; its exit status is 1 when one of our kernels fails the gate.
#
# Autotuning results: Triton's cache goes to a fresh folder with its autotuning results
# kept (TRITON_CACHE_AUTOTUNING=1: fla's chunk_gla and chunk_kda autotune for 60-90 s
# at their first shape), and those results alone (small JSON files; the compiled
# kernels themselves ran to 60 MB, too much to carry) come back as
# $OUT/cache/autotune.tgz. Copy it into .device-cache/ here (git ignores it), carry
# that folder, and set USE_CARRIED_CACHE=1: the next run's fla first calls then skip
# the tuning (they still compile the chosen configuration, a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
site=$(mktemp -d)
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
else
    echo "no .whl/*.whl here: fla and mlstm_kernels peers will be recorded as unavailable"
fi
export PYTHONPATH="$site:$PWD/src"
caches=$(mktemp -d)
export TRITON_CACHE_DIR="$caches/triton" TORCHINDUCTOR_CACHE_DIR="$caches/inductor" TRITON_CACHE_AUTOTUNING=1
mkdir -p "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"
if [ "${USE_CARRIED_CACHE:-0}" = 1 ] && [ -f .device-cache/autotune.tgz ]; then
    tar -xzf .device-cache/autotune.tgz -C "$TRITON_CACHE_DIR"
    echo "autotuning results: carried from an earlier run (fla's first calls skip tuning)" | tee "$OUT/bench.log"
fi
nvidia-smi -L
status=0
if [ -n "${BENCH_SETTINGS:-}" ]; then  # launcher constants changed first (scripts/bench_with_settings.py)
    bench=(python3 scripts/bench_with_settings.py "$BENCH_SETTINGS" --)
else
    bench=(python3 -m attnforms)
fi
PYTHONUNBUFFERED=1 "${bench[@]}" bench --out "$OUT" "$@" 2>&1 | tee -a "$OUT/bench.log" || status=$?
mkdir -p "$OUT/cache"
(cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' -print0 | tar -czf "$OUT/cache/autotune.tgz" --null -T -)
exit "$status"
