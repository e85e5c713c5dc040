"""Small jit helpers every chunk kernel shares, forward and backward."""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_bounds as _chunk_bounds  # noqa: F401  (re-exported)


@triton.jit
def _decay_exp(x):
    """exp of a log-decay that is <= 0 wherever it is used; masked entries may be
    positive, so clamp rather than overflow."""
    return tl.exp(tl.minimum(x, 0.0))


@triton.jit
def _chunk_end_decay(G, start, valid, i_h, o_k, H: tl.constexpr, K: tl.constexpr):
    """G_C `[BK]` float32: the per-channel cumulative log-decay `G [rows, H, K]` at the
    chunk's last valid step, for the key channels o_k `[BK]` (0 past K)."""
    return tl.load(G + ((start + valid - 1) * H + i_h) * K + o_k, mask=o_k < K, other=0.0)



@triton.jit
def _mild_span(G, start, valid, i_h, o_k, SPAN_LIMIT: tl.constexpr, H: tl.constexpr, K: tl.constexpr):
    """Whether one anchor serves every pair of a chunk on the key channels o_k `[BK]`
    (scalar bool): the span of the in-chunk cumulative log-decay `G [rows, H, K]`, the
    max over channels of G_first − G_last, is at most SPAN_LIMIT (< 0: never).

    With a = the chunk's middle step, exp(G_r − G_s) = exp(G_r − G_a)·exp(G_a − G_s) for
    every pair at once (_anchor_factors). Within the span each factor lies in
    [e^−SPAN_LIMIT, e^SPAN_LIMIT], far inside float32 (no overflow, no subnormal), and
    each term of a sum over pairs keeps the relative rounding the tree's anchors give it.
    Beyond it (strong decays) the callers take the tree, whose factors are all <= 1."""
    first = tl.load(G + (start * H + i_h) * K + o_k, mask=o_k < K, other=0.0)
    return tl.max(first - _chunk_end_decay(G, start, valid, i_h, o_k, H, K), axis=0) <= SPAN_LIMIT


@triton.jit
def _anchor_factors(b_G, G, o_k, start, valid, i_h, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr):
    """(up, down) `[BT, BK]` float32 = exp(G_r − G_a), exp(G_a − G_r) for the chunk's rows
    r (zero past `valid`), a = its middle valid step; b_G `[BT, BK]` is G on the rows and
    channels o_k. Bounded by the span only where _mild_span holds."""
    anchor = tl.load(G + ((start + (valid - 1) // 2) * H + i_h) * K + o_k, mask=o_k < K, other=0.0)
    d = b_G - anchor[None, :]
    rows = (tl.arange(0, BT) < valid)[:, None]
    return tl.where(rows, tl.exp(d), 0.0), tl.where(rows, tl.exp(-d), 0.0)
