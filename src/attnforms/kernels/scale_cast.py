"""`(x * scale).to(dtype)` in one pass: the softmax backward's float32 dq accumulator
into the inputs' dtype.

(As torch ops, a multiply and a cast: two passes over the float32 tensor, the second
reading what the first wrote.)
"""
import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def _scale_cast_kernel(X, Y, n, scale, BLOCK: tl.constexpr):
    """Y[i] = X[i] · scale, in Y's dtype, for i < n (flat, contiguous)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + i, mask=i < n, other=0.0)
    tl.store(Y + i, (x * scale).to(Y.dtype.element_ty), mask=i < n)


def scale_cast(x: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """x (contiguous, any shape) times `scale`, as a new tensor of `dtype` and x's shape."""
    if not x.is_contiguous():
        raise ValueError("scale_cast: x must be contiguous")
    y = torch.empty(x.shape, dtype=dtype, device=x.device)
    n = x.numel()
    if n:
        _scale_cast_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, scale, BLOCK=BLOCK)
    return y
