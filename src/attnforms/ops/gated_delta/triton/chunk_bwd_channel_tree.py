"""The in-chunk products of the backward with a per-channel decay (GATE 2), as whole-chunk
tensor-core products: the same sums as chunk_bwd_channel.py, factorised as the forward's
preparation factorises its scores (chunk_prepare_channel.py).

With coefficient matrices P (`[BT, BT]` per chunk and head: P_qk includes the diagonal,
P_kk is strictly lower), for every pair s <= r of a chunk and each key channel c,
    dq[r]  += P_qk[r, s] k[s] exp(G_r − G_s)          (row side)
    dk[r]  += P_kk[r, s] k[s] exp(G_r − G_s)          (row side)
    dk[s]  += (P_qk[r, s] q[r] + P_kk[r, s] k[r]) exp(G_r − G_s)   (key side)
and dG[r] gains q[r]·dq[r] + k[r]·dk_row[r], dG[s] loses k[s]·dk_key[s]; then
dg = the reverse cumulative sum of dG inside the chunk.

Every pair s < r is split by one node of the binary tree over the chunk's steps (r in
the right half, s in the left); through that node's anchor a (the left half's last
step) exp(G_r − G_s) = exp(G_r − G_a) exp(G_a − G_s), both factors <= 1, so a level's
pairs are one `[BT, BT] @ [BT, BK]` product per side and matrix, with P masked to the
level's pairs. Pairs inside leaves of 2^LOG_BC steps (the diagonal included) are formed
one step at a time, for all leaves at once. Where the decay over aligned blocks of 2^L
>= 2^LOG_BC steps stays small (common._anchor_level), each block's middle step anchors
the pairs inside it instead of the leaf steps and the levels below L: one masked
product per side and matrix (mild decays: L = LEVELS, one for the whole chunk). One
program per (chunk, head, key slice), one pass: no barrier, no partial buffers beyond
the three it finishes.
"""
import triton
import triton.language as tl

from .common import _anchor_factors, _anchor_level, _chunk_bounds, _decay_exp, _gather


@triton.jit
def _square(P, start, valid, i_h, H: tl.constexpr, BT: tl.constexpr, TRANSPOSED: tl.constexpr):
    """A chunk's `[BT, BT]` coefficient block of a `[rows, H, BT]` matrix (zero outside
    the valid rows and columns), or its transpose."""
    o_t = tl.arange(0, BT)
    if TRANSPOSED:
        r, s = o_t[None, :], o_t[:, None]
    else:
        r, s = o_t[:, None], o_t[None, :]
    return tl.load(P + ((start + r) * H + i_h) * BT + s, mask=(r < valid) & (s < valid), other=0.0)


@triton.jit
def _entries(P, rows, cols, start, valid, i_h, H: tl.constexpr, BT: tl.constexpr):
    """P[rows, cols] `[BT]` of a chunk's `[rows, H, BT]` coefficient block (zero outside
    the valid steps): one entry per row, read from memory instead of picked out of a
    `[BT, BT]` tile by a row reduction."""
    m = (rows < valid) & (cols < valid)
    return tl.load(P + ((start + rows) * H + i_h) * BT + cols, mask=m, other=0.0)


@triton.jit(do_not_specialize=["T"])
def _channel_bwd_tree_kernel(q, k, G, Pqk, Pkk, dq_part, dk_part, dG_part, dq, dk, dg,
                             chunk_indices, cu_seqlens, T, H: tl.constexpr, K: tl.constexpr,
                             USE_BETA: tl.constexpr, PRECISION: tl.constexpr, BT: tl.constexpr,
                             LEVELS: tl.constexpr, LOG_BC: tl.constexpr, BK: tl.constexpr,
                             NK: tl.constexpr, ADJACENT_SLICES: tl.constexpr, SPAN_LIMIT: tl.constexpr):
    """Finishes dq, dk and dg `[rows, H, K]` of one chunk, head and key slice (BK of the
    NK slices of K channels) from the chunk backward's float32 parts and coefficients
    (module docstring). LEVELS = log2(BT). The grid is (chunks, H, NK), or with
    ADJACENT_SLICES (chunks·NK, H), a chunk's slices next to each other in launch order
    so that they read its coefficient blocks while those are still in L2. SPAN_LIMIT: the
    decay up to which a block of steps takes one anchor (common._anchor_level)."""
    if ADJACENT_SLICES:
        i_ck, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
        i_c, i_k = i_ck // NK, i_ck % NK
    else:
        i_c, i_h, i_k = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    b_q = _gather(q, o_t, o_k, start, valid, i_h, H, K)
    b_k = _gather(k, o_t, o_k, start, valid, i_h, H, K)
    b_G = _gather(G, o_t, o_k, start, valid, i_h, H, K)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk_row = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk_key = tl.zeros([BT, BK], dtype=tl.float32)
    level = _anchor_level(G, start, valid, i_h, o_k, SPAN_LIMIT, LOG_BC, LEVELS, H, K, BT)
    if level < LOG_BC:
        # Inside the leaves first, step `step` of every leaf at once: t = the leaf's first
        # step + step. Row r pairs with key t (t <= r), key s with row t (t >= s); P is
        # zero on the other pairs, where the clamped decays are bounded junk. (Before the
        # levels: these sums are row-vector products in another register layout than the
        # products' results, and this way the accumulators change layout once.)
        for step in range(1 << LOG_BC):
            t = ((o_t >> LOG_BC) << LOG_BC) + step
            g_G = _gather(G, t, o_k, start, valid, i_h, H, K)
            g_k = _gather(k, t, o_k, start, valid, i_h, H, K)
            g_q = _gather(q, t, o_k, start, valid, i_h, H, K)
            dec_row = _decay_exp(b_G - g_G)  # exp(G_r − G_t), row r, key t
            dec_key = _decay_exp(g_G - b_G)  # exp(G_t − G_s), key s, row t
            b_dq += _entries(Pqk, o_t, t, start, valid, i_h, H, BT)[:, None] * (g_k * dec_row)
            b_dk_key += _entries(Pqk, t, o_t, start, valid, i_h, H, BT)[:, None] * (g_q * dec_key)
            if USE_BETA:
                b_dk_row += _entries(Pkk, o_t, t, start, valid, i_h, H, BT)[:, None] * (g_k * dec_row)
                b_dk_key += _entries(Pkk, t, o_t, start, valid, i_h, H, BT)[:, None] * (g_k * dec_key)
    b_Pqk = _square(Pqk, start, valid, i_h, H, BT, False)
    b_PqkT = _square(Pqk, start, valid, i_h, H, BT, True)
    if USE_BETA:
        b_Pkk = _square(Pkk, start, valid, i_h, H, BT, False)
        b_PkkT = _square(Pkk, start, valid, i_h, H, BT, True)
    if level >= LOG_BC:
        # The pairs inside each aligned block of 2^level steps through the block's own
        # anchor (common._anchor_level): exp(G_r − G_s) = up_r·down_s, one product per
        # side and matrix with P masked to those pairs (P is zero above its diagonal).
        up, down = _anchor_factors(b_G, G, o_k, start, valid, i_h, level, H, K, BT)
        same = (o_t[:, None] >> level) == (o_t[None, :] >> level)  # symmetric: serves Pᵀ too
        k_down = b_k * down
        # [BT, BT] @ [BT, BK] -> [BT, BK], each side
        b_dq += up * tl.dot(tl.where(same, b_Pqk, 0.0), k_down, input_precision=PRECISION)
        key_side = tl.dot(tl.where(same, b_PqkT, 0.0), b_q * up, input_precision=PRECISION)
        if USE_BETA:
            b_dk_row += up * tl.dot(tl.where(same, b_Pkk, 0.0), k_down, input_precision=PRECISION)
            key_side += tl.dot(tl.where(same, b_PkkT, 0.0), b_k * up, input_precision=PRECISION)
        b_dk_key += down * key_side
    # The pairs across those blocks (or leaves): the tree's levels above them.
    for tree_level in range(tl.maximum(level, LOG_BC), LEVELS):
        # As in chunk_prepare_channel._level_pairs: one anchor and one exponential per
        # step; a step is a row in a right half, a key in a left one.
        right = ((o_t >> tree_level) & 1) == 1
        a = tl.where(right, ((o_t >> tree_level) << tree_level) - 1, o_t | ((1 << tree_level) - 1))
        d = b_G - _gather(G, a, o_k, start, valid, i_h, H, K)
        dec = _decay_exp(tl.where(right[:, None], d, -d))
        dec_row = tl.where(right[:, None], dec, 0.0)
        dec_key = tl.where(right[:, None], 0.0, dec)
        r_half = o_t[:, None] >> tree_level
        s_half = o_t[None, :] >> tree_level
        pair = (r_half == s_half + 1) & ((s_half & 1) == 0)  # [r, s]
        pair_t = (s_half == r_half + 1) & ((r_half & 1) == 0)  # [s, r]
        l_Pqk = tl.where(pair, b_Pqk, 0.0)
        l_PqkT = tl.where(pair_t, b_PqkT, 0.0)
        k_key = b_k * dec_key
        k_row = b_k * dec_row
        # [BT, BT] @ [BT, BK] -> [BT, BK], each side
        b_dq += dec_row * tl.dot(l_Pqk, k_key, input_precision=PRECISION)
        b_dk_key += dec_key * tl.dot(l_PqkT, b_q * dec_row, input_precision=PRECISION)
        if USE_BETA:
            l_Pkk = tl.where(pair, b_Pkk, 0.0)
            l_PkkT = tl.where(pair_t, b_PkkT, 0.0)
            b_dk_row += dec_row * tl.dot(l_Pkk, k_key, input_precision=PRECISION)
            b_dk_key += dec_key * tl.dot(l_PkkT, k_row, input_precision=PRECISION)
    m = (o_t < valid)[:, None] & (o_k < K)[None, :]
    p = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
    tl.store(dq + p, (tl.load(dq_part + p, mask=m, other=0.0) + b_dq).to(dq.dtype.element_ty), mask=m)
    b_dk = tl.load(dk_part + p, mask=m, other=0.0) + b_dk_row + b_dk_key
    tl.store(dk + p, b_dk.to(dk.dtype.element_ty), mask=m)
    b_dG = tl.load(dG_part + p, mask=m, other=0.0) + b_q * b_dq + b_k * (b_dk_row - b_dk_key)
    b_dG = tl.where(m, b_dG, 0.0)
    # g_j enters every G_r with r >= j of its chunk: a reverse cumulative sum.
    b_dg = tl.sum(b_dG, axis=0)[None, :] - tl.cumsum(b_dG, axis=0) + b_dG
    tl.store(dg + p, b_dg.to(dg.dtype.element_ty), mask=m)
