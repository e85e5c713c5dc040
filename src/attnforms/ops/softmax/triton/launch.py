"""Launchers of the softmax-attention kernels: tiles, grids, block-sparsity tables.

Every launcher takes contiguous time-major tensors (q `[B, T, H, DK]`, k `[B, S, G, DK]`,
v `[B, S, G, DV]`) and a `Plan` (what is masked and how), and returns outputs in q's
dtype plus per-row statistics `[H, B*T]` float32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

from ....kernels.precision import dot_precision
from . import modc

try:  # Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover
    TensorDescriptor = None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# Tiles on the H200 (sm_90), checked with scripts/compile_sm90.py (110 variants, shared
# memory within 227 KB, spills only in two score_mod variants at D = 128, report in
# bench/NOTES-softmax.md): (BLOCK_M, BLOCK_N, warps, stages) by padded head dim.
# D 128's forward at (64, 64, 4 warps, 3 stages) since session 8 (H100, S1, device ms,
# checks passing): causal 1.113 against 1.266 at (128, 64, 8 warps), window 1024 0.615
# against 0.741, ALiBi 1.238 against 1.351.
FWD_TILES = {64: (128, 64, 8, 3), 128: (64, 64, 4, 3), 256: (64, 32, 8, 2)}
# The backward's, measured on an H100 at B 8, T 4096, H 16, D 128 (causal; window and
# ALiBi agree; scripts/device_softmax_variants.py, bench/NOTES-softmax.md): dk/dv
# (queries 32, keys 64, 4 warps) 2.96 ms, against 12.4 at (32, 32, 8 warps), 3.24 at
# (32, 128, 8 warps), 3.44 at (16, 64); dq (queries 128, keys 64, 3 stages) 1.61 ms,
# against 1.93 at 2 stages and 4.02 at (64, 64). D 64 follows D 128 (compiled, not
# timed). dk/dv at 3 stages: causal 2.84 but ALiBi 3.37 against 2.99, kept at 2.
DKDV_TILES = {64: (32, 64, 4, 2), 128: (32, 64, 4, 2), 256: (32, 32, 8, 1)}
# dk/dv reads the q and dO tiles, the forward the k and v tiles, through tensor
# descriptors (TMA) where it can: no per-element addresses or masks in registers
# (dk/dv at (32, 64, 4 warps): 460 bytes of spills without, none with).
DKDV_TMA = True
DQ_TMA = True
FWD_TMA = True
# Compiled, only head dim 128 takes them: Triton 3.6's ptxas crashes (SIGSEGV) on the
# descriptor kernels at other head dims (dq at 64, dk/dv at 32, the forward at 256 and
# at 64 with a T5 bias; scripts/compile_sm90.py). The interpreter takes every power of two.
TMA_HEAD_DIMS = (128,)
DQ_TILES = {64: (128, 64, 8, 2), 128: (128, 64, 8, 3), 256: (16, 32, 4, 1)}
DECODE_TILES = {64: (64, 4, 3), 128: (64, 4, 3), 256: (32, 4, 2)}  # BLOCK_N, warps, stages
# Under the interpreter (tests on the CPU) small tiles keep tile counts realistic.
INTERPRET_TILE = 16
# Split-KV decoding: aim for this many programs, splits of at least this many keys.
DECODE_TARGET_PROGRAMS = 264
DECODE_MIN_SPLIT = 512


def tma_device(device: torch.device) -> bool:
    """A GPU with the tensor memory accelerator (Hopper or later)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def row_descriptors(x: torch.Tensor, block_rows: int):
    """A tensor descriptor over time-major `x [B, T, H, D]` seen as `[B·T, H·D]`, with
    `[block_rows, D]` boxes (one head's rows), or None where the tensor memory
    accelerator cannot take it: D not a power of two (the kernels' padded tile), rows
    or the base not 16-byte aligned, a GPU before Hopper, or (compiled) D not in
    TMA_HEAD_DIMS. The interpreter runs it.
    A box at a sequence's end reads the next sequence's rows; the kernels give them zero
    weight (so a non-finite value there would reach this sequence as NaN, as it would
    reach its own)."""
    if TensorDescriptor is None:
        return None
    D = x.shape[-1]
    rows, width = x.numel() // (x.shape[-2] * D), x.shape[-2] * D
    if D < 16 or D & (D - 1) or (D * x.element_size()) % 16 or x.data_ptr() % 16 or not x.is_contiguous():
        return None
    if not interpreting() and (not tma_device(x.device) or D not in TMA_HEAD_DIMS):
        return None
    return TensorDescriptor(x, shape=[rows, width], strides=[width, 1], block_shape=[block_rows, D])


def tile_descriptors(wanted: bool, block_rows: int, *tensors):
    """(descriptors, True) when `wanted` and every tensor takes one (`row_descriptors`),
    else (Nones, False): a kernel reads all its tiles one way."""
    descriptors = [row_descriptors(x, block_rows) for x in tensors] if wanted else [None]
    if all(d is not None for d in descriptors):
        return descriptors, True
    return [None] * len(tensors), False


def _bucket(d: int) -> int:
    return 64 if d <= 64 else 128 if d <= 128 else 256


def _pow2_divisor(block: int, tile: int) -> int:
    """The largest power of two <= tile dividing block (>= 16), or 0."""
    t = tile
    while t >= 16:
        if block % t == 0:
            return t
        t //= 2
    return 0


@dataclass
class Plan:
    """What one call computes, beyond q, k, v.

    qoff: int (S - T) or `[B]` int32 tensor of per-row query offsets (with a cache).
    kvpos: None or `[B, S]` int32 key positions (with a cache: -1 for empty slots).
    cu: None or `[N + 1]` int32 offsets (packed sequences, then B == 1), max_len their longest.
    """

    causal: bool
    window: int | None
    scale: float
    score_graph: object = None
    mask_graph: object = None
    sinks: torch.Tensor | None = None
    qoff: object = 0
    kvpos: torch.Tensor | None = None
    cu: torch.Tensor | None = None
    max_len: int = 0
    block_mask: object = None
    batch_offset: int = 0

    @property
    def module(self):
        return modc.kernels_for(self.score_graph, self.mask_graph)


def _common(plan: Plan, q, k, v):
    B, T, H, DK = q.shape
    S, G, DV = k.shape[1], k.shape[2], v.shape[-1]
    BDK = max(16, triton.next_power_of_2(DK))
    BDV = max(16, triton.next_power_of_2(DV))
    dummy = q
    qoff_tensor = plan.qoff if isinstance(plan.qoff, torch.Tensor) else dummy
    qoff_int = 0 if isinstance(plan.qoff, torch.Tensor) else int(plan.qoff)
    flags = dict(
        DK=DK, DV=DV, BDK=BDK, BDV=BDV, CAUSAL=plan.causal, WINDOW=plan.window is not None,
        SCORE=plan.score_graph is not None, MASK=plan.mask_graph is not None,
        VARLEN=plan.cu is not None, CACHE=plan.kvpos is not None, PREC=dot_precision(q),
    )
    args = dict(
        QOFF=qoff_tensor, KVPOS=plan.kvpos if plan.kvpos is not None else dummy,
        CU=plan.cu if plan.cu is not None else dummy,
        T=T, S=S, H=H, G=G, W=plan.window or 0, Q_OFF=qoff_int, scale=plan.scale,
        BOFF=plan.batch_offset,
    )
    return B, T, H, DK, S, G, DV, flags, args


def _tiles(table, plan: Plan, DK: int, DV: int):
    BM, BN, warps, stages = table[_bucket(max(DK, DV))]
    if interpreting():
        BM = BN = INTERPRET_TILE
    sub_q = sub_kv = 1
    bm = plan.block_mask
    if bm is not None:
        tm, tn = _pow2_divisor(bm.block_q, BM), _pow2_divisor(bm.block_kv, BN)
        if not tm or not tn:
            raise ValueError(
                f"block_mask: impl='triton' needs block sizes that are multiples of 16 (the kernel "
                f"tiles, powers of two, must divide them), got block_q={bm.block_q}, "
                f"block_kv={bm.block_kv}")
        BM, BN = tm, tn
        sub_q, sub_kv = bm.block_q // BM, bm.block_kv // BN
    return BM, BN, warps, stages, sub_q, sub_kv


def _sparse_args(plan: Plan, B: int, H: int, T: int, S: int, transposed: bool, dummy):
    bm = plan.block_mask
    if bm is None:
        return dict(TB=0, SB=0), (dummy,) * 4
    TB, SB = triton.cdiv(T, bm.block_q), triton.cdiv(S, bm.block_kv)
    if transposed:
        names = ("q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")
        shapes = ((B, H, SB), (B, H, SB, TB))
    else:
        names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
        shapes = ((B, H, TB), (B, H, TB, SB))
    tables = []
    for i, name in enumerate(names):
        x = getattr(bm, name)
        shape = shapes[i % 2]
        tables.append(x.to(torch.int32).expand(*shape).contiguous())
    return dict(TB=TB, SB=SB), tuple(tables)


def _interpreter_upcast(fn, cast_all: bool):
    """Triton's interpreter computes half-precision dots on raw bits: there, run the
    kernels on float32 copies and cast the tensors they return back (a CPU test path;
    on the GPU nothing changes)."""
    def run(q, k, v, *args, **kwargs):
        if not interpreting() or q.dtype == torch.float32:
            return fn(q, k, v, *args, **kwargs)
        dtype = q.dtype
        up = lambda x: x.float() if isinstance(x, torch.Tensor) and x.dtype == dtype else x  # noqa: E731
        out = fn(up(q), up(k), up(v), *map(up, args), **{n: up(x) for n, x in kwargs.items()})
        # forward / decode return (o, lse float32); backward returns (dq, dk, dv)
        return tuple(x.to(dtype) if cast_all or i == 0 else x for i, x in enumerate(out))
    return run


def forward(q, k, v, plan: Plan):
    """Flash forward. Returns (o `[B, T, H, DV]`, lse of the keys `[H, B*T]` float32,
    -inf for rows that see no key)."""
    mod = plan.module
    B, T, H, DK, S, G, DV, flags, args = _common(plan, q, k, v)
    BM, BN, warps, stages, sub_q, sub_kv = _tiles(FWD_TILES, plan, DK, DV)
    o = torch.empty(B, T, H, DV, dtype=q.dtype, device=q.device)
    lse = torch.empty(H, B * T, dtype=torch.float32, device=q.device)
    rows = plan.max_len if plan.cu is not None else T
    batches = plan.cu.numel() - 1 if plan.cu is not None else B
    keys = plan.max_len if plan.cu is not None else S
    sizes, (kvn, kvi, fkvn, fkvi) = _sparse_args(plan, batches, H, rows, keys, False, q)
    grid = (triton.cdiv(rows, BM), batches * H)
    (k_desc, v_desc), tma = tile_descriptors(FWD_TMA, BN, k, v)
    mod._fwd_kernel[grid](
        q, k, v, k_desc, v_desc, o, lse,
        plan.sinks if plan.sinks is not None else q, KVN=kvn, KVI=kvi, FKVN=fkvn,
        FKVI=fkvi, **args, **sizes, **_caps(plan), **flags, SINK=plan.sinks is not None,
        BLOCK_M=BM, BLOCK_N=BN, SPARSE=plan.block_mask is not None, SUB_Q=sub_q, SUB_KV=sub_kv,
        TMA=tma, RAW_MAX=plan.score_graph is None and plan.scale > 0, num_warps=warps, num_stages=stages,
    )
    return o, lse


def _caps(plan: Plan, grads: dict | None = None) -> dict:
    return {**modc.capture_values("sc", plan.score_graph, grads),
            **modc.capture_values("mc", plan.mask_graph)}


def backward(q, k, v, do, lse_all, delta, plan: Plan, cap_grads: dict):
    """Flash backward. lse_all, delta: `[H, B*T]` float32 (log of the full denominator,
    sink included and 0 where it is 0; rowsum(do · o)). Captured float tensors' gradients
    are added into `cap_grads` (capture index -> float32 buffer). Returns dq, dk, dv."""
    mod = plan.module
    B, T, H, DK, S, G, DV, flags, args = _common(plan, q, k, v)
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    rows = plan.max_len if plan.cu is not None else T
    keys = plan.max_len if plan.cu is not None else S
    batches = plan.cu.numel() - 1 if plan.cu is not None else B
    common = dict(**args, **_caps(plan, cap_grads), **flags, SPARSE=plan.block_mask is not None)

    def tiles(table):
        BM, BN, warps, stages, sub_q, sub_kv = _tiles(table, plan, DK, DV)
        return BN, BM, dict(BLOCK_M=BM, BLOCK_N=BN, SUB_Q=sub_q, SUB_KV=sub_kv, num_warps=warps,
                            num_stages=stages)
    BN, BM, launch_tiles = tiles(DKDV_TILES)
    sizes, (qn, qi, fqn, fqi) = _sparse_args(plan, batches, H, rows, keys, True, q)
    (q_desc, do_desc), tma = tile_descriptors(DKDV_TMA, BM, q, do)
    mod._dkdv_kernel[(triton.cdiv(keys, BN), batches * G)](
        q, k, v, do, q_desc, do_desc, lse_all, delta, dk, dv,
        QN=qn, QI=qi, FQN=fqn, FQI=fqi, **sizes, **common, **launch_tiles, TMA=tma)
    BN, BM, launch_tiles = tiles(DQ_TILES)
    sizes, (kvn, kvi, fkvn, fkvi) = _sparse_args(plan, batches, H, rows, keys, False, q)
    (k_desc, v_desc), tma = tile_descriptors(DQ_TMA, BN, k, v)
    mod._dq_kernel[(triton.cdiv(rows, BM), batches * H)](
        q, k, v, do, k_desc, v_desc, lse_all, delta, dq,
        KVN=kvn, KVI=kvi, FKVN=fkvn, FKVI=fkvi, **sizes, **common, **launch_tiles, TMA=tma)
    return dq, dk, dv


def decode_splits(B: int, G: int, row_tiles: int, keys: int, block_n: int) -> int:
    """Number of key splits: enough programs to fill the GPU, each split long enough
    that its partial result is worth the combine."""
    programs = B * G * row_tiles
    want = triton.cdiv(DECODE_TARGET_PROGRAMS, programs)
    most = max(1, keys // DECODE_MIN_SPLIT)
    return max(1, min(want, most))


def decode(q, k, v, ck, cv, cpos, qoff, plan: Plan, splits: int | None = None):
    """Split-KV read of a cache `ck/cv [B, L, G, D]` (positions `cpos [B, L]`, -1 empty)
    followed by the new keys `k/v [B, S, G, D]`; qoff `[B]` int32 = P + S - T.
    Returns (o `[B, T, H, DV]`, lse of the keys `[H, B*T]`)."""
    mod = plan.module
    B, T, H, DK = q.shape
    S, G, DV, L = k.shape[1], k.shape[2], v.shape[-1], ck.shape[1]
    R = H // G
    BDK = max(16, triton.next_power_of_2(DK))
    BDV = max(16, triton.next_power_of_2(DV))
    BN, warps, stages = DECODE_TILES[_bucket(max(DK, DV))]
    BM = max(16, min(64, triton.next_power_of_2(T * R)))
    if interpreting():
        BN = INTERPRET_TILE
    row_tiles = triton.cdiv(T * R, BM)
    if splits is None:
        splits = decode_splits(B, G, row_tiles, L + S, BN)
    chunk = triton.cdiv(triton.cdiv(L + S, splits), BN) * BN
    splits = triton.cdiv(L + S, chunk)
    nrows = row_tiles * BM
    opart = torch.empty(splits * B * G * nrows, BDV, dtype=torch.float32, device=q.device)
    lpart = torch.empty(splits * B * G * nrows, dtype=torch.float32, device=q.device)
    mod._decode_kernel[(splits, B * G, row_tiles)](
        q, k, v, ck, cv, cpos, qoff, opart, lpart, T=T, S=S, L=L, H=H, G=G, W=plan.window or 0,
        CHUNK=chunk, scale=plan.scale, BOFF=plan.batch_offset, **_caps(plan), DK=DK, DV=DV,
        BDK=BDK, BDV=BDV, BLOCK_M=BM, BLOCK_N=BN, CAUSAL=plan.causal,
        WINDOW=plan.window is not None, SCORE=plan.score_graph is not None,
        MASK=plan.mask_graph is not None, PREC=dot_precision(q), num_warps=warps, num_stages=stages)
    o = torch.empty(B, T, H, DV, dtype=q.dtype, device=q.device)
    lse = torch.empty(H, B * T, dtype=torch.float32, device=q.device)
    mod._combine_kernel[(B * G, row_tiles)](
        opart, lpart, o, lse, plan.sinks if plan.sinks is not None else q, splits, T, H, G, nrows,
        DV=DV, BDV=BDV, BLOCK_M=BM, SINK=plan.sinks is not None, num_warps=4)
    return o, lse


forward = _interpreter_upcast(forward, cast_all=False)
backward = _interpreter_upcast(backward, cast_all=True)
decode = _interpreter_upcast(decode, cast_all=False)
