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
def _gather(x, rows, o_k, start, valid, i_h, H: tl.constexpr, K: tl.constexpr):
    """x `[rows, H, K]` at the chunk rows `rows` `[BT]` (any order, repeats allowed) and
    channels o_k `[BK]` -> `[BT, BK]` float32; zero for rows outside [0, valid) and
    channels past K (the addresses are clamped too: masked lanes still compute them)."""
    m = ((rows >= 0) & (rows < valid))[:, None] & (o_k < K)[None, :]
    safe = tl.minimum(tl.maximum(rows, 0), valid - 1)
    return tl.load(x + ((start + safe[:, None]) * H + i_h) * K + o_k[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _block_ends(level, valid, BT: tl.constexpr):
    """(first, last) `[BT]`: the first and last step of each row's aligned block of
    2^level steps, the last block cut at `valid`."""
    first = (tl.arange(0, BT) >> level) << level
    return first, tl.minimum(first + (1 << level) - 1, valid - 1)


@triton.jit
def _block_span(G, start, valid, i_h, o_k, level, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr):
    """The largest decay over one of a chunk's aligned blocks of 2^level steps (the last
    one cut at `valid`) on the channels o_k: max of G_first − G_last, a scalar."""
    first, last = _block_ends(level, valid, BT)
    span = _gather(G, first, o_k, start, valid, i_h, H, K) - _gather(G, last, o_k, start, valid, i_h, H, K)
    return tl.max(tl.max(tl.where((tl.arange(0, BT) < valid)[:, None], span, 0.0), axis=1), axis=0)


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
    first, last = _block_ends(level, valid, BT)
    rows = (tl.arange(0, BT) < valid)[:, None]
    anchor = _gather(G, first + (last - first) // 2, o_k, start, valid, i_h, H, K)
    d = tl.where(rows, b_G - anchor, 0.0)  # no overflow past valid
    return tl.where(rows, tl.exp(d), 0.0), tl.where(rows, tl.exp(-d), 0.0)
