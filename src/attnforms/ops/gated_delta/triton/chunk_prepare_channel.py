"""The per-chunk preparation for a per-channel log-decay (GATE 2: KDA, GLA) as whole-chunk
`[BT, BT]` tiles; one program per (chunk, head).

1. The scores A_qk = scale·(Q Kᵀ ⊙ Γ) (s <= r) and A' = K Kᵀ ⊙ Γ (s < r), with
   Γ_rs = exp(G_r − G_s) per channel inside the sum over channels. Every pair s < r of
   the chunk is split by exactly one node of the binary tree over its BT steps: at the
   node of half-length h (`level` = log2 h), r lies in the right half and s in the left.
   With a = the left half's last step, exp(G_r − G_s) = exp(G_r − G_a)·exp(G_a − G_s),
   both factors <= 1 (a per-step log-decay of −20 never overflows), so one level's pairs
   are one `[BT, K] @ [K, BT]` product: rows q_r ⊙ exp(G_r − G_{a(r)}), columns
   k_s ⊙ exp(G_{a(s)} − G_s), where a(r) and a(s) are each one's own anchor at that
   level. A step is a row only in a right half and a key only in a left one, so one
   exponential per step and level gives both operands. Pairs that do not split at that
   level get a bounded value (every factor is <= 1) and are masked out. Inside leaves
   of 2^LOG_BC steps the pairs are formed one key step at a time, for all leaves of the
   chunk at once (`[BT, BK]` tiles): a level costs an exponential tile and two products,
   a leaf step an exponential tile and two row sums, and the low levels waste most of
   their product (leaf 4 at BT 64: 4 levels + 4 steps, 8 exponential tiles per key
   slice, where 16-step leaves took 16 + 2). Where the decay over aligned blocks of
   2^L >= 2^LOG_BC steps stays small (at most SPAN_LIMIT on the slice's channels,
   common._anchor_level), each block's middle step anchors all the pairs inside it: two
   exponential tiles and one masked product per matrix replace the leaf steps and the
   levels below L (with mild decays, L = LEVELS: one product for the whole chunk).
2. (with beta) M = (I + Diag(β) A')⁻¹ by block doubling (chunk_prepare_dense.py).
3. (with beta) W = M Diag(β)(γ ⊙ K), U = M Diag(β) V. γ ⊙ K (γ = exp(G) per channel)
   is not exact in 16 bits: it enters the tensor cores as two 16-bit halves.
4. The sequential pass's decayed operands (chunk_fwd.py): scale·Q ⊙ γ and
   K ⊙ exp(G_C − G) (G_C: the chunk's last step), and for the backward's reverse pass
   with beta γ ⊙ K (chunk_bwd.py), stored in the inputs' dtype for
   16-bit inputs (they enter its products rounded to it anyway). Formed here once per
   chunk, not in every value tile's program of the sequential pass, where they cost a
   float32 G tile and two exponential tiles per chunk step on its critical path.

A', M (SAVE) and A_qk (STORE_AQK) are stored whole per chunk row `[rows, H, BT]`, zero
above the diagonal, as chunk_prepare_dense.py stores them.
"""
import triton
import triton.language as tl

from .chunk_prepare_dense import _chunk_inverse, _split, _store_square, _store_values, _weighted_rows
from .common import _anchor_factors, _anchor_level, _chunk_bounds, _chunk_end_decay, _decay_exp, _gather


@triton.jit
def _level_pairs(b_q, b_k, b_G, G, o_k, start, valid, i_h, level, H: tl.constexpr,
                 K: tl.constexpr, WANT_QK: tl.constexpr, WANT_KK: tl.constexpr,
                 PRECISION: tl.constexpr, BT: tl.constexpr):
    """The contributions of one key slice o_k `[BK]` to the pairs (r, s) split at the
    tree node of half-length 2^level: r in the right half, s in the left. b_q, b_k, b_G:
    the chunk's `[BT, BK]` float32 tiles. Returns (Q Kᵀ ⊙ Γ, K Kᵀ ⊙ Γ) `[BT, BT]`,
    zero off those pairs (and where not wanted)."""
    o_t = tl.arange(0, BT)
    # A step x is a row when it lies in the right half of its node, a key when in the
    # left: one anchor and one exponential per step serve both roles. Row: a = the step
    # before its half (the left sibling's end), factor exp(G_x − G_a); key: a = its own
    # half's end, factor exp(G_a − G_x). Anchors agree exactly for the pairs kept.
    right = ((o_t >> level) & 1) == 1
    a = tl.where(right, ((o_t >> level) << level) - 1, o_t | ((1 << level) - 1))
    d = b_G - _gather(G, a, o_k, start, valid, i_h, H, K)
    dec = _decay_exp(tl.where(right[:, None], d, -d))
    # Rows only in right halves, keys only in left ones: the product's remaining junk
    # pairs (different nodes) are bounded and masked below.
    dec_r = tl.where(right[:, None], dec, 0.0)
    col = tl.where(right[:, None], 0.0, b_k * dec)
    r_half = o_t[:, None] >> level
    s_half = o_t[None, :] >> level
    pair = (r_half == s_half + 1) & ((s_half & 1) == 0)
    b_qk = tl.zeros([BT, BT], dtype=tl.float32)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    if WANT_QK:
        # [BT, BK] @ [BK, BT] -> [BT, BT]
        b_qk = tl.where(pair, tl.dot(b_q * dec_r, tl.trans(col), input_precision=PRECISION), 0.0)
    if WANT_KK:
        b_kk = tl.where(pair, tl.dot(b_k * dec_r, tl.trans(col), input_precision=PRECISION), 0.0)
    return b_qk, b_kk


@triton.jit
def _leaf_step(b_q, b_k, b_G, k, G, o_k, start, valid, i_h, step, H: tl.constexpr,
               K: tl.constexpr, WANT_QK: tl.constexpr, WANT_KK: tl.constexpr, BT: tl.constexpr,
               LOG_BC: tl.constexpr):
    """Key step `step` of every leaf (2^LOG_BC steps) at once: row r pairs with key
    t(r) = its leaf's first step + step, decay formed pairwise per channel. Returns
    (Q Kᵀ ⊙ Γ, K Kᵀ ⊙ Γ) of those pairs in compact `[BT, 2^LOG_BC]` tiles, nonzero only
    in column `step` (see _expand_leaves); pairs with t(r) > r hold bounded junk
    (clamped exponent) for the caller's causal mask."""
    o_t = tl.arange(0, BT)
    t = ((o_t >> LOG_BC) << LOG_BC) + step
    b_kd = _gather(k, t, o_k, start, valid, i_h, H, K)
    b_kd *= _decay_exp(b_G - _gather(G, t, o_k, start, valid, i_h, H, K))
    hit = (tl.arange(0, 1 << LOG_BC) == step)[None, :]
    b_qk = tl.zeros([BT, 1 << LOG_BC], dtype=tl.float32)
    b_kk = tl.zeros([BT, 1 << LOG_BC], dtype=tl.float32)
    if WANT_QK:
        b_qk = tl.where(hit, tl.sum(b_q * b_kd, axis=1)[:, None], 0.0)
    if WANT_KK:
        b_kk = tl.where(hit, tl.sum(b_k * b_kd, axis=1)[:, None], 0.0)
    return b_qk, b_kk


@triton.jit
def _expand_leaves(compact, BT: tl.constexpr, LOG_BC: tl.constexpr):
    """`[BT, 2^LOG_BC]` leaf pairs (column j: key = the row's leaf start + j) -> their
    place in a `[BT, BT]` tile, zero elsewhere."""
    o_t = tl.arange(0, BT)
    o_j = tl.arange(0, 1 << LOG_BC)
    first = (o_t >> LOG_BC) << LOG_BC
    out = tl.zeros([BT, BT], dtype=tl.float32)
    for j in tl.static_range(1 << LOG_BC):
        column = tl.sum(tl.where(o_j[None, :] == j, compact, 0.0), axis=1)
        out = tl.where(o_t[None, :] == (first + j)[:, None], column[:, None], out)
    return out


@triton.jit
def _store_decayed(qd, kd, b_q, b_k, b_G, G, o_k, start, valid, i_h, scale, H: tl.constexpr, K: tl.constexpr,
                   BT: tl.constexpr):
    """Step 4 of the module docstring for the key slice o_k `[BK]`, from its loaded
    `[BT, BK]` float32 tiles."""
    o_t = tl.arange(0, BT)
    b_last = _chunk_end_decay(G, start, valid, i_h, o_k, H, K)
    m = (o_t < valid)[:, None] & (o_k < K)[None, :]
    p = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
    tl.store(qd + p, (b_q * tl.exp(b_G) * scale).to(qd.dtype.element_ty), mask=m)
    tl.store(kd + p, (b_k * _decay_exp(b_last[None, :] - b_G)).to(kd.dtype.element_ty), mask=m)


@triton.jit
def _channel_scores(q, k, G, qd, kd, start, valid, i_h, scale, H: tl.constexpr, K: tl.constexpr,
                    WANT_QK: tl.constexpr, WANT_KK: tl.constexpr, PRECISION: tl.constexpr,
                    BT: tl.constexpr, LEVELS: tl.constexpr, LOG_BC: tl.constexpr, BK: tl.constexpr,
                    SPAN_LIMIT: tl.constexpr):
    """(A_qk scaled, A') of one chunk, `[BT, BT]` float32 each, causally masked (step 1
    of the module docstring), by key slices of BK channels, storing step 4's decayed
    q and k on the way. LEVELS = log2(BT); SPAN_LIMIT: the decay up to which a block
    of steps takes one anchor instead of the tree (common._anchor_level)."""
    o_t = tl.arange(0, BT)
    b_qk = tl.zeros([BT, BT], dtype=tl.float32)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    # The leaf pairs in compact accumulators of their own, placed once at the end: they
    # come from row sums, in another register layout than the products' results, and
    # adding them to those every step moved a `[BT, BT]` tile through shared memory.
    leaf_qk = tl.zeros([BT, 1 << LOG_BC], dtype=tl.float32)
    leaf_kk = tl.zeros([BT, 1 << LOG_BC], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        level = _anchor_level(G, start, valid, i_h, o_k, SPAN_LIMIT, LOG_BC, LEVELS, H, K, BT)
        b_q = _gather(q, o_t, o_k, start, valid, i_h, H, K)
        b_k = _gather(k, o_t, o_k, start, valid, i_h, H, K)
        b_G = _gather(G, o_t, o_k, start, valid, i_h, H, K)
        _store_decayed(qd, kd, b_q, b_k, b_G, G, o_k, start, valid, i_h, scale, H, K, BT)
        if level >= LOG_BC:
            # The pairs inside each aligned block of 2^level steps through the block's own
            # anchor: one product per matrix, masked to those pairs (the others, and those
            # above the diagonal, hold bounded junk).
            up, down = _anchor_factors(b_G, G, o_k, start, valid, i_h, level, H, K, BT)
            col = tl.trans(b_k * down)
            same = (o_t[:, None] >> level) == (o_t[None, :] >> level)
            if WANT_QK:
                b_qk += tl.where(same, tl.dot(b_q * up, col, input_precision=PRECISION), 0.0)  # [BT, BK] @ [BK, BT]
            if WANT_KK:
                b_kk += tl.where(same, tl.dot(b_k * up, col, input_precision=PRECISION), 0.0)
        else:
            for step in range(1 << LOG_BC):
                d_qk, d_kk = _leaf_step(b_q, b_k, b_G, k, G, o_k, start, valid, i_h, step, H, K, WANT_QK,
                                        WANT_KK, BT, LOG_BC)
                leaf_qk += d_qk
                leaf_kk += d_kk
        # The pairs across those blocks (or leaves): the tree's levels above them.
        for tree_level in range(tl.maximum(level, LOG_BC), LEVELS):
            d_qk, d_kk = _level_pairs(b_q, b_k, b_G, G, o_k, start, valid, i_h, tree_level, H, K, WANT_QK,
                                      WANT_KK, PRECISION, BT)
            b_qk += d_qk
            b_kk += d_kk
    if WANT_QK:
        b_qk += _expand_leaves(leaf_qk, BT, LOG_BC)
    if WANT_KK:
        b_kk += _expand_leaves(leaf_kk, BT, LOG_BC)
    b_qk = tl.where(o_t[:, None] >= o_t[None, :], b_qk * scale, 0.0)
    b_kk = tl.where(o_t[:, None] > o_t[None, :], b_kk, 0.0)
    return b_qk, b_kk


@triton.jit
def _decayed_rows(hi, lo, x, like, LOW: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """(hi + lo) `[BT, BT]` @ x `[BT, BD]` float32 -> `[BT, BD]` float32. LOW: x (not
    exact in 16 bits) as two halves in the dtype of pointer `like`, three tensor-core
    products (the lo·lo term is below float32 noise); otherwise one in full float32."""
    if LOW:
        x_hi = x.to(like.dtype.element_ty)
        x_lo = (x - x_hi.to(tl.float32)).to(like.dtype.element_ty)
        out = (_weighted_rows(hi, lo, x_hi, LOW, DOT_PRECISION)
               + tl.dot(hi, x_lo, input_precision=DOT_PRECISION))
    else:
        out = tl.dot(hi, x, input_precision="ieee")
    return out


@triton.jit(do_not_specialize=["T"])
def _channel_prepare_kernel(q, k, v, G, beta, Aqk, Akk, M, w, u, qd, kd, kg, chunk_indices, cu_seqlens, scale, T,
                            H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, USE_BETA: tl.constexpr,
                            STORE_AQK: tl.constexpr, SAVE: tl.constexpr, LOW: tl.constexpr,
                            DOT_PRECISION: tl.constexpr, PRECISION: tl.constexpr,
                            SCORE_PRECISION: tl.constexpr, BT: tl.constexpr,
                            LEVELS: tl.constexpr, LOG_BC: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                            SPAN_LIMIT: tl.constexpr):
    """Steps 1-4 of the module docstring for chunk `program_id(0)`, head `program_id(1)`.
    Buffers `[rows, H, BT]` (Aqk, Akk, M), `[rows, H, K or V]` (w, u, qd, kd, and with
    beta and SAVE kg = γ ⊙ K for the backward); G `[rows, H, K]`
    float32 in-chunk cumulative log-decay. PRECISION: the inverse's products;
    SCORE_PRECISION: the score products (float32 operands: the decayed q, k);
    DOT_PRECISION: the others (kernels/precision.py);
    LEVELS = log2(BT); LOG_BC = log2 of the leaf formed pairwise (<= LEVELS); SPAN_LIMIT:
    see _channel_scores."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    # Both score matrices in one pass: they share every decay factor.
    b_qk, b_kk = _channel_scores(q, k, G, qd, kd, start, valid, i_h, scale, H, K, STORE_AQK, USE_BETA, SCORE_PRECISION,
                                 BT, LEVELS, LOG_BC, BK, SPAN_LIMIT)
    if STORE_AQK:
        _store_square(Aqk, b_qk, start, valid, i_h, H, BT)
    if USE_BETA:
        b_beta, b_M = _chunk_inverse(b_kk, beta, Akk, M, start, valid, i_h, H, SAVE, PRECISION, BT, LEVELS)
        # W = (M Diag(β))(γ ⊙ K), U = (M Diag(β)) V: the same weights; γ sits in K's operand.
        b_hi, b_lo = _split(b_M * b_beta[None, :], k, LOW)
        o_t = tl.arange(0, BT)
        m_t = o_t < valid
        for k0 in range(0, K, BD):
            o_k = k0 + tl.arange(0, BD)
            m = m_t[:, None] & (o_k < K)[None, :]
            rows = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
            b_x = tl.load(k + rows, mask=m, other=0.0).to(tl.float32) * tl.exp(tl.load(G + rows, mask=m, other=0.0))
            tl.store(w + rows, _decayed_rows(b_hi, b_lo, b_x, k, LOW, DOT_PRECISION).to(w.dtype.element_ty),
                     mask=m)
            if SAVE:  # γ ⊙ K for the reverse pass (chunk_bwd.py), as it rounds it there
                tl.store(kg + rows, b_x.to(kg.dtype.element_ty), mask=m)
        _store_values(v, u, b_hi, b_lo, start, valid, i_h, H, V, LOW, DOT_PRECISION, BT, BD)
