#!/usr/bin/env bash
# GPU calls that run what is written but not yet measured on the GPU (as of 2026-12-07,
# session 13), each step under its own time limit, most important first, so a call cut
# short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh [aaren|mlstm]     # carry .whl (the peers' wheels)
#
# aaren (about 9 minutes):
# 0. Aaren's chunk kernels under launch variants (device_aaren_variants.py): the in-chunk
#    weights in 16-bit products (HALF_P), pipelining stages, warps, the value tile and the
#    chunk, each checked against float64 and timed at S1 with per-kernel times, against
#    the softmax yardstick timed first and last in the same process (the bench measured
#    1.31-1.39 ms in session 12 where device_mlstm_check.py measured 1.09).
# 1. The bench's Aaren row at S1 under the fastest variant that passed its checks
#    (BENCH_SETTINGS now reaches the bench's spawned workers; before session 13 it set
#    the constants in the parent only).
# 2. mLSTM and mLSTMsig at S1 and decode against mlstm_kernels with float32 gates (with
#    bf16 gates its TFLA aborted on Triton 3.6; scripts/compile_tfla_sm90.py). Carry .whl.
# mlstm:
# 3. mLSTMsig on the restructured fused forward (SIGMOID_FORWARD), checks and S1 time.
# 4. At S3 (32 sequences·heads) every gated-delta forward loses its S1 margin (KDA 0.76x,
#    GDN 0.99x in session 12): the split forward there, per kernel, for all four.
# 5. (left from session 10) The mLSTM split form's fault under compute-sanitizer with the
#    caching allocator off; 6. the decode step's host cost after the memo of argument
#    checks; 7. the restructured forward's output products in bf16 (OUTPUT_PRODUCTS),
#    checks and time at S1 and S3, then at value tile 16; 8. the defaults, for comparison.
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
    grep -v -i "warning" "$work/$name/log.txt" | tail -n 12 | cut -c1-300
    # written aside and renamed: a call killed at its time limit mid-write keeps the last whole archive
    tar czf "$OUT/.pending.tgz" -C "$work" . && mv "$OUT/.pending.tgz" "$OUT/pending.tgz"
}

part=${1:-aaren}
if [ "$part" = aaren ]; then
    step aaren_variants 230 python3 scripts/device_aaren_variants.py 'CHECK=0' 'HALF_P=True' \
        'HALF_P=True;DOT_COLUMN_SUMS=False' 'HALF_P=True;CHUNK_WARPS=8;CHUNK_STAGES=1'
    best=$(python3 scripts/device_aaren_variants.py --best "$work/aaren_variants/aaren_variants.json" || echo "aaren:")
    echo "best Aaren variant: $best" | tee "$work/aaren_best.txt"
    step aaren_bench 110 env BENCH_SETTINGS="$best" bash scripts/device_bench.sh --ops aaren --shapes S1 --budget-s 70
    step tfla_bench 170 bash scripts/device_bench.sh --ops mlstm,mlstm_sig --shapes S1,decode --graph-decode \
        --budget-s 130
else
    step mlstm_sigmoid_restructured 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1 \
        --set SIGMOID_FORWARD=restructured
    step gdr_s3_split 150 env OPS=KDA,GLA,GDN,'simple GLA' SHAPES=S3 python3 scripts/device_gdr_variants.py \
        'CHECK=0' 'CHECK=0;FORWARD_SPLIT=always'
    step mlstm_fault_sanitizer 150 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 python3 scripts/device_mlstm_fault.py \
        --sanitizer --shape 8,4096,16 --repeats 2 --variant 'EXP_FORWARD=restructured;EXP_SPLIT=always'
    step mlstm_decode_host 30 python3 scripts/device_mlstm_check.py --sections decode_host
    step mlstm_out16 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S3 \
        --set EXP_SPLIT=never --set OUTPUT_PRODUCTS=bf16
    step mlstm_out16_bv16 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
        --set OUTPUT_PRODUCTS=bf16 --set 'FUSED_ELEMENTS=128*16'
    step mlstm_defaults 200 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S2,S3
fi
