"""Triton kernels of the chunked gated delta rule, backward, for no decay, a decay per
head (GATE 0 / 1) or per key channel (GATE 2). Derivation in ../README.md ("Backward").

1. `_state_bwd_kernel`   walks each sequence's chunks in reverse, one program per (value
                         tile, sequence·head), with dS (the gradient of the state at the
                         chunk's end) in registers: stores dS per chunk, the gradient of
                         the pseudo-values' right-hand side dR (with beta) and dV, and
                         the initial state's gradient.
2. `_chunk_bwd_kernel`   per chunk: dq, dk, dβ and dg from the stored forward
                         intermediates and the reverse pass's dS, dR. With a per-channel
                         decay it stops short of the in-chunk products, which
3. `_channel_bwd_kernel`  (chunk_bwd_channel.py) forms by secondary chunking.
"""
import triton
import triton.language as tl

from ....kernels.sequences import global_chunk_id

from .chunk_fwd import _operand
from .common import _chunk_bounds, _chunk_end_decay, _decay_exp
from .state_slice import state_slice


@triton.jit(do_not_specialize=["T"])
def _state_bwd_kernel(q, k, qd, kd, kg, G, beta, M, Aqk, do, dstates, dR, dv, dfinal, dinitial, chunk_base,
                      cu_seqlens, scale, T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                      GATE: tl.constexpr, USE_BETA: tl.constexpr, USE_DFINAL: tl.constexpr,
                      STORE_DINITIAL: tl.constexpr, LOW: tl.constexpr, DOT_PRECISION: tl.constexpr,
                      BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SEQ_STRIDE: tl.constexpr = 1):
    """The reverse pass over one sequence's chunks for value columns i_v·BV..: dS `[BK,
    BV]` float32 in registers. A decay per head scales rows of the `[BT, BV]` tiles, so q
    and k enter the products as loaded; a per-channel one through the forward's decayed
    qd = scale·Q ⊙ γ, kd = K ⊙ exp(G_C − G) and (with beta) kg = γ ⊙ K `[rows, H, K]`
    (chunk_prepare_channel.py).
    LOW: 16-bit operands (q, k, dO as loaded; A_qk, M, dS, dŨ rounded), float32
    accumulation, as in the forward pass (chunk_fwd.py); DOT_PRECISION as there.
    SEQ_STRIDE 2: `cu_seqlens` and `chunk_base` name one segment of every sequence (the
    pipelined backward; dfinal and dinitial are then the gradients of the states leaving
    and entering the segment)."""
    i_n, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_dS = state_slice(
        dfinal, cu_seqlens, H, K, V, USE_DFINAL, BK, BV, SEQ_STRIDE)
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
        tl.store(dstates + ((first_chunk + i_t) * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]),
                 b_dS.to(dstates.dtype.element_ty), mask=m_kv)
        p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_do = tl.load(do + ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_A = tl.load(Aqk + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
        b_dS_op = _operand(b_dS, LOW, q)
        if GATE == 2:
            b_G_last = _chunk_end_decay(G, start, valid, i_h, o_k, H, K)
            b_k_end = _operand(tl.load(kd + p_tk, mask=m_tk, other=0.0), LOW, q)
            if USE_BETA:  # γ ⊙ K, for the β dR term
                b_kg = _operand(tl.load(kg + p_tk, mask=m_tk, other=0.0), LOW, q)
            # dŨ = A_qkᵀ dO + (K ⊙ Γ_end) dS: [BT, BT]ᵀ @ [BT, BV] + [BT, BK] @ [BK, BV]
            b_du = (tl.dot(tl.trans(_operand(b_A, LOW, q)), _operand(b_do, LOW, q), input_precision=DOT_PRECISION)
                    + tl.dot(b_k_end, b_dS_op, input_precision=DOT_PRECISION))
            # dS_entering = (scale Q ⊙ γ)ᵀ dO + γ_C dS (− (K ⊙ γ)ᵀ (β ⊙ dR) with beta)
            b_qd = _operand(tl.load(qd + p_tk, mask=m_tk, other=0.0), LOW, q)
            b_dS_in = (tl.dot(tl.trans(b_qd), _operand(b_do, LOW, q), input_precision=DOT_PRECISION)
                       + b_dS * tl.exp(b_G_last)[:, None])
        else:
            b_q = _operand(tl.load(q + p_tk, mask=m_tk, other=0.0), LOW, q)
            b_k = _operand(tl.load(k + p_tk, mask=m_tk, other=0.0), LOW, q)
            b_kg = b_k
            # Per-row factors: γ (from the chunk start) and Γ_end (to the chunk end).
            b_gamma = tl.full([BT], 1.0, dtype=tl.float32)
            b_to_end = tl.full([BT], 1.0, dtype=tl.float32)
            if GATE == 1:
                b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
                b_G_last = tl.load(G + (start + valid - 1) * H + i_h)
                b_gamma = tl.exp(b_G)
                b_to_end = _decay_exp(b_G_last - b_G)
            b_du = tl.dot(tl.trans(_operand(b_A, LOW, q)), _operand(b_do, LOW, q), input_precision=DOT_PRECISION)
            b_du += b_to_end[:, None] * tl.dot(b_k, b_dS_op, input_precision=DOT_PRECISION)
            # [BT, BK]ᵀ @ [BT, BV] -> [BK, BV]
            b_dS_in = scale * tl.dot(tl.trans(b_q), _operand(b_gamma[:, None] * b_do, LOW, q),
                                     input_precision=DOT_PRECISION)
            if GATE == 1:
                b_dS_in += b_dS * tl.exp(b_G_last)
            else:
                b_dS_in += b_dS
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        if USE_BETA:
            b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
            b_M = tl.load(M + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
            # dR = Mᵀ dŨ: [BT, BT]ᵀ @ [BT, BV]
            b_dr = tl.dot(tl.trans(_operand(b_M, LOW, q)), _operand(b_du, LOW, q), input_precision=DOT_PRECISION)
            tl.store(dR + p_tv, b_dr.to(dR.dtype.element_ty), mask=m_tv)
            tl.store(dv + p_tv, (b_beta[:, None] * b_dr).to(dv.dtype.element_ty), mask=m_tv)
            # [BT, BK]ᵀ @ [BT, BV] -> [BK, BV]
            b_bdr = b_beta[:, None] * b_dr
            if GATE != 2:
                b_bdr *= b_gamma[:, None]
            b_dS_in -= tl.dot(tl.trans(b_kg), _operand(b_bdr, LOW, q), input_precision=DOT_PRECISION)
        else:
            tl.store(dv + p_tv, b_du.to(dv.dtype.element_ty), mask=m_tv)
        b_dS = b_dS_in
    if STORE_DINITIAL:
        tl.store(dinitial + p_state, b_dS, mask=m_kv)


@triton.jit(do_not_specialize=["T"])
def _chunk_bwd_kernel(q, k, v, G, beta, Aqk, Akk, states, v_new, do, dstates, dR,
                      dq, dk, dg, dbeta, Pqk, Pkk, dq_part, dk_part, dG_part,
                      chunk_indices, chunk_base, cu_seqlens, scale, T,
                      H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                      USE_BETA: tl.constexpr, LOW: tl.constexpr, DOT_PRECISION: tl.constexpr, BT: tl.constexpr,
                      BK: tl.constexpr, BV: tl.constexpr):
    """Gradients of one chunk's q, k, β and g, in two phases: the `[BT, BT]` score
    gradients (sums over the value dimension, in tiles of BV), then the key dimension
    in tiles of BK, each with its own sums over the value tiles; only `[BT, BK]` and
    `[BT, BT]` blocks live in registers. With a per-channel decay (GATE 2) the in-chunk
    products need the decay inside the sum over channels: this kernel then stores the
    coefficient matrices and the other parts in float32 and `_channel_bwd_kernel`
    finishes dq, dk and dg. LOW: 16-bit product operands (the inputs as loaded, the
    float32 intermediates rounded), float32 accumulation and float32 elementwise sums;
    DOT_PRECISION: the products' `input_precision` (chunk_fwd.py). `chunk_indices` may
    name any subset of the chunks (one segment of the pipelined backward): a chunk's
    state is found by its global id, `chunk_base` of its sequence + its index."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    i_g = global_chunk_id(chunk_indices, chunk_base, i_c, i_n)
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    p_tt = ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :]
    b_beta = tl.full([BT], 1.0, dtype=tl.float32)
    if USE_BETA:
        b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)

    # Phase 1: dA_qk = Tril(dO Ũᵀ), dA = −StrictTril(dR Ũᵀ) and dβ's Σ_v dR ⊙ V.
    b_dAqk = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAkk = tl.zeros([BT, BT], dtype=tl.float32)
    b_dbeta = tl.zeros([BT], dtype=tl.float32)
    for v0 in range(0, V, BV):
        o_v = v0 + tl.arange(0, BV)
        m_tv = m_t[:, None] & (o_v < V)[None, :]
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        b_do = _operand(tl.load(do + p_tv, mask=m_tv, other=0.0), LOW, q)
        b_u = _operand(tl.load(v_new + p_tv, mask=m_tv, other=0.0), LOW, q)
        # [BT, BV] @ [BV, BT] -> [BT, BT]
        b_dAqk += tl.dot(b_do, tl.trans(b_u), input_precision=DOT_PRECISION)
        if USE_BETA:
            b_dr = tl.load(dR + p_tv, mask=m_tv, other=0.0)
            b_v = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32)
            # [BT, BV] @ [BV, BT] -> [BT, BT]
            b_dAkk -= tl.dot(_operand(b_dr, LOW, q), tl.trans(b_u), input_precision=DOT_PRECISION)
            b_dbeta += tl.sum(b_dr.to(tl.float32) * b_v, axis=1)
    b_dAqk = tl.where((o_t[:, None] >= o_t[None, :]) & m_t[:, None], b_dAqk, 0.0) * scale
    if USE_BETA:
        b_dAkk = tl.where((o_t[:, None] > o_t[None, :]) & m_t[:, None], b_dAkk, 0.0)
        # A_kk = Diag(β) A' with A' as stored: dβ_r = Σ_s dA_rs A'_rs.
        b_Aprime = tl.load(Akk + p_tt, mask=m_t[:, None], other=0.0)
        b_dbeta += tl.sum(b_dAkk * b_Aprime, axis=1)
        b_dAkk = b_dAkk * b_beta[:, None]
    # Coefficients of q_r·k_s and k_r·k_s: the gradient times the decay Γ_rs.
    b_cqk = b_dAqk
    b_ckk = b_dAkk
    if GATE == 1:
        b_G1 = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
        b_G1_last = tl.load(G + (start + valid - 1) * H + i_h)
        b_decay = _decay_exp(b_G1[:, None] - b_G1[None, :])
        b_cqk = b_dAqk * b_decay
        b_ckk = b_dAkk * b_decay
    elif GATE == 2:
        tl.store(Pqk + p_tt, b_dAqk, mask=m_t[:, None])
        if USE_BETA:
            tl.store(Pkk + p_tt, b_dAkk, mask=m_t[:, None])

    # Phase 2, one key tile at a time: the parts outside the in-chunk products (the
    # state read, the delta rule's right-hand side, the writes into the next state),
    # then the in-chunk products themselves (GATE 0 / 1).
    b_dG_row = tl.zeros([BT], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_q = tl.load(q + p_tk, mask=m_tk, other=0.0).to(tl.float32)
        b_k = tl.load(k + p_tk, mask=m_tk, other=0.0).to(tl.float32)
        # γ (decay from the chunk start), Γ_end (to the chunk end), `[BT, 1]` or `[BT, BK]`.
        b_gamma = tl.full([BT, 1], 1.0, dtype=tl.float32)
        b_to_end = tl.full([BT, 1], 1.0, dtype=tl.float32)
        if GATE == 1:
            b_gamma = tl.exp(b_G1)[:, None]
            b_to_end = _decay_exp(b_G1_last - b_G1)[:, None]
        elif GATE == 2:
            b_G = tl.load(G + p_tk, mask=m_tk, other=0.0)
            b_G_last = _chunk_end_decay(G, start, valid, i_h, o_k, H, K)
            b_gamma = tl.exp(b_G)
            b_to_end = _decay_exp(b_G_last[None, :] - b_G)
        b_dq_state = tl.zeros([BT, BK], dtype=tl.float32)
        b_drS = tl.zeros([BT, BK], dtype=tl.float32)
        b_dk_write = tl.zeros([BT, BK], dtype=tl.float32)
        b_dG_last = tl.zeros([BK], dtype=tl.float32)
        for v0 in range(0, V, BV):
            o_v = v0 + tl.arange(0, BV)
            m_v = o_v < V
            m_tv = m_t[:, None] & m_v[None, :]
            m_kv = m_k[:, None] & m_v[None, :]
            p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
            p_kv = (i_g * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :])
            b_do = _operand(tl.load(do + p_tv, mask=m_tv, other=0.0), LOW, q)
            b_u = _operand(tl.load(v_new + p_tv, mask=m_tv, other=0.0), LOW, q)
            b_S = tl.load(states + p_kv, mask=m_kv, other=0.0).to(tl.float32)
            b_dS = tl.load(dstates + p_kv, mask=m_kv, other=0.0).to(tl.float32)
            b_S_op = _operand(b_S, LOW, q)
            # [BT, BV] @ [BV, BK] -> [BT, BK], twice
            b_dq_state += tl.dot(b_do, tl.trans(b_S_op), input_precision=DOT_PRECISION)
            b_dk_write += tl.dot(b_u, tl.trans(_operand(b_dS, LOW, q)), input_precision=DOT_PRECISION)
            b_dG_last += tl.sum(b_S * b_dS, axis=1)
            if USE_BETA:
                b_dr = _operand(tl.load(dR + p_tv, mask=m_tv, other=0.0), LOW, q)
                # [BT, BV] @ [BV, BK] -> [BT, BK]
                b_drS += tl.dot(b_dr, tl.trans(b_S_op), input_precision=DOT_PRECISION)
        b_dk_rhs = -b_beta[:, None] * b_drS
        if USE_BETA:
            # dβ's other term: −Σ_v dR ⊙ ((K ⊙ γ) S₀), regrouped by key channel.
            b_dbeta -= tl.sum(b_k * b_gamma * b_drS, axis=1)
        b_dq = scale * b_gamma * b_dq_state
        b_dk = b_gamma * b_dk_rhs + b_to_end * b_dk_write
        if GATE != 0:
            # dG per channel; the last step's G also carries the state's decay and every
            # write's decay to the chunk end.
            b_dG = b_q * b_dq + b_k * b_gamma * b_dk_rhs - b_k * b_to_end * b_dk_write
            b_last = tl.sum(b_k * b_to_end * b_dk_write, axis=0)
            if GATE == 1:
                b_last += tl.exp(b_G1_last) * b_dG_last
            else:
                b_last += tl.exp(b_G_last) * b_dG_last
        if GATE == 2:
            b_dG += tl.where(o_t[:, None] == valid - 1, b_last[None, :], 0.0)
            tl.store(dq_part + p_tk, b_dq, mask=m_tk)
            tl.store(dk_part + p_tk, b_dk, mask=m_tk)
            tl.store(dG_part + p_tk, b_dG, mask=m_tk)
        else:
            # [BT, BT] @ [BT, BK] -> [BT, BK], twice
            b_cqk_op = _operand(b_cqk, LOW, q)
            b_dq_intra = tl.dot(b_cqk_op, _operand(b_k, LOW, q), input_precision=DOT_PRECISION)
            b_dk_intra = tl.dot(tl.trans(b_cqk_op), _operand(b_q, LOW, q), input_precision=DOT_PRECISION)
            b_dq += b_dq_intra
            b_dk += b_dk_intra
            if USE_BETA:
                # [BT, BT] @ [BT, BK] -> [BT, BK], twice
                b_ckk_op = _operand(b_ckk, LOW, q)
                b_dk_row = tl.dot(b_ckk_op, _operand(b_k, LOW, q), input_precision=DOT_PRECISION)
                b_dk_col = tl.dot(tl.trans(b_ckk_op), _operand(b_k, LOW, q), input_precision=DOT_PRECISION)
                b_dk += b_dk_row + b_dk_col
            tl.store(dq + p_tk, b_dq.to(dq.dtype.element_ty), mask=m_tk)
            tl.store(dk + p_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
            if GATE == 1:
                # A per-head decay: sum the channels; each exp(G_r − G_s) term moves with
                # G_r and against G_s, so add row sums and subtract column sums.
                b_dG_row += tl.sum(b_dG + b_q * b_dq_intra - b_k * b_dk_intra, axis=1)
                if USE_BETA:
                    b_dG_row += tl.sum(b_k * (b_dk_row - b_dk_col), axis=1)
                b_dG_row += tl.where(o_t == valid - 1, tl.sum(b_last, axis=0), 0.0)
    if USE_BETA:
        tl.store(dbeta + (start + o_t) * H + i_h, b_dbeta.to(dbeta.dtype.element_ty), mask=m_t)
    if GATE == 1:
        b_dG_row = tl.where(m_t, b_dG_row, 0.0)
        # g_j enters every G_r with r >= j: a reverse cumulative sum.
        b_dg = tl.sum(b_dG_row, axis=0) - tl.cumsum(b_dG_row, axis=0) + b_dG_row
        tl.store(dg + (start + o_t) * H + i_h, b_dg.to(dg.dtype.element_ty), mask=m_t)
