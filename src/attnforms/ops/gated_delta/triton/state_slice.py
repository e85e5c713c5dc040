"""The prologue both state-carrying kernels share (the chunk state pass and the
recurrent kernel): which sequence, head and `[BK, BV]` state slice a program owns."""
import triton
import triton.language as tl

from ....kernels.sequences import sequence_head_program


@triton.jit
def state_slice(initial, cu_seqlens, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                USE_INITIAL: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, STRIDE: tl.constexpr = 1):
    """Program (i_v, i_nh) owns value columns i_v·BV.. of head i_nh % H of sequence
    i_nh // H. Returns (sequence index, head, first row, end row, key offsets `[BK]`,
    value offsets `[BV]`, their masks, the slice's offsets and mask `[BK, BV]` into a
    `[N, H, K, V]` state, and the initial slice in float32, zeros without one).
    STRIDE: of `cu_seqlens` (`sequence_head_program`)."""
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H, STRIDE)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_state = (i_nh * K + o_k[:, None]) * V + o_v[None, :]
    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL:
        b_S += tl.load(initial + p_state, mask=m_kv, other=0.0).to(tl.float32)
    return i_n, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_S
