"""Plain DETR's BoxRPB: box-to-pixel relative position bias for cross-attention."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._naming import check_captured, check_int, check_positive_float, named


def box_rpb_tables(boxes: torch.Tensor, mlp_x: Callable, mlp_y: Callable, *, height: int,
                   width: int, stride: float = 16.0, transform: str = "linear",
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the BoxRPB bias, `(bias_x [B, Q, width, H], bias_y [B, Q,
    height, H])`, from the boxes of the queries.

    Pixel u of a row sits at `p(u) = (u + 0.5) · stride`; a box `(x1, y1, x2, y2)` gives
    per column the offsets `Δx = (x1 - p(u), x2 - p(u))` and per row `Δy = (y1 - p(v),
    y2 - p(v))`, and `bias_x = mlp_x(Δx)`, `bias_y = mlp_y(Δy)`. With `transform="log"`
    the offsets first become `sign(Δ) · log2(|Δ| + 1) / 3` (the official code's log
    option). Differentiable in the boxes and the MLPs' parameters.

    Args:
        boxes: `[B, Q, 4]` float, corner form `(x1, y1, x2, y2)` in pixels of the input
            image (Plain DETR converts its normalised cxcywh reference boxes by
            multiplying with `width · stride`, `height · stride`).
        mlp_x, mlp_y: callables `[..., 2] -> [..., H]`; in the paper each is
            `Linear(2, hidden) -> ReLU -> Linear(hidden, H, bias=False)`, separate weights
            for x and y (hidden 256 in the paper, 512 in the official code).
        height, width: the feature map `H_f x W_f` (keys are its pixels, row-major).
        stride: pixels of the image per feature-map pixel (16 in Plain DETR).
        transform: "linear" (default) or "log".
    """
    check_captured("boxes", boxes, ndims=(3,), floating=True)
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes: expected [B, Q, 4] (x1, y1, x2, y2), got shape {list(boxes.shape)}")
    check_int("height", height, minimum=1)
    check_int("width", width, minimum=1)
    stride = check_positive_float("stride", stride)
    if transform not in ("linear", "log"):
        raise ValueError(f"transform: expected 'linear' or 'log', got {transform!r}")

    def offsets(lo, hi, n):  # lo, hi [B, Q] -> [B, Q, n, 2]
        centres = (torch.arange(n, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
        delta = torch.stack([lo[..., None] - centres, hi[..., None] - centres], dim=-1)
        if transform == "log":
            delta = torch.sign(delta) * torch.log2(delta.abs() + 1.0) / math.log2(8.0)
        return delta

    x1, y1, x2, y2 = boxes.unbind(-1)
    return mlp_x(offsets(x1, x2, width)), mlp_y(offsets(y1, y2, height))


def box_rpb(bias_x: torch.Tensor, bias_y: torch.Tensor) -> Callable:
    """`score_mod` adding `bias_x[b, i, u, h] + bias_y[b, i, v, h]` for query (box) i and
    key (pixel) `kv_idx = v · width + u` of a row-major `height x width` feature map.

    For cross-attention of Q object queries over the `height · width` pixels, called as
    `softmax_attention(q [B, Q, H, K], k [B, height·width, G, K], v, causal=False,
    score_mod=box_rpb(bias_x, bias_y))`. The axial decomposition keeps the bias at
    `O(Q · (height + width) · H)` numbers, never the full `Q x height·width x H` tensor;
    the mod adds the two factors per pair. Queries are bottom-right aligned in the op
    (query i sits at position `height·width - Q + i`), which the mod undoes. Indices are
    clamped into the tables. Gradients flow into both tables (and from there into the
    boxes and the MLPs when they come from `box_rpb_tables`); rebuild the mod whenever
    the boxes change (every decoder layer, in Plain DETR).

    Args:
        bias_x: `[B, Q, width, H]` float, the column factor (`box_rpb_tables`).
        bias_y: `[B, Q, height, H]` float, the row factor.

    Source: Lin et al., "DETR Does Not Need Multi-Scale or Locality Design" (Plain DETR,
    ICCV 2023), research note §5 (verified there from the paper and the official code).
    """
    check_captured("bias_x", bias_x, ndims=(4,), floating=True)
    check_captured("bias_y", bias_y, ndims=(4,), floating=True)
    B, Q, width, H = bias_x.shape
    if bias_y.shape[0] != B or bias_y.shape[1] != Q or bias_y.shape[3] != H:
        raise ValueError(
            f"bias_y: expected [B, Q, height, H] = [{B}, {Q}, height, {H}] to match bias_x "
            f"{list(bias_x.shape)}, got {list(bias_y.shape)}"
        )
    height = bias_y.shape[2]
    pixels = height * width
    shift = pixels - Q  # query i sits at position pixels - Q + i

    def box_rpb_bias(score, b, h, q_idx, kv_idx):
        i = torch.clamp(q_idx - shift, 0, Q - 1)
        kv = torch.clamp(kv_idx, 0, pixels - 1)
        return score + bias_x[b, i, kv % width, h] + bias_y[b, i, kv // width, h]

    return named(box_rpb_bias, f"box_rpb({Q} boxes, {height}x{width} pixels, {H} heads)")
