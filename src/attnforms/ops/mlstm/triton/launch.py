"""Launchers of the mLSTM kernels: allocate, pick tiles, build grids, call.

Every launcher takes time-major tensors (`[B, T, H, D]`, or `[1, T, H, D]` packed with
`offsets`); states are `[N, H, K, V]`, `[N, H, K]`, `[N, H]` float32.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton

from ....core.constants import MLSTM_EPS
from ....kernels import host
from ....kernels.occupancy import narrowed_value_tile, too_few_to_fill
from ....kernels.precision import dot_precision
from ....kernels.row_dot import row_dot
from ....kernels.sequences import chunk_tables as _chunk_tables, cu_seqlens_tensor as _cu_seqlens
from ....kernels.sequences import sequence_offsets
from .chunk_bwd import _dkv_kernel, _dq_kernel, _gate_bwd_kernel, _state_bwd_kernel
from .chunk_fwd import _gate_kernel, _output_kernel, _state_kernel
from .chunk_fwd_fused import _output_kernel as _tiled_output_kernel, _state_output_kernel
from .recurrent_fwd import _recurrent_kernel
from .stabiliser_grad import add_stabiliser_grad

# Level-1 chunk (tokens per stored state) when the caller gives none: TFLA's optimum on
# Hopper is 128 to 256 (research notes §4e); swept by scripts/device_mlstm_check.py.
CHUNK = 128
# The exp gate's default chunk: 64 measured faster on an H100 at S1 (fwd 2.57 / fwd+bwd
# 7.30 ms, against 2.90 / 8.03 at 128 and 3.29 / 9.21 at 256); the sigmoid gate's best
# stayed 128 (2.33 / 7.09, against 2.81 / 7.17 at 64). scripts/device_mlstm_check.py
# --sections sweep, bench/results/dev/2026-12-06-h100-mlstm-*.
CHUNK_EXP = 64
# (Where the restructured forward splits, chunk 128 was slower: exp S2 / S3 forward 2.80 /
# 2.04 ms against 2.18 / 1.75 at 64, H100, session 16, bench/NOTES-mlstm.md.)


def default_chunk(stabilise: bool) -> int:
    """The level-1 chunk when the caller gives none (stabilise: the exp input gate; the
    sigmoid gate's restructured forward takes the exp gate's chunk, one token tile, for
    its fused pass)."""
    return CHUNK_EXP if stabilise or SIGMOID_FORWARD == "restructured" else CHUNK


CHUNK_SIZES = (16, 32, 64, 128, 256)
# Level-2 token tile inside a chunk: query and key tiles of the output and backward
# kernels, and the write tiles of the state pass. Halved for heads wider than 128.
TILE = 64
# `[K, BV]` float32 slice of a sequential state pass held in registers.
STATE_ELEMENTS = 128 * 64
# The backward's reverse pass narrows that slice until it runs at least STATE_BWD_FILL
# programs per multiprocessor (`narrowed_value_tile`; 0: never). At S2 / S3 (16 / 32
# sequences·heads) it runs 32 / 64 programs of `[128, 64]` on 132 multiprocessors; the
# gated delta rule's reverse pass was faster narrowed from 64 programs (S2) and slower
# from 128 (S3; its NARROW_BACKWARD_FILL, session 16). At 0.5 (H100, session 17,
# device_pending.sh 12) the exact-gradient forward + backward took S2 9.07 -> 8.16 ms,
# S3 6.91 -> 6.64 (exp gate; sigmoid 8.87 -> 7.92, 6.57 -> 6.17).
STATE_BWD_FILL = 0.5
STATE_WARPS = 8
# Value tile of the output kernel; key / value sub-tiles of the backward's state parts.
OUTPUT_BV = 64
# Key tile of the dk / dv kernel (its two float32 accumulators are the register bound).
DKV_TILE = 32
SUB = 64
OUTPUT_WARPS, OUTPUT_STAGES = 8, 2
# Warps of the dq and dk / dv kernels. At 4 (sm_90: 251 / 255 registers, no spills, two
# programs per multiprocessor against one at 8) the S1 forward + backward took 5.96 ->
# 5.16 ms (exp; sigmoid 5.18 -> 4.37), S3 6.91 -> 6.10 (H100, session 17,
# device_pending.sh 12). Heads wider than 128 keep 8: not timed, and their tiles differ.
BWD_WARPS, WIDE_BWD_WARPS, BWD_STAGES = 4, 8, 1
STATE_STAGES = 1


# Round the gate-weighted scores to the input precision before their products with
# values / keys / queries (bf16 tensor cores, as FlashAttention does). Off: those
# products run in tf32, which keeps bf16 results within 2x the reference's own error
# (bf16 rounding of P measured up to ~2x over it, emulated on the CPU). On an H100
# (session 17, device_pending.sh 12) it put df at 1.4-2.2x its bound (exp gate at every
# checked shape) for 0.2 ms at S1.
HALF_PRECISION_P = False
# The state pass's products for 16-bit inputs on the GPU: "split16" (the weighted keys
# as two 16-bit halves times the exact 16-bit values: two products at twice tf32's
# rate) or "tf32x3" (three tf32 products of float32 operands). split16 passed every
# GPU check and took the S1 exp-gate forward from 2.57 to 2.32 ms, f+b 7.30 -> 7.06
# (H100, bench/NOTES-mlstm.md, session 6). The interpreter always takes float32.
STATE_PRODUCT = "split16"
# The restructured exp forward's output products for bf16 inputs on the GPU: "split16"
# (the float32 state C and the gate-weighted scores P as two bf16 halves each, about 16
# bits) or "bf16" (each rounded to bf16, one product each, as the simple-GLA forward
# does). Only the output sees them (the state update keeps STATE_PRODUCT; the backward
# recomputes P): the GPU checks put the output's error near 2e-5 against a bound near
# 0.16, so bf16 rounding fits the noise rule many times over. But on an H100 (session
# 14) "bf16" failed one check, the initial state's m gradient at B 2, T 256 (0.16
# against a bound of 0.099), and gained little: S1 forward 1.54 ms against 1.66.
# "bf16 inference": "bf16" where no backward follows (the output alone is checked
# there; the training forward's float32 output feeds the backward's row dot, which the
# failing check reads) and "split16" otherwise. TFLA's output pass rounds C and the
# scores to bf16 (one product each); ours at S1 took 0.91 ms of the split form's 1.35
# against TFLA's whole forward's 0.97 (session 16). "bf16 inference" passed every GPU
# check, the no_grad forward's included (output at 0.20-0.46 of the bound, final C
# 0.23-0.46; part 11), and took the inference forward at S1 1.29 -> 1.18 ms (exp),
# 0.96 -> 0.85 (sigmoid), S3 1.75 -> 1.57, 1.55 -> 1.33 (H100, session 17, part 12).
OUTPUT_PRODUCTS = "bf16 inference"
# mLSTMsig (the sigmoid input gate) through the gated delta rule family's scalar-gate
# kernels (sigmoid_as_gla.py) instead of the mLSTM kernels. Off: first timed slower
# (S1 2.48 / 8.90 ms against 2.06 / 6.91, session 8; padded to 192 columns, 1.83 / 7.72
# against 2.05 / 6.51, session 10), and in bf16 its final state misses the noise rule
# (σ(i) ⊙ k enters the kernels rounded to bf16: error 1.3e-2 against a bound of 8e-5,
# session 11, a strict-xfail test), so it needs σ(i) as a float32 write weight inside
# the kernels before it can serve.
SIGMOID_VIA_GLA = False
# The exp gate's forward: "current" (chunk_fwd.py: a state pass, then an output kernel
# per value tile and query tile) or "restructured" (chunk_fwd_fused.py: one pass per
# sequence·head and value tile forming the outputs from the state in registers, as the
# simple-GLA forward does; split into a state pass and a tiled output pass for few
# sequences·heads or chunks longer than a tile). Restructured and fused at S1 on an H100
# (session 10, every bf16 check passing): forward 1.65 ms against 2.30, forward +
# backward about 5.95 against 6.63 (bench/NOTES-mlstm.md).
EXP_FORWARD = "restructured"
# The sigmoid gate's forward: "current" (chunk_fwd.py) or "restructured" (the fused pass
# of chunk_fwd_fused.py with every m at 0, where the chunk is one token tile and the
# exp gate would run fused; chunk_fwd.py elsewhere; its default chunk becomes CHUNK_EXP).
# H100, session 14, S1, every bf16 check passing: forward 1.24 ms against 2.08, forward +
# backward 5.21 against 6.39 (bench/results/dev/2026-12-07-h100-s14-mlstm-*).
SIGMOID_FORWARD = "restructured"
# Whether the sigmoid gate takes the split form where the exp gate would (S2): the same
# two kernels without the stabiliser (else chunk_fwd.py there). On since session 15: on
# an H100 every bf16 check passes and the S2 forward takes 2.51 ms against 3.67
# (forward + backward 8.85 against 10.37); at S3, where the rule keeps the fused pass,
# the split form was slower, 1.88 against 1.54 (device_pending.sh part 2,
# bench/results/dev/2026-12-07-h100-s15/part2).
SIGMOID_SPLIT = True
# The restructured forward's split (`_split_forward`): "always" (a state pass, then the
# tiled output pass), "auto" (split when there are fewer than one sequence·head per
# SPLIT_PER_MULTIPROCESSOR[gate] multiprocessors, the gated delta rule's rule), "never"
# (fused wherever the chunk is one token tile) or "current" (as "auto", but the current
# kernels run where it would split).
# "auto" since session 14, when the split form's illegal memory access (sessions 8 and
# 10) was traced to SPLIT_STATE_N_PRODUCT: at S2 on an H100 the split forward takes 2.16
# ms against the current kernels' 4.34 (bench/results/2026-12-07-h100-s14-*).
EXP_SPLIT = "auto"
# H100 (132 multiprocessors), session 15, forward ms split against fused: exp gate S3
# (32 sequences·heads) 1.75 against 2.05 (forward + backward 7.00 against 7.71), S1
# (128) 1.34 against 1.28; sigmoid gate S3 1.80 against 1.55. So S2 (16) splits for
# both gates, S3 for the exp gate only (bench/results/dev/2026-12-07-h100-s15/part6;
# the bench then: S3 exp forward 1.750 ms, forward + backward 6.88,
# bench/results/2026-12-07-h100-s15-mlstm-s3-exp-split.*).
SPLIT_PER_MULTIPROCESSOR = {"exp": 4, "sigmoid": 6}
# Its fused pass: `[K, BV]` float32 state slice, warps, stages, and keys per step of the
# in-chunk scores (`[BT, FUSED_SCORE_COLUMNS]` score / gate tiles). One warpgroup: with 8
# warps every 64-row product is duplicated across both (and the products' layouts
# differ, converted through shared memory). sm_90, K = V = 128, chunk 64 (compile_sm90.py):
# (128·32, 4, 1, 32) 300 bytes of spills, (128·32, 8, 1) 512, (128·64, 8, 2) 1652,
# against 2464 before the kernel's register work (README, restructured forward).
FUSED_ELEMENTS, FUSED_WARPS, FUSED_STAGES = 128 * 32, 4, 1
FUSED_SCORE_COLUMNS = 32
# The split mode's state-only pass (same kernel without WRITE_O; sm_90, chunk 64: 255
# registers, 396 bytes of spills). 4 warps: S1 forward 1.68 ms against 1.82 at 8 (H100,
# session 8).
SPLIT_STATE_ELEMENTS, SPLIT_STATE_WARPS, SPLIT_STATE_STAGES = 128 * 64, 4, 2
# Its n update as a 16-bit product ([BK, BS] @ [BS, 16], the weights' halves in one
# column) rather than an elementwise float32 sum (the fused pass's choice). True faults
# with Triton 3.6 on an H100 (session 14, scripts/device_split_fault.sh: compute-sanitizer
# shows an out-of-bounds shared-memory read by that product; with False the same run is
# clean and every check passes), presumably a compiler fault: kept to retest on newer
# Triton.
SPLIT_STATE_N_PRODUCT = False
# Its output pass (split): value tile (V <= 128 in one, so each score tile is built
# once), key columns per step of the entering state's read, warps, stages.
SPLIT_OUTPUT_BV, SPLIT_OUTPUT_BK, SPLIT_OUTPUT_WARPS, SPLIT_OUTPUT_STAGES = 128, 64, 8, 2
# The recurrent (decoding) kernel's `[K, BV]` float32 slice of C per program and its
# warps. At K 128, B 256 on an H100 (`device_mlstm_check.py --sections decode --set
# RECURRENT_ELEMENTS=...`, session 10, exp gate): value tile 64 at 4 warps 187.7 µs,
# 32 at 4 (the old choice) 214.3, 16 at 2 201.9, 64 at 8 272.1; B 64 within noise.
RECURRENT_ELEMENTS, RECURRENT_WARPS = 128 * 64, 4
# Compile the GPU code path (half-precision dot operands) for CPU tensors too: set by
# scripts/compile_sm90.py, which compiles for sm_90 without a GPU.
NATIVE_ON_CPU = False


def _native(device: torch.device) -> bool:
    """Half-precision `tl.dot` operands on the GPU; float32 under the interpreter."""
    return device.type == "cuda" or NATIVE_ON_CPU


def _state_split16(v: torch.Tensor) -> bool:
    """Whether the state pass takes STATE_PRODUCT's split16 products for values `v`:
    16-bit inputs on the GPU path."""
    return STATE_PRODUCT == "split16" and _native(v.device) and v.dtype in (torch.bfloat16, torch.float16)


def state_precision(x: torch.Tensor) -> str:
    """The state pass's float32 product (without split16): "ieee" for float32 inputs;
    for 16-bit ones "tf32x3" (three tf32 products, about float32 accuracy): with one
    tf32 product the float32 state missed the noise rule on the H200 (final C 40x over
    its bound, bench/results/dev/*-mlstm-*)."""
    return "ieee" if x.dtype == torch.float32 else "tf32x3"


class Tiles(NamedTuple):
    BT: int   # level-1 chunk
    BS: int   # level-2 token tile
    BK: int   # full key dim (padded to a power of two)
    BV: int   # full value dim
    state_BV: int
    out_BV: int
    bwd_warps: int  # of the dq and dk / dv kernels


def tiles(K: int, V: int, chunk_size: int) -> Tiles:
    BK = max(16, triton.next_power_of_2(K))
    BV = max(16, triton.next_power_of_2(V))
    wide = max(BK, BV) > 128
    BS = min(chunk_size, TILE // 2 if wide else TILE)
    return Tiles(chunk_size, BS, BK, BV, max(16, min(BV, STATE_ELEMENTS // BK)), min(BV, OUTPUT_BV),
                 WIDE_BWD_WARPS if wide else BWD_WARPS)


def _state_warps(BK: int, BV: int) -> int:
    """Warps of a sequential state pass over a `[BK, BV]` float32 slice: STATE_WARPS, or
    8 for slices larger than `[128, 64]`."""
    return STATE_WARPS if BK * BV <= 8192 else 8


class Saved(NamedTuple):
    """Forward intermediates the backward reads (float32). Rows are packed tokens.

    b, li, m_row, den_row: `[rows, H]` in-chunk cumulative log forget gate, log input gate,
    row stabiliser, denominator. states `[chunks, H, K, V]`, states_n `[chunks, H, K]`:
    each chunk's entering state; chunk_m `[chunks, H, 2]`: its (m_in, m_out).
    final: the final (C, n, m).
    """

    b: torch.Tensor
    li: torch.Tensor
    m_row: torch.Tensor
    den_row: torch.Tensor
    states: torch.Tensor
    states_n: torch.Tensor
    chunk_m: torch.Tensor
    final: tuple


def _prepare_chunks(q, k, v, i, f, stabilise, offsets, chunk_size):
    """What both exp-gate forwards start from: the sizes (B, T, H, K, V, rows), the tiles,
    the sequence tables (cu_seqlens, chunk_indices, chunk_base, their counts), contiguous
    q, k, v, and the gate kernel's b, li `[rows, H]` float32."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    rows, device = B * T, q.device
    t = tiles(K, V, chunk_size)
    offsets = sequence_offsets(B, T, offsets)
    cu_seqlens = _cu_seqlens(offsets, device)
    chunk_indices, chunk_base = _chunk_tables(offsets, t.BT, device)
    num_chunks, N = len(chunk_indices), len(offsets) - 1
    q, k, v, i, f = (x.contiguous() for x in (q, k, v, i, f))
    b, li = (torch.empty(rows, H, dtype=torch.float32, device=device) for _ in range(2))
    _gate_kernel[(num_chunks, H)](i, f, b, li, chunk_indices, cu_seqlens, H=H, STABILISE=stabilise, BT=t.BT)
    return B, T, H, K, V, rows, t, cu_seqlens, chunk_indices, chunk_base, num_chunks, N, q, k, v, b, li


def chunk_forward(q, k, v, i, f, scale, stabilise, initial, store_final, offsets, chunk_size,
                  out_dtype=None, save=True):
    """Returns the output `[B, T, H, V]` (in `out_dtype`, default v's), the final state
    (C, n, m) or None, and `Saved` (with `save` False the restructured exp forward may
    leave its per-chunk and per-row fields None: only a backward reads them)."""
    split = _restructured_split(q, v, offsets, chunk_size, stabilise)
    if split is not None:
        return _restructured_forward(q, k, v, i, f, scale, stabilise, initial, store_final, offsets, chunk_size,
                                     out_dtype, save, split)
    (B, T, H, K, V, rows, t, cu_seqlens, chunk_indices, chunk_base, num_chunks, N, q, k, v, b,
     li) = _prepare_chunks(q, k, v, i, f, stabilise, offsets, chunk_size)
    device, f32 = q.device, dict(dtype=torch.float32, device=q.device)
    precision = dot_precision(q)
    states = torch.empty(num_chunks, H, K, V, **f32)
    states_n = torch.empty(num_chunks, H, K, **f32)
    chunk_m = torch.empty(num_chunks, H, 2, **f32)
    final = (torch.empty(N, H, K, V, **f32), torch.empty(N, H, K, **f32), torch.empty(N, H, **f32)) if store_final else (None,) * 3
    C0, n0, m0 = initial if initial is not None else (None,) * 3
    _state_kernel[(triton.cdiv(V, t.state_BV), N * H)](
        k, v, b, li, states, states_n, chunk_m, C0, n0, m0, *final, chunk_base, cu_seqlens,
        H=H, K=K, V=V, STABILISE=stabilise, USE_INITIAL=initial is not None, STORE_FINAL=store_final,
        SPLIT16=_state_split16(v),
        DOT_PRECISION=precision, STATE_PRECISION=state_precision(q),
        BT=t.BT, BS=t.BS, BK=t.BK, BV=t.state_BV, num_warps=_state_warps(t.BK, t.state_BV),
        num_stages=STATE_STAGES,
    )
    o = torch.empty(B, T, H, V, dtype=out_dtype or v.dtype, device=device)
    m_row, den_row = torch.empty(rows, H, **f32), torch.empty(rows, H, **f32)
    _output_kernel[(triton.cdiv(V, t.out_BV), num_chunks * (t.BT // t.BS), H)](
        q, k, v, b, li, states, states_n, chunk_m, o, m_row, den_row, chunk_indices, cu_seqlens,
        scale, H=H, K=K, V=V, STABILISE=stabilise, NATIVE=_native(device), HALF_P=HALF_PRECISION_P,
        DOT_PRECISION=precision, EPS=MLSTM_EPS, BT=t.BT, BS=t.BS, BK=t.BK, BV=t.out_BV, num_warps=OUTPUT_WARPS,
        num_stages=OUTPUT_STAGES,
    )
    saved = Saved(b, li, m_row, den_row, states, states_n, chunk_m, final)
    return o, (final if store_final else None), saved


def _split_forward(sequences_heads: int, whole_chunk_tiles: bool, stabilise: bool, device) -> bool:
    """Whether the restructured forward writes the outputs in a parallel pass of its own
    after a state-only pass: for chunks longer than one token tile (the fused pass holds
    whole-chunk tiles), or for few sequences·heads, where the sequential chain is the
    critical path and the output's products should not lengthen it."""
    if not whole_chunk_tiles or EXP_SPLIT == "always":
        return True
    if EXP_SPLIT == "never":
        return False
    return too_few_to_fill(sequences_heads, SPLIT_PER_MULTIPROCESSOR["exp" if stabilise else "sigmoid"], device)


def _restructured_split(q, v, offsets, chunk_size, stabilise: bool) -> bool | None:
    """None where the forward stays on chunk_fwd.py (EXP_FORWARD / SIGMOID_FORWARD
    "current", or where chunk_fwd_fused.py would split and EXP_SPLIT is "current" or the
    gate is the sigmoid without SIGMOID_SPLIT); otherwise whether chunk_fwd_fused.py
    splits (`_split_forward`), decided here once."""
    for name, value in (("EXP_FORWARD", EXP_FORWARD), ("SIGMOID_FORWARD", SIGMOID_FORWARD)):
        if value not in ("current", "restructured"):
            raise ValueError(f"{name}: 'current' or 'restructured', got {value!r}")
    if EXP_SPLIT not in ("always", "auto", "never", "current"):
        raise ValueError(f"EXP_SPLIT: 'always', 'auto', 'never' or 'current', got {EXP_SPLIT!r}")
    if (EXP_FORWARD if stabilise else SIGMOID_FORWARD) == "current":
        return None
    B, T, H, K = q.shape
    t = tiles(K, v.shape[-1], chunk_size)
    sequences = B if offsets is None else len(offsets) - 1
    split = _split_forward(sequences * H, t.BT == t.BS, stabilise, q.device)
    return None if split and (EXP_SPLIT == "current" or not (stabilise or SIGMOID_SPLIT)) else split


def _value_tile(BK: int, V: int, BV_all: int, elements: int, sequences_heads: int, device) -> int:
    """The value tile of a sequential pass: a `[BK, BV]` float32 slice of at most
    `elements`; for a state-only pass (`sequences_heads` > 0) narrowed to fill the GPU
    (`narrowed_value_tile`)."""
    BV = max(16, min(BV_all, elements // BK))
    return narrowed_value_tile(BV, V, sequences_heads, device) if sequences_heads else BV


def _restructured_forward(q, k, v, i, f, scale, stabilise, initial, store_final, offsets, chunk_size,
                          out_dtype, save, split):
    """The forward on chunk_fwd_fused.py, split or not (`_restructured_split`); returns
    what `chunk_forward` does."""
    (B, T, H, K, V, rows, t, cu_seqlens, chunk_indices, chunk_base, num_chunks, N, q, k, v, b,
     li) = _prepare_chunks(q, k, v, i, f, stabilise, offsets, chunk_size)
    device, f32 = q.device, dict(dtype=torch.float32, device=q.device)
    precision = dot_precision(q)
    native = _native(device)
    store_states = save or split
    states = torch.empty(num_chunks, H, K, V, **f32) if store_states else None
    states_n = torch.empty(num_chunks, H, K, **f32) if store_states else None
    chunk_m = torch.empty(num_chunks, H, 2, **f32) if store_states else None
    m_row = torch.empty(rows, H, **f32) if save else None
    den_row = torch.empty(rows, H, **f32) if save else None
    final = (torch.empty(N, H, K, V, **f32), torch.empty(N, H, K, **f32), torch.empty(N, H, **f32)) if store_final else (None,) * 3
    C0, n0, m0 = initial if initial is not None else (None,) * 3
    o = torch.empty(B, T, H, V, dtype=out_dtype or v.dtype, device=device)
    # bf16 halves of the computed operands (fp16's range could not hold C's high half),
    # or (OUTPUT_PRODUCTS "bf16") the output's operands C and P rounded to bf16.
    if OUTPUT_PRODUCTS not in ("split16", "bf16", "bf16 inference"):
        raise ValueError(f"OUTPUT_PRODUCTS: 'split16', 'bf16' or 'bf16 inference', got {OUTPUT_PRODUCTS!r}")
    split16 = native and v.dtype == torch.bfloat16
    round16 = split16 and (OUTPUT_PRODUCTS == "bf16" or (OUTPUT_PRODUCTS == "bf16 inference" and not save))
    half_p = HALF_PRECISION_P or round16
    elements, warps, stages = ((SPLIT_STATE_ELEMENTS, SPLIT_STATE_WARPS, SPLIT_STATE_STAGES) if split
                               else (FUSED_ELEMENTS, FUSED_WARPS, FUSED_STAGES))
    BV = _value_tile(t.BK, V, t.BV, elements, N * H if split else 0, device)
    _state_output_kernel[(triton.cdiv(V, BV), N * H)](
        q, k, v, b, li, o, m_row, den_row, states, states_n, chunk_m, C0, n0, m0, *final, chunk_base,
        cu_seqlens, scale, H=H, K=K, V=V, STABILISE=stabilise, USE_INITIAL=initial is not None,
        STORE_FINAL=store_final, SAVE=save, WRITE_O=not split, NATIVE=native, SPLIT16=split16,
        STATE_SPLIT16=_state_split16(v), N_SPLIT16=_state_split16(v) and SPLIT_STATE_N_PRODUCT,
        HALF_P=half_p, ROUND_C=round16, DOT_PRECISION=precision, STATE_PRECISION=state_precision(q), EPS=MLSTM_EPS,
        BT=t.BT, BS=t.BS, BK=t.BK, BV=BV, BC=min(t.BT, FUSED_SCORE_COLUMNS), num_warps=warps,
        num_stages=stages,
    )
    if split:
        BVO = min(t.BV, SPLIT_OUTPUT_BV)
        _tiled_output_kernel[(triton.cdiv(V, BVO), num_chunks * (t.BT // t.BS), H)](
            q, k, v, b, li, states, states_n, chunk_m, o, m_row, den_row, chunk_indices, cu_seqlens, scale,
            H=H, K=K, V=V, STABILISE=stabilise, SAVE=save, NATIVE=native, SPLIT16=split16, HALF_P=half_p,
            ROUND_C=round16,
            DOT_PRECISION=precision, EPS=MLSTM_EPS, BT=t.BT, BS=t.BS, BK=t.BK,
            BKS=min(t.BK, SPLIT_OUTPUT_BK), BV=BVO, num_warps=SPLIT_OUTPUT_WARPS,
            num_stages=SPLIT_OUTPUT_STAGES,
        )
    saved = Saved(b, li, m_row, den_row, states, states_n, chunk_m, final)
    return o, (final if store_final else None), saved


def row_coefficients(o32, do, den_row, m_row, held=False):
    """ρ (the normaliser's reciprocal), dden (the gradient of the denominator) and the
    stabiliser gradient −ε ρ (do·h), each `[rows, H]`, from the float32 output; held
    (ρ a constant): dden zero and no stabiliser gradient (None), o32 unread."""
    from_den = 1.0 / (den_row.abs() + MLSTM_EPS)
    from_floor = torch.sigmoid(m_row + math.log(MLSTM_EPS)) / MLSTM_EPS
    rho = torch.minimum(from_den, from_floor)
    if held:
        return rho.contiguous(), torch.zeros_like(rho), None
    delta = row_dot(do, o32, heads_first=False)
    dden = torch.where(from_den < from_floor, -delta * rho * torch.sign(den_row), 0.0)
    return rho.contiguous(), dden.contiguous(), -MLSTM_EPS * rho * delta


def chunk_backward(q, k, v, i, f, scale, stabilise, initial, saved: Saved, o32, do, dfinal,
                   offsets, chunk_size, held=False):
    """Gradients of q, k, v, i, f and the initial (C, n, m) (None without one).
    dfinal: the final state's gradients (dC, dn, dm), each possibly None. held: the
    normaliser's reciprocal ρ and every m are constants (normaliser_gradient "held"):
    no gradient through the denominator (dden 0) nor through the stabiliser, so the
    final m's own gradient goes nowhere."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    rows, device = B * T, q.device
    t = tiles(K, V, chunk_size)
    offsets = sequence_offsets(B, T, offsets)
    cu_seqlens = _cu_seqlens(offsets, device)
    chunk_indices, chunk_base = _chunk_tables(offsets, t.BT, device)
    num_chunks, N = len(chunk_indices), len(offsets) - 1
    q, k, v, do = (x.contiguous() for x in (q, k, v, do))
    f32 = dict(dtype=torch.float32, device=device)
    precision = dot_precision(q)
    rho, dden, dm_row = row_coefficients(o32, do, saved.den_row, saved.m_row, held)
    dC_f, dn_f, dm_f = dfinal
    use_dfinal = dC_f is not None or dn_f is not None
    if use_dfinal:
        dC_f = torch.zeros(N, H, K, V, **f32) if dC_f is None else dC_f.float().contiguous()
        dn_f = torch.zeros(N, H, K, **f32) if dn_f is None else dn_f.float().contiguous()
    native = _native(device)
    dstates = torch.empty(num_chunks, H, K, V, **f32)
    dstates_n = torch.empty(num_chunks, H, K, **f32)
    state_BV = narrowed_value_tile(t.state_BV, V, N * H, device, STATE_BWD_FILL)
    NV = triton.cdiv(V, state_BV)
    dg_part = torch.empty(num_chunks, H, NV, **f32)
    dC0 = torch.empty(N, H, K, V, **f32) if initial is not None else None
    dn0 = torch.empty(N, H, K, **f32) if initial is not None else None
    C_f, n_f, m_f = saved.final
    _state_bwd_kernel[(NV, N * H)](
        q, do, saved.b, saved.m_row, rho, dden, saved.states, saved.states_n, saved.chunk_m,
        C_f, n_f, dC_f, dn_f, dstates, dstates_n, dg_part, dC0, dn0, chunk_base, cu_seqlens, scale,
        H=H, K=K, V=V, NV=NV, USE_DFINAL=use_dfinal, STORE_DINITIAL=initial is not None,
        DOT_PRECISION=precision,
        BT=t.BT, BS=t.BS, BK=t.BK, BV=state_BV, num_warps=_state_warps(t.BK, state_BV),
        num_stages=STATE_STAGES,
    )
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    xq, xk = torch.empty(rows, H, **f32), torch.empty(rows, H, **f32)
    grid = (num_chunks * (t.BT // t.BS), H)
    _dq_kernel[grid](
        q, k, v, do, saved.b, saved.li, saved.m_row, rho, dden, saved.states, saved.states_n,
        saved.chunk_m, dq, xq, chunk_indices, cu_seqlens, scale, H=H, K=K, V=V, NATIVE=native,
        HALF_P=HALF_PRECISION_P, DOT_PRECISION=precision, BT=t.BT, BS=t.BS, BK=t.BK, BV=t.BV,
        BVS=min(SUB, t.BV), num_warps=t.bwd_warps, num_stages=BWD_STAGES,
    )
    BSK = min(t.BS, DKV_TILE)
    _dkv_kernel[(num_chunks * (t.BT // BSK), H)](
        q, k, v, do, saved.b, saved.li, saved.m_row, rho, dden, saved.chunk_m, dstates, dstates_n,
        dk, dv, xk, chunk_indices, cu_seqlens, scale, H=H, K=K, V=V, NATIVE=native,
        HALF_P=HALF_PRECISION_P, DOT_PRECISION=precision, BT=t.BT, BS=t.BS, BSK=BSK, BK=t.BK, BV=t.BV,
        BKS=min(SUB, t.BK), BVS=min(SUB, t.BV), num_warps=t.bwd_warps,
        num_stages=BWD_STAGES,
    )
    dlf, dli = torch.empty(rows, H, **f32), torch.empty(rows, H, **f32)
    _gate_bwd_kernel[(num_chunks, H)](xq, xk, dg_part.sum(-1).contiguous(), dlf, dli, chunk_indices,
                                      cu_seqlens, H=H, BT=t.BT)
    dm0 = None
    if initial is not None:
        C0, n0, _ = initial
        dm0 = (dC0 * C0).sum((-1, -2)) + (dn0 * n0).sum(-1)
    if stabilise and not held:
        # The final state's m: its own gradient, less the rescaling of C and n it implies.
        if use_dfinal or dm_f is not None:
            mu = torch.zeros(N, H, **f32) if dm_f is None else dm_f.float().clone()
            if use_dfinal:
                mu -= (dC_f * C_f).sum((-1, -2)) + (dn_f * n_f).sum(-1)
            last = torch.tensor(offsets[1:], device=device) - 1
            dm_row[last] += mu
        dm_initial = add_stabiliser_grad(dm_row, saved.m_row, saved.li, cu_seqlens, dlf, dli,
                                         initial is not None)
        if initial is not None:
            dm0 = dm0 + dm_initial
    i_pre, f_pre = i.reshape(rows, H).float(), f.reshape(rows, H).float()
    df = (dlf * torch.sigmoid(-f_pre)).reshape(f.shape).to(f.dtype)
    di = (dli if stabilise else dli * torch.sigmoid(-i_pre)).reshape(i.shape).to(i.dtype)
    return dq, dk, dv, di, df, dC0, dn0, dm0


def recurrent_forward(q, k, v, i, f, scale, stabilise, initial, store_final, offsets):
    """Token by token in one launch; returns the output and the final (C, n, m) or None."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    device = q.device
    offsets = sequence_offsets(B, T, offsets)
    cu_seqlens = _cu_seqlens(offsets, device)
    N = len(offsets) - 1
    BK = max(16, host.next_power_of_2(K))
    BV = max(16, min(host.next_power_of_2(V), RECURRENT_ELEMENTS // BK))
    f32 = dict(dtype=torch.float32, device=device)
    final = (torch.empty(N, H, K, V, **f32), torch.empty(N, H, K, **f32), torch.empty(N, H, **f32)) if store_final else (None,) * 3
    C0, n0, m0 = initial if initial is not None else (None,) * 3
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=device)
    _recurrent_kernel[(host.cdiv(V, BV), N * H)](
        q.contiguous(), k.contiguous(), v.contiguous(), i.contiguous(), f.contiguous(), o,
        C0, n0, m0, *final, cu_seqlens, scale, H=H, K=K, V=V, STABILISE=stabilise,
        USE_INITIAL=initial is not None, STORE_FINAL=store_final, EPS=MLSTM_EPS, BK=BK, BV=BV,
        num_warps=RECURRENT_WARPS,
    )
    return o, (final if store_final else None)
