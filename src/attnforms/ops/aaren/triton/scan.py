"""Triton kernels of Aaren's forward: a prefix scan over the softmax triple (m, u, w) in
three phases, parallel over chunks (see ../README.md, "Kernels"). The backward is in
scan_bwd.py.

1. `_fwd_summary_kernel` per (chunk, head), all chunks at once: the scores
   s_t = scale · q·k_t (stored for phases 3 and the backward) and the chunk's own triple
   (m_c, u_c, w_c[V]) relative to its max.
2. `_fwd_prefix_kernel`  per (value tile, sequence·head): the triple entering every chunk,
   initial ⊕ chunk_0 ⊕ … ⊕ chunk_{c−1}, by an associative scan over blocks of BC chunk
   triples (the carry between blocks in registers), and the final triple.
3. `_fwd_output_kernel`  per (chunk, head), all chunks at once: the in-chunk prefix triples
   in closed form (a `[BT, BT]` masked matrix of e^{s_j − M_r}) with the entering triple
   folded in, the outputs w/u and the prefix log-sum-exp L_t = M_t + log u_t.

Layouts: s, L `[rows, H]` float32 (time-major, like k, v `[rows, H, D]`); the per-chunk
triples m, u `[chunks, H]` and w `[chunks, H, V]` float32, chunks numbered globally
(`chunk_indices`, `chunk_base`); sequences never share a chunk.
"""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_head_program, sequence_head_program


@triton.jit
def _fwd_summary_kernel(q, k, v, s, chunk_m, chunk_u, chunk_w, chunk_indices, cu_seqlens, scale,
                        H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                        BK: tl.constexpr, BV: tl.constexpr):
    i_c, i_h, i_n, start, valid, o_t, m_t, p_t = chunk_head_program(chunk_indices, cu_seqlens, H, BT)
    b_s = tl.zeros([BT], dtype=tl.float32)
    for i_k in tl.static_range(0, K, BK):
        o_k = i_k + tl.arange(0, BK)
        m_k = o_k < K
        b_q = tl.load(q + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(k + p_t[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_s += tl.sum(b_k * b_q[None, :], axis=1)
    b_s *= scale
    tl.store(s + p_t, b_s, mask=m_t)
    b_s = tl.where(m_t, b_s, float("-inf"))
    b_m = tl.max(b_s, axis=0)
    b_e = tl.exp(b_s - b_m)  # the padding rows give exp(-inf) = 0
    tl.store(chunk_m + i_c * H + i_h, b_m)
    tl.store(chunk_u + i_c * H + i_h, tl.sum(b_e, axis=0))
    for i_v in range(0, V, BV):
        o_v = i_v + tl.arange(0, BV)
        m_v = o_v < V
        b_v = tl.load(v + p_t[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        tl.store(chunk_w + (i_c * H + i_h) * V + o_v, tl.sum(b_e[:, None] * b_v, axis=0), mask=m_v)


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _combine(m_a, u_a, w_a, m_b, u_b, w_b):
    """`a ⊕ b` of two triples (elementwise, every exponent <= 0). Where both are empty
    (m = −inf) it shifts by 0, so the factors are exp(−inf) = 0, not NaN."""
    m = tl.maximum(m_a, m_b)
    shift = tl.where(m == float("-inf"), 0.0, m)
    f_a = tl.exp(m_a - shift)
    f_b = tl.exp(m_b - shift)
    return m, u_a * f_a + u_b * f_b, w_a * f_a + w_b * f_b


@triton.jit
def _value_tile(per_chunk, v, i_v, i_c, i_h, p_t, m_t, H: tl.constexpr, V: tl.constexpr,
                BV: tl.constexpr):
    """Value columns i_v .. i_v + BV of chunk i_c, head i_h: (the columns o_v `[BV]`, their
    mask, the `[BT, BV]` tile mask, the chunk's `[chunks, H, V]` vector `per_chunk` there
    `[BV]`, and v's tile `[BT, BV]` in v's dtype)."""
    o_v = i_v + tl.arange(0, BV)
    m_v = o_v < V
    m_tv = m_t[:, None] & m_v[None, :]
    b_c = tl.load(per_chunk + (i_c * H + i_h) * V + o_v, mask=m_v, other=0.0)
    b_v = tl.load(v + p_t[:, None] * V + o_v[None, :], mask=m_tv, other=0.0)
    return o_v, m_v, m_tv, b_c, b_v


@triton.jit
def _rounded(b_W, dtype, HALF_P: tl.constexpr):
    """The in-chunk weights `[BT, BT]` (float32, in [0, 1]) as the products see them:
    with HALF_P rounded to the inputs' 16-bit `dtype` (as flash attention multiplies its
    probabilities), and every other use (row sums, the score gradient) takes the same
    rounded weights, so that a kernel's outputs stay consistent with each other."""
    if HALF_P:
        return b_W.to(dtype).to(tl.float32)
    return b_W


@triton.jit
def _weighted_sum(b_W, b_x, HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`[BT, BT] @ [BT, BV] -> [BT, BV]` float32, of weights b_W (`_rounded`) and b_x
    (16-bit or float32): with HALF_P one 16-bit product (the rounded weights convert
    exactly), otherwise float32 operands at DOT_PRECISION."""
    # (if/else, not an early return: Triton compiles the statements after a constexpr
    # branch's return too, where a 16-bit b_W would not type-check.)
    if HALF_P:
        b_y = tl.dot(b_W.to(b_x.dtype), b_x, input_precision=DOT_PRECISION)
    else:
        b_y = tl.dot(b_W, b_x.to(tl.float32), input_precision=DOT_PRECISION)
    return b_y


@triton.jit
def _scan_program(cu_seqlens, chunk_base, H: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                  BC: tl.constexpr, BV: tl.constexpr):
    """A program of a grid `(value tiles, N·H)` scanning one sequence·head's chunk triples
    BC at a time: (value tile i_v, sequence·head i_nh, head i_h, the block's rows o_c
    `[BC]`, the value columns o_v `[BV]` and their mask, the block's last row `[BC, 1]`,
    the sequence's chunk count, and the global id of its first chunk)."""
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_c = tl.arange(0, BC)
    o_v = i_v * BV + tl.arange(0, BV)
    is_last = (o_c == BC - 1)[:, None]
    base = tl.load(chunk_base + i_n).to(tl.int64)
    return i_v, i_nh, i_h, o_c, o_v, o_v < V, is_last, tl.cdiv(eos - bos, BT), base


@triton.jit
def _fwd_prefix_kernel(chunk_m, chunk_u, chunk_w, prefix_m, prefix_u, prefix_w, initial_m, initial_u,
                       initial_w, final_m, final_u, final_w, cu_seqlens, chunk_base, H: tl.constexpr,
                       V: tl.constexpr, USE_INITIAL: tl.constexpr, STORE_FINAL: tl.constexpr,
                       BT: tl.constexpr, BC: tl.constexpr, BV: tl.constexpr):
    i_v, i_nh, i_h, o_c, o_v, m_v, is_last, n_chunks, base = _scan_program(cu_seqlens, chunk_base, H, V, BT, BC, BV)
    # The carried triple: the identity (−inf, 0, 0) or the initial one.
    c_m = tl.full([], float("-inf"), tl.float32)
    c_u = tl.full([], 0.0, tl.float32)
    c_w = tl.zeros([BV], dtype=tl.float32)
    if USE_INITIAL:
        c_m = tl.load(initial_m + i_nh)
        c_u = tl.load(initial_u + i_nh)
        c_w += tl.load(initial_w + i_nh * V + o_v, mask=m_v, other=0.0)
    p_first = base * H + i_h
    tl.store(prefix_w + p_first * V + o_v, c_w, mask=m_v)
    if i_v == 0:
        tl.store(prefix_m + p_first, c_m)
        tl.store(prefix_u + p_first, c_u)
    for c0 in range(0, n_chunks, BC):
        m_c = c0 + o_c < n_chunks
        p_c = (base + c0 + o_c) * H + i_h
        # Rows past the sequence's last chunk load the identity, so the block's last row
        # holds the whole block. m, u are broadcast over the value tile: the scan takes
        # operands of one shape.
        b_m = tl.load(chunk_m + p_c, mask=m_c, other=float("-inf"))[:, None] + tl.zeros([BC, BV], dtype=tl.float32)
        b_u = tl.load(chunk_u + p_c, mask=m_c, other=0.0)[:, None] + tl.zeros([BC, BV], dtype=tl.float32)
        b_w = tl.load(chunk_w + p_c[:, None] * V + o_v[None, :], mask=m_c[:, None] & m_v[None, :], other=0.0)
        b_m, b_u, b_w = tl.associative_scan((b_m, b_u, b_w), 0, _combine)
        b_m, b_u, b_w = _combine(c_m, c_u, c_w[None, :], b_m, b_u, b_w)
        # The inclusive prefix at chunk c enters chunk c + 1.
        m_next = c0 + o_c + 1 < n_chunks
        tl.store(prefix_w + (p_c + H)[:, None] * V + o_v[None, :], b_w, mask=m_next[:, None] & m_v[None, :])
        if i_v == 0:
            # Every column of m and u holds the same value.
            tl.store(prefix_m + p_c + H, tl.max(b_m, axis=1), mask=m_next)
            tl.store(prefix_u + p_c + H, tl.max(b_u, axis=1), mask=m_next)
        c_m = tl.max(tl.where(is_last, b_m, float("-inf")))
        c_u = tl.max(tl.where(is_last, b_u, float("-inf")))
        c_w = tl.max(tl.where(is_last, b_w, float("-inf")), axis=0)
    if STORE_FINAL:
        tl.store(final_w + i_nh * V + o_v, c_w, mask=m_v)
        if i_v == 0:
            tl.store(final_m + i_nh, c_m)
            tl.store(final_u + i_nh, c_u)


@triton.jit
def _fwd_output_kernel(s, v, o, L, prefix_m, prefix_u, prefix_w, chunk_indices, cu_seqlens,
                       H: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                       HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr):
    i_c, i_h, i_n, start, valid, o_t, m_t, p_t = chunk_head_program(chunk_indices, cu_seqlens, H, BT)
    causal = o_t[None, :] <= o_t[:, None]  # [r, j]: j <= r
    b_m = tl.load(prefix_m + i_c * H + i_h)
    b_u = tl.load(prefix_u + i_c * H + i_h)
    b_s = tl.load(s + p_t, mask=m_t, other=float("-inf"))
    # Prefix max of every row, with the entering max: M_r = max(m, max_{j<=r} s_j); finite,
    # as every row sees the chunk's first token. A scan of the `[BT]` scores (a masked
    # `[BT, BT]` max, as before, the compiler built in two register layouts).
    b_M = tl.maximum(tl.associative_scan(b_s, 0, _maximum), b_m)
    # Masked to −inf before the exponential: above the diagonal s_j − M_r may be large.
    b_W = _rounded(tl.exp(tl.where(causal, b_s[None, :] - b_M[:, None], float("-inf"))), v.dtype.element_ty, HALF_P)
    b_carry = tl.exp(b_m - b_M)
    b_ur = b_carry * b_u + tl.sum(b_W, axis=1)
    tl.store(L + p_t, b_M + tl.log(b_ur), mask=m_t)
    for i_v in range(0, V, BV):
        o_v, m_v, m_tv, b_w, b_v = _value_tile(prefix_w, v, i_v, i_c, i_h, p_t, m_t, H, V, BV)
        b_wr = b_carry[:, None] * b_w[None, :] + _weighted_sum(b_W, b_v, HALF_P, DOT_PRECISION)
        tl.store(o + p_t[:, None] * V + o_v[None, :], (b_wr / b_ur[:, None]).to(o.dtype.element_ty), mask=m_tv)
