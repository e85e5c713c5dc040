"""The two elementwise ends of mLSTMsig on the scalar-gate kernels (sigmoid_as_gla.py),
each one Triton pass forward and one backward (as PyTorch ops they were ten passes and
more, about as much device time as the chunk kernels themselves at S1; bench/NOTES-mlstm.md):

- `weighted_values(v, i, width)`: `[σ(i) v | σ(i) | 0 ...]`, `[B, T, H, width]` in v's
  dtype: the value columns, the column that carries the normaliser n, and zero padding.
- `normalise(out, V)`: `h = out[..., :V] / (max(|out[..., V]|, 1) + MLSTM_EPS)` in
  `dtype`, from the chunk kernels' float32 output `[B, T, H, width]`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ....core.constants import MLSTM_EPS

ROWS = 16  # (token, head) rows per program


@triton.jit
def _weighted_values_kernel(V, I, OUT, rows, D: tl.constexpr, W: tl.constexpr, BW: tl.constexpr,
                            ROWS: tl.constexpr):
    """OUT `[rows, W]` = [σ(i) v | σ(i) | 0]: V `[rows, D]`, I `[rows]`."""
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    c = tl.arange(0, BW)
    ok = r < rows
    w = tl.sigmoid(tl.load(I + r, mask=ok, other=0.0).to(tl.float32))
    v = tl.load(V + r[:, None] * D + c[None, :], mask=ok[:, None] & (c[None, :] < D), other=0.0).to(tl.float32)
    out = tl.where(c[None, :] == D, 1.0, v) * w[:, None]
    tl.store(OUT + r[:, None] * W + c[None, :], out.to(OUT.dtype.element_ty), mask=ok[:, None] & (c[None, :] < W))


@triton.jit
def _weighted_values_bwd_kernel(V, I, DOUT, DV, DI, rows, D: tl.constexpr, W: tl.constexpr,
                                BW: tl.constexpr, ROWS: tl.constexpr):
    """dV = σ(i) dOUT[:, :D]; dI = σ'(i) (Σ_c v_c dOUT_c + dOUT_D) (float32)."""
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    c = tl.arange(0, BW)
    ok = r < rows
    w = tl.sigmoid(tl.load(I + r, mask=ok, other=0.0).to(tl.float32))
    values = ok[:, None] & (c[None, :] < D)
    v = tl.load(V + r[:, None] * D + c[None, :], mask=values, other=0.0).to(tl.float32)
    g = tl.load(DOUT + r[:, None] * W + c[None, :], mask=ok[:, None] & (c[None, :] <= D), other=0.0).to(tl.float32)
    tl.store(DV + r[:, None] * D + c[None, :], (g * w[:, None]).to(DV.dtype.element_ty), mask=values)
    dw = tl.sum(tl.where(c[None, :] == D, g, g * v), 1)
    tl.store(DI + r, dw * w * (1.0 - w), mask=ok)


@triton.jit
def _normalise_kernel(OUT, H, rows, eps, D: tl.constexpr, W: tl.constexpr, BW: tl.constexpr,
                      ROWS: tl.constexpr):
    """H `[rows, D]` = OUT[:, :D] / (max(|OUT[:, D]|, 1) + eps)."""
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    c = tl.arange(0, BW)
    ok = r < rows
    num = tl.load(OUT + r[:, None] * W + c[None, :], mask=ok[:, None] & (c[None, :] < D), other=0.0)
    den = tl.load(OUT + r * W + D, mask=ok, other=0.0)
    h = num / (tl.maximum(tl.abs(den), 1.0) + eps)[:, None]
    tl.store(H + r[:, None] * D + c[None, :], h.to(H.dtype.element_ty), mask=ok[:, None] & (c[None, :] < D))


@triton.jit
def _normalise_bwd_kernel(OUT, DH, DOUT, rows, eps, D: tl.constexpr, W: tl.constexpr, BW: tl.constexpr,
                          ROWS: tl.constexpr):
    """dOUT `[rows, W]` float32: dH / n̂ on the value columns, -Σ dH·num / n̂² · d|den|
    on column D (d|den| = sign(den) where |den| > 1, else 0), zeros on the padding;
    n̂ = max(|den|, 1) + eps."""
    r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    c = tl.arange(0, BW)
    ok = r < rows
    values = ok[:, None] & (c[None, :] < D)
    num = tl.load(OUT + r[:, None] * W + c[None, :], mask=values, other=0.0)
    den = tl.load(OUT + r * W + D, mask=ok, other=0.0)
    dh = tl.load(DH + r[:, None] * D + c[None, :], mask=values, other=0.0).to(tl.float32)
    inv = 1.0 / (tl.maximum(tl.abs(den), 1.0) + eps)
    slope = tl.where(tl.abs(den) > 1.0, tl.where(den > 0, 1.0, -1.0), 0.0)
    dden = -tl.sum(dh * num, 1) * inv * inv * slope
    grad = tl.where(c[None, :] == D, dden[:, None], dh * inv[:, None])
    tl.store(DOUT + r[:, None] * W + c[None, :], grad, mask=ok[:, None] & (c[None, :] < W))


def _grid(rows: int):
    return (triton.cdiv(rows, ROWS),)


class _WeightedValues(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, i, width):
        D = v.shape[-1]
        v, i = v.contiguous(), i.contiguous()
        out = torch.empty(*v.shape[:-1], width, dtype=v.dtype, device=v.device)
        rows = i.numel()
        _weighted_values_kernel[_grid(rows)](v, i, out, rows, D=D, W=width,
                                             BW=triton.next_power_of_2(width), ROWS=ROWS)
        ctx.save_for_backward(v, i)
        return out

    @staticmethod
    def backward(ctx, dout):
        v, i = ctx.saved_tensors
        D, width = v.shape[-1], dout.shape[-1]
        dv = torch.empty_like(v)
        di = torch.empty(i.shape, dtype=torch.float32, device=i.device)
        rows = i.numel()
        _weighted_values_bwd_kernel[_grid(rows)](v, i, dout.contiguous(), dv, di, rows, D=D, W=width,
                                                 BW=triton.next_power_of_2(width), ROWS=ROWS)
        return dv, di.to(i.dtype), None


class _Normalise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, D, dtype):
        out = out.contiguous()
        width = out.shape[-1]
        h = torch.empty(*out.shape[:-1], D, dtype=dtype, device=out.device)
        rows = out.numel() // width
        _normalise_kernel[_grid(rows)](out, h, rows, MLSTM_EPS, D=D, W=width,
                                       BW=triton.next_power_of_2(width), ROWS=ROWS)
        ctx.save_for_backward(out)
        ctx.D = D
        return h

    @staticmethod
    def backward(ctx, dh):
        (out,) = ctx.saved_tensors
        width = out.shape[-1]
        dout = torch.empty_like(out)
        rows = out.numel() // width
        _normalise_bwd_kernel[_grid(rows)](out, dh.contiguous(), dout, rows, MLSTM_EPS, D=ctx.D, W=width,
                                           BW=triton.next_power_of_2(width), ROWS=ROWS)
        return dout, None, None


def weighted_values(v: torch.Tensor, i: torch.Tensor, width: int) -> torch.Tensor:
    """v `[B, T, H, V]`, i `[B, T, H]` -> `[B, T, H, width]` = [σ(i) v | σ(i) | 0 ...] in
    v's dtype (width > V); differentiable in v and i."""
    if width <= v.shape[-1]:
        raise ValueError(f"weighted_values: width {width} must exceed the value dim {v.shape[-1]}")
    return _WeightedValues.apply(v, i, width)


def normalise(out: torch.Tensor, V: int, dtype: torch.dtype) -> torch.Tensor:
    """out `[B, T, H, width]` float32 (numerator columns, then the denominator at column
    V) -> h `[B, T, H, V]` in `dtype`; differentiable in out."""
    if out.dtype != torch.float32 or out.shape[-1] <= V:
        raise ValueError(f"normalise: takes float32 `[..., width > {V}]`, got {out.dtype} {tuple(out.shape)}")
    return _Normalise.apply(out, V, dtype)
