#!/usr/bin/env bash
# One GPU call for the softmax backward with dq inside the dk/dv kernel (launch.DQ_FUSED,
# session 11): the bf16 checks of every configuration with the new default, then
# forward + backward at S1 per kernel, the two-kernel backward first (same process
# order as before), then the fused one under its candidate tiles (compiled spills, bytes,
# causal / ALiBi: (32, 64, 4 warps) 32 / 580, (32, 64, 8 warps) 40 / 52, (16, 64, 4 warps)
# 72 / 216):
#
#     OUT=<folder> bash scripts/device_softmax_fused.sh            # carry nothing
#
# Each step under its own time limit; the outputs go into $OUT/fused.tgz (written aside
# and renamed), each step's last lines to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
export PYTHONPATH="$PWD/src"
work=$(mktemp -d)
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$work/gpu.txt"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    mkdir -p "$work/$name"
    local start=$SECONDS
    OUT="$work/$name" timeout "$limit" "$@" > "$work/$name/log.txt" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s"
    grep -v -i "warning" "$work/$name/log.txt" | tail -n 8 | cut -c1-400
    tar czf "$OUT/.fused.tgz" -C "$work" . && mv "$OUT/.fused.tgz" "$OUT/fused.tgz"
}

step checks 170 python3 scripts/device_softmax_check.py --part checks
step variants 330 python3 scripts/device_softmax_variants.py 'DQ_FUSED=False;CHECK=0' '' \
    'DKDV_FUSED_TILES={128: (32, 64, 8, 2)}' 'DKDV_FUSED_TILES={128: (16, 64, 4, 2)}'
