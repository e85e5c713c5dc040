"""Small jit helpers every chunk kernel shares, forward and backward."""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_bounds as _chunk_bounds  # noqa: F401  (re-exported)


@triton.jit
def _decay_exp(x):
    """exp of a log-decay that is <= 0 wherever it is used; masked entries may be
    positive, so clamp rather than overflow."""
    return tl.exp(tl.minimum(x, 0.0))


@triton.jit
def _chunk_end_decay(G, start, valid, i_h, o_k, H: tl.constexpr, K: tl.constexpr):
    """G_C `[BK]` float32: the per-channel cumulative log-decay `G [rows, H, K]` at the
    chunk's last valid step, for the key channels o_k `[BK]` (0 past K)."""
    return tl.load(G + ((start + valid - 1) * H + i_h) * K + o_k, mask=o_k < K, other=0.0)
