"""Launchers: allocate outputs, build the grids, pick tiles, call the kernels.

Every launcher takes time-major tensors (`[B, T, H, D]`, or `[1, T, H, D]` packed with
`offsets`) and returns `(output [B, T, H, V], final state [N, H, K, V] float32 or None)`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from ....kernels import host
from ....kernels.occupancy import narrowed_value_tile, too_few_to_fill
from ....kernels.precision import dot_precision
from ....kernels.sequences import (
    batch_cu_seqlens as _batch_cu_seqlens, chunk_counts as _chunk_counts, chunk_tables as _chunk_tables,
    cu_seqlens_tensor as _cu_seqlens, segment_tables as _segment_tables, sequence_offsets,
)
from .chunk_bwd import _chunk_bwd_kernel, _state_bwd_kernel
from .chunk_bwd_channel import _channel_bwd_kernel
from .chunk_bwd_channel_tree import _channel_bwd_tree_kernel
from .chunk_fwd import _output_kernel, _state_output_kernel
from .chunk_cumsum import _cumsum_kernel
from .chunk_prepare_channel import _channel_prepare_kernel
from .chunk_prepare_dense import _dense_prepare_kernel
from .pipeline import pipelined_backward, pipelined_forward
from .recurrent_fwd import _recurrent_kernel

# The per-channel backward's sub-blocks (tl.dot needs >= 16) and key slice (it bounds
# the `[BC, BC, BK]` pairwise decay tile).
SUBCHUNK = 16
SCORE_BK = 32


class StateTiling(NamedTuple):
    """Launch shape of a sequential state pass: the `[K, BV]` float32 state slice lives
    in registers, so `elements` caps K·BV; then warps and software-pipelining stages."""

    elements: int
    warps: int
    stages: int


# The largest slices, by (gate layout: none / per head / per channel, beta), from the
# H200 sweeps in bench/NOTES-gated-delta.md (4 warps beat 8 in the forward pass even
# where 8 spill less; with beta the `[BT, K]` W tile is live too, hence the smaller
# slice). `_sequential_value_tile` narrows the slice when there are too few programs to
# fill the GPU.
STATE_FORWARD = {
    (0, False): StateTiling(128 * 64, 4, 2),
    (0, True): StateTiling(128 * 32, 4, 2),
    (1, False): StateTiling(128 * 64, 4, 2),
    (1, True): StateTiling(128 * 32, 4, 2),
    (2, False): StateTiling(128 * 64, 4, 2),
    # KDA: 8 warps, 0.69 against 0.85 ms at 4 (416 bytes of spills) at S1 on an H100.
    (2, True): StateTiling(128 * 64, 8, 2),
}
# The reverse pass, by (gate layout, beta) as STATE_FORWARD. 4 warps hold it in 115 KB
# of shared memory, two programs per multiprocessor, where 8 warps took 119 KB and one
# (H100, session 19, device_pending.sh 16 and a follow-up at S2 / S3): GDN forward +
# backward 3.51 -> 3.18 ms at S1, 4.05 -> 3.81 at S2, 3.41 -> 3.26 at S3. KDA: the
# larger 8-warp slice 7.08 ms at S1 against 7.29 at 4 warps and 7.31 at 8 with half the
# slice, even at S2 / S3 (8.37 / 7.51 against 8.32 / 7.47).
STATE_BACKWARD = {
    (0, False): StateTiling(128 * 32, 4, 2),
    (0, True): StateTiling(128 * 32, 4, 2),
    (1, False): StateTiling(128 * 32, 4, 2),
    (1, True): StateTiling(128 * 32, 4, 2),
    (2, False): StateTiling(128 * 32, 4, 2),
    (2, True): StateTiling(128 * 64, 8, 2),
}
# The intermediates a backward reads, the chunks' states and Ũ from the forward and dS
# and dR from the reverse pass, in the 16-bit inputs' dtype (float32 otherwise): each is
# a tensor-core operand, rounded to that dtype at its use anyway, except in the sums
# Σ S ⊙ dS (dg) and Σ dR ⊙ V (dβ), whose terms' rounding errors average out.
KEEP_16BIT = True
# The split forward (`_split_forward`): "auto" splits when there are fewer than one
# sequence·head per SPLIT_PER_MULTIPROCESSOR multiprocessors; "always" / "never" for
# measurements. The output pass's value tile and warps.
FORWARD_SPLIT = "auto"
# (H100, 132 multiprocessors: 16 sequences·heads (S2) run faster split, 0.93 against
# 1.22 ms for simple GLA; 32 (S3) faster fused, 1.18 against 1.25 ms for GDN.)
SPLIT_PER_MULTIPROCESSOR = 6
# Per (gate mode, beta) where it differs: at S3 (32 sequences·heads) on an H100, session
# 14, fused against split forward: KDA 3.08 / 2.49 ms and simple GLA 0.69 / 0.60 ran
# faster split, GDN 1.14 / 1.16 and GLA 1.51 / 1.56 fused (scripts/device_gdr_variants.py,
# bench/results/dev/2026-12-07-h100-s14-gdr-s3-split.json); 32 · 4 < 132 splits S3.
SPLIT_PER_MULTIPROCESSOR_BY_KIND = {(2, True): 4, (1, False): 4}
# Pipelining stages of the state-only pass when split: its chain of chunk steps is the
# critical path, and a third stage keeps the next chunks' W, U, K in flight (GDN S2 on
# an H100: 1.25 against 1.53 ms forward; in the fused pass at S3 three stages were
# slower, 1.39 against 1.14).
SPLIT_STATE_STAGES = 3
# How far the forward's and the backward's sequential passes narrow their value tile:
# until they run at least FILL times as many programs as the GPU has multiprocessors
# (`narrowed_value_tile`; 0: never narrowed). At S3 (32 sequences·heads) GDN's BV 32
# gives 128 programs on an H100's 132; narrowed, 256 at BV 16. Measured there (session
# 16, H100, device_pending.sh 9, bench/results/dev/2026-12-07-h100-s16/part9): the
# forward's state pass 0.80 ms narrowed against 0.88 wide, but the backward's reverse
# pass 1.40 narrowed against 0.86 wide (GDN forward + backward 4.00 -> 3.56 ms, KDA
# 10.1 -> 9.6). At S2 (16 sequences·heads: 64 programs wide) the narrowed backward was
# the faster: GDN forward + backward 4.02 ms in two runs (session 15, part 10) against
# 4.13 wide (part 11; three runs, not one). In one run (session 17, part 12) they tied:
# 4.08 narrowed, 4.09 wide (reverse pass 1.43 / 1.45 ms; KDA 10.38 / 10.36). The
# backward narrows only below half the multiprocessors.
NARROW_FORWARD_FILL = 1.0
NARROW_BACKWARD_FILL = 0.5
# The pipelined forward (pipeline.py): with few sequences·heads the sequential state
# pass leaves most multiprocessors idle while the preparation waits its turn (GDN at S3
# on an H100: preparation 0.39 then state pass 0.75 ms, KDA 1.48 then 0.93). Cut every
# sequence into PIPELINE_SEGMENTS segments of at least PIPELINE_MIN_CHUNKS chunks and
# prepare segment s + 1 while the state pass walks segment s: the critical path becomes
# one segment's preparation plus the state pass. "auto": below one sequence·head per
# PIPELINE_PER_MULTIPROCESSOR multiprocessors; "always" / "never" for measurements and
# tests. Off: timed on an H100 (session 19, device_pending.sh 22) with the backward's
# twin, forward / forward + backward ms, defaults -> both pipelines (narrowed as usual)
# -> both with no narrowing: GDN S2 1.25 / 4.02 -> 1.54 / 4.15 -> 1.92 / 4.31, S3
# 1.14 / 3.43 -> 1.23 / 4.15 -> 1.14 / 3.82; KDA S2 2.32 / 8.32 -> 2.31 / 8.23 -> 2.40 /
# 7.60, S3 2.12 / 7.55 -> 2.28 / 7.77 -> 2.11 / 7.57. No forward gained: the parallel
# kernels' programs do not fit beside the sequential pass's on a multiprocessor
# (registers), and the launches and events cost more than the idle multiprocessors
# give back. KDA's backward without narrowing is the one gain (S2 8.3 -> 7.6 ms).
PIPELINE_FORWARD = "never"
# The backward's twin (pipeline.py): the reverse pass walks the segments from
# the last, and each segment's chunk gradients (for KDA the per-chunk backward and the
# tree, 6.3 of 10.4 ms at S2) run beside the reverse pass of the segments before it.
PIPELINE_BACKWARD = "never"
PIPELINE_PER_MULTIPROCESSOR = 2
PIPELINE_SEGMENTS = 8
PIPELINE_MIN_CHUNKS = 4
OUTPUT_BV, OUTPUT_WARPS = 64, 4
# The recurrent kernel's state slice and warps (a decode step streams the state once:
# many programs, each with enough bytes in flight).
RECURRENT_ELEMENTS = 128 * 32
RECURRENT_WARPS = 4
# Warps of the per-chunk preparation without a per-channel decay (chunk_prepare_dense.py).
PREPARE_WARPS = 4
# Column tile of both preparations' W and U products (`[BT, BT] @ [BT, BD]`), masked
# past K or V. Never narrower than 64: at 16 and 32 (head sizes 16 and 32) Triton 3.6
# on an H100 compiled those products in the per-channel preparation to an out-of-range
# shared-memory access (compute-sanitizer, session 15: KDA at K = V = 32 with a backward
# to come, and at 16 in every call; scripts/device_fault.py,
# bench/results/dev/2026-12-07-h100-s15/part3 to part5).
PREPARE_BD = 64
# Tensor-core precision of the dense preparation's inverse for 16-bit inputs (float32
# operands); float32 inputs always take "ieee".
DENSE_PREPARE_PRECISION = "tf32"
# The per-channel preparation (chunk_prepare_channel.py): the leaf of its tree of score
# products (steps formed pairwise, a power of two), its key slice, the precision of its
# score products for 16-bit inputs (float32 operands: decayed q, k), and its warps.
CHANNEL_LEAF = 4
CHANNEL_BK = 32
CHANNEL_SCORE_PRECISION = "tf32"
# One anchor for a block of steps where the per-channel decay over it (max over a key
# slice's channels of G_first − G_last) is at most this: the largest aligned blocks of
# 2^L steps within it (the whole chunk for mild decays) take one tensor-core product per
# matrix and side for all their inner pairs, in the preparation's scores and the
# backward's in-chunk products, instead of the tree's leaf steps and levels below L,
# with the same rounding per term (common._anchor_level says why). Chosen per chunk and
# key slice at run time; None: always the whole tree.
ONE_ANCHOR_SPAN = 40.0
# Warps and stages by beta (H100, S1, device_gdr_variants.py, session 6): with beta 4
# warps and one stage, 1.32 ms against 2.13 at (8, 1); without beta (4, 1), 0.73 ms
# against 0.86 at (8, 2).
CHANNEL_PREPARE_TILING = {False: (4, 1), True: (4, 1)}
# The per-channel backward's in-chunk products: "tree" (chunk_bwd_channel_tree.py,
# whole-chunk products as in the forward's preparation) or "blocks"
# (chunk_bwd_channel.py, 16-step sub-blocks, the diagonal one step at a time), and the
# tree kernel's warps by beta and stages. H100, S1 (bench/NOTES-gated-delta.md, session
# 6): KDA 4.67 ms tree at 8 warps, 1 stage (4.96 at 3 stages; before its leaf
# coefficients were read from memory, 6.69) against 7.83 blocks; GLA 2.63 at 4 warps.
CHANNEL_BACKWARD = "tree"
CHANNEL_BWD_TREE_WARPS = {False: 4, True: 8}
CHANNEL_BWD_TREE_STAGES = 1
# Its key slice and leaf (steps formed pairwise). Session 9 restructured the kernel (one
# side of one coefficient matrix at a time, key slices side by side in the grid: 200
# registers instead of 255 at 8 warps) and it ran slower on an H100 at S1: KDA forward +
# backward 11.75 ms against 9.45, GLA 5.78 against 5.68; key slice 16 at 4 warps and
# leaf 1 slower still (bench/NOTES-gated-delta.md, session 10). This is session 8's kernel.
CHANNEL_BWD_TREE_BK = 32
CHANNEL_BWD_TREE_LEAF = CHANNEL_LEAF
# Launch a chunk's key slices next to each other (grid (chunks·slices, H)) instead of a
# whole grid apart (grid (chunks, H, slices), the slowest axis): each slice reads the
# chunk's four [BT, BT] float32 coefficient blocks (64 KB per chunk and head; 268 MB in
# all at S2), so adjacent slices could find them in L2 where today each is read from
# memory once per slice. The kernel holds 255 registers at 8 warps (one program per
# multiprocessor). H100, session 19 (device_pending.sh 16), forward + backward at S2:
# KDA 8.35 -> 8.17 ms, GLA 5.26 -> 5.16.
CHANNEL_BWD_TREE_SLICES_ADJACENT = True
# Tiles of the per-chunk backward kernel: key and value tiles, warps, stages.
# (4 warps and one stage: 1.20 ms for GDN at S1 on an H100, against 1.90 ms with 8 warps
# and two stages, 1.33 ms with BV 128; device_gdr_variants.py, bench/NOTES-gated-delta.md.)
BWD_BK, BWD_BV, BWD_WARPS, BWD_STAGES = 32, 64, 4, 1


def gate_mode(g: torch.Tensor | None) -> int:
    """0: no decay, 1: one log-decay per head `[B, T, H]`, 2: one per key channel."""
    return 0 if g is None else (1 if g.ndim == 3 else 2)


def _sequential_value_tile(K: int, V: int, elements: int, sequences_heads: int, fill: float,
                           device) -> tuple[int, int]:
    """`_value_tile` for a sequential pass (forward or reverse), narrowed to run at
    least `fill` (NARROW_*_FILL) programs per multiprocessor (`narrowed_value_tile`)."""
    BK, BV = _value_tile(K, V, elements)
    return BK, narrowed_value_tile(BV, V, sequences_heads, device, fill)


def _split_forward(sequences_heads: int, kind: tuple[int, bool], device) -> bool:
    """Whether the forward writes the output in a parallel pass of its own
    (`_output_kernel`) after a sequential pass that only carries the state: when there
    are few sequences·heads (one long sequence), the sequential chain is the critical
    path and the output's products should not lengthen it. kind: (gate mode, whether
    beta is given), which tells the family (KDA (2, True), simple GLA (1, False))."""
    if FORWARD_SPLIT != "auto":
        return FORWARD_SPLIT == "always"
    return too_few_to_fill(sequences_heads, SPLIT_PER_MULTIPROCESSOR_BY_KIND.get(kind, SPLIT_PER_MULTIPROCESSOR), device)


def _value_tile(K: int, V: int, elements: int) -> tuple[int, int]:
    BK = triton.next_power_of_2(K)
    BV = min(triton.next_power_of_2(V), max(16, elements // BK))
    return BK, BV


class ChunkIntermediates(NamedTuple):
    """What the chunked forward computes on the way, kept for the backward (float32;
    for 16-bit inputs on the GPU Aqk and M in their dtype, and states and v_new too
    under KEEP_16BIT: each is only a product operand).

    G: `[rows, H, K or 1]` in-chunk cumulative log-decay, or None.
    Aqk, Akk, M: `[rows, H, BT]` scores, unscaled key scores A' and the inverse of
    I + Diag(β) A' (Akk and M None without beta). states: `[chunks, H, K, V]` the state entering each chunk.
    v_new: `[rows, H, V]` pseudo-values Ũ (the values themselves without beta).
    qd, kd, kg: `[rows, H, K]` with a per-channel decay, the preparation's scale·Q ⊙ γ,
    K ⊙ exp(G_C − G) and (with beta) γ ⊙ K (chunk_prepare_channel.py), else None.
    """

    G: torch.Tensor | None
    Aqk: torch.Tensor
    Akk: torch.Tensor | None
    M: torch.Tensor | None
    states: torch.Tensor
    v_new: torch.Tensor
    qd: torch.Tensor | None
    kd: torch.Tensor | None
    kg: torch.Tensor | None


def _span_limit() -> float:
    """ONE_ANCHOR_SPAN as the kernels' constant (-1: never one anchor)."""
    return -1.0 if ONE_ANCHOR_SPAN is None else float(ONE_ANCHOR_SPAN)


def low_precision_products(x: torch.Tensor) -> bool:
    """Whether the kernels multiply in the inputs' 16-bit dtype (float32 accumulation).
    Not under the interpreter, which multiplies bf16 blocks wrongly."""
    return x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cuda"


def _prepare(q, k, v, G, beta, Aqk, Akk, M, w, u, qd, kd, kg, chunk_indices, cu_seqlens, scale, *, GATE,
             store_aqk, save, low, BT):
    """Launch the per-chunk preparation: whole-chunk `[BT, BT]` tiles, with a per-channel
    decay (chunk_prepare_channel.py) or without one (chunk_prepare_dense.py)."""
    _, T, H, K = q.shape
    V = v.shape[-1]
    grid = (len(chunk_indices), H)
    if GATE == 2:
        _channel_prepare_kernel[grid](
            q, k, v, G, beta, Aqk, Akk, M, w, u, qd, kd, kg, chunk_indices, cu_seqlens, scale, T,
            H=H, K=K, V=V, USE_BETA=beta is not None, STORE_AQK=store_aqk, SAVE=save, LOW=low,
            DOT_PRECISION=dot_precision(q), PRECISION=DENSE_PREPARE_PRECISION if low else "ieee",
            SCORE_PRECISION=CHANNEL_SCORE_PRECISION if low else "ieee", BT=BT,
            LEVELS=BT.bit_length() - 1, LOG_BC=min(CHANNEL_LEAF, BT).bit_length() - 1,
            BK=min(CHANNEL_BK, triton.next_power_of_2(K)), BD=PREPARE_BD, SPAN_LIMIT=_span_limit(),
            num_warps=CHANNEL_PREPARE_TILING[beta is not None][0],
            num_stages=CHANNEL_PREPARE_TILING[beta is not None][1],
        )
        return
    _dense_prepare_kernel[grid](
        q, k, v, G, beta, Aqk, Akk, M, w, u, chunk_indices, cu_seqlens, scale, T,
        H=H, K=K, V=V, GATE=GATE, USE_BETA=beta is not None, STORE_AQK=store_aqk, SAVE=save, LOW=low,
        DOT_PRECISION=dot_precision(q), PRECISION=DENSE_PREPARE_PRECISION if low else "ieee", BT=BT,
        LEVELS=BT.bit_length() - 1,
        BK=min(128, triton.next_power_of_2(K)), BD=PREPARE_BD,
        num_warps=PREPARE_WARPS,
    )


def chunk_forward(q, k, v, g, beta, scale, initial_state, output_final_state, offsets, chunk_size,
                  save=True, out_dtype=None):
    """The chunked forward: a cumsum (with a decay), the per-chunk preparation (with beta,
    or to keep A_qk) and the sequential pass (see chunk_prepare_dense.py, chunk_prepare_channel.py, chunk_fwd.py).
    Returns the output (in `out_dtype`, default v's), the final state (or None) and the
    `ChunkIntermediates` (None unless `save`: only a backward reads them)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    rows, BT = B * T, chunk_size
    device = q.device
    offsets = sequence_offsets(B, T, offsets)
    cu_seqlens = _cu_seqlens(offsets, device)
    chunk_indices, chunk_base = _chunk_tables(offsets, BT, device)
    num_chunks, N = len(chunk_indices), len(offsets) - 1
    q, k, v = (x.contiguous() for x in (q, k, v))
    GATE = gate_mode(g)
    use_beta = beta is not None
    low = low_precision_products(q)
    precision = dot_precision(q)
    f32 = dict(dtype=torch.float32, device=device)

    GK = K if GATE == 2 else 1
    G = torch.empty(rows, H, GK, **f32) if GATE else None
    g = g.contiguous() if GATE else None
    beta = beta.contiguous() if use_beta else None
    # A_qk is formed inside the sequential pass unless the backward reads it or the
    # decay is per channel.
    store_aqk = save or GATE == 2
    # A_qk and M are only ever product operands: kept in the 16-bit operands' dtype.
    operand = dict(dtype=q.dtype, device=device) if low else f32
    Aqk = torch.empty(rows, H, BT, **operand) if store_aqk else None
    Akk = M = w = u = None
    if use_beta:
        if save:
            Akk, M = torch.empty(rows, H, BT, **f32), torch.empty(rows, H, BT, **operand)
        # W and U in the inputs' dtype when they are 16-bit (the noise rule holds).
        wu = dict(dtype=q.dtype if low else torch.float32, device=device)
        w, u = torch.empty(rows, H, K, **wu), torch.empty(rows, H, V, **wu)
    # With a per-channel decay the sequential pass takes q and k decayed by the
    # preparation (chunk_prepare_channel.py, step 4).
    qd = kd = kg = None
    if GATE == 2:
        qd, kd = (torch.empty(rows, H, K, **operand) for _ in range(2))
        if use_beta and save:
            kg = torch.empty(rows, H, K, **operand)
    q_pass, k_pass = (qd, kd) if GATE == 2 else (q, k)
    tiling = STATE_FORWARD[GATE, use_beta]
    if K > 128:
        # `[BT, K]` tiles of 256 columns: one pipelining stage keeps them in shared memory.
        tiling = tiling._replace(stages=1)
    BK, BV = _sequential_value_tile(K, V, tiling.elements, N * H, NARROW_FORWARD_FILL, device)
    split = _split_forward(N * H, (GATE, use_beta), device)
    if split and K <= 128:
        tiling = tiling._replace(stages=SPLIT_STATE_STAGES)
    # The states and Ũ kept for the split output pass or the backward, in the 16-bit
    # operands' dtype (see KEEP_16BIT; without a backward they are only operands).
    kept = dict(dtype=q.dtype, device=device) if low and (KEEP_16BIT or not save) else f32
    states = torch.empty(num_chunks, H, K, V, **kept) if save or split else None
    v_new = torch.empty(rows, H, V, **kept) if (save or split) and use_beta else None
    final = torch.empty(N, H, K, V, **f32) if output_final_state else None
    o = torch.empty(B, T, H, V, dtype=out_dtype or v.dtype, device=device)

    def prepare(chunks):
        """The cumsum and the per-chunk preparation of the chunks `chunks` names."""
        if GATE:
            _cumsum_kernel[(len(chunks), H)](g, G, chunks, cu_seqlens, T, H=H, K=K, GK=GK, BT=BT,
                                             BK=triton.next_power_of_2(GK))
        if store_aqk or use_beta:
            _prepare(q, k, v, G, beta, Aqk, Akk, M, w, u, qd, kd, kg, chunks, cu_seqlens, scale,
                     GATE=GATE, store_aqk=store_aqk, save=save, low=low, BT=BT)

    def state_pass(bounds, first_chunks, entering, leaving, stride):
        """The sequential pass over the rows `bounds` names (cu_seqlens at stride 1, a
        segment's `[N, 2]` table at 2) from the state `entering` (None: zeros), storing
        the state it ends with in `leaving` (None: not stored)."""
        _state_output_kernel[(triton.cdiv(V, BV), N * H)](
            q_pass, k_pass, u if use_beta else v, w, G, Aqk, o, states, v_new, entering, leaving, first_chunks,
            bounds, scale, T, H=H, K=K, V=V, GATE=GATE, USE_BETA=use_beta,
            USE_INITIAL=entering is not None, STORE_FINAL=leaving is not None, SAVE=save,
            WRITE_O=not split, LOW=low, DOT_PRECISION=precision, BT=BT, BK=BK, BV=BV,
            SEQ_STRIDE=stride, num_warps=tiling.warps, num_stages=tiling.stages,
        )

    def output_pass(chunks):
        """The split forward's output of the chunks `chunks` names, from their states."""
        BVO = min(OUTPUT_BV, triton.next_power_of_2(V))
        _output_kernel[(triton.cdiv(V, BVO), len(chunks), H)](
            q_pass, k_pass, v_new if use_beta else v, G, Aqk, states, o, chunks, chunk_base, cu_seqlens, scale, T,
            H=H, K=K, V=V, GATE=GATE, LOW=low, DOT_PRECISION=precision, BT=BT,
            BK=triton.next_power_of_2(K), BV=BVO,
            num_warps=OUTPUT_WARPS,
        )

    segments = _pipeline_segments(PIPELINE_FORWARD, offsets, BT, N * H, device)
    if segments is None:
        prepare(chunk_indices)
        state_pass(cu_seqlens, chunk_base, initial_state, final, 1)
        if split:
            output_pass(chunk_indices)
    else:
        pipelined_forward(segments, prepare, state_pass, output_pass if split else None, initial_state, final,
                          (N, H, K, V), device)
    saved = ChunkIntermediates(G, Aqk, Akk, M, states, v_new if use_beta else v, qd, kd, kg) if save else None
    return o, final, saved


def _pipeline_segments(setting: str, offsets: tuple[int, ...], BT: int, sequences_heads: int, device):
    """The segments a pipelined pass walks under `setting` (PIPELINE_FORWARD or
    PIPELINE_BACKWARD), or None to run unsegmented (off, enough sequences·heads, or too
    short for two segments)."""
    if setting not in ("never", "auto", "always"):
        raise ValueError(f"a pipeline setting is 'never', 'auto' or 'always', got {setting!r}")
    if setting == "never" or (
            setting == "auto" and not too_few_to_fill(sequences_heads, PIPELINE_PER_MULTIPROCESSOR, device)):
        return None
    longest = max(_chunk_counts(offsets, BT), default=0)
    per_segment = max(PIPELINE_MIN_CHUNKS, triton.cdiv(longest, PIPELINE_SEGMENTS))
    return _segment_tables(offsets, BT, per_segment, device) if per_segment < longest else None


def chunk_backward(q, k, v, g, beta, scale, initial_state, saved: ChunkIntermediates, do,
                   dfinal, offsets, chunk_size):
    """Gradients of q, k, v, g, beta and the initial state (None where an input is None).
    Two launches, three with a per-channel decay (see chunk_bwd.py)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT, device = chunk_size, q.device
    offsets = sequence_offsets(B, T, offsets)
    cu_seqlens = _cu_seqlens(offsets, device)
    chunk_indices, chunk_base = _chunk_tables(offsets, BT, device)
    num_chunks, N = len(chunk_indices), len(offsets) - 1
    GATE = gate_mode(g)
    use_beta = beta is not None
    q, k, v, do = (x.contiguous() for x in (q, k, v, do))
    f32 = dict(dtype=torch.float32, device=device)
    precision = dot_precision(q)
    low = low_precision_products(q)
    tiling = STATE_BACKWARD[GATE, use_beta]
    BK, BV = _sequential_value_tile(K, V, tiling.elements, N * H, NARROW_BACKWARD_FILL, device)
    kept = dict(dtype=q.dtype, device=device) if low and KEEP_16BIT else f32
    dstates = torch.empty(num_chunks, H, K, V, **kept)
    dR = torch.empty(B * T, H, V, **kept) if use_beta else None
    dv = torch.empty_like(v)
    dinitial = torch.empty(N, H, K, V, **f32) if initial_state is not None else None
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dg = torch.empty_like(g) if GATE else None
    dbeta = torch.empty_like(beta) if use_beta else None
    # With a per-channel decay the first kernel leaves its parts in float32 for the second.
    channel = GATE == 2
    Pqk = torch.empty(B * T, H, BT, **f32) if channel else None
    Pkk = torch.empty(B * T, H, BT, **f32) if channel and use_beta else None
    dq_part, dk_part, dG_part = (torch.empty(B * T, H, K, **f32) if channel else None for _ in range(3))

    def reverse_pass(bounds, first_chunks, leaving, entering, stride):
        """The reverse pass over the rows `bounds` names (cu_seqlens at stride 1, a
        segment's `[N, 2]` table at 2) from the gradient `leaving` of the state they end
        with (None: zeros), storing the gradient of the state they start from in
        `entering` (None: not stored)."""
        _state_bwd_kernel[(triton.cdiv(V, BV), N * H)](
            q, k, saved.qd, saved.kd, saved.kg, saved.G, beta, saved.M, saved.Aqk, do, dstates, dR, dv,
            leaving, entering, first_chunks, bounds, scale, T,
            H=H, K=K, V=V, GATE=GATE, USE_BETA=use_beta, USE_DFINAL=leaving is not None,
            STORE_DINITIAL=entering is not None, LOW=low, DOT_PRECISION=precision,
            BT=BT, BK=BK, BV=BV, SEQ_STRIDE=stride,
            # `[BT, K]` tiles of 256 columns: one stage keeps them in shared memory.
            num_warps=tiling.warps, num_stages=tiling.stages if K <= 128 else 1,
        )

    def chunk_grads(chunks):
        """dq, dk, dg, dβ of the chunks `chunks` names, once the reverse pass has stored
        their states' gradients."""
        _chunk_bwd_kernel[(len(chunks), H)](
            q, k, v, saved.G, beta, saved.Aqk, saved.Akk, saved.states, saved.v_new, do, dstates, dR,
            dq, dk, dg, dbeta, Pqk, Pkk, dq_part, dk_part, dG_part, chunks, chunk_base, cu_seqlens, scale, T,
            H=H, K=K, V=V, GATE=GATE, USE_BETA=use_beta, LOW=low,
            DOT_PRECISION=precision, BT=BT, BK=min(BWD_BK, triton.next_power_of_2(K)),
            BV=min(BWD_BV, triton.next_power_of_2(V)), num_warps=BWD_WARPS, num_stages=BWD_STAGES,
        )
        if channel and CHANNEL_BACKWARD == "tree":
            BKC = min(CHANNEL_BWD_TREE_BK, triton.next_power_of_2(K))
            NK = triton.cdiv(K, BKC)
            adjacent = CHANNEL_BWD_TREE_SLICES_ADJACENT
            _channel_bwd_tree_kernel[(len(chunks) * NK, H) if adjacent else (len(chunks), H, NK)](
                q, k, saved.G, Pqk, Pkk, dq_part, dk_part, dG_part, dq, dk, dg, chunks,
                cu_seqlens, T, H=H, K=K, USE_BETA=use_beta,
                PRECISION=CHANNEL_SCORE_PRECISION if low else "ieee", BT=BT,
                LEVELS=BT.bit_length() - 1, LOG_BC=min(CHANNEL_BWD_TREE_LEAF, BT).bit_length() - 1, BK=BKC,
                NK=NK, ADJACENT_SLICES=adjacent, SPAN_LIMIT=_span_limit(),
                num_warps=CHANNEL_BWD_TREE_WARPS[use_beta],
                num_stages=CHANNEL_BWD_TREE_STAGES,
            )
        elif channel:
            BKC = min(SCORE_BK, triton.next_power_of_2(K))
            _channel_bwd_kernel[(len(chunks), H, triton.cdiv(K, BKC))](
                q, k, saved.G, Pqk, Pkk, dq_part, dk_part, dG_part, dq, dk, dg, chunks,
                cu_seqlens, T, H=H, K=K, USE_BETA=use_beta, DOT_PRECISION=precision, BT=BT, BC=SUBCHUNK,
                BK=BKC,
            )

    dfinal = None if dfinal is None else dfinal.contiguous()
    segments = _pipeline_segments(PIPELINE_BACKWARD, offsets, BT, N * H, device)
    if segments is None:
        reverse_pass(cu_seqlens, chunk_base, dfinal, dinitial, 1)
        chunk_grads(chunk_indices)
    else:
        pipelined_backward(segments, reverse_pass, chunk_grads, dfinal, dinitial, (N, H, K, V), device)
    return dq, dk, dv, dg, dbeta, dinitial


def recurrent_forward(q, k, v, g, beta, scale, initial_state, output_final_state, offsets,
                      final_out=None):
    """Token by token in one launch. `final_out`, when given (it may be the initial
    state's own tensor), receives the final state in place. Kept lean: it is the whole
    host cost of a decoding step."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    device = q.device
    if offsets is None:
        cu_seqlens, N = _batch_cu_seqlens(B, T, device), B
    else:
        cu_seqlens, N = _cu_seqlens(tuple(offsets), device), len(offsets) - 1
    BK = host.next_power_of_2(K)
    BV = min(host.next_power_of_2(V), max(16, RECURRENT_ELEMENTS // BK))
    final = final_out
    if final is None and output_final_state:
        final = torch.empty(N, H, K, V, dtype=torch.float32, device=device)
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=device)
    _recurrent_kernel[(host.cdiv(V, BV), N * H)](
        q.contiguous(), k.contiguous(), v.contiguous(),
        None if g is None else g.contiguous(), None if beta is None else beta.contiguous(),
        o, initial_state, final, cu_seqlens, scale, T, H=H, K=K, V=V, GATE=gate_mode(g),
        USE_BETA=beta is not None, USE_INITIAL=initial_state is not None,
        STORE_FINAL=final is not None, BK=BK, BV=BV, num_warps=RECURRENT_WARPS,
    )
    return o, final
