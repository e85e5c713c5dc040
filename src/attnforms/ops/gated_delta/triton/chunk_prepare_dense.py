"""The per-chunk preparation for no decay or one log-decay per head (GATE 0 / 1), as
whole-chunk `[BT, BT]` products on the tensor cores; one program per (chunk, head).

1. A' = K Kᵀ ⊙ Γ (s < r) and A_qk = scale·(Q Kᵀ ⊙ Γ) (s <= r), Γ_rs = exp(G_r − G_s):
   one `[BT, K] @ [K, BT]` product each.
2. (with beta) M = (I + L)⁻¹, L = Diag(β) A' strictly lower, without serial row steps:
   - the diagonal `[BC, BC]` blocks of L, as one block-diagonal matrix L_d, are inverted
     together: (I + L_d)⁻¹ = (I − L_d)(I + L_d²)(I + L_d⁴)(I + L_d⁸), exact because every
     block is strictly lower, so L_d¹⁶ = 0 (BC = 16);
   - the rest N = L − L_d is strictly block-lower: with D = I + L_d and E = D⁻¹ N,
     (I + L)⁻¹ = (I + E)⁻¹ D⁻¹ and (I + E)⁻¹ = (I − E)(I + E²)..., exact since E^NB = 0
     (NB = BT / BC blocks).
   Every factor stays bounded where the plain Neumann series over 64 rows would not
   (identical keys make the entries of L⁸ binomially large), as in a block forward
   substitution, but each step is one `[BT, BT] @ [BT, BT]` product.
3. (with beta) W = M Diag(β)(γ ⊙ K) `[BT, K]` and U = M Diag(β) V `[BT, V]`.

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
            BT: tl.constexpr, BK: tl.constexpr):
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
                b_qk += tl.dot(b_q, tl.trans(b_k))
            else:
                b_qk += tl.dot(b_q.to(tl.float32), tl.trans(b_k), input_precision="ieee")
        if WANT_KK:
            if LOW:
                b_kk += tl.dot(b_k, tl.trans(b_k))
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
    """A chunk's `[BT, BT]` into its rows of a `[rows, H, BT]` buffer."""
    o_t = tl.arange(0, BT)
    tl.store(A + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], b_A, mask=(o_t < valid)[:, None])


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr):
    """`[BT, BT] @ [BT, BT]`, float32 operands, in the given tensor-core precision."""
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _invert_unit_lower(L, PRECISION: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                       DIAG_SQUARINGS: tl.constexpr, BLOCK_SQUARINGS: tl.constexpr):
    """(I + L)⁻¹ for a strictly lower `[BT, BT]` L, by the two factorisations of the
    module docstring; `[BT, BT]`. DIAG_SQUARINGS = log2(BC) − 1 and BLOCK_SQUARINGS =
    log2(NB) − 1 (NB = BT / BC) factors make each product exact."""
    o_t = tl.arange(0, BT)
    eye = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)
    same_block = (o_t[:, None] // BC) == (o_t[None, :] // BC)
    L_d = tl.where(same_block, L, 0.0)
    # D⁻¹ = Π (I + (−L_d)^(2^p)), p < log2(BC): (I − L_d)(I + L_d²)(I + L_d⁴)...
    D_inv = eye - L_d
    P = L_d
    for _ in tl.static_range(DIAG_SQUARINGS):
        P = _mm(P, P, PRECISION)
        D_inv += _mm(D_inv, P, PRECISION)
    inverse = D_inv
    if BT > BC:
        E = _mm(D_inv, L - L_d, PRECISION)
        Y = eye - E
        P = E
        for _ in tl.static_range(BLOCK_SQUARINGS):
            P = _mm(P, P, PRECISION)
            Y += _mm(Y, P, PRECISION)
        inverse = _mm(Y, D_inv, PRECISION)
    return inverse


@triton.jit
def _weighted_rows(M, x, PRECISION: tl.constexpr):
    """M `[BT, BT]` @ x `[BT, BD]` (float32 both) -> `[BT, BD]`."""
    return tl.dot(M, x, input_precision=PRECISION)


@triton.jit(do_not_specialize=["T"])
def _dense_prepare_kernel(q, k, v, G, beta, Aqk, Akk, M, w, u, chunk_indices, cu_seqlens, scale, T,
                          H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                          USE_BETA: tl.constexpr, STORE_AQK: tl.constexpr, SAVE: tl.constexpr,
                          LOW: tl.constexpr, PRECISION: tl.constexpr, BT: tl.constexpr,
                          BC: tl.constexpr, DIAG_SQUARINGS: tl.constexpr,
                          BLOCK_SQUARINGS: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr):
    """Steps 1-3 of the module docstring for chunk `program_id(0)`, head `program_id(1)`.
    Buffers `[rows, H, BT]` (Aqk, Akk, M) and `[rows, H, K or V]` (w, u). PRECISION: of
    the inverse and the W / U products (their float32 operands)."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if STORE_AQK:
        # A pass of its own: A_qk is stored at once and not kept alive beside A'.
        b_qk, _ = _scores(q, k, G, start, valid, i_h, scale, H, K, GATE, True, False, LOW, BT, BK)
        _store_square(Aqk, b_qk, start, valid, i_h, H, BT)
    if USE_BETA:
        _, b_kk = _scores(q, k, G, start, valid, i_h, scale, H, K, GATE, False, True, LOW, BT, BK)
        o_t = tl.arange(0, BT)
        m_t = o_t < valid
        b_beta = tl.load(beta + (start + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
        if SAVE:
            _store_square(Akk, b_kk, start, valid, i_h, H, BT)
        b_M = _invert_unit_lower(b_beta[:, None] * b_kk, PRECISION, BT, BC, DIAG_SQUARINGS,
                                BLOCK_SQUARINGS)
        if SAVE:
            _store_square(M, b_M, start, valid, i_h, H, BT)
        # The weights of the rows of K and V: β, and for K the decay from the chunk start.
        b_wk = b_beta
        if GATE == 1:
            b_wk *= tl.exp(tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0))
        for k0 in range(0, K, BD):
            o_k = k0 + tl.arange(0, BD)
            m = m_t[:, None] & (o_k < K)[None, :]
            rows = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
            b_x = tl.load(k + rows, mask=m, other=0.0).to(tl.float32) * b_wk[:, None]
            tl.store(w + rows, _weighted_rows(b_M, b_x, PRECISION).to(w.dtype.element_ty), mask=m)
        for v0 in range(0, V, BD):
            o_v = v0 + tl.arange(0, BD)
            m = m_t[:, None] & (o_v < V)[None, :]
            rows = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
            b_x = tl.load(v + rows, mask=m, other=0.0).to(tl.float32) * b_beta[:, None]
            tl.store(u + rows, _weighted_rows(b_M, b_x, PRECISION).to(u.dtype.element_ty), mask=m)
