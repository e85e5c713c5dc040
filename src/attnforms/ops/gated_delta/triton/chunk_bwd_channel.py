"""The in-chunk products of the backward with a per-channel decay (GATE 2).

With coefficient matrices P (the gradient of the scores, masked, times scale or β),
    dq[r, c]    += Σ_s P_qk[r, s] k[s, c] exp(G[r, c] − G[s, c])
    dk[s, c]    += Σ_r P_qk[r, s] q[r, c] exp(G[r, c] − G[s, c])
    dk[r, c]    += Σ_s P_kk[r, s] k[s, c] exp(...)   and   dk[s, c] += Σ_r P_kk[r, s] k[r, c] exp(...)
and each such term moves G[r, c] up and G[s, c] down by the same amount. Every product
is independent per channel, so programs split the key dimension into slices of BK.
As in the forward, sub-blocks of BC tokens: below the diagonal the decay factors
through the key block's last step e (both factors <= 1, one matrix product); on the
diagonal it is formed pairwise, `[BC, BC, BK]`.
"""
import triton
import triton.language as tl

from .common import _chunk_bounds, _decay_exp


@triton.jit
def _rows(x, start, o_t, m_t, o_k, m_k, i_h, H: tl.constexpr, K: tl.constexpr):
    """Rows o_t, channels o_k of a `[rows, H, K]` tensor, in float32."""
    p = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
    return tl.load(x + p, mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)


@triton.jit
def _row(x, start, t, valid, o_k, m_k, i_h, H: tl.constexpr, K: tl.constexpr):
    """Channels o_k of row t (zeros past the chunk's valid rows) of a `[rows, H, K]`
    tensor, in float32, `[BK]`."""
    return tl.load(x + ((start + t) * H + i_h) * K + o_k, mask=m_k & (t < valid), other=0.0).to(tl.float32)


@triton.jit
def _coefficients(P, start, o_r, m_r, o_s, i_h, H: tl.constexpr, BT: tl.constexpr):
    """Block (rows o_r, columns o_s) of a `[rows, H, BT]` coefficient matrix."""
    return tl.load(P + ((start + o_r[:, None]) * H + i_h) * BT + o_s[None, :], mask=m_r[:, None], other=0.0)


@triton.jit(do_not_specialize=["T"])
def _channel_bwd_kernel(q, k, G, Pqk, Pkk, dq_part, dk_part, dG_part, dq, dk, dg,
                        chunk_indices, cu_seqlens, T, H: tl.constexpr, K: tl.constexpr,
                        USE_BETA: tl.constexpr, DOT_PRECISION: tl.constexpr, BT: tl.constexpr,
                        BC: tl.constexpr, BK: tl.constexpr):
    """DOT_PRECISION: the `input_precision` of the products of float32 blocks ("ieee" for
    float32 inputs; kernels/precision.py)."""
    i_c, i_h, i_k = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    NB: tl.constexpr = BT // BC
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    # Pass 1, query side (rows of block i): finishes dq, adds to dk and dG.
    for i in tl.static_range(NB):
        o_r = i * BC + tl.arange(0, BC)
        m_r = o_r < valid
        b_q = _rows(q, start, o_r, m_r, o_k, m_k, i_h, H, K)
        b_k = _rows(k, start, o_r, m_r, o_k, m_k, i_h, H, K)
        b_G = _rows(G, start, o_r, m_r, o_k, m_k, i_h, H, K)
        b_dq = tl.zeros([BC, BK], dtype=tl.float32)
        b_dk = tl.zeros([BC, BK], dtype=tl.float32)
        for j in tl.static_range(i + 1):
            o_s = j * BC + tl.arange(0, BC)
            m_s = o_s < valid
            b_ks = _rows(k, start, o_s, m_s, o_k, m_k, i_h, H, K)
            b_Gs = _rows(G, start, o_s, m_s, o_k, m_k, i_h, H, K)
            b_Pqk = _coefficients(Pqk, start, o_r, m_r, o_s, i_h, H, BT)
            if USE_BETA:
                b_Pkk = _coefficients(Pkk, start, o_r, m_r, o_s, i_h, H, BT)
            if j < i:
                e = tl.minimum(j * BC + BC - 1, valid - 1)
                b_Ge = tl.load(G + ((start + e) * H + i_h) * K + o_k, mask=m_k, other=0.0)
                b_ks_dec = b_ks * _decay_exp(b_Ge[None, :] - b_Gs)
                b_r_dec = _decay_exp(b_G - b_Ge[None, :])
                # [BC, BC] @ [BC, BK] -> [BC, BK]
                b_dq += b_r_dec * tl.dot(b_Pqk, b_ks_dec, input_precision=DOT_PRECISION)
                if USE_BETA:
                    b_dk += b_r_dec * tl.dot(b_Pkk, b_ks_dec, input_precision=DOT_PRECISION)
            else:
                # On the diagonal, one key step s at a time: `[BC, BK]` products (a
                # `[BC, BC, BK]` broadcast is far slower in Triton). P is zero above the
                # diagonal, so the clamped decays there never count.
                for s in range(BC):
                    m_one = o_s == j * BC + s
                    b_k_s = _row(k, start, j * BC + s, valid, o_k, m_k, i_h, H, K)
                    b_decay = _decay_exp(b_G - _row(G, start, j * BC + s, valid, o_k, m_k, i_h, H, K)[None, :])
                    b_kd = b_k_s[None, :] * b_decay
                    b_dq += tl.sum(tl.where(m_one[None, :], b_Pqk, 0.0), axis=1)[:, None] * b_kd
                    if USE_BETA:
                        b_dk += tl.sum(tl.where(m_one[None, :], b_Pkk, 0.0), axis=1)[:, None] * b_kd
        p = ((start + o_r[:, None]) * H + i_h) * K + o_k[None, :]
        m = m_r[:, None] & m_k[None, :]
        b_dq_all = tl.load(dq_part + p, mask=m, other=0.0) + b_dq
        tl.store(dq + p, b_dq_all.to(dq.dtype.element_ty), mask=m)
        tl.store(dk_part + p, tl.load(dk_part + p, mask=m, other=0.0) + b_dk, mask=m)
        tl.store(dG_part + p, tl.load(dG_part + p, mask=m, other=0.0) + b_q * b_dq + b_k * b_dk, mask=m)
    # Pass 2 reads what pass 1 wrote in other threads' rows.
    tl.debug_barrier()
    # Pass 2, key side (rows of block j, last block first): finishes dk and dG, and
    # turns dG into dg by a reverse cumulative sum carried across blocks.
    b_suffix = tl.zeros([BK], dtype=tl.float32)
    for jb in tl.static_range(NB - 1, -1, -1):
        o_s = jb * BC + tl.arange(0, BC)
        m_s = o_s < valid
        b_ks = _rows(k, start, o_s, m_s, o_k, m_k, i_h, H, K)
        b_Gs = _rows(G, start, o_s, m_s, o_k, m_k, i_h, H, K)
        b_dkq = tl.zeros([BC, BK], dtype=tl.float32)
        for ib in tl.static_range(jb, NB):
            o_r = ib * BC + tl.arange(0, BC)
            m_r = o_r < valid
            b_q = _rows(q, start, o_r, m_r, o_k, m_k, i_h, H, K)
            b_k = _rows(k, start, o_r, m_r, o_k, m_k, i_h, H, K)
            b_G = _rows(G, start, o_r, m_r, o_k, m_k, i_h, H, K)
            b_Pqk = _coefficients(Pqk, start, o_r, m_r, o_s, i_h, H, BT)
            if USE_BETA:
                b_Pkk = _coefficients(Pkk, start, o_r, m_r, o_s, i_h, H, BT)
            if ib > jb:
                e = tl.minimum(jb * BC + BC - 1, valid - 1)
                b_Ge = tl.load(G + ((start + e) * H + i_h) * K + o_k, mask=m_k, other=0.0)
                b_s_dec = _decay_exp(b_Ge[None, :] - b_Gs)
                b_r_dec = _decay_exp(b_G - b_Ge[None, :])
                # [BC, BC]ᵀ @ [BC, BK] -> [BC, BK]
                b_dkq += b_s_dec * tl.dot(tl.trans(b_Pqk), b_q * b_r_dec, input_precision=DOT_PRECISION)
                if USE_BETA:
                    b_dkq += b_s_dec * tl.dot(tl.trans(b_Pkk), b_k * b_r_dec, input_precision=DOT_PRECISION)
            else:
                # On the diagonal, one query step r at a time (see pass 1).
                for r in range(BC):
                    m_one = o_r == ib * BC + r
                    b_decay = _decay_exp(_row(G, start, ib * BC + r, valid, o_k, m_k, i_h, H, K)[None, :] - b_Gs)
                    b_q_r = _row(q, start, ib * BC + r, valid, o_k, m_k, i_h, H, K)
                    b_dkq += tl.sum(tl.where(m_one[:, None], b_Pqk, 0.0), axis=0)[:, None] * (b_q_r[None, :] * b_decay)
                    if USE_BETA:
                        b_k_r = _row(k, start, ib * BC + r, valid, o_k, m_k, i_h, H, K)
                        b_dkq += tl.sum(tl.where(m_one[:, None], b_Pkk, 0.0), axis=0)[:, None] * (b_k_r[None, :] * b_decay)
        p = ((start + o_s[:, None]) * H + i_h) * K + o_k[None, :]
        m = m_s[:, None] & m_k[None, :]
        b_dk_all = tl.load(dk_part + p, mask=m, other=0.0) + b_dkq
        tl.store(dk + p, b_dk_all.to(dk.dtype.element_ty), mask=m)
        b_dG = tl.load(dG_part + p, mask=m, other=0.0) - b_ks * b_dkq
        b_dG = tl.where(m, b_dG, 0.0)
        # g_j enters every G_r with r >= j.
        b_dg = b_suffix[None, :] + tl.sum(b_dG, axis=0)[None, :] - tl.cumsum(b_dG, axis=0) + b_dG
        b_suffix += tl.sum(b_dG, axis=0)
        tl.store(dg + p, b_dg.to(dg.dtype.element_ty), mask=m)
