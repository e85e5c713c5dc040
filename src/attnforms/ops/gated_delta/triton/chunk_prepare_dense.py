"""The per-chunk preparation for no decay or one log-decay per head (GATE 0 / 1), as
whole-chunk `[BT, BT]` products on the tensor cores; one program per (chunk, head).

1. A' = K Kᵀ ⊙ Γ (s < r) and A_qk = scale·(Q Kᵀ ⊙ Γ) (s <= r), Γ_rs = exp(G_r − G_s):
   one `[BT, K] @ [K, BT]` product each.
2. (with beta) M = (I + L)⁻¹, L = Diag(β) A' strictly lower, without serial row steps:
   block forward substitution by doubling, two `[BT, BT]` products per level of log2(BT)
   (`_invert_unit_lower`). It only ever forms inverses of diagonal blocks of I + L, so
   it stays as well conditioned as row-by-row substitution.
3. (with beta) W = M Diag(β)(γ ⊙ K) `[BT, K]` and U = M Diag(β) V `[BT, V]`, with the
   16-bit K and V exact as operands and M split into two 16-bit halves.

A', M (SAVE, for the backward) and A_qk (STORE_AQK) are stored whole per chunk row
`[rows, H, BT]`, zero above the diagonal. The per-channel decay (GATE 2) forms its scores
by 16-token blocks instead (chunk_prepare.py).
"""
import triton
import triton.language as tl

from .common import _chunk_bounds, _decay_exp


@triton.jit
def _scores(q, k, G, start, valid, i_h, scale, H: tl.constexpr, K: tl.constexpr,
            GATE: tl.constexpr, WANT_QK: tl.constexpr, WANT_KK: tl.constexpr, LOW: tl.constexpr,
            DOT_PRECISION: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """(A_qk scaled, A') of one chunk, `[BT, BT]` float32 each, masked (zeros where not
    wanted). LOW: 16-bit operands as loaded (exact products, float32 accumulation);
    otherwise float32 in full precision."""
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    b_qk = tl.zeros([BT, BT], dtype=tl.float32)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        rows = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_k = tl.load(k + rows, mask=m, other=0.0)
        if not LOW:
            b_k = b_k.to(tl.float32)
        if WANT_QK:
            b_q = tl.load(q + rows, mask=m, other=0.0)
            if LOW:
                b_qk += tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION)
            else:
                b_qk += tl.dot(b_q.to(tl.float32), tl.trans(b_k), input_precision="ieee")
        if WANT_KK:
            if LOW:
                b_kk += tl.dot(b_k, tl.trans(b_k), input_precision=DOT_PRECISION)
            else:
                b_kk += tl.dot(b_k, tl.trans(b_k), input_precision="ieee")
    if GATE == 1:
        b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
        b_decay = _decay_exp(b_G[:, None] - b_G[None, :])
        b_qk *= b_decay
        b_kk *= b_decay
    b_qk = tl.where(o_t[:, None] >= o_t[None, :], b_qk * scale, 0.0)
    b_kk = tl.where(o_t[:, None] > o_t[None, :], b_kk, 0.0)
    return b_qk, b_kk


@triton.jit
def _store_square(A, b_A, start, valid, i_h, H: tl.constexpr, BT: tl.constexpr):
    """A chunk's `[BT, BT]` into its rows of a `[rows, H, BT]` buffer, in its dtype."""
    o_t = tl.arange(0, BT)
    tl.store(A + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], b_A.to(A.dtype.element_ty),
             mask=(o_t < valid)[:, None])


@triton.jit
def _invert_unit_lower(L, PRECISION: tl.constexpr, BT: tl.constexpr, LEVELS: tl.constexpr):
    """(I + L)⁻¹ for a strictly lower `[BT, BT]` L (float32), LEVELS = log2(BT): block
    forward substitution by doubling. X_s, the inverse of I plus the part of L inside
    the diagonal blocks of s rows, becomes X_2s = X_s − X_s N_s X_s, N_s the part of L
    inside blocks of 2s but outside those of s (exact: N_s X_s N_s = 0). Every X_s is a
    true inverse of diagonal blocks of I + L, bounded as the answer is (a Neumann series
    would form powers of L, binomially large for repeated keys); two `[BT, BT]` products
    per level, but none at the first, where X_1 = I makes X_2 = I − N_1."""
    o_t = tl.arange(0, BT)
    pairs = ((o_t[:, None] >> 1) == (o_t[None, :] >> 1)) & (o_t[:, None] != o_t[None, :])
    X = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0) - tl.where(pairs, L, 0.0)
    for level in tl.static_range(1, LEVELS):
        inner = (o_t[:, None] >> level) == (o_t[None, :] >> level)
        outer = (o_t[:, None] >> (level + 1)) == (o_t[None, :] >> (level + 1))
        N = tl.where(outer & ~inner, L, 0.0)
        X -= tl.dot(X, tl.dot(N, X, input_precision=PRECISION), input_precision=PRECISION)
    return X


@triton.jit
def _split(M, like, LOW: tl.constexpr):
    """M `[BT, BT]` float32 as two operands whose sum is M to about 16 bits of mantissa:
    16-bit halves M_hi + M_lo in the dtype of pointer `like` when LOW; else (M, 0)."""
    if LOW:
        hi = M.to(like.dtype.element_ty)
        lo = (M - hi.to(tl.float32)).to(like.dtype.element_ty)
    else:
        hi = M
        lo = tl.zeros_like(M)
    return hi, lo


@triton.jit
def _weighted_rows(hi, lo, x, LOW: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """(hi + lo) `[BT, BT]` @ x `[BT, BD]` -> `[BT, BD]` float32. LOW: x 16-bit as
    loaded (exact), two tensor-core products; otherwise one in full float32."""
    if LOW:
        out = tl.dot(hi, x, input_precision=DOT_PRECISION) + tl.dot(lo, x, input_precision=DOT_PRECISION)
    else:
        out = tl.dot(hi, x.to(tl.float32), input_precision="ieee")
    return out


@triton.jit
def _chunk_inverse(b_kk, beta, Akk, M, start, valid, i_h, H: tl.constexpr, SAVE: tl.constexpr,
                   PRECISION: tl.constexpr, BT: tl.constexpr, LEVELS: tl.constexpr):
    """β `[BT]` and M = (I + Diag(β) A')⁻¹ `[BT, BT]` of one chunk from its masked A'
    (b_kk); with SAVE, A' and M stored for the backward."""
    o_t = tl.arange(0, BT)
    b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=o_t < valid, other=0.0).to(tl.float32)
    if SAVE:
        _store_square(Akk, b_kk, start, valid, i_h, H, BT)
    b_M = _invert_unit_lower(b_beta[:, None] * b_kk, PRECISION, BT, LEVELS)
    if SAVE:
        _store_square(M, b_M, start, valid, i_h, H, BT)
    return b_beta, b_M


@triton.jit
def _store_values(v, u, hi, lo, start, valid, i_h, H: tl.constexpr, V: tl.constexpr, LOW: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """U = (hi + lo) V `[BT, V]` of one chunk (hi + lo = M Diag(β), `_split`), stored by
    column tiles of BD; the 16-bit V tiles enter the products as loaded."""
    o_t = tl.arange(0, BT)
    for v0 in range(0, V, BD):
        o_v = v0 + tl.arange(0, BD)
        m = (o_t < valid)[:, None] & (o_v < V)[None, :]
        rows = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        b_x = tl.load(v + rows, mask=m, other=0.0)
        tl.store(u + rows, _weighted_rows(hi, lo, b_x, LOW, DOT_PRECISION).to(u.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["T"])
def _dense_prepare_kernel(q, k, v, G, beta, Aqk, Akk, M, w, u, chunk_indices, cu_seqlens, scale, T,
                          H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                          USE_BETA: tl.constexpr, STORE_AQK: tl.constexpr, SAVE: tl.constexpr,
                          LOW: tl.constexpr, DOT_PRECISION: tl.constexpr, PRECISION: tl.constexpr,
                          BT: tl.constexpr, LEVELS: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr):
    """Steps 1-3 of the module docstring for chunk `program_id(0)`, head `program_id(1)`.
    Buffers `[rows, H, BT]` (Aqk, Akk, M) and `[rows, H, K or V]` (w, u). PRECISION: of
    the inverse's products (float32 operands); DOT_PRECISION: of the others
    (kernels/precision.py); LEVELS = log2(BT)."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if STORE_AQK:
        # A pass of its own: A_qk is stored at once and not kept alive beside A'.
        b_qk, _ = _scores(q, k, G, start, valid, i_h, scale, H, K, GATE, True, False, LOW, DOT_PRECISION, BT, BK)
        _store_square(Aqk, b_qk, start, valid, i_h, H, BT)
    if USE_BETA:
        _, b_kk = _scores(q, k, G, start, valid, i_h, scale, H, K, GATE, False, True, LOW, DOT_PRECISION, BT, BK)
        b_beta, b_M = _chunk_inverse(b_kk, beta, Akk, M, start, valid, i_h, H, SAVE, PRECISION, BT, LEVELS)
        # W = (M Diag(β γ)) K and U = (M Diag(β)) V: the weights scale M's columns, so the
        # 16-bit K and V tiles enter the products as loaded.
        o_t = tl.arange(0, BT)
        m_t = o_t < valid
        b_wk = b_beta
        if GATE == 1:
            b_wk *= tl.exp(tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0))
        b_Mk_hi, b_Mk_lo = _split(b_M * b_wk[None, :], k, LOW)
        b_Mv_hi, b_Mv_lo = _split(b_M * b_beta[None, :], k, LOW)
        for k0 in range(0, K, BD):
            o_k = k0 + tl.arange(0, BD)
            m = m_t[:, None] & (o_k < K)[None, :]
            rows = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
            b_x = tl.load(k + rows, mask=m, other=0.0)
            tl.store(w + rows, _weighted_rows(b_Mk_hi, b_Mk_lo, b_x, LOW, DOT_PRECISION).to(w.dtype.element_ty),
                     mask=m)
        _store_values(v, u, b_Mv_hi, b_Mv_lo, start, valid, i_h, H, V, LOW, DOT_PRECISION, BT, BD)
