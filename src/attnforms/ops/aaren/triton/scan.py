"""Triton kernels of Aaren's prefix scan over the softmax triple (m, u, w), forward and
backward (see ../README.md, "Kernels").

1. `_score_kernel`     per (chunk, head): s_t = scale · q·k_t, float32.
2. `_scan_fwd_kernel`  per (value tile, sequence·head), walking the chunks in order with
                       the carried triple in registers: inside a chunk the prefix triples
                       in closed form (a `[BT, BT]` masked matrix of e^{s_j − M_r}), the
                       outputs w/u, the prefix log-sum-exp L_t = M_t + log u_t (for the
                       backward) and the final triple.
3. `_scan_bwd_kernel`  per (value tile, sequence·head), walking the chunks in reverse with
                       the later tokens' Σ_t e^{R − L_t} do_t and Σ_t e^{R − L_t} δ_t in
                       registers (R: the log-sum-exp at the chunk end, so every exponent
                       is <= 0): dv, the score gradient (partial per value tile) and the
                       initial triple's gradient.
4. `_score_bwd_kernel` per (chunk, head): dk = scale·ds·q and the chunk's part of dq.
"""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_bounds as _chunk_bounds, sequence_head_program


@triton.jit
def _score_kernel(q, k, s, chunk_indices, cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr,
                  BT: tl.constexpr, BK: tl.constexpr):
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_t = o_t < valid
    m_k = o_k < K
    p_t = (start + o_t) * H + i_h
    b_q = tl.load(q + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    b_k = tl.load(k + p_t[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)
    tl.store(s + p_t, tl.sum(b_k * b_q[None, :], axis=1) * scale, mask=m_t)


@triton.jit
def _scan_fwd_kernel(s, v, o, L, initial_m, initial_u, initial_w, final_m, final_u, final_w,
                     cu_seqlens, H: tl.constexpr, V: tl.constexpr, USE_INITIAL: tl.constexpr,
                     STORE_FINAL: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_t = tl.arange(0, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    causal = o_t[None, :] <= o_t[:, None]
    b_m = tl.full([], float("-inf"), tl.float32)
    b_u = tl.full([], 0.0, tl.float32)
    b_w = tl.zeros([BV], dtype=tl.float32)
    if USE_INITIAL:
        b_m = tl.load(initial_m + i_nh)
        b_u = tl.load(initial_u + i_nh)
        b_w += tl.load(initial_w + i_nh * V + o_v, mask=m_v, other=0.0)
    for start in range(bos, eos, BT):
        m_t = o_t < eos - start
        p_t = (start + o_t) * H + i_h
        b_s = tl.load(s + p_t, mask=m_t, other=float("-inf"))
        b_v = tl.load(v + p_t[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        # Prefix max of every row, with the carried max: M_r = max(m, max_{j<=r} s_j).
        b_M = tl.maximum(tl.max(tl.where(causal, b_s[None, :], float("-inf")), axis=1), b_m)
        b_W = tl.exp(tl.where(causal, b_s[None, :] - b_M[:, None], float("-inf")))
        b_carry = tl.exp(b_m - b_M)
        b_ur = b_carry * b_u + tl.sum(b_W, axis=1)
        # [BT, BT] @ [BT, BV] -> [BT, BV]
        b_wr = b_carry[:, None] * b_w[None, :] + tl.dot(b_W, b_v)
        tl.store(o + p_t[:, None] * V + o_v[None, :], (b_wr / b_ur[:, None]).to(o.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])
        if i_v == 0:
            tl.store(L + p_t, b_M + tl.log(b_ur), mask=m_t)
        b_m_new = tl.maximum(b_m, tl.max(b_s, axis=0))
        b_e = tl.exp(b_s - b_m_new)
        b_old = tl.exp(b_m - b_m_new)
        b_u = b_old * b_u + tl.sum(b_e, axis=0)
        b_w = b_old * b_w + tl.sum(b_e[:, None] * b_v, axis=0)
        b_m = b_m_new
    if STORE_FINAL:
        tl.store(final_w + i_nh * V + o_v, b_w, mask=m_v)
        if i_v == 0:
            tl.store(final_m + i_nh, b_m)
            tl.store(final_u + i_nh, b_u)


@triton.jit
def _scan_bwd_kernel(s, v, do, L, delta, G_init, Gamma_init, initial_m, dv, ds_part, dinitial_u,
                     dinitial_w, cu_seqlens, H: tl.constexpr, V: tl.constexpr, NV: tl.constexpr,
                     USE_INITIAL: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_t = tl.arange(0, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    causal = o_t[None, :] <= o_t[:, None]  # [t, j]: j <= t
    # Carried sums over the later tokens, relative to the log-sum-exp at the current
    # chunk's end (the final-state gradient enters here, see the launcher).
    b_G = tl.load(G_init + i_nh * V + o_v, mask=m_v, other=0.0)
    b_Gamma = tl.load(Gamma_init + i_nh)
    n_chunks = tl.cdiv(eos - bos, BT)
    for i in range(n_chunks):
        start = bos + (n_chunks - 1 - i) * BT
        valid = tl.minimum(eos - start, BT)
        m_t = o_t < valid
        m_tv = m_t[:, None] & m_v[None, :]
        p_t = (start + o_t) * H + i_h
        b_s = tl.load(s + p_t, mask=m_t, other=float("-inf"))
        b_L = tl.load(L + p_t, mask=m_t, other=float("inf"))
        b_v = tl.load(v + p_t[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_do = tl.load(do + p_t[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_delta = tl.load(delta + p_t, mask=m_t, other=0.0)
        b_R = tl.load(L + (start + valid - 1) * H + i_h)
        # [t, j]: the attention weight of token j at row t.
        b_P = tl.exp(tl.where(causal & m_t[:, None], b_s[None, :] - b_L[:, None], float("-inf")))
        b_to_end = tl.exp(b_s - b_R)
        # [BT, BT]ᵀ @ [BT, BV] -> [BT, BV]
        b_dv = tl.dot(tl.trans(b_P), b_do) + b_to_end[:, None] * b_G[None, :]
        tl.store(dv + p_t[:, None] * V + o_v[None, :], b_dv.to(dv.dtype.element_ty), mask=m_tv)
        b_ds = tl.sum(b_v * b_dv, axis=1)
        if i_v == 0:
            b_ds -= tl.sum(b_P * b_delta[:, None], axis=0) + b_to_end * b_Gamma
        tl.store(ds_part + p_t * NV + i_v, b_ds, mask=m_t)
        # Move the reference to the previous chunk's end (the initial max before the first).
        if i == n_chunks - 1:
            if USE_INITIAL:
                b_R_prev = tl.load(initial_m + i_nh)
            else:
                b_R_prev = tl.full([], float("-inf"), tl.float32)
        else:
            b_R_prev = tl.load(L + (start - 1) * H + i_h)
        b_back = tl.where(m_t, tl.exp(b_R_prev - b_L), 0.0)
        b_shift = tl.exp(b_R_prev - b_R)
        b_G = b_shift * b_G + tl.sum(b_back[:, None] * b_do, axis=0)
        b_Gamma = b_shift * b_Gamma + tl.sum(b_back * b_delta, axis=0)
    if USE_INITIAL:
        tl.store(dinitial_w + i_nh * V + o_v, b_G, mask=m_v)
        if i_v == 0:
            tl.store(dinitial_u + i_nh, -b_Gamma)


@triton.jit
def _score_bwd_kernel(q, k, ds, dk, dq_part, chunk_indices, cu_seqlens, scale, H: tl.constexpr,
                      K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_t = o_t < valid
    m_k = o_k < K
    p_t = (start + o_t) * H + i_h
    m_tk = m_t[:, None] & m_k[None, :]
    b_ds = tl.load(ds + p_t, mask=m_t, other=0.0) * scale
    b_q = tl.load(q + (i_n * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    b_k = tl.load(k + p_t[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
    tl.store(dk + p_t[:, None] * K + o_k[None, :], (b_ds[:, None] * b_q[None, :]).to(dk.dtype.element_ty), mask=m_tk)
    tl.store(dq_part + (i_c * H + i_h) * K + o_k, tl.sum(b_ds[:, None] * b_k, axis=0), mask=m_k)
