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
one step at a time, for all leaves at once. One program per (chunk and key slice, head),
one pass: no barrier, no partial buffers beyond the three it finishes.
"""
import triton
import triton.language as tl

from .chunk_prepare_channel import _gather
from .common import _chunk_bounds, _decay_exp


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


@triton.jit
def _side_sums(P, b_y, b_G, G, y, o_k, start, valid, i_h, H: tl.constexpr, K: tl.constexpr,
               KEY_SIDE: tl.constexpr, PRECISION: tl.constexpr, BT: tl.constexpr, LEVELS: tl.constexpr,
               LOG_BC: tl.constexpr, BK: tl.constexpr):
    """One side's sums of one coefficient matrix P `[rows, H, BT]`, `[BT, BK]` float32:
    the row side Σ_s P[r, s] y[s] exp(G_r − G_s) (y = k), or with KEY_SIDE the key side
    Σ_r P[r, s] y[r] exp(G_r − G_s) (y = q for P_qk, k for P_kk). b_y, b_G: the chunk's
    `[BT, BK]` float32 tiles of y and G. One side of one matrix at a time, so that a
    single `[BT, BT]` tile is live (P, or Pᵀ for the key side); the decays are formed
    once per side. With all four tiles live the kernel took every register at 8 warps
    (one program per multiprocessor)."""
    o_t = tl.arange(0, BT)
    acc = tl.zeros([BT, BK], dtype=tl.float32)
    # Inside the leaves first, step `step` of every leaf at once: t = the leaf's first
    # step + step. Row r pairs with key t (t <= r), key s with row t (t >= s); P is zero
    # on the other pairs, where the clamped decays are bounded junk. (Before the levels:
    # these sums are row-vector products in another register layout than the products'
    # results, and this way the accumulator changes layout once.)
    for step in range(1 << LOG_BC):
        t = ((o_t >> LOG_BC) << LOG_BC) + step
        g_G = _gather(G, t, o_k, start, valid, i_h, H, K)
        g_y = _gather(y, t, o_k, start, valid, i_h, H, K)
        if KEY_SIDE:  # exp(G_t − G_s), key s, row t
            acc += _entries(P, t, o_t, start, valid, i_h, H, BT)[:, None] * (g_y * _decay_exp(g_G - b_G))
        else:  # exp(G_r − G_t), row r, key t
            acc += _entries(P, o_t, t, start, valid, i_h, H, BT)[:, None] * (g_y * _decay_exp(b_G - g_G))
    b_P = _square(P, start, valid, i_h, H, BT, KEY_SIDE)
    for level in range(LOG_BC, LEVELS):
        # As in chunk_prepare_channel._level_pairs: one anchor and one exponential per
        # step; a step is a row in a right half, a key in a left one.
        right = ((o_t >> level) & 1) == 1
        a = tl.where(right, ((o_t >> level) << level) - 1, o_t | ((1 << level) - 1))
        d = b_G - _gather(G, a, o_k, start, valid, i_h, H, K)
        dec = _decay_exp(tl.where(right[:, None], d, -d))
        dec_row = tl.where(right[:, None], dec, 0.0)
        dec_key = tl.where(right[:, None], 0.0, dec)
        r_half = o_t[:, None] >> level
        s_half = o_t[None, :] >> level
        # [BT, BT] @ [BT, BK] -> [BT, BK]
        if KEY_SIDE:
            pair_t = (s_half == r_half + 1) & ((r_half & 1) == 0)  # [s, r]
            acc += dec_key * tl.dot(tl.where(pair_t, b_P, 0.0), b_y * dec_row, input_precision=PRECISION)
        else:
            pair = (r_half == s_half + 1) & ((s_half & 1) == 0)  # [r, s]
            acc += dec_row * tl.dot(tl.where(pair, b_P, 0.0), b_y * dec_key, input_precision=PRECISION)
    return acc


@triton.jit(do_not_specialize=["T"])
def _channel_bwd_tree_kernel(q, k, G, Pqk, Pkk, dq_part, dk_part, dG_part, dq, dk, dg,
                             chunk_indices, cu_seqlens, T, H: tl.constexpr, K: tl.constexpr,
                             USE_BETA: tl.constexpr, PRECISION: tl.constexpr, BT: tl.constexpr,
                             LEVELS: tl.constexpr, LOG_BC: tl.constexpr, BK: tl.constexpr,
                             NK: tl.constexpr):
    """Finishes dq, dk and dg `[rows, H, K]` of chunk `program_id(0) // NK`, key slice
    `program_id(0) % NK` (BK channels; NK = cdiv(K, BK)), head `program_id(1)` from the
    chunk backward's float32 parts and coefficients (module docstring).
    LEVELS = log2(BT). The key slices vary fastest, so a chunk's slices run side by side
    and read its `[BT, BT]` coefficients from memory once, from the cache after (with
    the chunks fastest they were read once per slice)."""
    i_c, i_k = tl.program_id(0) // NK, tl.program_id(0) % NK
    i_c, i_h = i_c.to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    b_q = _gather(q, o_t, o_k, start, valid, i_h, H, K)
    b_k = _gather(k, o_t, o_k, start, valid, i_h, H, K)
    b_G = _gather(G, o_t, o_k, start, valid, i_h, H, K)
    b_dq = _side_sums(Pqk, b_k, b_G, G, k, o_k, start, valid, i_h, H, K, False, PRECISION, BT, LEVELS, LOG_BC, BK)
    b_dk_key = _side_sums(Pqk, b_q, b_G, G, q, o_k, start, valid, i_h, H, K, True, PRECISION, BT, LEVELS, LOG_BC,
                          BK)
    b_dk_row = tl.zeros([BT, BK], dtype=tl.float32)
    if USE_BETA:
        b_dk_row = _side_sums(Pkk, b_k, b_G, G, k, o_k, start, valid, i_h, H, K, False, PRECISION, BT, LEVELS,
                              LOG_BC, BK)
        b_dk_key += _side_sums(Pkk, b_k, b_G, G, k, o_k, start, valid, i_h, H, K, True, PRECISION, BT, LEVELS,
                               LOG_BC, BK)
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
