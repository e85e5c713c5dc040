"""Tanh soft-capping of the attention logits."""
from __future__ import annotations

from typing import Callable

import torch

from ._naming import check_positive_float, named


def tanh_softcap(cap: float) -> Callable:
    """`score_mod` returning `cap · tanh(score / cap)`: logits squashed smoothly into
    `(-cap, cap)`, close to the identity for `|score| << cap`.

    Args:
        cap: a finite positive number (Gemma 2 uses 50.0 for attention logits).

    Applied to the scaled score `scale · q·k` (what the mod receives), as in Gemma 2.

    Source: Gemma Team, "Gemma 2: Improving Open Language Models at a Practical Size"
    (2024), attention logit soft-capping; earlier, Bello et al. (2016) for policy
    logits. Not covered by the project's research notes (restated from the report).
    """
    c = check_positive_float("cap", cap)

    def tanh_softcap_score(score, b, h, q_idx, kv_idx):
        return c * torch.tanh(score / c)

    return named(tanh_softcap_score, f"tanh_softcap({c:g})")
