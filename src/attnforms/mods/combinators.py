"""Combining mods: intersections and unions of masks, chains of score mods."""
from __future__ import annotations

from typing import Callable

from ._naming import describe, named


def _check(kind: str, mods) -> None:
    if not mods:
        raise ValueError(f"{kind}: expected at least one mod, got none")
    for i, mod in enumerate(mods):
        if not callable(mod):
            raise TypeError(f"{kind}: argument {i}: expected a callable, got {type(mod).__name__}")


def and_masks(*masks: Callable) -> Callable:
    """`mask_mod` keeping a pair when every one of `masks` keeps it (intersection).

    E.g. `and_masks(causal(), document(doc_ids))`: causal attention inside documents.
    """
    _check("and_masks", masks)

    def and_mask(b, h, q_idx, kv_idx):
        keep = masks[0](b, h, q_idx, kv_idx)
        for mask in masks[1:]:
            keep = keep & mask(b, h, q_idx, kv_idx)
        return keep

    return named(and_mask, f"and_masks({', '.join(map(describe, masks))})")


def or_masks(*masks: Callable) -> Callable:
    """`mask_mod` keeping a pair when at least one of `masks` keeps it (union).

    E.g. `or_masks(sliding_window(256), prefix_lm(16))`: a local window plus a global
    prefix (call with `causal=False`; both masks carry their own causality).
    """
    _check("or_masks", masks)

    def or_mask(b, h, q_idx, kv_idx):
        keep = masks[0](b, h, q_idx, kv_idx)
        for mask in masks[1:]:
            keep = keep | mask(b, h, q_idx, kv_idx)
        return keep

    return named(or_mask, f"or_masks({', '.join(map(describe, masks))})")


def compose_scores(*mods: Callable) -> Callable:
    """`score_mod` applying `mods` in order: `mods[-1](... mods[0](score, ...) ...)`.

    E.g. `compose_scores(alibi(H), tanh_softcap(30.0))` caps the ALiBi-biased score.
    """
    _check("compose_scores", mods)

    def composed_score(score, b, h, q_idx, kv_idx):
        for mod in mods:
            score = mod(score, b, h, q_idx, kv_idx)
        return score

    return named(composed_score, f"compose_scores({', '.join(map(describe, mods))})")
