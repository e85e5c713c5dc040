"""Small jit helpers every chunk kernel shares, forward and backward."""
import triton
import triton.language as tl


@triton.jit
def _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT: tl.constexpr):
    """The sequence of global chunk i_c: (sequence index, first token row of the chunk,
    number of valid rows in it)."""
    i_n = tl.load(chunk_indices + i_c * 2).to(tl.int64)
    i_t = tl.load(chunk_indices + i_c * 2 + 1).to(tl.int64)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    start = bos + i_t * BT
    return i_n, start, tl.minimum(eos - start, BT)


@triton.jit
def _decay_exp(x):
    """exp of a log-decay that is <= 0 wherever it is used; masked entries may be
    positive, so clamp rather than overflow."""
    return tl.exp(tl.minimum(x, 0.0))
