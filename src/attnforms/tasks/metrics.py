"""Metrics over the scored positions (targets != IGNORE_INDEX), as running totals so that
a held-out set can be scored batch by batch and then divided once.

- "accuracy": arg-max prediction equals the target. For MQAR every example has the same
  number of answers, so the mean over positions equals Zoology's mean over examples.
- "bits_per_char": mean cross-entropy over the scored positions, in bits (nats / ln 2).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import IGNORE_INDEX, METRICS


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits, targets: expected [B, T, V] and [B, T], got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the scored positions of -ln p(target), float32 (a 0-dim tensor).
    logits `[B, T, V]`, targets `[B, T]` int64."""
    _check(logits, targets)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )


def metric_totals(metric: str, logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """(numerator, number of scored positions) of `metric` on one batch; the metric over
    many batches is the sum of numerators over the sum of counts.
    logits `[B, T, V]`, targets `[B, T]` int64."""
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    _check(logits, targets)
    scored = targets != IGNORE_INDEX
    count = int(scored.sum())
    if metric == "accuracy":
        correct = (logits.argmax(dim=-1) == targets) & scored
        return float(correct.sum()), count
    return float(cross_entropy_sum(logits, targets)) / math.log(2), count


def answer_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of scored positions whose arg-max prediction is the target.
    logits `[B, T, V]`, targets `[B, T]` int64."""
    correct, count = metric_totals("accuracy", logits, targets)
    return correct / max(count, 1)


def bits_per_char(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy in bits over the scored positions.
    logits `[B, T, V]`, targets `[B, T]` int64."""
    bits, count = metric_totals("bits_per_char", logits, targets)
    return bits / max(count, 1)
