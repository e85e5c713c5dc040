"""Triton kernels of the chunked gated delta rule, forward, the parts parallel over
(chunk, head) (see ../README.md for the maths):

1. `_cumsum_kernel`   G = in-chunk inclusive cumsum of the log-decay g.
2. `_prepare_kernel`  one program per (chunk, head), three phases separated by barriers
                      (each phase reads what the one before wrote, from L1/L2):
   a. scores: A' = K Kᵀ ⊙ Γ (s < r), unscaled (with beta; the backward reads it too),
      and A_qk = scale·(Q Kᵀ ⊙ Γ) (s <= r) when it is asked for (a backward will run,
      or a per-channel decay, which the sequential pass cannot form cheaply). A
      per-channel Γ is formed pairwise inside sub-blocks of BC tokens and through the
      earlier sub-block's last step across them (exponents always <= 0);
   b. (with beta) M = (I + Diag(β) A')⁻¹: 16 x 16 diagonal blocks by forward
      substitution, the blocks below them by matrix products;
   c. (with beta) W = M Diag(β)(γ ⊙ K) and U = M Diag(β) V, stored in the inputs' dtype
      for 16-bit inputs (measured within the noise rule: bench/NOTES-gated-delta.md).

The sequential pass over the chunks is in chunk_fwd.py. Every sequence is addressed
through `cu_seqlens` (a plain batch is packed as B sequences of length T), and
`chunk_indices` maps a global chunk id to (sequence, chunk in sequence), so one code path
serves fixed and variable lengths and T is never a compile-time constant.
Gate layout switch GATE: 0 none, 1 one per head, 2 one per key channel.
"""
import triton
import triton.language as tl

from .common import _chunk_bounds, _decay_exp


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
def _dense_scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, H: tl.constexpr, K: tl.constexpr,
                  GATE: tl.constexpr, USE_BETA: tl.constexpr, STORE_AQK: tl.constexpr,
                  LOW: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """A_qk and A' of one chunk with no decay or one per head, `[BT, BT]` each. LOW: the
    16-bit inputs go to the tensor cores as they are (their products are exact in the
    float32 accumulator); otherwise float32 operands (the interpreter, the CPU test
    path, multiplies bf16 blocks wrongly)."""
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    b_qk = tl.zeros([BT, BT], dtype=tl.float32)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m = m_t[:, None] & (o_k[None, :] < K)
        offsets = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_k = tl.load(k + offsets, mask=m, other=0.0)
        if not LOW:
            b_k = b_k.to(tl.float32)
        if STORE_AQK:
            b_q = tl.load(q + offsets, mask=m, other=0.0)
            if not LOW:
                b_q = b_q.to(tl.float32)
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
    rows = ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :]
    if STORE_AQK:
        b_qk = tl.where(o_t[:, None] >= o_t[None, :], b_qk * scale, 0.0)
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
    Rows are loaded from memory (cached loads; picking rows out of a block in registers
    measured slower on the H200, 0.40 -> 0.70 ms at S1), in an unrolled loop so that the
    loads do not wait on the substitution."""
    o_c = tl.arange(0, BC)
    b_M = tl.zeros([BC, BC], dtype=tl.float32)
    for r in tl.static_range(BC):
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


@triton.jit
def _solve(Akk, beta, M, start, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """M = (I + A)⁻¹ for the strictly lower A = Diag(β) A' of one chunk, by blocks of BC: the diagonal
    blocks by forward substitution, then below them
    M_ij = −M_ii Σ_{j<=k<i} A_ik M_kj  (block row i of (I + A) M = I)."""
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


@triton.jit
def _wu(k, v, G, beta, M, w, u, start, valid, i_h, H: tl.constexpr, K: tl.constexpr,
        V: tl.constexpr, GATE: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """W = M Diag(β)(γ ⊙ K) `[BT, K]` and U = M Diag(β) V `[BT, V]` of one chunk, stored
    at the chunk's rows in the buffers' dtype: the parts of Ũ = U − W S that do not depend on the
    entering state, so the sequential state pass does one product less."""
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
        tl.store(w + p_tk, tl.dot(b_M, b_k).to(w.dtype.element_ty), mask=m_tk)
    b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    for v0 in range(0, V, BV):
        o_v = v0 + tl.arange(0, BV)
        m_tv = m_t[:, None] & (o_v < V)[None, :]
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        b_v = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32) * b_beta[:, None]
        # [BT, BT] @ [BT, BV] -> [BT, BV]
        tl.store(u + p_tv, tl.dot(b_M, b_v).to(u.dtype.element_ty), mask=m_tv)


@triton.jit(do_not_specialize=["T"])
def _prepare_kernel(q, k, v, G, beta, Aqk, Akk, M, w, u, chunk_indices, cu_seqlens, scale, T,
                    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                    USE_BETA: tl.constexpr, STORE_AQK: tl.constexpr, LOW: tl.constexpr,
                    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BKW: tl.constexpr,
                    BV: tl.constexpr):
    """Phases a-c of the module docstring for chunk `program_id(0)`, head `program_id(1)`.
    Buffers `[rows, H, BT]` (Aqk, Akk, M) and `[rows, H, K or V]` (w, u)."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if GATE == 2:
        for i in tl.static_range(BT // BC):
            for j in tl.static_range(BT // BC):
                _channel_block(q, k, G, Aqk, Akk, start, valid, i_h, scale, i, j,
                               H, K, USE_BETA, BT, BC, BK)
    else:
        _dense_scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, H, K, GATE, USE_BETA,
                      STORE_AQK, LOW, BT, BK)
    if USE_BETA:
        # Every thread's A' stores must land before any thread reads rows of it.
        tl.debug_barrier()
        _solve(Akk, beta, M, start, valid, i_h, H, BT, BC)
        tl.debug_barrier()
        _wu(k, v, G, beta, M, w, u, start, valid, i_h, H, K, V, GATE, BT, BKW, BV)
