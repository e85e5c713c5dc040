#!/usr/bin/env bash
# GPU calls that run what is written but not yet measured on the GPU (as of 2026-12-07,
# session 14), each step under its own time limit, most important first, so a call cut
# short or a failing step still leaves the earlier results:
#
#     OUT=<folder> bash scripts/device_pending.sh [1|2|3]   # carry .whl and .device-cache
#
# Still to run after session 19: 17 (the full bench under session 19's defaults, the
# adopted backward tilings not yet in one run with the peers; on an H200 when one is
# lent), 15 (mLSTM float64 checks and reverse-pass variants); 20 only to follow up
# KDA's pipelined backward without narrowing (session 19: 8.3 -> 7.6 ms at S2, once).
#
# Session 15 ran parts 1 and 2: every check passed except KDA at head size 32, which
# raised an illegal memory access in its forward (and so stopped step 0 before GLA at
# 32, mLSTM and Aaren at 32, and every family at 64 x 128). Part 3 (steps 6 and 7): the
# fault found, and the head sizes step 0 left, one op per process.
#
# Part 1 (steps 0 and 1, about 6 minutes), part 2 (steps 2 to 5, about 6 minutes): one
# device call each (a call runs at most 10 minutes).
#
# 0. Every linear family checked at head sizes 64 and 32 (device_head_sizes.py): the
#    other GPU checks cover 128, 100 / 60 and 256, and fla records Hopper miscompiles in
#    Triton 3.4-3.7.0 at 64-wide tiles of a pattern our backward kernels also use.
# 1. The linear bench (every linear op at S1, decode, S2, S3) under session 14's
#    defaults, none of which the bench has measured together: Aaren's 16-bit in-chunk
#    weights (HALF_P), the mLSTM split form at S2 (EXP_SPLIT "auto", its fault traced to
#    SPLIT_STATE_N_PRODUCT), mLSTMsig on the restructured fused forward, and the gated
#    delta rule's split forward at S3 for KDA and simple GLA (SPLIT_PER_MULTIPROCESSOR_BY_KIND).
#    About 5 minutes.
# 2. mLSTMsig's split form (SIGMOID_SPLIT: the exp gate's split kernels without the
#    stabiliser, written in session 14, exact under the interpreter): the float64 checks
#    and S2 / S3 times, against the current kernels' S2 3.72 ms forward (TFLA 1.56).
# 3. Both gates split at S1 and S3 (fused by the rule today: exp 1.29 / 2.07 ms forward
#    against TFLA's 0.96 / 1.19; the split form took 2.16 at S2, the same token count as
#    S3 on half the sequences·heads), to set SPLIT_PER_MULTIPROCESSOR. The fused pass
#    runs value tiles of 32 (its registers), so each chunk's q kᵀ and gate matrix are
#    built four times at V 128; the split output pass builds them once.
# 4. How fast a fused pass like simple GLA's (0.28 ms at S1 for nearly the same
#    products) could be: output products rounded to bf16 at value tile 64, time only
#    (OUTPUT_PRODUCTS=bf16 failed one check in session 14: a bound, not a default).
# 5. mLSTM's forward per kernel at S1 and S3.
# 6. KDA at K = V = 32: the faulting launch (CUDA_LAUNCH_BLOCKING) under its suspects'
#    settings, the per-channel preparation's key slice, warps and score precision;
#    then compute-sanitizer on the defaults.
# 7. Step 0's rows left: one op and head size per process.
# Part 4 (session 15, after part 3: KDA's fault at K = 32 is in the per-channel
# preparation with a backward to come (SAVE), at T 1000, not at T 256 under the
# sanitizer; key slice 16, 8 warps or IEEE score products each avoid it):
# 8. compute-sanitizer on the faulting shape; whether a partial last chunk matters
#    (T 1024); K 16 and 48 (one key slice of 16; a slice of 32 half masked); GLA at 16.
#    Found: an out-of-range shared-memory address in the preparation's W / U products
#    (chunk_prepare_dense.py `_weighted_rows`) whenever their column tile BD is under
#    64 (K = V = 16 or 32); BD 64 with K or V 32 ran clean.
# Part 5: the fix (launch.PREPARE_BD = 64) checked.
# 9. The faulting cases clean with BD 64, the fault back with BD 32 (the cause); every
#    gated delta family's float64 checks at head sizes 16 and 32; mLSTM at 64 x 128
#    (its sigmoid gate's dm0 now under its derived bound, device_mlstm_check.py).
# Part 6: the mLSTM chunk form under torch.no_grad() with inputs that require a gradient
# (the bench's forward) ran the training forward until session 15 (float32 output and
# its copy, the saved states): the mLSTM rows of the bench again, peers in the same run;
# the split form at S1 and S3 against the fused rows; the forward's kernels at S1.
# Part 7 (written in session 15, not yet run): where the mLSTM forward loses against
# TFLA (0.68-0.92x): our split form's kernels (state pass, output pass) and TFLA's own,
# per kernel at S1, both gates; the fused pass's kernels for reference; the split form
# at chunks 64, 128, 256 (TFLA runs 128; our default is 64, the fused pass's); the
# candidate default, chunk 128 where the form splits (`SPLIT_CHUNK=128`, a launcher
# setting removed after this ran: slower), at S2 and S3
# with its float64 checks.
# Part 8 (written in session 15, not yet run): mLSTM and Aaren at head size 16 on the
# GPU (the gated delta rule's families were checked there in part 5; the fault of part 3
# was at 16 and 32).
# Part 9 (written in session 15, not yet run): GDN and KDA at S3 (GDN 0.99x of fla, the
# 1.2x target's one miss; KDA 0.93x) with the sequential passes' value tile not
# narrowed (NARROW_VALUE_TILE=False: 128 programs at BV 32 instead of 256 at 16), each
# variant checked against float64 first.
# Part 10 (written in session 15, not yet run): the first forward + backward ratios
# against TFLA: our mLSTM with TFLA's own gradient (normaliser_gradient="held", ops
# mlstm_held / mlstm_sig_held: like for like) and with the exact one (marked), and GDN's
# against TFLA's (issue 3), every op gated against float64.
# Part 11 (session 16, after part 10 timed no TFLA forward + backward: its df in bf16
# misses the gate's bound, 2.6-13x the bf16 reference's error, about 4% of df's scale,
# everything else within it; the bench now times such a peer's backward and marks it):
# the forward + backward ratios against TFLA; TFLA's forward per kernel (part 7's peers
# section lacked the wheels); our split form's kernels at S1 with bf16 output products
# (its output pass alone took 0.91 ms, TFLA's whole forward 0.97), and both forms with
# them where no backward follows ("bf16 inference", checked under no_grad, timed at S1
# and S3); GDN and KDA at S2 with
# the backward's value tile narrowed and not (part 9: at S3 wide is faster, now the
# default). Run in session 16 with a 300 s limit: the bench came back; the bf16 check
# passed (the time section was cut off); the rest did not run. NARROW_BACKWARD_VALUE_TILE
# became NARROW_BACKWARD_FILL (0.5: narrow below half the multiprocessors) after it ran.
# Part 12 (written in session 16, not yet run; about 9 minutes): what part 11 left, and
# the backward's precision. TFLA's forward + backward at S1 took 3.25 ms against our
# 5.28 (held gradient): its backward 2.3 ms against our 4.0, all in bf16 products,
# while ours keeps tf32 products of float32 intermediates and its gradients sit at
# 0.01-0.5 of the bound (TFLA's df at 2.65x it). So: our defaults timed beside bf16
# output products where no backward follows ("bf16 inference", checked in part 11);
# bf16 gate-weighted scores in the backward too (HALF_PRECISION_P, session 5: chunk 128
# f+b 8.03 -> 7.52 ms, never rerun) with its checks; the dq and dk / dv kernels at 4
# warps (BWD_WARPS=4: sm_90 compile, 251 / 255 registers without spills, 2 programs per
# multiprocessor against 1 at 8 warps; never timed); the reverse pass's value tile
# narrowed at S2 / S3 (STATE_BWD_FILL=0.5: 32 / 64 programs of [128, 64] become 128 of
# [128, 16] / [128, 32]; checked on the CPU); TFLA per kernel, forward and
# forward + backward; GDN and KDA at S2 and S3 with the backward's narrowing at fill 0,
# 0.5 (default) and 1.
# Part 13 (written in session 16, not yet run; about 5 minutes): the backward's state
# gradients kept in bf16 (BWD_STATE_16BIT: the dk / dv kernel's exit-state products one
# bf16 product each, half the bytes of dstates; sm_90: the kernel's shared memory 57 ->
# 36 KB), alone and with HALF_PRECISION_P (then 128 registers, 2 programs per
# multiprocessor), each with every float64 check, beside the defaults in the same call.
# Part 14 (session 17, after parts 12 and 13: HALF_PRECISION_P failed df's bound at
# 1.4-2.2x and BWD_STATE_16BIT at 1.4x (sigmoid, K = V = 256), so both stay off; 4 warps
# in the dq and dk / dv kernels and the reverse pass narrowed at fill 0.5 were each
# faster and became the defaults): every mLSTM / Aaren float64 check under the new
# defaults, then the bench of part 11 again (its mLSTM ops).
# (Part 14 ran in session 17 with its check limited to 90 s, which cut the check's
# last row and lost its JSON; the bench ran S1 and the exp gate's S3 forward.)
# Parts 15 and 16 (written in session 17, not yet run; about 7 and 6 minutes): the reverse passes'
# occupancy. sm_90 compile (scripts/compile_sm90.py): mLSTM's `_state_bwd_kernel` runs
# 8 warps at 222 registers, one program per multiprocessor, no pipelining (1.07 ms at S1,
# about 8 µs a chunk step over 2 waves); with STATE_ELEMENTS 128·32 and 4 warps, 255
# registers without spills and two per multiprocessor (twice the programs), with 2
# stages too 62 KB of shared memory; at BV 64 with 4 warps and 2 stages, 255 with 584
# bytes of spills. First, every float64 check under session 17's defaults (part 14's
# check lost its JSON at its time limit). GDN's `_state_bwd_kernel` holds 119 KB of shared
# memory at 8 warps (one per multiprocessor; 512 programs at S1: 4 waves); at 4 warps
# 115 KB, two per multiprocessor. Each variant beside the defaults, mLSTM timed (same
# arithmetic, tile widths only), GDN / KDA checked and timed at S1; KDA's and GLA's
# per-channel tree backward (4.6 of KDA's 10.4 ms at S2) with a chunk's key slices
# launched next to each other (CHANNEL_BWD_TREE_SLICES_ADJACENT: its coefficient blocks
# then read from L2 rather than from memory once per slice); then the mLSTM bench at S2
# and S3 that part 14 did not reach.
# Part 17 (session 18): the full bench (issues 3 and 7) in one call, for an H200 when one
# is lent (session 15's run of the same ops took 201 s on the H100 with carried tunings).
# Part 18 (session 18): the per-channel preparation and backward through one anchor where
# a chunk's decay span is at most ONE_ANCHOR_SPAN (the bench's gates: always), against the
# tree everywhere (None), KDA and GLA checked against float64 and timed at S1, S2, S3;
# then at S1, S2 with log-gates of about -2.4 per step (16-step blocks; about 7 minutes in all).
# Part 20 (session 19, CPU only so far): the pipelined passes (launch.PIPELINE_FORWARD:
# each sequence cut into segments; segment s + 1 prepared on the current stream while
# the state pass walks segment s on a high-priority stream; PIPELINE_BACKWARD: each
# segment's chunk gradients beside the reverse pass of the segments before it). Exact
# under the interpreter (bit for bit the unsegmented passes); the streams only run
# here. GDN and KDA, then simple GLA and GLA, at S2 and S3 (16 / 32 sequences·heads:
# "auto" pipelines both), checked against float64 (the checks' 8 sequences·heads
# pipeline too), beside the defaults; then, time only, with the sequential passes not
# narrowed (narrowed, their programs take about every multiprocessor: KDA's state pass
# at 8 warps and 188 registers leaves no room for a 255-register preparation program
# beside it) and with 16 segments. About 8 minutes.
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

part=${1:-1}
if [ "$part" = 1 ]; then
    step head_sizes 150 python3 scripts/device_head_sizes.py
    step linear_bench 400 env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh \
        --ops gdn,simple_gla,kda,gla,mlstm,mlstm_sig,aaren --shapes S1,decode,S2,S3 --budget-s 330 --graph-decode
elif [ "$part" = 3 ]; then
    step kda32_fault 120 python3 scripts/device_fault.py --op kda --shape 2,1000,4 --heads 32,32 --repeats 1 \
        --blocking --variant "" --variant "CHANNEL_BK=16" --variant "CHANNEL_SCORE_PRECISION='ieee'" \
        --variant "CHANNEL_PREPARE_TILING={True: (8, 1)}"
    step kda32_sanitizer 100 python3 scripts/device_fault.py --op kda --shape 1,256,1 --heads 32,32 --repeats 1 \
        --sanitizer --variant ""
    for size in 32x32 64x128; do
        for op in GDN "simple GLA" KDA GLA mLSTM Aaren; do
            if [ "$size" = 32x32 ] && [[ "$op" == GDN || "$op" == "simple GLA" ]]; then continue; fi  # passed
            step "head_sizes_${size}_${op// /_}" 35 python3 scripts/device_head_sizes.py --sizes "$size" --ops "$op"  # 35 s each: 570 s in all at most
        done
    done
elif [ "$part" = 4 ]; then
    step kda32_sanitizer_t1000 150 python3 scripts/device_fault.py --op kda --shape 2,1000,4 --heads 32,32 \
        --repeats 1 --sanitizer --variant ""
    step kda32_t1024 40 python3 scripts/device_fault.py --op kda --shape 2,1024,4 --heads 32,32 --repeats 2
    for heads in 16,16 48,48 32,64 64,32; do
        step "kda_${heads/,/x}" 60 python3 scripts/device_fault.py --op kda --shape 2,1000,4 --heads "$heads" \
            --repeats 2 --variant "" --variant "CHANNEL_BK=16"
    done
    step gla_16x16 40 python3 scripts/device_fault.py --op gla --shape 2,1000,4 --heads 16,16 --repeats 2
elif [ "$part" = 5 ]; then
    step kda_fixed 90 python3 scripts/device_fault.py --op kda --shape 2,1000,4 --heads 32,32 --repeats 2 \
        --variant "" --variant "PREPARE_BD=32"
    for op in kda gdn; do
        step "${op}_16_fixed" 40 python3 scripts/device_fault.py --op "$op" --shape 2,1000,4 --heads 16,16 --repeats 2
    done
    for size in 32x32 16x16; do
        step "head_sizes_${size}_gated_delta" 90 python3 scripts/device_head_sizes.py --sizes "$size" \
            --ops "GDN,simple GLA,KDA,GLA"
    done
    step head_sizes_64x128_mLSTM 60 python3 scripts/device_head_sizes.py --sizes 64x128 --ops mLSTM
elif [ "$part" = 6 ]; then
    step mlstm_bench 330 env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh --ops mlstm,mlstm_sig \
        --shapes S1,S2,S3 --budget-s 280
    step mlstm_split_s1_s3 110 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set EXP_SPLIT=always
    step mlstm_kernels 60 python3 scripts/device_mlstm_check.py --sections profile --shapes S1
elif [ "$part" = 7 ]; then
    step mlstm_split_kernels 150 python3 scripts/device_mlstm_check.py --sections profile,peers --shapes S1 \
        --set EXP_SPLIT=always
    step mlstm_fused_kernels 90 python3 scripts/device_mlstm_check.py --sections profile --shapes S1 \
        --set EXP_SPLIT=never
    step mlstm_split_chunks 150 python3 scripts/device_mlstm_check.py --sections sweep --shapes S1 \
        --set EXP_SPLIT=always
    step mlstm_split_chunk128 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S2,S3 \
        --set SPLIT_CHUNK=128
elif [ "$part" = 8 ]; then
    for op in mLSTM Aaren; do
        step "head_sizes_16x16_$op" 60 python3 scripts/device_head_sizes.py --sizes 16x16 --ops "$op"
    done
elif [ "$part" = 9 ]; then
    # (NARROW_VALUE_TILE, one switch for both passes then, became NARROW_FORWARD_VALUE_TILE
    # and NARROW_BACKWARD_VALUE_TILE after this ran.)
    step gdr_s3_value_tile 400 env OPS=GDN,KDA SHAPES=S3 python3 scripts/device_gdr_variants.py \
        '' 'NARROW_VALUE_TILE=False' 'NARROW_VALUE_TILE=False;FORWARD_SPLIT="never"'
elif [ "$part" = 15 ]; then
    step mlstm_check 150 python3 scripts/device_mlstm_check.py --sections check
    step mlstm_defaults_time 70 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3
    step mlstm_state_bwd_w4_s2 70 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set STATE_WARPS=4 --set STATE_STAGES=2
    step mlstm_state_bwd_stages2 70 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set STATE_STAGES=2
    step mlstm_state_bwd_bv32_w4 70 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set 'STATE_ELEMENTS=128*32' --set STATE_WARPS=4
    step mlstm_state_bwd_bv32_w4_s2 70 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set 'STATE_ELEMENTS=128*32' --set STATE_WARPS=4 --set STATE_STAGES=2
elif [ "$part" = 22 ]; then
    # Parts 18 and 20 cut to fit one call: the block anchors against the tree (KDA, GLA),
    # then both pipelines with and without narrowing (GDN, KDA at S2 and S3).
    step kda_one_anchor 270 env OPS=KDA,GLA SHAPES=S1+S2+S3 python3 scripts/device_gdr_variants.py \
        '' 'ONE_ANCHOR_SPAN=None'
    both='PIPELINE_FORWARD=auto;PIPELINE_BACKWARD=auto'
    step pipeline_gdn_kda 250 env OPS=GDN,KDA SHAPES=S2+S3 python3 scripts/device_gdr_variants.py \
        '' "$both" "$both;NARROW_FORWARD_FILL=0;NARROW_BACKWARD_FILL=0;CHECK=0"
elif [ "$part" = 20 ]; then
    both='PIPELINE_FORWARD=auto;PIPELINE_BACKWARD=auto'
    step pipeline_gdn_kda 330 env OPS=GDN,KDA SHAPES=S2+S3 python3 scripts/device_gdr_variants.py \
        '' "$both" "$both;NARROW_FORWARD_FILL=0;NARROW_BACKWARD_FILL=0;CHECK=0" \
        "$both;NARROW_FORWARD_FILL=0.5;NARROW_BACKWARD_FILL=0;PIPELINE_SEGMENTS=16;CHECK=0"
    step pipeline_gla 170 env OPS="simple GLA,GLA" SHAPES=S2+S3 python3 scripts/device_gdr_variants.py \
        '' "$both"
elif [ "$part" = 19 ]; then
    # Part 17's bench for the per-channel ops alone (KDA, GLA against fla), when device
    # time is short.
    budget=${BENCH_BUDGET:-200}
    step channel_bench $((budget + 60)) env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh --ops kda,gla \
        --shapes ${BENCH_SHAPES:-S1,S2,S3} --budget-s "$budget"
elif [ "$part" = 18 ]; then
    step kda_one_anchor 290 env OPS=KDA,GLA SHAPES=S1+S2+S3 python3 scripts/device_gdr_variants.py \
        '' 'ONE_ANCHOR_SPAN=None'
    step kda_block_anchors 130 env OPS=KDA,GLA SHAPES=S1+S2 LOG_GATE_PER_STEP=-2.4 \
        python3 scripts/device_gdr_variants.py '' 'ONE_ANCHOR_SPAN=None'
elif [ "$part" = 17 ]; then
    # The results file of issues 3 and 7 on the GPU this runs on (meant for an H200):
    # every linear op, both mLSTM gradients, Aaren, at S1, decode, S2 and S3.
    budget=${BENCH_BUDGET:-440}  # seconds: lower it when the session's device time is short
    step full_bench $((budget + 80)) env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh \
        --ops gdn,simple_gla,kda,gla,mlstm,mlstm_sig,mlstm_held,mlstm_sig_held,aaren \
        --shapes S1,decode,S2,S3 --budget-s "$budget" --graph-decode
elif [ "$part" = 16 ]; then
    step gdr_state_bwd_tiling 110 env OPS=GDN,KDA SHAPES=S1 python3 scripts/device_gdr_variants.py \
        '' 'STATE_BACKWARD=StateTiling(4096,4,2)' 'STATE_BACKWARD=StateTiling(8192,8,2)'
    step kda_tree_adjacent_slices 90 env OPS=KDA,GLA SHAPES=S2 python3 scripts/device_gdr_variants.py \
        '' 'CHANNEL_BWD_TREE_SLICES_ADJACENT=True'
    step mlstm_bench_s2_s3 160 env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh \
        --ops mlstm,mlstm_sig,mlstm_held,mlstm_sig_held --shapes S2,S3 --budget-s 120
elif [ "$part" = 14 ]; then
    # (GDN left out: unchanged since part 11, and the session's device time was short.)
    step mlstm_check ${CHECK_LIMIT:-150} python3 scripts/device_mlstm_check.py --sections check
    step tfla_fwd_bwd ${BENCH_LIMIT:-170} env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh \
        --ops mlstm,mlstm_sig,mlstm_held,mlstm_sig_held --shapes ${BENCH_SHAPES:-S1,S3} --budget-s 110
elif [ "$part" = 13 ]; then
    # (BWD_STATE_16BIT was removed after this ran: its df missed the bound.)
    step mlstm_defaults_time 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3
    step mlstm_bwd_state16 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S3 \
        --set BWD_STATE_16BIT=True
    step mlstm_bwd_state16_half_p 150 python3 scripts/device_mlstm_check.py --sections check,time \
        --shapes S1,S3 --set BWD_STATE_16BIT=True --set HALF_PRECISION_P=True
elif [ "$part" = 12 ]; then
    step mlstm_defaults_time 80 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S2,S3
    step mlstm_bf16_inference_time 70 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set 'OUTPUT_PRODUCTS="bf16 inference"'
    step mlstm_half_p 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S2,S3 \
        --set HALF_PRECISION_P=True
    step mlstm_bwd_warps4 60 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set BWD_WARPS=4
    step mlstm_state_bwd_fill 60 python3 scripts/device_mlstm_check.py --sections time --shapes S2,S3 \
        --set STATE_BWD_FILL=0.5
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
    step tfla_kernels 70 env PYTHONPATH="$site:$PYTHONPATH" python3 scripts/device_mlstm_check.py \
        --sections peers --shapes S1
    step gdr_backward_fill 100 env OPS=GDN,KDA SHAPES=S2+S3 python3 scripts/device_gdr_variants.py \
        '' 'NARROW_BACKWARD_FILL=0' 'NARROW_BACKWARD_FILL=1'
elif [ "$part" = 11 ]; then
    step tfla_fwd_bwd 230 env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh \
        --ops gdn,mlstm,mlstm_sig,mlstm_held,mlstm_sig_held --shapes S1,S2,S3 --budget-s 180
    step mlstm_bf16_inference 90 python3 scripts/device_mlstm_check.py --sections check,time --shapes S1,S3 \
        --set 'OUTPUT_PRODUCTS="bf16 inference"'
    step gdr_s2_backward_value_tile 120 env OPS=GDN,KDA SHAPES=S2+S3 python3 scripts/device_gdr_variants.py \
        '' 'NARROW_BACKWARD_FILL=0' 'NARROW_BACKWARD_FILL=1'
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
    step tfla_kernels 60 env PYTHONPATH="$site:$PYTHONPATH" python3 scripts/device_mlstm_check.py \
        --sections peers --shapes S1
    step mlstm_split_bf16_kernels 45 python3 scripts/device_mlstm_check.py --sections profile --shapes S1 \
        --set EXP_SPLIT=always --set 'OUTPUT_PRODUCTS="bf16 inference"'
elif [ "$part" = 10 ]; then
    step tfla_fwd_bwd 560 env USE_CARRIED_CACHE=1 bash scripts/device_bench.sh \
        --ops gdn,mlstm,mlstm_sig,mlstm_held,mlstm_sig_held --shapes S1,S2,S3 --budget-s 480
else
    step mlstm_sigmoid_split 150 python3 scripts/device_mlstm_check.py --sections check,time --shapes S2,S3 \
        --set SIGMOID_SPLIT=True
    step mlstm_split_s1_s3 100 python3 scripts/device_mlstm_check.py --sections time --shapes S1,S3 \
        --set EXP_SPLIT=always --set SIGMOID_SPLIT=True
    step mlstm_fused_bf16_bv64 90 python3 scripts/device_mlstm_check.py --sections time --shapes S1 \
        --set OUTPUT_PRODUCTS=bf16 --set 'FUSED_ELEMENTS=128*64'
    step mlstm_kernels 120 python3 scripts/device_mlstm_check.py --sections profile --shapes S1,S3
fi
