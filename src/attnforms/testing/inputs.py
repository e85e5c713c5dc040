"""One input factory per family, so no test or benchmark copies setup code.

Each returns a dict of keyword arguments for the op (`op(**inputs, form=...)`), drawn
from a seeded generator on the CPU and then moved, so the same seed gives the same
numbers on every device. Values are in the ranges trained models produce: unit-scale
q/k/v, L2-normalised keys where the delta rule needs them, moderate decays.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _draw(seed: int, dtype: torch.dtype, device, requires_grad: bool):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, shift: float = 0.0, spread: float = 1.0) -> torch.Tensor:
        x = torch.randn(*shape, generator=generator, dtype=torch.float64) * spread + shift
        return x

    def finish(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    return randn, finish


def gated_delta_inputs(
    B: int = 2, T: int = 63, H: int = 2, K: int = 16, V: int = 16, *,
    gate: str = "scalar", beta: bool = True, dtype=torch.float64, device="cpu",
    seed: int = 0, requires_grad: bool = False,
) -> dict:
    """Inputs of `gated_delta_rule`.

    gate: "none" | "scalar" (`g [B, T, H]`) | "channel" (`g [B, T, H, K]`).
    Returns q, k `[B, T, H, K]` (k L2-normalised), v `[B, T, H, V]`, g, beta `[B, T, H]`
    (sigmoid of a normal draw) or None.
    """
    randn, finish = _draw(seed, dtype, device, requires_grad)
    inputs = dict(
        q=finish(randn(B, T, H, K)),
        k=finish(F.normalize(randn(B, T, H, K), dim=-1)),
        v=finish(randn(B, T, H, V)),
        g=None,
        beta=None,
    )
    if gate == "scalar":
        inputs["g"] = finish(F.logsigmoid(randn(B, T, H, shift=3.0)))
    elif gate == "channel":
        inputs["g"] = finish(F.logsigmoid(randn(B, T, H, K, shift=3.0)))
    elif gate != "none":
        raise ValueError(f"gate: expected 'none', 'scalar' or 'channel', got {gate!r}")
    if beta:
        inputs["beta"] = finish(torch.sigmoid(randn(B, T, H)))
    return inputs


def softmax_inputs(
    B: int = 2, T: int = 63, H: int = 4, K: int = 16, V: int = 16, *, S: int | None = None,
    G: int | None = None, dtype=torch.float64, device="cpu", seed: int = 0,
    requires_grad: bool = False,
) -> dict:
    """Inputs of `softmax_attention`: q `[B, T, H, K]`, k `[B, S, G, K]`, v `[B, S, G, V]`
    (S defaults to T, G to H)."""
    randn, finish = _draw(seed, dtype, device, requires_grad)
    S = T if S is None else S
    G = H if G is None else G
    return dict(q=finish(randn(B, T, H, K)), k=finish(randn(B, S, G, K)), v=finish(randn(B, S, G, V)))


def mlstm_inputs(
    B: int = 2, T: int = 63, H: int = 2, K: int = 16, V: int = 16, *, dtype=torch.float64,
    device="cpu", seed: int = 0, requires_grad: bool = False,
) -> dict:
    """Inputs of `mlstm`: q, k `[B, T, H, K]`, v `[B, T, H, V]`, gate pre-activations
    i, f `[B, T, H]` (forget gates biased towards remembering, as in trained models)."""
    randn, finish = _draw(seed, dtype, device, requires_grad)
    return dict(
        q=finish(randn(B, T, H, K)), k=finish(randn(B, T, H, K)), v=finish(randn(B, T, H, V)),
        i=finish(randn(B, T, H)), f=finish(randn(B, T, H, shift=3.0)),
    )


def aaren_inputs(
    B: int = 2, T: int = 63, H: int = 2, K: int = 16, V: int = 16, *, dtype=torch.float64,
    device="cpu", seed: int = 0, requires_grad: bool = False,
) -> dict:
    """Inputs of `aaren`: one query per head q `[B, H, K]`, k `[B, T, H, K]`, v `[B, T, H, V]`."""
    randn, finish = _draw(seed, dtype, device, requires_grad)
    return dict(q=finish(randn(B, H, K)), k=finish(randn(B, T, H, K)), v=finish(randn(B, T, H, V)))
