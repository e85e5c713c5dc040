#!/usr/bin/env bash
# One GPU call that runs what is written but not yet measured on the GPU (as of
# 2026-12-06, session 9), each step under its own time limit, most important first, so
# a call cut short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh            # carry nothing
#
# 1. The per-channel tree backward (KDA, GLA at S1) one side of one matrix at a time,
#    its key slices side by side (session 9), as is; its key slice 16 at 4 warps (two
#    programs per multiprocessor), also with 2 stages; its leaf at 1 (every
#    off-diagonal pair through a level's product), at both key slices; the
#    preparation's leaf at 1; GLA's tree at 8 warps; the per-channel preparation at 2
#    stages (its key-slice loads prefetched; compiled without spills).
# 2. mLSTM's restructured exp forward as it would be adopted: EXP_SPLIT=auto (fused
#    where there are many sequences·heads, S1 and S3; split at S2) with the split's
#    state pass at 4 warps, and the backward's dk/dv key tile at 64 (wgmma instead of
#    mma.sync at 32 keys; compiled: 40 bytes of spills at chunk 64, 968 at 128, so the
#    sigmoid gate's chunk-128 time in this step is not a candidate); checks and timing
#    at S1 and S2 (where auto splits). Then the current defaults at S1 in the same
#    call (both with the backward's delta in one pass, row_dot.py).
#    Aaren's one-token step after 1k and 32k tokens (issue 7: constant in the tokens seen).
# 3. softmax against Flex and cuDNN at S1 with the forward's new tiles.
# 4. mLSTMsig on the scalar-gate kernels with its values padded (launch.SIGMOID_VIA_GLA).
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

step gdr_tree 150 env OPS=KDA,GLA SHAPES=S1 python3 scripts/device_gdr_variants.py '' \
    'CHECK=0;CHANNEL_BWD_TREE_BK=16;CHANNEL_BWD_TREE_WARPS={False:4,True:4}' \
    'CHECK=0;CHANNEL_BWD_TREE_LEAF=1;CHANNEL_BWD_TREE_BK=16;CHANNEL_BWD_TREE_WARPS={False:4,True:4}' \
    'CHECK=0;CHANNEL_BWD_TREE_LEAF=1' \
    'CHECK=0;CHANNEL_BWD_TREE_WARPS={False:8,True:8}' \
    'CHECK=0;CHANNEL_PREPARE_TILING={True:(4,2),False:(4,2)}' \
    'CHECK=0;CHANNEL_LEAF=1' \
    'CHECK=0;CHANNEL_BWD_TREE_BK=16;CHANNEL_BWD_TREE_WARPS={False:4,True:4};CHANNEL_BWD_TREE_STAGES=2'
step mlstm_auto_dkv64 160 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S2 \
    --set EXP_FORWARD=restructured --set EXP_SPLIT=auto --set SPLIT_STATE_WARPS=4 --set DKV_TILE=64
step mlstm_current 40 python3 scripts/device_mlstm_check.py --sections time --shapes S1
step aaren_decode 40 python3 scripts/device_mlstm_check.py --sections aaren_decode
step softmax_peers 60 python3 scripts/device_softmax_check.py --part timing --shapes S1 --no-decode
# (session 10) the backward's exponent as one multiply-add without a score mod: its bf16 checks
step softmax_checks 60 python3 scripts/device_softmax_check.py --part checks
# 6. (session 10) the mLSTM decoding step's tile (B 256 ran at 1.34x the state traffic's
#    floor, the peer at 1.19x): value tile 32 at 4 warps (default), 64 at 4 and 8, 16 at 2.
for tile in '128*64;4' '128*64;8' '128*16;2'; do
    step "mlstm_decode_${tile//[^0-9]/_}" 30 python3 scripts/device_mlstm_check.py --sections decode \
        --set "RECURRENT_ELEMENTS=${tile%;*}" --set "RECURRENT_WARPS=${tile#*;}"
done
step mlstm_sigmoid_gla 50 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
    --set SIGMOID_VIA_GLA=True
# 5. (session 10) the restructured exp gate's chunk sweep (64, 128, 256 at S1; 128 and
#    256 take the split form) and, at chunk 64, the gate-weighted scores rounded to bf16
#    (HALF_PRECISION_P: its check and time; CPU emulation once put dq, df up to 2x over
#    the bound, so only a passing GPU check would let it in).
step mlstm_sweep 100 python3 scripts/device_mlstm_check.py --sections sweep \
    --set EXP_FORWARD=restructured --set EXP_SPLIT=auto --set SPLIT_STATE_WARPS=4 --set DKV_TILE=64
