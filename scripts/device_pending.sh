#!/usr/bin/env bash
# One GPU call that runs what is written but not yet measured on the GPU (as of
# 2026-12-06, session 10), each step under its own time limit, most important first, so
# a call cut short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh            # carry nothing
#
# 1. The illegal memory access of the restructured mLSTM forward's split form (S1,
#    chunk 128, session 10; once at chunk 64 in session 8) under CUDA_LAUNCH_BLOCKING:
#    which kernel.
# 2. The mLSTM step's host cost at B 1 (85 µs under do_bench against the peer's 9 µs:
#    a blocking runtime call?): wall time per call and the CUDA runtime calls of one step.
# 3. KDA and GLA at S1 with session 8's tree backward restored (session 9's was slower).
# 4. The fault's variants (which change removes it), then compute-sanitizer at a smaller
#    shape, when the machine has it.
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

restructured='EXP_FORWARD=restructured;EXP_SPLIT=auto;SPLIT_STATE_WARPS=4'
step mlstm_fault_blocking 70 python3 scripts/device_mlstm_fault.py --blocking --variant "$restructured;DKV_TILE=64"
step mlstm_decode_host 40 python3 scripts/device_mlstm_check.py --sections decode_host
step gdr_tree_restored 60 env OPS=KDA,GLA SHAPES=S1 python3 scripts/device_gdr_variants.py 'CHECK=0'
step mlstm_fault_variants 150 python3 scripts/device_mlstm_fault.py --variant "$restructured;DKV_TILE=32" \
    --variant 'DKV_TILE=64' --variant "$restructured;DKV_TILE=64;SPLIT_STATE_STAGES=1;SPLIT_OUTPUT_STAGES=1" \
    --variant "$restructured;DKV_TILE=64"
step mlstm_fault_sanitizer 100 python3 scripts/device_mlstm_fault.py --sanitizer --shape 2,4096,16 --repeats 1 \
    --variant "$restructured;DKV_TILE=64"
