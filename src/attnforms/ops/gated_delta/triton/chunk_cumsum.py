"""Triton kernel of the chunked gated delta rule, forward: the in-chunk inclusive cumsum
of the log-decay, G, which every later kernel reads (the per-chunk preparations in
chunk_prepare_dense.py and chunk_prepare_channel.py, the sequential pass in
chunk_fwd.py, the backward). Every sequence is addressed through `cu_seqlens` and
`chunk_indices` (global chunk id -> sequence, chunk in sequence), so one code path serves
fixed and variable lengths and T is never a compile-time constant.
"""
import triton
import triton.language as tl

from .common import _chunk_bounds


@triton.jit(do_not_specialize=["T"])
def _cumsum_kernel(g, G, chunk_indices, cu_seqlens, T, H: tl.constexpr, K: tl.constexpr,
                   GK: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """G[row, h, :GK] = Σ_{chunk start <= j <= row} g[j, h, :GK] (GK = K or 1), fp32; NaN
    from a positive g on."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m = (o_t[:, None] < valid) & (o_k[None, :] < GK)
    offsets = ((start + o_t[:, None]) * H + i_h) * GK + o_k[None, :]
    b_g = tl.load(g + offsets, mask=m, other=0.0).to(tl.float32)
    # A positive log-gate (invalid, not checked on the host for CUDA inputs) poisons the
    # chunk (its in-chunk products mix rows), and through the state everything after it,
    # with NaN.
    b_g = tl.where(b_g <= 0, b_g, float("nan"))
    tl.store(G + offsets, tl.cumsum(b_g, axis=0), mask=m)
