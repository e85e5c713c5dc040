#!/usr/bin/env bash
# One 10-minute GPU call that runs what is written but not yet measured on the GPU (as of
# 2026-12-06, session 7), each step under its own time limit, most important first, so a
# call cut short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh            # carry nothing; no peers needed
#
# 1. `attnforms demo --quick --device cuda`: the check (every family x form, float32 rows
#    included, which failed in TF32 before commit f231fc8) and a short training run.
# 2. Aaren's parallel scan: bf16 checks and timing, with our softmax kernel as yardstick.
# 3. softmax tiles through tensor descriptors: A/B (descriptors off, then on with the bf16
#    checks), then ours against SDPA flash / cuDNN and compiled FlexAttention at S1.
# 4. mLSTM's restructured exp forward (launch.EXP_FORWARD): checks and timing.
# 5. KDA / GLA with the gamma-K store of session 6 (untimed) and mLSTMsig through the
#    simple-GLA kernels (launch.SIGMOID_VIA_GLA).
# 6. softmax tile variants that the descriptors' freed registers may allow.
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
    tar czf "$OUT/pending.tgz" -C "$work" .
}

step demo 110 python3 -m attnforms demo --quick --device cuda --no-progress --out "$work/demo/report"
step aaren 80 python3 scripts/device_mlstm_check.py --sections aaren --shapes S1,S2
step softmax_ab 110 python3 scripts/device_softmax_variants.py \
    'CHECK=0;DKDV_TMA=False;DQ_TMA=False;FWD_TMA=False' ''
step softmax_peers 120 python3 scripts/device_softmax_check.py --part timing --shapes S1 --no-decode
step mlstm_restructured 100 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1 \
    --set EXP_FORWARD=restructured
step gdr_kda_gla 90 env OPS=KDA,GLA SHAPES=S1 python3 scripts/device_gdr_variants.py ''
step mlstm_sigmoid_gla 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1 --set SIGMOID_VIA_GLA=True
# With the descriptors' freed registers, larger tiles may now pay (compiled: dk/dv
# (32, 128, 8 warps) 16 bytes of spills, dq at 4 stages none).
step softmax_tiles 100 python3 scripts/device_softmax_variants.py \
    'CHECK=0;DKDV_TILES={128: (32, 128, 8, 2)}' 'CHECK=0;DQ_TILES={128: (128, 64, 8, 4)}' \
    'CHECK=0;FWD_TILES={128: (128, 64, 8, 4)}'
