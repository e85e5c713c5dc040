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
def _rows_of(G, rows, o_k, start, valid, i_h, H: tl.constexpr, K: tl.constexpr):
    """`G [rows, H, K]` at the chunk rows `rows` `[BT]` (clamped into [0, valid)) and
    channels o_k `[BK]` -> `[BT, BK]` (0 past K)."""
    safe = tl.minimum(tl.maximum(rows, 0), valid - 1)
    return tl.load(G + ((start + safe[:, None]) * H + i_h) * K + o_k[None, :], mask=(o_k < K)[None, :], other=0.0)


@triton.jit
def _block_span(G, start, valid, i_h, o_k, level, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr):
    """The largest decay over one of a chunk's aligned blocks of 2^level steps (the last
    one cut at `valid`) on the channels o_k: max of G_first − G_last, a scalar."""
    o_t = tl.arange(0, BT)
    first = (o_t >> level) << level
    last = tl.minimum(first + (1 << level) - 1, valid - 1)
    span = _rows_of(G, first, o_k, start, valid, i_h, H, K) - _rows_of(G, last, o_k, start, valid, i_h, H, K)
    return tl.max(tl.max(tl.where((o_t < valid)[:, None], span, 0.0), axis=1), axis=0)


@triton.jit
def _anchor_level(G, start, valid, i_h, o_k, SPAN_LIMIT: tl.constexpr, LOW: tl.constexpr, LEVELS: tl.constexpr,
                  H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr):
    """The largest level L in [LOW, LEVELS] whose aligned blocks of 2^L steps all decay
    by at most SPAN_LIMIT on the channels o_k (L = LEVELS: the whole chunk), else LOW − 1;
    an int32 scalar. SPAN_LIMIT < 0: always LOW − 1.

    Inside such a block, with a = its middle step, exp(G_r − G_s) = exp(G_r − G_a)·
    exp(G_a − G_s) for every pair at once (_anchor_factors): each factor lies in
    [e^−SPAN_LIMIT, e^SPAN_LIMIT], far inside float32 (no overflow, no subnormal), and each
    term of a sum over pairs keeps the relative rounding the tree's anchors give it. The
    pairs across blocks take the tree's levels L and up, whose factors are all <= 1."""
    level = tl.zeros([], dtype=tl.int32) + (LOW - 1)
    for L in tl.static_range(LEVELS, LOW - 1, -1):  # a block's decay only grows with it
        if level < LOW:
            if _block_span(G, start, valid, i_h, o_k, L, H, K, BT) <= SPAN_LIMIT:
                level = tl.zeros([], dtype=tl.int32) + L
    return level


@triton.jit
def _anchor_factors(b_G, G, o_k, start, valid, i_h, level, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr):
    """(up, down) `[BT, BK]` float32 = exp(G_r − G_a), exp(G_a − G_r) for the chunk's rows
    r (zero past `valid`), a = the middle step of r's aligned block of 2^level steps;
    b_G `[BT, BK]` is G on the rows and channels o_k. Bounded by the blocks' decay
    (_anchor_level)."""
    o_t = tl.arange(0, BT)
    first = (o_t >> level) << level
    anchor = first + (tl.minimum(first + (1 << level) - 1, valid - 1) - first) // 2
    rows = (o_t < valid)[:, None]
    d = tl.where(rows, b_G - _rows_of(G, anchor, o_k, start, valid, i_h, H, K), 0.0)  # no overflow past valid
    return tl.where(rows, tl.exp(d), 0.0), tl.where(rows, tl.exp(-d), 0.0)
