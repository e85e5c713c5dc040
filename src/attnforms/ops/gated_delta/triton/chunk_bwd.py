"""Triton kernels of the chunked gated delta rule, backward, for no decay or a decay per
head (GATE 0 / 1). Derivation in ../README.md ("Backward").

1. `_state_bwd_kernel`   walks each sequence's chunks in reverse, one program per (value
                         tile, sequence·head), with dS (the gradient of the state at the
                         chunk's end) in registers: stores dS per chunk, the gradient of
                         the pseudo-values' right-hand side dR (with beta) and dV, and
                         the initial state's gradient.
2. `_chunk_bwd_kernel`   per chunk: dq, dk, dβ and dg from the stored forward
                         intermediates and the reverse pass's dS, dR.
"""
import triton
import triton.language as tl

from .chunk_fwd import _chunk_bounds, _decay_exp
from .state_slice import state_slice


@triton.jit(do_not_specialize=["T"])
def _state_bwd_kernel(q, k, G, beta, M, Aqk, do, dstates, dR, dv, dfinal, dinitial, chunk_base,
                      cu_seqlens, scale, T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                      GATE: tl.constexpr, USE_BETA: tl.constexpr, USE_DFINAL: tl.constexpr,
                      STORE_DINITIAL: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                      BV: tl.constexpr):
    i_n, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_dS = state_slice(
        dfinal, cu_seqlens, H, K, V, USE_DFINAL, BK, BV)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    n_chunks = tl.cdiv(eos - bos, BT)
    for i in range(n_chunks):
        i_t = n_chunks - 1 - i
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT)
        m_t = o_t < valid
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        tl.store(dstates + ((first_chunk + i_t) * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]), b_dS, mask=m_kv)
        b_q = tl.load(q + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_k = tl.load(k + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_do = tl.load(do + ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_A = tl.load(Aqk + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
        b_kg = b_k
        b_qg = b_q
        if GATE == 1:
            b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
            b_G_last = tl.load(G + (start + valid - 1) * H + i_h)
            b_k_end = b_k * _decay_exp(b_G_last - b_G)[:, None]
            b_kg = b_k * tl.exp(b_G)[:, None]
            b_qg = b_q * tl.exp(b_G)[:, None]
        else:
            b_k_end = b_k
        # dŨ = A_qkᵀ dO + (K ⊙ Γ_end) dS: [BT, BT]ᵀ @ [BT, BV] + [BT, BK] @ [BK, BV]
        b_du = tl.dot(tl.trans(b_A), b_do) + tl.dot(b_k_end, b_dS)
        # dS_entering = scale (Q ⊙ γ)ᵀ dO + γ_C dS (− (K ⊙ γ)ᵀ (β ⊙ dR) with beta)
        b_dS_in = scale * tl.dot(tl.trans(b_qg), b_do)
        if GATE == 1:
            b_dS_in += b_dS * tl.exp(b_G_last)
        else:
            b_dS_in += b_dS
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        if USE_BETA:
            b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
            b_M = tl.load(M + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
            # dR = Mᵀ dŨ: [BT, BT]ᵀ @ [BT, BV]
            b_dr = tl.dot(tl.trans(b_M), b_du)
            tl.store(dR + p_tv, b_dr, mask=m_tv)
            tl.store(dv + p_tv, (b_beta[:, None] * b_dr).to(dv.dtype.element_ty), mask=m_tv)
            # [BT, BK]ᵀ @ [BT, BV] -> [BK, BV]
            b_dS_in -= tl.dot(tl.trans(b_kg), b_beta[:, None] * b_dr)
        else:
            tl.store(dv + p_tv, b_du.to(dv.dtype.element_ty), mask=m_tv)
        b_dS = b_dS_in
    if STORE_DINITIAL:
        tl.store(dinitial + p_state, b_dS, mask=m_kv)


@triton.jit(do_not_specialize=["T"])
def _chunk_bwd_kernel(q, k, v, G, beta, Aqk, Akk, states, v_new, do, dstates, dR,
                      dq, dk, dg, dbeta, chunk_indices, cu_seqlens, scale, T,
                      H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                      USE_BETA: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Gradients of one chunk's q, k, β and (per-head) g. Sums over the value dimension
    run in tiles of BV; everything else is `[BT, BK]` or `[BT, BT]` in registers."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m_t = o_t < valid
    m_k = o_k < K
    m_tk = m_t[:, None] & m_k[None, :]
    p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
    p_tt = ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :]
    b_q = tl.load(q + p_tk, mask=m_tk, other=0.0).to(tl.float32)
    b_k = tl.load(k + p_tk, mask=m_tk, other=0.0).to(tl.float32)
    b_gamma = tl.full([BT], 1.0, dtype=tl.float32)
    b_to_end = tl.full([BT], 1.0, dtype=tl.float32)
    b_decay = tl.full([BT, BT], 1.0, dtype=tl.float32)
    if GATE == 1:
        b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
        b_G_last = tl.load(G + (start + valid - 1) * H + i_h)
        b_gamma = tl.exp(b_G)
        b_to_end = _decay_exp(b_G_last - b_G)
        b_decay = _decay_exp(b_G[:, None] - b_G[None, :])
    b_beta = tl.full([BT], 1.0, dtype=tl.float32)
    if USE_BETA:
        b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)

    b_dAqk = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAkk = tl.zeros([BT, BT], dtype=tl.float32)
    b_dq_state = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk_rhs = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk_write = tl.zeros([BT, BK], dtype=tl.float32)
    b_dbeta = tl.zeros([BT], dtype=tl.float32)
    b_dG_last = tl.zeros([BK], dtype=tl.float32)
    for v0 in range(0, V, BV):
        o_v = v0 + tl.arange(0, BV)
        m_v = o_v < V
        m_tv = m_t[:, None] & m_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        p_kv = (i_c * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :])
        b_do = tl.load(do + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_u = tl.load(v_new + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_S = tl.load(states + p_kv, mask=m_kv, other=0.0)
        b_dS = tl.load(dstates + p_kv, mask=m_kv, other=0.0)
        # [BT, BV] @ [BV, BT], [BT, BV] @ [BV, BK], [BT, BV] @ [BV, BK]
        b_dAqk += tl.dot(b_do, tl.trans(b_u))
        b_dq_state += tl.dot(b_do, tl.trans(b_S))
        b_dk_write += tl.dot(b_u, tl.trans(b_dS))
        b_dG_last += tl.sum(b_S * b_dS, axis=1)
        if USE_BETA:
            b_dr = tl.load(dR + p_tv, mask=m_tv, other=0.0)
            b_v = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32)
            # [BT, BV] @ [BV, BT], [BT, BV] @ [BV, BK], [BT, BK] @ [BK, BV]
            b_dAkk -= tl.dot(b_dr, tl.trans(b_u))
            b_dk_rhs -= tl.dot(b_beta[:, None] * b_dr, tl.trans(b_S))
            b_rhs = b_v - tl.dot(b_k * b_gamma[:, None], b_S)
            b_dbeta += tl.sum(b_dr * b_rhs, axis=1)

    lower = o_t[:, None] >= o_t[None, :]
    b_dAqk = tl.where(lower & m_t[:, None], b_dAqk, 0.0)
    # Coefficient of q_r·k_s in A_qk: scale · Γ_rs.
    b_cqk = b_dAqk * b_decay * scale
    # [BT, BT] @ [BT, BK] -> [BT, BK], twice
    b_dq = tl.dot(b_cqk, b_k) + scale * b_gamma[:, None] * b_dq_state
    b_dk = tl.dot(tl.trans(b_cqk), b_q) + b_to_end[:, None] * b_dk_write
    if USE_BETA:
        b_dAkk = tl.where((o_t[:, None] > o_t[None, :]) & m_t[:, None], b_dAkk, 0.0)
        # A_kk = Diag(β) A' with A' = Γ ⊙ K Kᵀ as stored: dβ_r = Σ_s dA_rs A'_rs.
        b_Aprime = tl.load(Akk + p_tt, mask=m_t[:, None], other=0.0)
        b_dbeta += tl.sum(b_dAkk * b_Aprime, axis=1)
        b_ckk = b_dAkk * b_beta[:, None] * b_decay
        b_dk += tl.dot(b_ckk, b_k) + tl.dot(tl.trans(b_ckk), b_k) + b_gamma[:, None] * b_dk_rhs
        tl.store(dbeta + (start + o_t) * H + i_h, b_dbeta.to(dbeta.dtype.element_ty), mask=m_t)
    tl.store(dq + p_tk, b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + p_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
    if GATE == 1:
        # Each term holding exp(G_r − G_s) moves with G_r and against G_s: row sums of
        # (gradient ⊙ value) minus column sums.
        b_Eqk = b_dAqk * tl.load(Aqk + p_tt, mask=m_t[:, None], other=0.0)
        b_dG = tl.sum(b_Eqk, axis=1) - tl.sum(b_Eqk, axis=0)
        b_dG += tl.sum(b_q * scale * b_gamma[:, None] * b_dq_state, axis=1)
        b_write = tl.sum(b_k * b_to_end[:, None] * b_dk_write, axis=1)
        b_dG -= b_write
        if USE_BETA:
            b_Ekk = b_dAkk * b_beta[:, None] * b_Aprime
            b_dG += tl.sum(b_Ekk, axis=1) - tl.sum(b_Ekk, axis=0)
            b_dG += tl.sum(b_k * b_gamma[:, None] * b_dk_rhs, axis=1)
        # The last step's G also carries the state's decay and every write's decay.
        b_last = tl.sum(b_write, axis=0) + tl.exp(b_G_last) * tl.sum(b_dG_last, axis=0)
        b_dG += tl.where(o_t == valid - 1, b_last, 0.0)
        b_dG = tl.where(m_t, b_dG, 0.0)
        # g_j enters every G_r with r >= j: a reverse cumulative sum.
        b_dg = tl.sum(b_dG, axis=0) - tl.cumsum(b_dG, axis=0) + b_dG
        tl.store(dg + (start + o_t) * H + i_h, b_dg.to(dg.dtype.element_ty), mask=m_t)
