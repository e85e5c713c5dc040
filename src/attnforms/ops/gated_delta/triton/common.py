"""Small jit helpers every chunk kernel shares, forward and backward."""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_bounds as _chunk_bounds  # noqa: F401  (re-exported)


@triton.jit
def _decay_exp(x):
    """exp of a log-decay that is <= 0 wherever it is used; masked entries may be
    positive, so clamp rather than overflow."""
    return tl.exp(tl.minimum(x, 0.0))
