#!/usr/bin/env bash
# One GPU call that runs what is written but not yet measured on the GPU (as of
# 2026-12-07, session 12; no device call came in session 11), each step under its own time limit, most important first, so
# a call cut short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh [softmax|mlstm]   # carry nothing
#
# softmax (the default):
# 1. The softmax backward with dq inside the dk/dv kernel (launch.DQ_FUSED, off by
#    default until this measures it): forward + backward at S1 per kernel, the
#    two-kernel backward first, then the fused one at (32, 64, 4 warps) and at 8 warps
#    (fewer spills), each with its bf16 checks (causal, window, ALiBi).
# 2. The bf16 checks of all 13 configurations with the fused backward.
# 3. `attnforms bench` for issue 6 (the results file), if the call's time allows, with
#    DQ_FUSED on where step 1 found it correct and faster (scripts/fused_dq_verdict.py); the bench
#    times SDPA and compiled Flex in the same run.
#
# mlstm (left from session 10):
# 1. The mLSTM split form's fault under compute-sanitizer with the caching allocator off.
# 2. The decode step's host cost after the memo of argument checks.
# 3. The restructured forward's output products in bf16 (OUTPUT_PRODUCTS), checks and
#    time at S1 and S3, then at value tile 16; 4. the defaults, for comparison.
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

case "${1:-softmax}" in
softmax)
    step softmax_variants 130 python3 scripts/device_softmax_variants.py 'DQ_FUSED=False;CHECK=0' 'DQ_FUSED=True' \
        'DQ_FUSED=True;DKDV_FUSED_TILES={128: (32, 64, 8, 2)}'
    step softmax_checks 55 python3 scripts/device_softmax_check.py --part checks --set DQ_FUSED=True
    # the bench measures the fused backward when step 1 found it correct and faster
    BENCH_SETTINGS=$(python3 scripts/fused_dq_verdict.py "$work/softmax_variants/softmax_variants.json" 2>/dev/null || true)
    echo "== bench settings: ${BENCH_SETTINGS:-defaults}" | tee "$work/bench_settings.txt"
    export BENCH_SETTINGS
    step softmax_bench 280 bash scripts/device_bench.sh --shapes S1,S2,decode --budget-s 230 \
        --ops softmax_causal,softmax_window,softmax_alibi,softmax_decode,softmax_new_mod
    ;;
mlstm)
    step mlstm_fault_sanitizer 150 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 python3 scripts/device_mlstm_fault.py \
        --sanitizer --shape 8,4096,16 --repeats 2 --variant 'EXP_FORWARD=restructured;EXP_SPLIT=always'
    step mlstm_decode_host 30 python3 scripts/device_mlstm_check.py --sections decode_host
    step mlstm_out16 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S3 \
        --set EXP_SPLIT=never --set OUTPUT_PRODUCTS=bf16
    step mlstm_out16_bv16 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
        --set OUTPUT_PRODUCTS=bf16 --set 'FUSED_ELEMENTS=128*16'
    step mlstm_defaults 200 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S2,S3
    ;;
*) echo "usage: device_pending.sh [softmax|mlstm]" >&2; exit 2 ;;
esac
