"""How `form=` and `impl=` are resolved, with one rule for every family.

`form`: `"parallel" | "chunk" | "recurrent" | "auto"`. `"auto"` picks `"recurrent"` when
the input has at most `AUTO_RECURRENT_MAX_T` tokens (single-token decoding) and the
family's training form otherwise (`Family.auto_form`: `"parallel"` for softmax attention,
whose parallel form is what fused attention kernels compute, `"chunk"` for the rest).

`impl`: `"reference" | "triton" | "auto"`. `"auto"` picks `"triton"` when the family has a
Triton kernel for the resolved form, Triton can run on the inputs' device (a CUDA
device), and, when gradients are needed, the kernel has a backward; `"reference"`
otherwise. An explicit `"triton"` never falls back: where it
cannot run, `ImplUnavailableError` says why. Under `TRITON_INTERPRET=1` an explicit
`"triton"` also runs on CPU tensors (slowly), which is how the kernels are tested without
a GPU; `"auto"` never picks the interpreter.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from .constants import AUTO_RECURRENT_MAX_T

FORMS = ("parallel", "chunk", "recurrent")
IMPLS = ("reference", "triton")


class ImplUnavailableError(RuntimeError):
    """An explicitly requested implementation cannot run here; the message says why."""


@dataclass(frozen=True)
class Family:
    """One formulation family: its implementations of each form.

    name:         the public op name, e.g. `"gated_delta_rule"`.
    reference:    form name -> pure-PyTorch function (all three forms, one signature).
    triton:       form name -> Triton-backed function with the same signature; filled in
                  as kernels land, so `list` and `impl="auto"` see them.
    auto_form:    the form `form="auto"` picks for inputs longer than one step.
    variants:     the named configurations that are thin wrappers of this op.
    """

    name: str
    reference: dict[str, Callable]
    triton: dict[str, Callable] = field(default_factory=dict)
    auto_form: str = "chunk"
    variants: tuple[str, ...] = ()


def forms_of(module) -> dict[str, Callable]:
    """The three forms a module defines under their own names (`parallel`, `chunk`,
    `recurrent`), as a `Family.reference` mapping."""
    return {form: getattr(module, form) for form in FORMS}


def resolve_form(family: Family, form: str, length: int) -> str:
    """The concrete form to run for `form` on an input of `length` tokens."""
    if form == "auto":
        return "recurrent" if length <= AUTO_RECURRENT_MAX_T else family.auto_form
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS + ('auto',)}, got {form!r}")
    return form


@functools.cache
def _triton_installed() -> bool:
    # Looked up once: a package search on every call would cost more than a decode step.
    return importlib.util.find_spec("triton") is not None


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why Triton kernels cannot run on `device`, or None if they can."""
    if not _triton_installed():
        return "the triton package is not installed"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"Triton kernels run on CUDA devices (or on the CPU under TRITON_INTERPRET=1), got {device}"


def resolve_impl(
    family: Family, impl: str, form: str, device: torch.device, needs_grad: bool = False,
    inputs: dict | None = None,
) -> Callable:
    """The function that runs `family` in `form` for `impl` on `device`.

    needs_grad: some input requires a gradient. A kernel may declare
    `backward_refusal(inputs) -> str | None`, the reason it cannot differentiate these
    `inputs` (the op's per-token tensors by name), None when it can.
    """
    if impl not in IMPLS + ("auto",):
        raise ValueError(f"impl: expected one of {IMPLS + ('auto',)}, got {impl!r}")
    kernel = family.triton.get(form)
    refusal = None
    if kernel is not None and needs_grad and hasattr(kernel, "backward_refusal"):
        refusal = kernel.backward_refusal(inputs or {})
    if impl == "auto":
        if (
            kernel is not None and device.type == "cuda"
            and triton_unavailable_reason(device) is None and refusal is None
        ):
            return kernel
        return family.reference[form]
    if impl == "reference":
        return family.reference[form]
    if kernel is None:
        raise ImplUnavailableError(
            f"impl='triton': {family.name} has no Triton kernel for form={form!r} "
            f"(available: {sorted(family.triton) or 'none yet'})"
        )
    reason = triton_unavailable_reason(device)
    if reason is not None:
        raise ImplUnavailableError(f"impl='triton' for {family.name}: {reason}")
    if refusal is not None:
        raise ImplUnavailableError(
            f"impl='triton': {family.name} form={form!r} cannot give gradients here ({refusal}) "
            f"and an input requires grad; use impl='reference' (or 'auto') for gradients"
        )
    return kernel
