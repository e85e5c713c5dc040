"""Triton kernels of the chunked mLSTM, backward, with every stabiliser held at its
forward value (the stabilisers' own gradient is added by `stabiliser_grad.py`).
Derivation in ../README.md ("Backward"). With dnum_r = ρ_r do_r, dden_r per row
(precomputed by the launcher) and the stored row stabilisers m_r:

1. `_state_bwd_kernel`  per (value tile, sequence·head), walking the chunks in reverse
                        with dC (`[K, BV]`) and dn in registers: stores the gradient of
                        each chunk's exit state, the chunk's gate gradient
                        dg = <dC_out, C_out> + <dn_out, n_out> (partial per value tile),
                        and the initial state's gradient.
2. `_dq_kernel`         per (chunk·query tile, head): dq over the key tiles up to the
                        diagonal plus the entering state's part; stores q·dq per row.
3. `_dkv_kernel`        per (chunk·key tile, head): dk, dv over the query tiles from the
                        diagonal on plus the exit state's part; stores k·dk per row.
4. `_gate_bwd_kernel`   per (chunk, head): dlf = in-chunk reverse cumsum of
                        (q·dq − k·dk) + dg, dli = k·dk.
Full K and V tiles per program (K, V <= 256): the launcher shrinks the token tile BS
for wide heads.
"""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_head_program, sequence_head_program

from .chunk_fwd import _chunk_bounds, _mixed_dot, _operand


@triton.jit
def _state_bwd_kernel(q, do, b, m_row, rho, dden, states, states_n, chunk_m, final_C, final_n,
                      dfinal_C, dfinal_n, dstates, dstates_n, dg_part, dinitial_C, dinitial_n,
                      chunk_base, cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr,
                      V: tl.constexpr, NV: tl.constexpr, USE_DFINAL: tl.constexpr,
                      STORE_DINITIAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BT: tl.constexpr,
                      BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    b_dC = tl.zeros([BK, BV], dtype=tl.float32)
    b_dn = tl.zeros([BK], dtype=tl.float32)
    if USE_DFINAL:
        b_dC += tl.load(dfinal_C + i_nh * K * V + p_kv, mask=m_kv, other=0.0)
        b_dn += tl.load(dfinal_n + i_nh * K + o_k, mask=m_k, other=0.0)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    n_chunks = tl.cdiv(eos - bos, BT)
    for i in range(n_chunks):
        i_t = n_chunks - 1 - i
        i_c = first_chunk + i_t
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT)
        tl.store(dstates + (i_c * H + i_h) * K * V + p_kv, b_dC, mask=m_kv)
        # The chunk's exit state: the next chunk's entering state, or the final state.
        if i == 0:
            b_C_out = tl.load(final_C + i_nh * K * V + p_kv, mask=m_kv, other=0.0)
            b_n_out = tl.load(final_n + i_nh * K + o_k, mask=m_k, other=0.0)
        else:
            b_C_out = tl.load(states + ((i_c + 1) * H + i_h) * K * V + p_kv, mask=m_kv, other=0.0)
            b_n_out = tl.load(states_n + ((i_c + 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
        b_dg = tl.sum(tl.sum(b_dC * b_C_out, axis=1), axis=0)
        if i_v == 0:
            tl.store(dstates_n + (i_c * H + i_h) * K + o_k, b_dn, mask=m_k)
            b_dg += tl.sum(b_dn * b_n_out, axis=0)
        tl.store(dg_part + (i_c * H + i_h) * NV + i_v, b_dg)
        b_m_in = tl.load(chunk_m + (i_c * H + i_h) * 2)
        b_m_out = tl.load(chunk_m + (i_c * H + i_h) * 2 + 1)
        g = tl.load(b + (start + valid - 1) * H + i_h)
        b_decay = tl.exp(g + b_m_in - b_m_out)
        b_dC *= b_decay
        b_dn *= b_decay
        for s0 in range(0, BT, BS):
            o_r = s0 + tl.arange(0, BS)
            m_r = o_r < valid
            p_r = (start + o_r) * H + i_h
            b_q = tl.load(q + p_r[:, None] * K + o_k[None, :], mask=m_r[:, None] & m_k[None, :], other=0.0).to(tl.float32) * scale
            b_do = tl.load(do + p_r[:, None] * V + o_v[None, :], mask=m_r[:, None] & m_v[None, :], other=0.0).to(tl.float32)
            b_w = tl.exp(tl.load(b + p_r, mask=m_r, other=0.0) + b_m_in - tl.load(m_row + p_r, mask=m_r, other=0.0))
            b_w = tl.where(m_r, b_w, 0.0)
            b_rho = tl.load(rho + p_r, mask=m_r, other=0.0)
            b_dden = tl.load(dden + p_r, mask=m_r, other=0.0)
            # [BK, BS] @ [BS, BV] -> [BK, BV]
            b_dC += tl.dot(tl.trans(b_q * b_w[:, None]), b_do * b_rho[:, None],
                           input_precision=DOT_PRECISION)
            b_dn += tl.sum(b_q * (b_w * b_dden)[:, None], axis=0)
    if STORE_DINITIAL:
        tl.store(dinitial_C + i_nh * K * V + p_kv, b_dC, mask=m_kv)
        if i_v == 0:
            tl.store(dinitial_n + i_nh * K + o_k, b_dn, mask=m_k)


@triton.jit
def _dq_kernel(q, k, v, do, b, li, m_row, rho, dden, states, states_n, chunk_m, dq, xq,
               chunk_indices, cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr,
               V: tl.constexpr, NATIVE: tl.constexpr, HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr,
               BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, BVS: tl.constexpr):
    i_cq, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    NQ: tl.constexpr = BT // BS
    i_c, i_q = i_cq // NQ, i_cq % NQ
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if i_q * BS >= valid:
        return
    o_r = i_q * BS + tl.arange(0, BS)
    m_r = o_r < valid
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    p_r = (start + o_r) * H + i_h
    m_rk = m_r[:, None] & m_k[None, :]
    b_do = _operand(tl.load(do + p_r[:, None] * V + o_v[None, :], mask=m_r[:, None] & m_v[None, :], other=0.0), NATIVE)
    b_br = tl.load(b + p_r, mask=m_r, other=0.0)
    b_mr = tl.load(m_row + p_r, mask=m_r, other=0.0)
    b_rho = tl.load(rho + p_r, mask=m_r, other=0.0)
    b_dden = tl.load(dden + p_r, mask=m_r, other=0.0)
    b_dq = tl.zeros([BS, BK], dtype=tl.float32)
    for j in range(0, i_q + 1):
        o_s = j * BS + tl.arange(0, BS)
        m_s = o_s < valid
        p_s = (start + o_s) * H + i_h
        b_k = _operand(tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_s[:, None] & m_k[None, :], other=0.0), NATIVE)
        b_v = _operand(tl.load(v + p_s[:, None] * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0.0), NATIVE)
        b_gs = tl.load(li + p_s, mask=m_s, other=0.0) - tl.load(b + p_s, mask=m_s, other=0.0)
        causal = (o_s[None, :] <= o_r[:, None]) & m_s[None, :] & m_r[:, None]
        b_E = tl.exp(tl.where(causal, b_br[:, None] + b_gs[None, :] - b_mr[:, None], float("-inf")))
        # [BS, BV] @ [BV, BS] -> [BS, BS]
        b_dP = tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PRECISION) * b_rho[:, None] + b_dden[:, None]
        # [BS, BS] @ [BS, BK] -> [BS, BK]
        b_dq += _mixed_dot(b_dP * b_E, b_k, HALF_P, DOT_PRECISION)
    b_m_in = tl.load(chunk_m + (i_c * H + i_h) * 2)
    b_w = tl.where(m_r, tl.exp(b_br + b_m_in - b_mr), 0.0)
    for v0 in range(0, BV, BVS):
        o_vs = v0 + tl.arange(0, BVS)
        m_vs = o_vs < V
        b_dos = tl.load(do + p_r[:, None] * V + o_vs[None, :], mask=m_r[:, None] & m_vs[None, :], other=0.0).to(tl.float32)
        b_C = tl.load(states + (i_c * H + i_h) * K * V + o_k[:, None] * V + o_vs[None, :], mask=m_k[:, None] & m_vs[None, :], other=0.0)
        # [BS, BVS] @ [BVS, BK] -> [BS, BK]
        b_dq += tl.dot(b_dos * (b_w * b_rho)[:, None], tl.trans(b_C), input_precision=DOT_PRECISION)
    b_n = tl.load(states_n + (i_c * H + i_h) * K + o_k, mask=m_k, other=0.0)
    b_dq += (b_w * b_dden)[:, None] * b_n[None, :]
    b_dq *= scale
    tl.store(dq + p_r[:, None] * K + o_k[None, :], b_dq.to(dq.dtype.element_ty), mask=m_rk)
    b_q = tl.load(q + p_r[:, None] * K + o_k[None, :], mask=m_rk, other=0.0).to(tl.float32)
    tl.store(xq + p_r, tl.sum(b_q * b_dq, axis=1), mask=m_r)


@triton.jit
def _dkv_kernel(q, k, v, do, b, li, m_row, rho, dden, chunk_m, dstates, dstates_n, dk, dv, xk,
                chunk_indices, cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr,
                V: tl.constexpr, NATIVE: tl.constexpr, HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr,
                BT: tl.constexpr, BS: tl.constexpr, BSK: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                BKS: tl.constexpr, BVS: tl.constexpr):
    """Key tiles of BSK tokens (smaller than the query tiles of BS: two `[BSK, K]` and
    `[BSK, V]` float32 accumulators live in registers)."""
    i_cs, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    NS: tl.constexpr = BT // BSK
    i_c, i_s = i_cs // NS, i_cs % NS
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if i_s * BSK >= valid:
        return
    o_s = i_s * BSK + tl.arange(0, BSK)
    m_s = o_s < valid
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    p_s = (start + o_s) * H + i_h
    m_sk = m_s[:, None] & m_k[None, :]
    m_sv = m_s[:, None] & m_v[None, :]
    b_k = _operand(tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_sk, other=0.0), NATIVE)
    b_v = _operand(tl.load(v + p_s[:, None] * V + o_v[None, :], mask=m_sv, other=0.0), NATIVE)
    b_gs = tl.load(li + p_s, mask=m_s, other=0.0) - tl.load(b + p_s, mask=m_s, other=0.0)
    # The exit state's part first, so its float32 tiles are dead before the loop: the
    # writes reach the chunk end with e^{a_s − m_out}.
    g = tl.load(b + (start + valid - 1) * H + i_h)
    b_m_out = tl.load(chunk_m + (i_c * H + i_h) * 2 + 1)
    b_e = tl.where(m_s, tl.exp(g + b_gs - b_m_out), 0.0)
    p_dC = dstates + (i_c * H + i_h) * K * V
    b_dk = tl.zeros([BSK, BK], dtype=tl.float32)
    b_dv = tl.zeros([BSK, BV], dtype=tl.float32)
    for v0 in range(0, BV, BVS):
        o_vs = v0 + tl.arange(0, BVS)
        m_vs = o_vs < V
        b_vs = tl.load(v + p_s[:, None] * V + o_vs[None, :], mask=m_s[:, None] & m_vs[None, :], other=0.0).to(tl.float32)
        b_dC = tl.load(p_dC + o_k[:, None] * V + o_vs[None, :], mask=m_k[:, None] & m_vs[None, :], other=0.0)
        # [BSK, BVS] @ [BVS, BK] -> [BSK, BK]
        b_dk += tl.dot(b_vs * b_e[:, None], tl.trans(b_dC), input_precision=DOT_PRECISION)
    for k0 in range(0, BK, BKS):
        o_ks = k0 + tl.arange(0, BKS)
        m_ks = o_ks < K
        b_ks = tl.load(k + p_s[:, None] * K + o_ks[None, :], mask=m_s[:, None] & m_ks[None, :], other=0.0).to(tl.float32)
        b_dC = tl.load(p_dC + o_ks[:, None] * V + o_v[None, :], mask=m_ks[:, None] & m_v[None, :], other=0.0)
        # [BSK, BKS] @ [BKS, BV] -> [BSK, BV]
        b_dv += tl.dot(b_ks * b_e[:, None], b_dC, input_precision=DOT_PRECISION)
    # The in-chunk part: the query tiles from the diagonal on.
    for i_r in range(i_s * BSK // BS, tl.cdiv(valid, BS)):
        o_r = i_r * BS + tl.arange(0, BS)
        m_r = o_r < valid
        p_r = (start + o_r) * H + i_h
        b_q = _operand(tl.load(q + p_r[:, None] * K + o_k[None, :], mask=m_r[:, None] & m_k[None, :], other=0.0), NATIVE)
        b_do = _operand(tl.load(do + p_r[:, None] * V + o_v[None, :], mask=m_r[:, None] & m_v[None, :], other=0.0), NATIVE)
        b_br = tl.load(b + p_r, mask=m_r, other=0.0)
        b_mr = tl.load(m_row + p_r, mask=m_r, other=0.0)
        b_rho = tl.load(rho + p_r, mask=m_r, other=0.0)
        b_dden = tl.load(dden + p_r, mask=m_r, other=0.0)
        causal = (o_s[:, None] <= o_r[None, :]) & m_r[None, :] & m_s[:, None]
        # [BSK(keys), BS(queries)]: the transposed gate matrix.
        b_E = tl.exp(tl.where(causal, b_br[None, :] - b_mr[None, :] + b_gs[:, None], float("-inf")))
        # [BSK, BK] @ [BK, BS] -> [BSK, BS]
        b_P = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION) * (scale * b_E)
        # [BSK, BV] @ [BV, BS] -> [BSK, BS]
        b_dP = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION) * b_rho[None, :] + b_dden[None, :]
        # [BSK, BS] @ [BS, BK] -> [BSK, BK]  (q̂ = scale·q)
        b_dk += _mixed_dot(b_dP * (scale * b_E), b_q, HALF_P, DOT_PRECISION)
        # [BSK, BS] @ [BS, BV] -> [BSK, BV]
        b_dv += _mixed_dot(b_P * b_rho[None, :], b_do, HALF_P, DOT_PRECISION)
    b_dn = tl.load(dstates_n + (i_c * H + i_h) * K + o_k, mask=m_k, other=0.0)
    b_dk += b_e[:, None] * b_dn[None, :]
    tl.store(dk + p_s[:, None] * K + o_k[None, :], b_dk.to(dk.dtype.element_ty), mask=m_sk)
    tl.store(dv + p_s[:, None] * V + o_v[None, :], b_dv.to(dv.dtype.element_ty), mask=m_sv)
    # k read again rather than held: used only as a product operand above, it can stay
    # in shared memory through the loop.
    b_k32 = tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_sk, other=0.0).to(tl.float32)
    tl.store(xk + p_s, tl.sum(b_k32 * b_dk, axis=1), mask=m_s)


@triton.jit
def _gate_bwd_kernel(xq, xk, dg, dlf, dli, chunk_indices, cu_seqlens, H: tl.constexpr,
                     BT: tl.constexpr):
    i_c, i_h, _, start, valid, o_t, m_t, p_t = chunk_head_program(chunk_indices, cu_seqlens, H, BT)
    b_xk = tl.load(xk + p_t, mask=m_t, other=0.0)
    b_x = tl.load(xq + p_t, mask=m_t, other=0.0) - b_xk
    # Σ_{j >= r} x_j = total − Σ_{j < r} x_j
    b_rev = tl.sum(b_x, axis=0) - tl.cumsum(b_x, axis=0) + b_x
    tl.store(dlf + p_t, b_rev + tl.load(dg + i_c * H + i_h), mask=m_t)
    tl.store(dli + p_t, b_xk, mask=m_t)
