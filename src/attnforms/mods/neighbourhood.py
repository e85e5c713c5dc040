"""2-D neighbourhood attention on a row-major image grid."""
from __future__ import annotations

from typing import Callable

import torch

from ._naming import check_int, named


def neighbourhood_2d(height: int, width: int, kernel: int) -> Callable:
    """`mask_mod` of neighbourhood attention: each pixel sees a `kernel x kernel` window of
    pixels centred on it, shifted inwards at the borders so that every pixel sees exactly
    `kernel²` pixels.

    Token n is pixel `(n // width, n % width)` of a row-major `height x width` grid (T =
    S = height · width, non-causal: call with `causal=False`). For a query at row y the
    window's rows are `[y0, y0 + kernel)` with `y0 = clamp(y - kernel // 2, 0, height -
    kernel)`, and likewise for columns.

    Args:
        height, width: the grid, each >= kernel.
        kernel: odd window side, >= 1.

    Source: Hassani, Walton, Li, Li, Shi, "Neighborhood Attention Transformer" (CVPR
    2023) and its NATTEN library (dilation not supported here). Not covered by the
    project's research notes; the border rule is restated from the paper from memory
    (unverified there).
    """
    check_int("kernel", kernel, minimum=1)
    if kernel % 2 == 0:
        raise ValueError(f"kernel: expected an odd window side, got {kernel}")
    H = check_int("height", height, minimum=kernel)
    W = check_int("width", width, minimum=kernel)
    r = kernel // 2

    def neighbourhood_2d_mask(b, h, q_idx, kv_idx):
        qy, qx = q_idx // W, q_idx % W
        ky, kx = kv_idx // W, kv_idx % W
        y0 = torch.clamp(qy - r, 0, H - kernel)
        x0 = torch.clamp(qx - r, 0, W - kernel)
        inside = (kv_idx >= 0) & (kv_idx < H * W) & (q_idx >= 0) & (q_idx < H * W)
        return inside & (ky >= y0) & (ky < y0 + kernel) & (kx >= x0) & (kx < x0 + kernel)

    return named(neighbourhood_2d_mask, f"neighbourhood_2d({H}x{W}, kernel={kernel})")
