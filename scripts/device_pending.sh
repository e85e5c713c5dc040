#!/usr/bin/env bash
# One GPU call that runs what is written but not yet measured on the GPU (as of
# 2026-12-06, session 10), each step under its own time limit, most important first, so
# a call cut short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh            # carry nothing
#
# 1. The illegal memory access of the restructured mLSTM forward's split form: session 10
#    placed it in `_state_output_kernel` without WRITE_O (S1, chunk 128, value tile 64;
#    CUDA_LAUNCH_BLOCKING), on the second call of a process, never at value tile 16; the
#    interpreter's bounds check ran the same geometry clean. compute-sanitizer at S1 with
#    the caching allocator off (each tensor its own allocation, so an access past one is
#    caught), chunk 128, split always.
# 2. The mLSTM step's host cost after the remembered validation (core/memo.py).
# 3. The restructured forward's output products rounded to bf16 (OUTPUT_PRODUCTS, one
#    product each for C and P instead of two halves; compiled: spills 300 -> 148 bytes,
#    none at value tile 16): bf16 checks (fused everywhere, EXP_SPLIT=never) and time at
#    S1, S3; then at value tile 16.
# 4. The mLSTM defaults as they now stand (restructured forward where it runs fused,
#    current kernels elsewhere): bf16 checks, then S1, S2, S3.
#
# Only 8 files come back from a device call, so every step's output goes into one
# folder and the folder into $OUT/pending.tgz; each step's last lines also go to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
export PYTHONPATH="$PWD/src"
work=$(mktemp -d)
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$work/gpu.txt"

step() {  # step NAME SECONDS COMMAND...: run COMMAND with OUT=$work/NAME under a time limit
    local name=$1 limit=$2
    shift 2
    mkdir -p "$work/$name"
    local start=$SECONDS
    OUT="$work/$name" timeout "$limit" "$@" > "$work/$name/log.txt" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    grep -v -i "warning" "$work/$name/log.txt" | tail -n 6 | cut -c1-300
    # written aside and renamed: a call killed at its time limit mid-write keeps the last whole archive
    tar czf "$OUT/.pending.tgz" -C "$work" . && mv "$OUT/.pending.tgz" "$OUT/pending.tgz"
}

step mlstm_fault_sanitizer 150 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 python3 scripts/device_mlstm_fault.py \
    --sanitizer --shape 8,4096,16 --repeats 2 --variant 'EXP_FORWARD=restructured;EXP_SPLIT=always'
step mlstm_decode_host 30 python3 scripts/device_mlstm_check.py --sections decode_host
step mlstm_out16 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S3 \
    --set EXP_SPLIT=never --set OUTPUT_PRODUCTS=bf16
step mlstm_out16_bv16 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
    --set OUTPUT_PRODUCTS=bf16 --set 'FUSED_ELEMENTS=128*16'
step mlstm_defaults 200 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S2,S3
