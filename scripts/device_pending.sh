#!/usr/bin/env bash
# One 10-minute GPU call that runs what is written but not yet measured on the GPU (as of
# 2026-12-06, session 8), each step under its own time limit, most important first, so a
# call cut short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh            # carry nothing; no peers needed
#
# 1. mLSTM's restructured exp forward (launch.EXP_FORWARD): its checks pass at the check
#    shapes, but S1 (B 8, T 4096, H 16) stopped with an illegal memory access (session 8).
#    Which kernel (CUDA_LAUNCH_BLOCKING), then S1 with the state pass's value tile at 16
#    (what the check shapes, with few sequences·heads, ran; S1 runs 64) and at 4 warps.
# 2. softmax backward and forward tiles that compile without spills (or few) now that the
#    tiles come through tensor descriptors (scripts/compile_sm90.py, session 8).
# 3. mlstm_kernels' decode step kernel against ours, then the restructured forward fused
#    (EXP_SPLIT=never), if step 1 found it sound.
# 4. mLSTMsig through the scalar-gate kernels: a per-kernel profile.
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

step mlstm_fault 70 env CUDA_LAUNCH_BLOCKING=1 python3 scripts/device_mlstm_check.py --sections time \
    --shapes S1 --set EXP_FORWARD=restructured
step mlstm_bv16 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
    --set EXP_FORWARD=restructured --set SPLIT_STATE_ELEMENTS=2048
step mlstm_4warps 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
    --set EXP_FORWARD=restructured --set SPLIT_STATE_WARPS=4
# Compiled at D 128 (registers / spill bytes): dk/dv (64, 64, 8 warps) 255 / 168 and
# (32, 64, 4 warps, 3 stages) 255 / 136, against the default's 255 / 0; dq (128, 32, 8
# warps, 4 stages) 172 / 0 and (64, 64, 4 warps, 3 stages) 209 / 0; forward (64, 64, 4
# warps, 3 stages) 192 / 0. (128-key tiles crash ptxas.) The forward's lazy rescale
# (launch.FWD_LAZY_RESCALE): 196 -> 179 registers (it crashes ptxas with a T5 bias).
step softmax_tiles 170 python3 scripts/device_softmax_variants.py 'CHECK=0' \
    'DKDV_TILES={128: (64, 64, 8, 2)}' 'DKDV_TILES={128: (32, 64, 4, 3)}' \
    'DQ_TILES={128: (128, 32, 8, 4)}' 'DQ_TILES={128: (64, 64, 4, 3)}' \
    'FWD_TILES={128: (64, 64, 4, 3)}' 'FWD_LAZY_RESCALE=True'
# mlstm_kernels' step kernel beside ours (issue 7's decode target, never measured: its
# chunk kernels crash Triton 3.6's compiler). Needs the carried wheels (.whl/).
step mlstm_decode_peer 90 bash -c 'site=$(mktemp -d) &&
    python3 -m pip install -q --no-index --no-deps --target "$site" .whl/mlstm_kernels-*.whl .whl/einops-*.whl &&
    for B in 1 64 256; do PYTHONPATH="$site:$PYTHONPATH" python3 scripts/device_mlstm_check.py --peer step exp $B 1 16 128 128; done &&
    python3 scripts/device_mlstm_check.py --sections time --shapes S1'
step mlstm_fused 80 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1 \
    --set EXP_FORWARD=restructured --set EXP_SPLIT=never
# 4. Where mLSTMsig's time goes on the scalar-gate kernels (2.48 ms forward at S1 against
#    0.28 for simple GLA alone, session 8): per-kernel device times.
step mlstm_sigmoid_profile 60 python3 scripts/device_mlstm_check.py --sections profile --shapes S1 \
    --set SIGMOID_VIA_GLA=True
