"""Triton kernel of the mLSTM one token at a time (decoding, a few tokens).

One program per (value tile, sequence·head) keeps its `[K, BV]` slice of C, all of n
and m in registers for the whole input, so the state is read and written once per
call. n is V-independent: every value tile recomputes it (K numbers per token), and
only the first stores it.
"""
import triton
import triton.language as tl

from ....kernels.sequences import sequence_head_program

from .chunk_fwd import _logsigmoid, _normaliser


@triton.jit
def _recurrent_kernel(q, k, v, i, f, o, initial_C, initial_n, initial_m, final_C, final_n,
                      final_m, cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr,
                      V: tl.constexpr, STABILISE: tl.constexpr, USE_INITIAL: tl.constexpr,
                      STORE_FINAL: tl.constexpr, EPS: tl.constexpr, BK: tl.constexpr,
                      BV: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    b_C = tl.zeros([BK, BV], dtype=tl.float32)
    b_n = tl.zeros([BK], dtype=tl.float32)
    b_m = tl.full([], float("-inf") if STABILISE else 0.0, tl.float32)
    if USE_INITIAL:
        b_C += tl.load(initial_C + i_nh * K * V + p_kv, mask=m_kv, other=0.0)
        b_n += tl.load(initial_n + i_nh * K + o_k, mask=m_k, other=0.0)
        b_m = tl.load(initial_m + i_nh)
    for t in range(bos, eos):
        p_k = (t * H + i_h) * K + o_k
        b_q = tl.load(q + p_k, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + (t * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_lf = _logsigmoid(tl.load(f + t * H + i_h).to(tl.float32))
        b_li = tl.load(i + t * H + i_h).to(tl.float32)
        if STABILISE:
            b_m_new = tl.maximum(b_lf + b_m, b_li)
        else:
            # No stabiliser: m is 0 after the first step, so an entering m (the entering
            # state's scale, exp(m)) is folded into that step's decay, as the reference does.
            b_li = _logsigmoid(b_li)
            b_m_new = tl.full([], 0.0, tl.float32)
        b_decay = tl.exp(b_lf + b_m - b_m_new)
        b_write = b_k * tl.exp(b_li - b_m_new)
        b_C = b_C * b_decay + b_write[:, None] * b_v[None, :]
        b_n = b_n * b_decay + b_write
        b_m = b_m_new
        b_num = tl.sum(b_C * b_q[:, None], axis=0)
        b_den = tl.sum(b_n * b_q, axis=0)
        b_o = b_num * _normaliser(b_den, b_m, EPS)
        tl.store(o + (t * H + i_h) * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_FINAL:
        tl.store(final_C + i_nh * K * V + p_kv, b_C, mask=m_kv)
        if i_v == 0:
            tl.store(final_n + i_nh * K + o_k, b_n, mask=m_k)
            tl.store(final_m + i_nh, b_m)
