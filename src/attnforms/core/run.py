"""The last step of every public op: pick the implementation and run it, looping over
packed sequences where the implementation has no native variable-length support."""
from __future__ import annotations

from typing import Callable

import torch

from .autograd import autograd_needed
from .constants import DEFAULT_CHUNK_SIZE
from .dispatch import Family, resolve_form, resolve_impl
from .shapes import Dims, check_positive_int, check_scale
from .states import AttentionOutput
from .varlen import check_cu_seqlens, run_per_sequence


def check_common_options(dims: Dims, *, scale, chunk_size, cu_seqlens, device) -> tuple[list[int] | None, str]:
    """Validate the keywords every op shares (`dims` must have `B` and `T` bound).

    Returns the packed-sequence offsets (None without `cu_seqlens`) and the legend letter
    of the state's batch dimension: `"N"` (one state per packed sequence) or `"B"`.
    """
    check_scale(scale)
    check_positive_int("chunk_size", chunk_size)
    if cu_seqlens is None:
        return None, "B"
    offsets = check_cu_seqlens(cu_seqlens, batch=dims["B"], total=dims["T"], device=device)
    dims.fix("N", len(offsets) - 1, "cu_seqlens")
    return offsets, "N"


def default_options(head_dim: int, scale: float | None, chunk_size: int | None) -> dict:
    """`scale` defaults to `K ** -0.5`, `chunk_size` to `DEFAULT_CHUNK_SIZE`."""
    return dict(
        scale=head_dim ** -0.5 if scale is None else scale,
        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
    )


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
    per_sequence = per_sequence or {}
    tensors = [*per_token.values(), *per_sequence.values(), *(initial_state or ())]
    needs_grad = autograd_needed(*tensors)
    run = resolve_impl(family, impl, resolve_form(family, form, length), device, needs_grad, per_token)
    if offsets is None or getattr(run, "native_varlen", False):
        # Implementations with native packed-sequence support take the offsets.
        extra = {} if offsets is None else dict(offsets=offsets)
        return run(
            **per_token, **per_sequence, initial_state=initial_state,
            output_final_state=output_final_state, **options, **extra,
        )

    def run_one(n: int, **tensors) -> AttentionOutput:
        extra = options_for_sequence(n) if options_for_sequence else {}
        return run(**tensors, **options, **extra)

    return run_per_sequence(
        run_one, offsets, per_token=per_token, per_sequence=per_sequence,
        initial_state=initial_state, output_final_state=output_final_state,
    )
