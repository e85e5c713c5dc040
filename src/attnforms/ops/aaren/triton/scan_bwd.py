"""Triton kernels of Aaren's backward: the forward's scan reversed, in three phases
parallel over chunks (see ../README.md, "Kernels").

With p_tj = e^{s_j − L_t} (the weight of token j at row t) and δ_t = do_t·o_t:
dv_j = Σ_{t≥j} p_tj do_t and ds_j = v_j·dv_j − Σ_{t≥j} p_tj δ_t. The later chunks enter
chunk c through the carries G_c = Σ_{t after c} e^{R_c − L_t} do_t and Γ_c (the same with
δ_t), relative to R_c, the log-sum-exp at chunk c's last token, so every exponent is <= 0
(L grows along the sequence). R before a sequence's first chunk is the initial max (−inf
without one), so that the carry there is the initial triple's gradient.

1. `_bwd_summary_kernel` per (chunk, head), all chunks at once: δ_t, from the output
   recomputed in float32 from the forward's entering triple (m, u, w),
   o_t = (e^{m−L_t} w + Σ_j p_tj v_j) / (e^{m−L_t} u + Σ_j p_tj), and the chunk's own part of the carry entering the chunk before, relative to R_{c−1}:
   g_c = Σ_{t∈c} e^{R_{c−1} − L_t} do_t, γ_c (the same with δ_t) and the factor
   a_c = e^{R_{c−1} − R_c}, so that G_{c−1} = a_c G_c + g_c.
2. `_bwd_suffix_kernel`  per (value tile, sequence·head): G_c, Γ_c for every chunk, from the
   final triple's gradient backwards, by an associative scan of the affine maps
   x ↦ a_c x + g_c over blocks of BC chunks; and the initial triple's gradient.
3. `_bwd_output_kernel`  per (chunk, head), all chunks at once: dv and ds from the
   `[BT, BT]` matrix of p and the carries, then dk = scale·ds·q and the chunk's part of dq.
"""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_head_program

from .scan import _rounded, _scan_program, _value_tile, _weighted_sum


@triton.jit
def _attention_weights(s, L, p_t, m_t, dtype, BT: tl.constexpr, HALF_P: tl.constexpr):
    """s `[BT]`, L `[BT]` of one chunk -> p `[BT, BT]`, [t, j] = e^{s_j − L_t} for j <= t
    (0 elsewhere and on padding rows; `_rounded` to `dtype` with HALF_P), and s, L as
    loaded (−inf, +inf on padding)."""
    o_t = tl.arange(0, BT)
    b_s = tl.load(s + p_t, mask=m_t, other=float("-inf"))
    b_L = tl.load(L + p_t, mask=m_t, other=float("inf"))
    causal = (o_t[None, :] <= o_t[:, None]) & m_t[:, None]
    b_P = tl.exp(tl.where(causal, b_s[None, :] - b_L[:, None], float("-inf")))
    return _rounded(b_P, dtype, HALF_P), b_s, b_L


@triton.jit
def _bwd_summary_kernel(s, L, v, do, delta, prefix_m, prefix_u, prefix_w, initial_m, chunk_a, chunk_g,
                        chunk_gamma, chunk_indices, cu_seqlens, H: tl.constexpr, V: tl.constexpr,
                        USE_INITIAL: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                        HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr):
    i_c, i_h, i_n, start, valid, o_t, m_t, p_t = chunk_head_program(chunk_indices, cu_seqlens, H, BT)
    b_P, b_s, b_L = _attention_weights(s, L, p_t, m_t, v.dtype.element_ty, BT, HALF_P)
    b_m = tl.load(prefix_m + i_c * H + i_h)
    # R before the chunk: the log-sum-exp at the previous chunk's end, or before the
    # sequence's first chunk the initial max (−inf without one).
    if start == tl.load(cu_seqlens + i_n):
        b_R_prev = tl.full([], float("-inf"), tl.float32)
        if USE_INITIAL:
            b_R_prev = tl.load(initial_m + i_n * H + i_h)
    else:
        b_R_prev = tl.load(L + (start - 1) * H + i_h)
    b_R = tl.load(L + (start + valid - 1) * H + i_h)
    b_in = tl.exp(b_m - b_L)  # weight of the entering w in o_t (0 on padding rows)
    # The denominator is 1 but for the rounding of L_t (~ulp(L_t), 1e-3 at |L| ~ 1e4):
    # dividing by it gives the forward's w_r / u_r, so δ_t does not carry that rounding
    # into Σ_j ds_j (and so into dq, where the keys have a large common part).
    b_den = b_in * tl.load(prefix_u + i_c * H + i_h) + tl.sum(b_P, axis=1)
    b_den = tl.where(m_t, b_den, 1.0)
    b_back = tl.exp(b_R_prev - b_L)
    b_delta = tl.zeros([BT], dtype=tl.float32)
    for i_v in range(0, V, BV):
        o_v, m_v, m_tv, b_w, b_v = _value_tile(prefix_w, v, i_v, i_c, i_h, p_t, m_t, H, V, BV)
        b_do = tl.load(do + p_t[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        # The output, as the forward computed it.
        b_o = (b_in[:, None] * b_w[None, :] + _weighted_sum(b_P, b_v, HALF_P, DOT_PRECISION)) / b_den[:, None]
        b_delta += tl.sum(b_do * b_o, axis=1)
        tl.store(chunk_g + (i_c * H + i_h) * V + o_v, tl.sum(b_back[:, None] * b_do, axis=0), mask=m_v)
    tl.store(delta + p_t, b_delta, mask=m_t)
    tl.store(chunk_gamma + i_c * H + i_h, tl.sum(b_back * b_delta, axis=0))
    tl.store(chunk_a + i_c * H + i_h, tl.exp(b_R_prev - b_R))


@triton.jit
def _compose(a_p, g_p, c_p, a_q, g_q, c_q):
    """The affine map x ↦ a_p x + g_p followed by x ↦ a_q x + g_q (two carries g, c
    sharing the factor a)."""
    return a_q * a_p, a_q * g_p + g_q, a_q * c_p + c_q


@triton.jit
def _bwd_suffix_kernel(chunk_a, chunk_g, chunk_gamma, carry_G, carry_Gamma, G_final, Gamma_final,
                       dinitial_u, dinitial_w, cu_seqlens, chunk_base, H: tl.constexpr,
                       V: tl.constexpr, USE_INITIAL: tl.constexpr, BT: tl.constexpr,
                       BC: tl.constexpr, BV: tl.constexpr):
    i_v, i_nh, i_h, o_c, o_v, m_v, is_last, n_chunks, base = _scan_program(cu_seqlens, chunk_base, H, V, BT, BC, BV)
    # The carry entering the last chunk: the final triple's gradient (see the launcher).
    c_G = tl.load(G_final + i_nh * V + o_v, mask=m_v, other=0.0)
    c_Gamma = tl.load(Gamma_final + i_nh)
    p_last = (base + n_chunks - 1) * H + i_h
    tl.store(carry_G + p_last * V + o_v, c_G, mask=m_v)
    if i_v == 0:
        tl.store(carry_Gamma + p_last, c_Gamma)
    for c0 in range(0, n_chunks, BC):
        # Row r of the block is chunk n_chunks − 1 − c0 − r: a forward scan over the rows
        # walks the chunks backwards. Rows before the first chunk load the identity map.
        i_r = n_chunks - 1 - c0 - o_c
        m_c = i_r >= 0
        p_c = (base + i_r) * H + i_h
        b_a = tl.load(chunk_a + p_c, mask=m_c, other=1.0)[:, None] + tl.zeros([BC, BV], dtype=tl.float32)
        b_c = tl.load(chunk_gamma + p_c, mask=m_c, other=0.0)[:, None] + tl.zeros([BC, BV], dtype=tl.float32)
        b_g = tl.load(chunk_g + p_c[:, None] * V + o_v[None, :], mask=m_c[:, None] & m_v[None, :], other=0.0)
        b_a, b_g, b_c = tl.associative_scan((b_a, b_g, b_c), 0, _compose)
        # Row r now maps the carry entering the block to the carry entering chunk i_r − 1.
        b_G = b_a * c_G[None, :] + b_g
        b_Gamma = b_a * c_Gamma + b_c
        m_prev = i_r >= 1
        tl.store(carry_G + (p_c - H)[:, None] * V + o_v[None, :], b_G, mask=m_prev[:, None] & m_v[None, :])
        if i_v == 0:
            tl.store(carry_Gamma + p_c - H, tl.max(b_Gamma, axis=1), mask=m_prev)
        c_G = tl.max(tl.where(is_last, b_G, float("-inf")), axis=0)
        c_Gamma = tl.max(tl.where(is_last, b_Gamma, float("-inf")))
    if USE_INITIAL:
        # Referred to the initial max, the carry is the gradient of w_0 and −that of u_0.
        tl.store(dinitial_w + i_nh * V + o_v, c_G, mask=m_v)
        if i_v == 0:
            tl.store(dinitial_u + i_nh, -c_Gamma)


@triton.jit
def _bwd_output_kernel(q, k, s, L, v, do, delta, carry_G, carry_Gamma, final_m, max_grad, dq_part, dk,
                       dv, chunk_indices, cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr,
                       V: tl.constexpr, USE_MAX_GRAD: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                       BV: tl.constexpr, HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr):
    i_c, i_h, i_n, start, valid, o_t, m_t, p_t = chunk_head_program(chunk_indices, cu_seqlens, H, BT)
    b_P, b_s, b_L = _attention_weights(s, L, p_t, m_t, v.dtype.element_ty, BT, HALF_P)
    b_delta = tl.load(delta + p_t, mask=m_t, other=0.0)
    b_R = tl.load(L + (start + valid - 1) * H + i_h)
    b_to_end = tl.exp(b_s - b_R)
    b_ds = -(tl.sum(b_P * b_delta[:, None], axis=0) + b_to_end * tl.load(carry_Gamma + i_c * H + i_h))
    for i_v in range(0, V, BV):
        o_v, m_v, m_tv, b_G, b_v = _value_tile(carry_G, v, i_v, i_c, i_h, p_t, m_t, H, V, BV)
        b_do = tl.load(do + p_t[:, None] * V + o_v[None, :], mask=m_tv, other=0.0)
        b_dv = _weighted_sum(tl.trans(b_P), b_do, HALF_P, DOT_PRECISION) + b_to_end[:, None] * b_G[None, :]
        tl.store(dv + p_t[:, None] * V + o_v[None, :], b_dv.to(dv.dtype.element_ty), mask=m_tv)
        b_ds += tl.sum(b_v.to(tl.float32) * b_dv, axis=1)
    if USE_MAX_GRAD:
        # The final max's own gradient, shared by the scores that attain it (launcher).
        b_ds += tl.where(b_s == tl.load(final_m + i_n * H + i_h), tl.load(max_grad + i_n * H + i_h), 0.0)
    b_ds = tl.where(m_t, b_ds, 0.0) * scale
    for i_k in tl.static_range(0, K, BK):
        o_k = i_k + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(k + p_t[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        tl.store(dk + p_t[:, None] * K + o_k[None, :], (b_ds[:, None] * b_q[None, :]).to(dk.dtype.element_ty), mask=m_tk)
        tl.store(dq_part + (i_c * H + i_h) * K + o_k, tl.sum(b_ds[:, None] * b_k, axis=0), mask=m_k)
