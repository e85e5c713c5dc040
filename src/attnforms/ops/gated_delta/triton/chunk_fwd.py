"""Triton kernels of the chunked gated delta rule, forward.

Six launches (five without beta), each parallel over (chunk, head) except the state pass, which walks the
chunks of one sequence in order (see ../README.md for the maths):

1. `_cumsum_kernel`      G = in-chunk inclusive cumsum of the log-decay g.
2. `_scores_kernel`      A_qk = scale·(Q Kᵀ ⊙ Γ) (s <= r) and, with beta,
                         A' = K Kᵀ ⊙ Γ (s < r), unscaled (the backward reads it too). A per-channel Γ is formed
                         pairwise inside sub-blocks of BC tokens and through the earlier
                         sub-block's last step across them (exponents always <= 0).
3. `_solve_kernel`       M = (I + Diag(β) A')⁻¹ (with beta only): 16 x 16 diagonal blocks
                         by forward substitution, the blocks below them by matrix products.
4. `_wu_kernel`          (with beta only) W = M Diag(β)(γ⊙K) and U = M Diag(β) V.
5. `_state_kernel`       per chunk: store the entering state S, Ũ = U − W S
                         (stored; without beta Ũ = V is not copied),
                         S ← Diag(γ_C) S + (K ⊙ exp(G_C − G))ᵀ Ũ.
6. `_output_kernel`      O = (scale·Q ⊙ γ) S + A_qk Ũ.

Every sequence is addressed through `cu_seqlens` (a plain batch is packed as B sequences
of length T), and `chunk_indices` maps a global chunk id to (sequence, chunk in sequence),
so one code path serves fixed and variable lengths and T is never a compile-time constant.
Gate layout switch GATE: 0 none, 1 one per head, 2 one per key channel.
"""
import triton
import triton.language as tl

from .state_slice import state_slice


@triton.jit
def _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT: tl.constexpr):
    """The sequence of global chunk i_c: (sequence index, first token row of the chunk,
    number of valid rows in it, last row of the sequence + 1)."""
    i_n = tl.load(chunk_indices + i_c * 2).to(tl.int64)
    i_t = tl.load(chunk_indices + i_c * 2 + 1).to(tl.int64)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    start = bos + i_t * BT
    return i_n, start, tl.minimum(eos - start, BT)


@triton.jit(do_not_specialize=["T"])
def _cumsum_kernel(g, G, chunk_indices, cu_seqlens, T, H: tl.constexpr, K: tl.constexpr,
                   GK: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """G[row, h, :GK] = Σ_{chunk start <= j <= row} g[j, h, :GK] (GK = K or 1), fp32."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m = (o_t[:, None] < valid) & (o_k[None, :] < GK)
    offsets = ((start + o_t[:, None]) * H + i_h) * GK + o_k[None, :]
    b_g = tl.load(g + offsets, mask=m, other=0.0).to(tl.float32)
    tl.store(G + offsets, tl.cumsum(b_g, axis=0), mask=m)


@triton.jit
def _decay_exp(x):
    """exp of a log-decay that is <= 0 wherever it is used; masked entries may be
    positive, so clamp rather than overflow."""
    return tl.exp(tl.minimum(x, 0.0))


@triton.jit(do_not_specialize=["T"])
def _scores_kernel(q, k, G, Aqk, Akk, chunk_indices, cu_seqlens, scale, T,
                   H: tl.constexpr, K: tl.constexpr, GATE: tl.constexpr, USE_BETA: tl.constexpr,
                   BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """A_qk and (with beta) A' of one chunk, `[BT, BT]` each, stored at the chunk's rows
    of `[rows, H, BT]` buffers; zero above the diagonal."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if GATE == 2:
        for i in tl.static_range(BT // BC):
            for j in tl.static_range(BT // BC):
                _channel_block(q, k, G, Aqk, Akk, start, valid, i_h, scale, i, j,
                               H, K, USE_BETA, BT, BC, BK)
    else:
        o_t = tl.arange(0, BT)
        m_t = o_t < valid
        b_qk = tl.zeros([BT, BT], dtype=tl.float32)
        b_kk = tl.zeros([BT, BT], dtype=tl.float32)
        for k0 in range(0, K, BK):
            o_k = k0 + tl.arange(0, BK)
            m = m_t[:, None] & (o_k[None, :] < K)
            offsets = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
            # float32 operands: Triton's interpreter (the CPU test path) multiplies bf16
            # blocks wrongly, and the scores feed a triangular solve that wants precision.
            b_q = tl.load(q + offsets, mask=m, other=0.0).to(tl.float32)
            b_k = tl.load(k + offsets, mask=m, other=0.0).to(tl.float32)
            # [BT, BK] @ [BK, BT] -> [BT, BT]
            b_qk += tl.dot(b_q, tl.trans(b_k))
            if USE_BETA:
                # [BT, BK] @ [BK, BT] -> [BT, BT]
                b_kk += tl.dot(b_k, tl.trans(b_k))
        if GATE == 1:
            b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
            b_decay = _decay_exp(b_G[:, None] - b_G[None, :])
            b_qk *= b_decay
            b_kk *= b_decay
        b_qk = tl.where(o_t[:, None] >= o_t[None, :], b_qk * scale, 0.0)
        rows = ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :]
        tl.store(Aqk + rows, b_qk, mask=m_t[:, None])
        if USE_BETA:
            b_kk = tl.where(o_t[:, None] > o_t[None, :], b_kk, 0.0)
            tl.store(Akk + rows, b_kk, mask=m_t[:, None])


@triton.jit
def _channel_block(q, k, G, Aqk, Akk, start, valid, i_h, scale,
                   i: tl.constexpr, j: tl.constexpr, H: tl.constexpr, K: tl.constexpr,
                   USE_BETA: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """Sub-block (i, j) of A_qk / A' with a per-channel decay: query rows i·BC.., key
    columns j·BC... Below the diagonal the decay factors through the last step e of key
    block j, exp(G_r − G_e)·exp(G_e − G_s), both <= 1, so it is a matrix product; on the
    diagonal it is formed pairwise, `[BC, BC, BK]` at a time."""
    o_r = i * BC + tl.arange(0, BC)
    o_s = j * BC + tl.arange(0, BC)
    m_r = o_r < valid
    m_s = o_s < valid
    b_qk = tl.zeros([BC, BC], dtype=tl.float32)
    b_kk = tl.zeros([BC, BC], dtype=tl.float32)
    if j <= i:
        # The last valid step of key block j (clamped inside the sequence).
        e = tl.minimum(j * BC + BC - 1, valid - 1)
        for k0 in range(0, K, BK):
            o_k = k0 + tl.arange(0, BK)
            m_k = o_k < K
            rows_r = ((start + o_r[:, None]) * H + i_h) * K + o_k[None, :]
            rows_s = ((start + o_s[:, None]) * H + i_h) * K + o_k[None, :]
            m_rk = m_r[:, None] & m_k[None, :]
            m_sk = m_s[:, None] & m_k[None, :]
            b_q = tl.load(q + rows_r, mask=m_rk, other=0.0).to(tl.float32)
            b_kr = tl.load(k + rows_r, mask=m_rk, other=0.0).to(tl.float32)
            b_ks = tl.load(k + rows_s, mask=m_sk, other=0.0).to(tl.float32)
            b_Gr = tl.load(G + rows_r, mask=m_rk, other=0.0)
            b_Gs = tl.load(G + rows_s, mask=m_sk, other=0.0)
            if j < i:
                b_Ge = tl.load(G + ((start + e) * H + i_h) * K + o_k, mask=m_k, other=0.0)
                b_ks_dec = b_ks * _decay_exp(b_Ge[None, :] - b_Gs)
                b_r_dec = _decay_exp(b_Gr - b_Ge[None, :])
                # [BC, BK] @ [BK, BC] -> [BC, BC]
                b_qk += tl.dot(b_q * b_r_dec, tl.trans(b_ks_dec))
                if USE_BETA:
                    # [BC, BK] @ [BK, BC] -> [BC, BC]
                    b_kk += tl.dot(b_kr * b_r_dec, tl.trans(b_ks_dec))
            else:
                # One key step s at a time: `[BC, BK]` products and a row sum per column
                # (a `[BC, BC, BK]` broadcast is slower in Triton). Unrolled: the dynamic
                # loop measured 13% slower here (KDA scores 2.70 -> 3.05 ms at S1).
                for s in tl.static_range(BC):
                    t = j * BC + s
                    m_one = (o_s == t)[None, :]
                    m_ks = m_k & (t < valid)
                    p_s = ((start + t) * H + i_h) * K + o_k
                    b_k_s = tl.load(k + p_s, mask=m_ks, other=0.0).to(tl.float32)
                    b_kd = b_k_s[None, :] * _decay_exp(b_Gr - tl.load(G + p_s, mask=m_ks, other=0.0)[None, :])
                    b_qk += tl.where(m_one, tl.sum(b_q * b_kd, axis=1)[:, None], 0.0)
                    if USE_BETA:
                        b_kk += tl.where(m_one, tl.sum(b_kr * b_kd, axis=1)[:, None], 0.0)
        if j == i:
            b_qk = tl.where(o_r[:, None] >= o_s[None, :], b_qk, 0.0)
            b_kk = tl.where(o_r[:, None] > o_s[None, :], b_kk, 0.0)
    rows = ((start + o_r[:, None]) * H + i_h) * BT + o_s[None, :]
    tl.store(Aqk + rows, b_qk * scale, mask=m_r[:, None])
    if USE_BETA:
        tl.store(Akk + rows, b_kk, mask=m_r[:, None])


@triton.jit
def _block(A, beta, start, valid, i_h, bi: tl.constexpr, bj: tl.constexpr, H: tl.constexpr,
           BT: tl.constexpr, BC: tl.constexpr):
    """Block (bi, bj), `[BC, BC]`, of Diag(β) A for a chunk's `[BT, BT]` A stored by rows."""
    o_r = bi * BC + tl.arange(0, BC)
    o_s = bj * BC + tl.arange(0, BC)
    m_r = o_r < valid
    rows = ((start + o_r[:, None]) * H + i_h) * BT + o_s[None, :]
    b_beta = tl.load(beta + (start + o_r) * H + i_h, mask=m_r, other=0.0).to(tl.float32)
    return tl.load(A + rows, mask=m_r[:, None], other=0.0) * b_beta[:, None]


@triton.jit
def _invert_diagonal(A, beta, start, valid, i_h, bi: tl.constexpr, H: tl.constexpr,
                     BT: tl.constexpr, BC: tl.constexpr):
    """(I + Diag(β) A_ii)⁻¹ of the strictly lower diagonal block i, `[BC, BC]`, by forward
    substitution: row r is e_r − β_r Σ_{s<r} A_rs M_s, and rows below r are still zero.
    Each row is loaded when it is needed (cached loads): picking rows out of a block in
    registers instead measured slower on the H200 (solve 0.40 -> 0.70 ms at S1)."""
    o_c = tl.arange(0, BC)
    b_M = tl.zeros([BC, BC], dtype=tl.float32)
    for r in range(BC):
        row = bi * BC + r
        b_a = tl.load(A + ((start + row) * H + i_h) * BT + bi * BC + o_c, mask=row < valid, other=0.0)
        b_a *= tl.load(beta + (start + row) * H + i_h, mask=row < valid, other=0.0).to(tl.float32)
        b_row = tl.where(o_c == r, 1.0, 0.0) - tl.sum(b_a[:, None] * b_M, axis=0)
        b_M = tl.where(o_c[:, None] == r, b_row[None, :], b_M)
    return b_M


@triton.jit
def _store_block(M, b_M, start, valid, i_h, bi: tl.constexpr, bj: tl.constexpr, H: tl.constexpr,
                 BT: tl.constexpr, BC: tl.constexpr):
    o_r = bi * BC + tl.arange(0, BC)
    o_s = bj * BC + tl.arange(0, BC)
    rows = ((start + o_r[:, None]) * H + i_h) * BT + o_s[None, :]
    tl.store(M + rows, b_M, mask=(o_r < valid)[:, None])


@triton.jit
def _mm(a, b):
    """`[BC, BC] @ [BC, BC]` in full float32: the inverse feeds every pseudo-value."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit(do_not_specialize=["T"])
def _solve_kernel(Akk, beta, M, chunk_indices, cu_seqlens, T, H: tl.constexpr, BT: tl.constexpr,
                  BC: tl.constexpr):
    """M = (I + A)⁻¹ for the strictly lower A = Diag(β) A' of one chunk, by blocks of BC: the diagonal
    blocks by forward substitution, then below them
    M_ij = −M_ii Σ_{j<=k<i} A_ik M_kj  (block row i of (I + A) M = I)."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    NB: tl.constexpr = BT // BC
    zero = tl.zeros([BC, BC], dtype=tl.float32)
    M00 = _invert_diagonal(Akk, beta, start, valid, i_h, 0, H, BT, BC)
    _store_block(M, M00, start, valid, i_h, 0, 0, H, BT, BC)
    if NB >= 2:
        M11 = _invert_diagonal(Akk, beta, start, valid, i_h, 1, H, BT, BC)
        A10 = _block(Akk, beta, start, valid, i_h, 1, 0, H, BT, BC)
        M10 = -_mm(M11, _mm(A10, M00))
        _store_block(M, M10, start, valid, i_h, 1, 0, H, BT, BC)
        _store_block(M, M11, start, valid, i_h, 1, 1, H, BT, BC)
        _store_block(M, zero, start, valid, i_h, 0, 1, H, BT, BC)
    if NB >= 4:
        M22 = _invert_diagonal(Akk, beta, start, valid, i_h, 2, H, BT, BC)
        M33 = _invert_diagonal(Akk, beta, start, valid, i_h, 3, H, BT, BC)
        A20 = _block(Akk, beta, start, valid, i_h, 2, 0, H, BT, BC)
        A21 = _block(Akk, beta, start, valid, i_h, 2, 1, H, BT, BC)
        A30 = _block(Akk, beta, start, valid, i_h, 3, 0, H, BT, BC)
        A31 = _block(Akk, beta, start, valid, i_h, 3, 1, H, BT, BC)
        A32 = _block(Akk, beta, start, valid, i_h, 3, 2, H, BT, BC)
        M21 = -_mm(M22, _mm(A21, M11))
        M20 = -_mm(M22, _mm(A20, M00) + _mm(A21, M10))
        M32 = -_mm(M33, _mm(A32, M22))
        M31 = -_mm(M33, _mm(A31, M11) + _mm(A32, M21))
        M30 = -_mm(M33, _mm(A30, M00) + _mm(A31, M10) + _mm(A32, M20))
        _store_block(M, M20, start, valid, i_h, 2, 0, H, BT, BC)
        _store_block(M, M21, start, valid, i_h, 2, 1, H, BT, BC)
        _store_block(M, M22, start, valid, i_h, 2, 2, H, BT, BC)
        _store_block(M, M30, start, valid, i_h, 3, 0, H, BT, BC)
        _store_block(M, M31, start, valid, i_h, 3, 1, H, BT, BC)
        _store_block(M, M32, start, valid, i_h, 3, 2, H, BT, BC)
        _store_block(M, M33, start, valid, i_h, 3, 3, H, BT, BC)
        for bi in tl.static_range(2):
            for bj in tl.static_range(2, 4):
                _store_block(M, zero, start, valid, i_h, bi, bj, H, BT, BC)
        _store_block(M, zero, start, valid, i_h, 2, 3, H, BT, BC)


@triton.jit(do_not_specialize=["T"])
def _wu_kernel(k, v, G, beta, M, w, u, chunk_indices, cu_seqlens, T, H: tl.constexpr,
               K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr, BT: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr):
    """W = M Diag(β)(γ ⊙ K) `[BT, K]` and U = M Diag(β) V `[BT, V]` of one chunk, stored
    in float32 at the chunk's rows: the parts of Ũ = U − W S that do not depend on the
    entering state, so the sequential state pass does one product less."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    b_M = tl.load(M + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
    b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    if GATE == 1:
        b_beta = b_beta * tl.exp(tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0))
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_tk = m_t[:, None] & (o_k < K)[None, :]
        p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_k = tl.load(k + p_tk, mask=m_tk, other=0.0).to(tl.float32) * b_beta[:, None]
        if GATE == 2:
            b_k = b_k * tl.exp(tl.load(G + p_tk, mask=m_tk, other=0.0))
        # [BT, BT] @ [BT, BK] -> [BT, BK]
        tl.store(w + p_tk, tl.dot(b_M, b_k), mask=m_tk)
    b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    for v0 in range(0, V, BV):
        o_v = v0 + tl.arange(0, BV)
        m_tv = m_t[:, None] & (o_v < V)[None, :]
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        b_v = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32) * b_beta[:, None]
        # [BT, BT] @ [BT, BV] -> [BT, BV]
        tl.store(u + p_tv, tl.dot(b_M, b_v), mask=m_tv)


@triton.jit(do_not_specialize=["T"])
def _state_kernel(k, v, w, G, states, v_new, initial, final, chunk_base, cu_seqlens, T,
                  H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                  USE_BETA: tl.constexpr, USE_INITIAL: tl.constexpr, STORE_FINAL: tl.constexpr,
                  BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Walk the chunks of sequence n in order for one head and BV value columns, with the
    whole `[K, BV]` state slice in registers; store each entering state and (with beta)
    the pseudo-values Ũ. With beta, `v` and `w` are the chunks' U and W."""
    i_n, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_S = state_slice(
        initial, cu_seqlens, H, K, V, USE_INITIAL, BK, BV)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    for i_t in range(tl.cdiv(eos - bos, BT)):
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT)
        m_t = o_t < valid
        tl.store(states + ((first_chunk + i_t) * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]), b_S, mask=m_kv)
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_k = tl.load(k + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        # With beta, `v` holds U; without, the values.
        b_v = tl.load(v + ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        if GATE == 1:
            b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
            b_G_last = tl.load(G + (start + valid - 1) * H + i_h)
            b_to_end = _decay_exp(b_G_last - b_G)[:, None]
            b_S_decay = tl.exp(b_G_last)
        elif GATE == 2:
            b_G = tl.load(G + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0)
            b_G_last = tl.load(G + ((start + valid - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
            b_to_end = _decay_exp(b_G_last[None, :] - b_G)
            b_S_decay = tl.exp(b_G_last)[:, None]
        if USE_BETA:
            # Ũ = U − W S with the chunk's U = M Diag(β) V and W = M Diag(β)(γ ⊙ K)
            # (`_wu_kernel`): one product on the sequential path instead of two.
            b_w = tl.load(w + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
            # [BT, BK] @ [BK, BV] -> [BT, BV]
            b_u = b_v - tl.dot(b_w, b_S)
            tl.store(v_new + ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :], b_u, mask=m_tv)
        else:
            # Without the delta rule the writes are the values themselves: nothing to store.
            b_u = b_v
        if GATE != 0:
            b_S = b_S * b_S_decay
            b_k = b_k * b_to_end
        # [BK, BT] @ [BT, BV] -> [BK, BV]
        b_S += tl.dot(tl.trans(b_k), b_u)
    if STORE_FINAL:
        tl.store(final + p_state, b_S, mask=m_kv)


@triton.jit(do_not_specialize=["T"])
def _output_kernel(q, G, Aqk, states, v_new, o, chunk_indices, cu_seqlens, scale, T,
                   H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                   BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """O of one chunk, head and BV value columns: the entering state read by the decayed
    queries plus the in-chunk attention over the pseudo-values (`v_new`: Ũ with beta,
    the values v without)."""
    i_v, i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_t = o_t < valid
    m_k = o_k < K
    m_v = o_v < V
    m_tk = m_t[:, None] & m_k[None, :]
    b_q = tl.load(q + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
    if GATE == 1:
        b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
        b_q = b_q * tl.exp(b_G)[:, None]
    elif GATE == 2:
        b_G = tl.load(G + ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :], mask=m_tk, other=0.0)
        b_q = b_q * tl.exp(b_G)
    b_S = tl.load(states + (i_c * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]), mask=m_k[:, None] & m_v[None, :], other=0.0).to(tl.float32)
    # [BT, BK] @ [BK, BV] -> [BT, BV]
    b_o = tl.dot(b_q * scale, b_S)
    b_A = tl.load(Aqk + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0).to(tl.float32)
    m_tv = m_t[:, None] & m_v[None, :]
    b_u = tl.load(v_new + ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
    # [BT, BT] @ [BT, BV] -> [BT, BV]
    b_o += tl.dot(b_A, b_u)
    tl.store(o + ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_tv)
