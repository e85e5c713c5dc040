"""Triton kernel of the gated delta rule, one token at a time (decoding, short inputs).

One program per (BV value columns, sequence·head) keeps its `[K, BV]` state slice in
registers for the whole sequence, so the state is read and written once per call. The
final state may be written over the initial one (a caller-owned decoding cache).
Gate layout switch GATE: 0 none, 1 one per head, 2 one per key channel.
"""
import triton
import triton.language as tl

from .state_slice import state_slice


@triton.jit(do_not_specialize=["T"])
def _recurrent_kernel(q, k, v, g, beta, o, initial, final, cu_seqlens, scale, T,
                      H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                      USE_BETA: tl.constexpr, USE_INITIAL: tl.constexpr, STORE_FINAL: tl.constexpr,
                      BK: tl.constexpr, BV: tl.constexpr):
    _, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_S = state_slice(
        initial, cu_seqlens, H, K, V, USE_INITIAL, BK, BV)
    for t in range(bos, eos):
        p_k = (t * H + i_h) * K + o_k
        p_v = (t * H + i_h) * V + o_v
        b_q = tl.load(q + p_k, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + p_v, mask=m_v, other=0.0).to(tl.float32)
        if GATE == 1:
            b_g = tl.load(g + t * H + i_h).to(tl.float32)
            b_S = b_S * tl.where(b_g <= 0, tl.exp(b_g), float("nan"))
        elif GATE == 2:
            b_g = tl.load(g + p_k, mask=m_k, other=0.0).to(tl.float32)
            b_S = b_S * tl.where(b_g <= 0, tl.exp(b_g), float("nan"))[:, None]
        if USE_BETA:
            b_beta = tl.load(beta + t * H + i_h).to(tl.float32)
            # The delta rule writes β (v − Sᵀk): [BK, BV] · [BK, 1] summed over K -> [BV].
            b_v = b_beta * (b_v - tl.sum(b_S * b_k[:, None], axis=0))
        b_S += b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_S * b_q[:, None], axis=0)
        tl.store(o + p_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_FINAL:
        tl.store(final + p_state, b_S, mask=m_kv)
