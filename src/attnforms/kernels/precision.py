"""The `input_precision` every kernel's `tl.dot` states.

Triton multiplies float32 operands in TF32 (10-bit mantissa) on NVIDIA GPUs unless told
otherwise, and its CPU interpreter multiplies in full float32 whatever the setting, so no
CPU test can see the difference (tests/kernels/test_dot_precision.py checks that every
`tl.dot` states one instead).
"""
import torch


def dot_precision(x: torch.Tensor) -> str:
    """For inputs of `x`'s dtype: "ieee" for float32 inputs, as torch's matmul computes
    them; "tf32" for 16-bit inputs, whose products of float32 intermediates keep TF32
    (products of 16-bit operands ignore the setting)."""
    return "ieee" if x.dtype == torch.float32 else "tf32"
