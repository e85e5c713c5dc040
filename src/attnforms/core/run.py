"""The last step of every public op: pick the implementation and run it, looping over
packed sequences where the implementation has no native variable-length support."""
from __future__ import annotations

from typing import Callable

import torch

from .dispatch import Family, resolve_form, resolve_impl
from .states import AttentionOutput
from .varlen import run_per_sequence


def run_op(
    family: Family,
    *,
    form: str,
    impl: str,
    length: int,
    device: torch.device,
    per_token: dict[str, torch.Tensor | None],
    per_sequence: dict[str, torch.Tensor | None] | None = None,
    initial_state,
    output_final_state: bool,
    offsets: list[int] | None,
    options: dict,
    options_for_sequence: Callable[[int], dict] | None = None,
) -> AttentionOutput:
    """Resolve `form` / `impl` and call the implementation.

    per_token:  time-major tensors `[B, T, ...]`, split along time for packed sequences.
    per_sequence: tensors with one row per sequence (e.g. aaren's query).
    options:    non-tensor keywords passed unchanged (scale, chunk_size, ...).
    options_for_sequence: extra keywords for packed sequence `n` (e.g. its batch index).
    """
    run = resolve_impl(family, impl, resolve_form(family, form, length), device)
    per_sequence = per_sequence or {}
    if offsets is None:
        return run(
            **per_token, **per_sequence, initial_state=initial_state,
            output_final_state=output_final_state, **options,
        )

    def run_one(n: int, **tensors) -> AttentionOutput:
        extra = options_for_sequence(n) if options_for_sequence else {}
        return run(**tensors, **options, **extra)

    return run_per_sequence(
        run_one, offsets, per_token=per_token, per_sequence=per_sequence,
        initial_state=initial_state, output_final_state=output_final_state,
    )
