"""Triton kernels of the chunked gated delta rule, forward, the parts parallel over
(chunk, head) (see ../README.md for the maths):

1. `_cumsum_kernel`   G = in-chunk inclusive cumsum of the log-decay g.
2. `_prepare_kernel`  one program per (chunk, head), all in registers, by sub-blocks of
                      BC = 16 tokens (NB = BT / BC of them):
   a. the score blocks (i, j <= i): A' = K Kᵀ ⊙ Γ (s < r), unscaled, with beta, and
      A_qk = scale·(Q Kᵀ ⊙ Γ) (s <= r) when it is asked for (a backward will run, or a
      per-channel decay, which the sequential pass cannot form cheaply). A per-channel Γ
      is formed pairwise inside a diagonal block and through the earlier block's last
      step across blocks (exponents always <= 0);
   b. (with beta) M = (I + Diag(β) A')⁻¹ by blocks: each diagonal block as the product
      (I − L)(I + L²)(I + L⁴)(I + L⁸) (exact for a strictly lower 16 x 16 L, whose 16th
      power is zero; no serial row steps), the blocks below by
      M_ij = −M_ii Σ_{j<=k<i} A_ik M_kj;
   c. (with beta) W = M Diag(β)(γ ⊙ K) and U = M Diag(β) V, by row blocks, stored in the
      inputs' dtype for 16-bit inputs (within the noise rule: bench/NOTES-gated-delta.md).
   A', M (with SAVE, for the backward) and A_qk are stored as `[BT, BT]` per chunk row,
   zero above the diagonal.

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
    """G[row, h, :GK] = Σ_{chunk start <= j <= row} g[j, h, :GK] (GK = K or 1), fp32; NaN
    from a positive g on."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    m = (o_t[:, None] < valid) & (o_k[None, :] < GK)
    offsets = ((start + o_t[:, None]) * H + i_h) * GK + o_k[None, :]
    b_g = tl.load(g + offsets, mask=m, other=0.0).to(tl.float32)
    # A positive log-gate (invalid, not checked on the host for CUDA inputs) poisons the
    # chunk (its in-chunk products mix rows), and through the state everything after it,
    # with NaN.
    b_g = tl.where(b_g <= 0, b_g, float("nan"))
    tl.store(G + offsets, tl.cumsum(b_g, axis=0), mask=m)


@triton.jit
def _dense_block(q, k, G, start, valid, i_h, scale, i: tl.constexpr, j: tl.constexpr,
                 H: tl.constexpr, K: tl.constexpr, GATE: tl.constexpr, USE_BETA: tl.constexpr,
                 WANT_QK: tl.constexpr, LOW: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    """Sub-block (i, j <= i) of A_qk (scaled) and A' with no decay or one per head,
    `[BC, BC]` each. LOW: the 16-bit inputs go to the tensor cores as they are (their
    products are exact in the float32 accumulator); otherwise float32 operands (the
    interpreter, the CPU test path, multiplies bf16 blocks wrongly)."""
    o_r = i * BC + tl.arange(0, BC)
    o_s = j * BC + tl.arange(0, BC)
    m_r = o_r < valid
    m_s = o_s < valid
    b_qk = tl.zeros([BC, BC], dtype=tl.float32)
    b_kk = tl.zeros([BC, BC], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        p_r = ((start + o_r[:, None]) * H + i_h) * K + o_k[None, :]
        p_s = ((start + o_s[:, None]) * H + i_h) * K + o_k[None, :]
        b_ks = tl.load(k + p_s, mask=m_s[:, None] & m_k[None, :], other=0.0)
        if not LOW:
            b_ks = b_ks.to(tl.float32)
        if WANT_QK:
            b_q = tl.load(q + p_r, mask=m_r[:, None] & m_k[None, :], other=0.0)
            if not LOW:
                b_q = b_q.to(tl.float32)
            # [BC, BK] @ [BK, BC] -> [BC, BC]
            b_qk += tl.dot(b_q, tl.trans(b_ks))
        if USE_BETA:
            b_kr = tl.load(k + p_r, mask=m_r[:, None] & m_k[None, :], other=0.0)
            if not LOW:
                b_kr = b_kr.to(tl.float32)
            # [BC, BK] @ [BK, BC] -> [BC, BC]
            b_kk += tl.dot(b_kr, tl.trans(b_ks))
    if GATE == 1:
        b_Gr = tl.load(G + (start + o_r) * H + i_h, mask=m_r, other=0.0)
        b_Gs = tl.load(G + (start + o_s) * H + i_h, mask=m_s, other=0.0)
        b_decay = _decay_exp(b_Gr[:, None] - b_Gs[None, :])
        b_qk *= b_decay
        b_kk *= b_decay
    if i == j:
        b_qk = tl.where(o_r[:, None] >= o_s[None, :], b_qk, 0.0)
        b_kk = tl.where(o_r[:, None] > o_s[None, :], b_kk, 0.0)
    return b_qk * scale, b_kk


@triton.jit
def _channel_block(q, k, G, start, valid, i_h, scale, i: tl.constexpr, j: tl.constexpr,
                   H: tl.constexpr, K: tl.constexpr, USE_BETA: tl.constexpr, BC: tl.constexpr,
                   BK: tl.constexpr):
    """Sub-block (i, j <= i) of A_qk (scaled) and A' with a per-channel decay, `[BC, BC]`
    each: query rows i·BC.., key columns j·BC... Below the diagonal the decay factors through the last step e of key
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
    return b_qk * scale, b_kk


@triton.jit
def _store_block(A, b_A, start, valid, i_h, i: tl.constexpr, j: tl.constexpr, H: tl.constexpr,
                 BT: tl.constexpr, BC: tl.constexpr):
    """Block (i, j), `[BC, BC]`, into a chunk's `[BT, BT]` stored by rows `[rows, H, BT]`."""
    o_r = i * BC + tl.arange(0, BC)
    o_s = j * BC + tl.arange(0, BC)
    rows = ((start + o_r[:, None]) * H + i_h) * BT + o_s[None, :]
    tl.store(A + rows, b_A, mask=(o_r < valid)[:, None])


@triton.jit
def _store_upper_zeros(A, start, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """Zero the blocks above the diagonal of a chunk's `[BT, BT]` (readers load it whole)."""
    zero = tl.zeros([BC, BC], dtype=tl.float32)
    for i in tl.static_range(BT // BC):
        for j in tl.static_range(i + 1, BT // BC):
            _store_block(A, zero, start, valid, i_h, i, j, H, BT, BC)


@triton.jit
def _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, i: tl.constexpr, j: tl.constexpr,
            H: tl.constexpr, K: tl.constexpr, GATE: tl.constexpr, USE_BETA: tl.constexpr,
            STORE_AQK: tl.constexpr, SAVE: tl.constexpr, LOW: tl.constexpr, BT: tl.constexpr,
            BC: tl.constexpr, BK: tl.constexpr):
    """Score block (i, j <= i): stores A_qk's (STORE_AQK) and A''s (SAVE, with beta) and
    returns A' `[BC, BC]` for the solve."""
    if GATE == 2:
        b_qk, b_kk = _channel_block(q, k, G, start, valid, i_h, scale, i, j, H, K, USE_BETA, BC, BK)
    else:
        b_qk, b_kk = _dense_block(q, k, G, start, valid, i_h, scale, i, j, H, K, GATE, USE_BETA,
                                  STORE_AQK, LOW, BC, BK)
    if STORE_AQK:
        _store_block(Aqk, b_qk, start, valid, i_h, i, j, H, BT, BC)
    if SAVE and USE_BETA:
        _store_block(Akk, b_kk, start, valid, i_h, i, j, H, BT, BC)
    return b_kk


@triton.jit
def _beta_rows(beta, start, valid, i_h, i: tl.constexpr, H: tl.constexpr, BC: tl.constexpr):
    """β of row block i, `[BC, 1]` float32."""
    o_r = i * BC + tl.arange(0, BC)
    return tl.load(beta + (start + o_r) * H + i_h, mask=o_r < valid, other=0.0).to(tl.float32)[:, None]


@triton.jit
def _mm(a, b):
    """`[BC, BC] @ [BC, BC]` in full float32: the inverse feeds every pseudo-value."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _invert_unit_lower(L, BC: tl.constexpr):
    """(I + L)⁻¹ for a strictly lower `[BC, BC]` L, BC <= 16: the Neumann series
    Σ_{n<16} (−L)ⁿ in product form (I − L)(I + L²)(I + L⁴)(I + L⁸). Six products, no
    serial row steps; float32 error ~1e-6 relative in the worst case measured (identical
    keys), far below the 16-bit noise the result is rounded to."""
    o_c = tl.arange(0, BC)
    X = tl.where(o_c[:, None] == o_c[None, :], 1.0, 0.0) - L
    P = _mm(L, L)
    X += _mm(X, P)
    P = _mm(P, P)
    X += _mm(X, P)
    P = _mm(P, P)
    X += _mm(X, P)
    return X


@triton.jit
def _pick(j: tl.constexpr, M0, M1, M2, M3):
    """M_ij of block row i, given as M0..M3, for a compile-time j."""
    if j == 0:
        b_m = M0
    elif j == 1:
        b_m = M1
    elif j == 2:
        b_m = M2
    else:
        b_m = M3
    return b_m


@triton.jit
def _wu_rows(k, v, G, beta, w, u, start, valid, i_h, i: tl.constexpr, M0, M1, M2, M3,
             H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
             LOW: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Row block i of W = M Diag(β)(γ ⊙ K) `[BC, K]` and U = M Diag(β) V `[BC, V]`, from
    the blocks M_i0..M_ii (M0..M3; those past i are not read)."""
    o_r = i * BC + tl.arange(0, BC)
    m_r = o_r < valid
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        b_w = tl.zeros([BC, BK], dtype=tl.float32)
        for j in tl.static_range(i + 1):
            o_s = j * BC + tl.arange(0, BC)
            m_sk = (o_s < valid)[:, None] & m_k[None, :]
            p_s = ((start + o_s[:, None]) * H + i_h) * K + o_k[None, :]
            b_x = tl.load(k + p_s, mask=m_sk, other=0.0).to(tl.float32) * _beta_rows(beta, start, valid, i_h, j, H, BC)
            if GATE == 1:
                b_x *= tl.exp(tl.load(G + (start + o_s) * H + i_h, mask=o_s < valid, other=0.0))[:, None]
            elif GATE == 2:
                b_x *= tl.exp(tl.load(G + p_s, mask=m_sk, other=0.0))
            b_m = _pick(j, M0, M1, M2, M3)
            # [BC, BC] @ [BC, BK] -> [BC, BK]
            b_w += tl.dot(b_m, b_x)
        tl.store(w + ((start + o_r[:, None]) * H + i_h) * K + o_k[None, :], b_w.to(w.dtype.element_ty),
                 mask=m_r[:, None] & m_k[None, :])
    for v0 in range(0, V, BV):
        o_v = v0 + tl.arange(0, BV)
        m_v = o_v < V
        b_u = tl.zeros([BC, BV], dtype=tl.float32)
        for j in tl.static_range(i + 1):
            o_s = j * BC + tl.arange(0, BC)
            p_s = ((start + o_s[:, None]) * H + i_h) * V + o_v[None, :]
            b_x = tl.load(v + p_s, mask=(o_s < valid)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
            b_x *= _beta_rows(beta, start, valid, i_h, j, H, BC)
            b_m = _pick(j, M0, M1, M2, M3)
            # [BC, BC] @ [BC, BV] -> [BC, BV]
            b_u += tl.dot(b_m, b_x)
        tl.store(u + ((start + o_r[:, None]) * H + i_h) * V + o_v[None, :], b_u.to(u.dtype.element_ty),
                 mask=m_r[:, None] & m_v[None, :])


@triton.jit(do_not_specialize=["T"])
def _prepare_kernel(q, k, v, G, beta, Aqk, Akk, M, w, u, chunk_indices, cu_seqlens, scale, T,
                    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                    USE_BETA: tl.constexpr, STORE_AQK: tl.constexpr, SAVE: tl.constexpr,
                    LOW: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                    BKW: tl.constexpr, BV: tl.constexpr):
    """Steps a-c of the module docstring for chunk `program_id(0)`, head `program_id(1)`;
    NB = BT / BC is 1, 2 or 4. Buffers `[rows, H, BT]` (Aqk, Akk, M), `[rows, H, K or V]`
    (w, u)."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    NB: tl.constexpr = BT // BC
    zero = tl.zeros([BC, BC], dtype=tl.float32)
    A00 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 0, 0, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
    if NB >= 2:
        A10 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 1, 0, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A11 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 1, 1, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
    if NB >= 4:
        A20 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 2, 0, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A21 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 2, 1, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A22 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 2, 2, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A30 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 3, 0, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A31 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 3, 1, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A32 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 3, 2, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
        A33 = _scores(q, k, G, Aqk, Akk, start, valid, i_h, scale, 3, 3, H, K, GATE, USE_BETA, STORE_AQK, SAVE, LOW, BT, BC, BK)
    if STORE_AQK:
        _store_upper_zeros(Aqk, start, valid, i_h, H, BT, BC)
    if USE_BETA:
        if SAVE:
            _store_upper_zeros(Akk, start, valid, i_h, H, BT, BC)
        # A = Diag(β) A' by row blocks; M = (I + A)⁻¹, block row i of (I + A) M = I.
        b0 = _beta_rows(beta, start, valid, i_h, 0, H, BC)
        M00 = _invert_unit_lower(b0 * A00, BC)
        M10 = zero
        M11 = zero
        M20 = zero
        M21 = zero
        M22 = zero
        M30 = zero
        M31 = zero
        M32 = zero
        M33 = zero
        if NB >= 2:
            b1 = _beta_rows(beta, start, valid, i_h, 1, H, BC)
            M11 = _invert_unit_lower(b1 * A11, BC)
            M10 = -_mm(M11, _mm(b1 * A10, M00))
        if NB >= 4:
            b2 = _beta_rows(beta, start, valid, i_h, 2, H, BC)
            b3 = _beta_rows(beta, start, valid, i_h, 3, H, BC)
            M22 = _invert_unit_lower(b2 * A22, BC)
            M33 = _invert_unit_lower(b3 * A33, BC)
            M21 = -_mm(M22, _mm(b2 * A21, M11))
            M20 = -_mm(M22, _mm(b2 * A20, M00) + _mm(b2 * A21, M10))
            M32 = -_mm(M33, _mm(b3 * A32, M22))
            M31 = -_mm(M33, _mm(b3 * A31, M11) + _mm(b3 * A32, M21))
            M30 = -_mm(M33, _mm(b3 * A30, M00) + _mm(b3 * A31, M10) + _mm(b3 * A32, M20))
        if SAVE:
            _store_upper_zeros(M, start, valid, i_h, H, BT, BC)
            _store_block(M, M00, start, valid, i_h, 0, 0, H, BT, BC)
            if NB >= 2:
                _store_block(M, M10, start, valid, i_h, 1, 0, H, BT, BC)
                _store_block(M, M11, start, valid, i_h, 1, 1, H, BT, BC)
            if NB >= 4:
                _store_block(M, M20, start, valid, i_h, 2, 0, H, BT, BC)
                _store_block(M, M21, start, valid, i_h, 2, 1, H, BT, BC)
                _store_block(M, M22, start, valid, i_h, 2, 2, H, BT, BC)
                _store_block(M, M30, start, valid, i_h, 3, 0, H, BT, BC)
                _store_block(M, M31, start, valid, i_h, 3, 1, H, BT, BC)
                _store_block(M, M32, start, valid, i_h, 3, 2, H, BT, BC)
                _store_block(M, M33, start, valid, i_h, 3, 3, H, BT, BC)
        _wu_rows(k, v, G, beta, w, u, start, valid, i_h, 0, M00, zero, zero, zero, H, K, V, GATE, LOW, BC, BKW, BV)
        if NB >= 2:
            _wu_rows(k, v, G, beta, w, u, start, valid, i_h, 1, M10, M11, zero, zero, H, K, V, GATE, LOW, BC, BKW, BV)
        if NB >= 4:
            _wu_rows(k, v, G, beta, w, u, start, valid, i_h, 2, M20, M21, M22, zero, H, K, V, GATE, LOW, BC, BKW, BV)
            _wu_rows(k, v, G, beta, w, u, start, valid, i_h, 3, M30, M31, M32, M33, H, K, V, GATE, LOW, BC, BKW, BV)
