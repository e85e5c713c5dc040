"""Triton kernel of Aaren one token at a time (decoding): the stable cell
`state ← state ⊕ (s_t, 1, v_t)` fused with the score, one program per (value tile,
sequence·head), the triple in registers for the whole input."""
import triton
import triton.language as tl

from ....kernels.sequences import sequence_head_program


@triton.jit
def _recurrent_kernel(q, k, v, o, initial_m, initial_u, initial_w, final_m, final_u, final_w,
                      cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                      USE_INITIAL: tl.constexpr, STORE_FINAL: tl.constexpr, BK: tl.constexpr,
                      BV: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    b_q = tl.load(q + i_nh * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale
    b_m = tl.full([], float("-inf"), tl.float32)
    b_u = tl.full([], 0.0, tl.float32)
    b_w = tl.zeros([BV], dtype=tl.float32)
    if USE_INITIAL:
        b_m = tl.load(initial_m + i_nh)
        b_u = tl.load(initial_u + i_nh)
        b_w += tl.load(initial_w + i_nh * V + o_v, mask=m_v, other=0.0)
    for t in range(bos, eos):
        b_k = tl.load(k + (t * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + (t * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_s = tl.sum(b_q * b_k, axis=0)
        b_m_new = tl.maximum(b_m, b_s)
        b_old = tl.exp(b_m - b_m_new)
        b_new = tl.exp(b_s - b_m_new)
        b_u = b_old * b_u + b_new
        b_w = b_old * b_w + b_new * b_v
        b_m = b_m_new
        tl.store(o + (t * H + i_h) * V + o_v, (b_w / b_u).to(o.dtype.element_ty), mask=m_v)
    if STORE_FINAL:
        tl.store(final_w + i_nh * V + o_v, b_w, mask=m_v)
        if i_v == 0:
            tl.store(final_m + i_nh, b_m)
            tl.store(final_u + i_nh, b_u)
