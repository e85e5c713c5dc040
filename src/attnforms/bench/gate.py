"""The correctness gate: before an implementation is timed at a shape, it is checked
against the float64 reference at that shape's B, H, K, V and a shorter T.

For one op and shape the golden result is `reference(float64 copies of the inputs)`
(attnforms' reference, on the same device), and the noise floor is the same reference
run on the low-precision inputs themselves ("eager": it computes in float32 and rounds
its results to the input dtype). An implementation passes when, for the output (and the
state, for decode) and, where its backward runs, the gradient of every input,
`err(implementation) <= GATE_FACTOR · err(eager) + GATE_ATOL` for ours, the candidate's
error discounting one unit in the last place of each element in a half-precision dtype
(`PEER_GATE_FACTOR` for peers; `attnforms.testing.noise_relative_check`), errors being
max absolute differences from the golden result. All gradients come from one seeded random upstream gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..testing import noise_relative_check
from .peers import Runner
from .timing import timed_call

GATE_FACTOR = 2.0
GATE_ATOL = 1e-3
# Peers are checked for computing the same function (a convention mismatch gives errors
# of order one), not held to our numerics target: bf16 kernels that keep bf16
# intermediates land at 2-3x the eager error, which is correct, just less precise.
PEER_GATE_FACTOR = 5.0


def to_native(runner: Runner, x: torch.Tensor) -> torch.Tensor:
    """attnforms layout `[B, T, H, ...]` -> the runner's layout (a contiguous copy for a
    head-major runner)."""
    return x.transpose(1, 2).contiguous() if runner.head_major else x


def native_args(runner: Runner, inputs: dict) -> dict:
    """The runner's keyword arguments for `inputs` (attnforms layout): its own
    `prepare`, or every tensor moved to its layout."""
    if runner.prepare is not None:
        return runner.prepare(inputs)
    return {name: to_native(runner, x) for name, x in inputs.items()}


def from_native(runner: Runner, x: torch.Tensor) -> torch.Tensor:
    """The runner's layout -> attnforms layout (a view)."""
    return x.transpose(1, 2) if runner.head_major else x


def as_tuple(result) -> tuple:
    if isinstance(result, torch.Tensor):
        return (result,)
    return tuple(result)


def leaves(inputs: dict, grad_names: tuple[str, ...], convert: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """Fresh leaf tensors `convert(x)` (gradients on for `grad_names`)."""
    return {
        name: convert(x.detach()).detach().requires_grad_(name in grad_names)
        for name, x in inputs.items()
    }


@dataclass
class Expected:
    """The golden (float64) and eager (input dtype) results of one op at one gate shape.

    results: names of the runner's results in order, e.g. ("output",) or
             ("output", "state"); gradients are named "d" + input name.
    """

    inputs: dict
    upstream: torch.Tensor | None
    results: tuple[str, ...]
    grad_names: tuple[str, ...]
    golden: dict = field(default_factory=dict)
    eager: dict = field(default_factory=dict)


def run_reference(reference: Callable, inputs: dict, results: tuple[str, ...], grad_names: tuple[str, ...],
                  upstream: torch.Tensor | None, dtype: torch.dtype | None) -> dict:
    """The reference's named results (and gradients) on `inputs`, cast to `dtype` (None:
    as given)."""
    # Only floating tensors change precision: integer ones (cache positions) are indices.
    convert = (lambda x: x.to(dtype) if x.is_floating_point() else x) if dtype is not None else (lambda x: x)
    args = leaves(inputs, grad_names, convert)
    with torch.enable_grad():
        out = as_tuple(reference(**args))
        named = {name: y.detach() for name, y in zip(results, out)}
        if grad_names and upstream is not None:
            out[0].backward(convert(upstream))
            named.update({f"d{name}": args[name].grad for name in grad_names})
    return named


def expected(reference: Callable, inputs: dict, results: tuple[str, ...], grad_names: tuple[str, ...],
             seed: int = 7) -> Expected:
    """Golden and eager results of `reference` on `inputs` (low-precision tensors in the
    op's layout); the upstream gradient is drawn from `seed`."""
    upstream = None
    if grad_names:
        like = inputs["v"]
        generator = torch.Generator().manual_seed(seed)
        upstream = torch.randn(like.shape, generator=generator, dtype=torch.float64).to(like.device, like.dtype)
    golden = run_reference(reference, inputs, results, grad_names, upstream, torch.float64)
    eager = run_reference(reference, inputs, results, grad_names, upstream, None)
    return Expected(inputs, upstream, results, grad_names, golden, eager)


@dataclass
class GateResult:
    """forward_ok: every result passed. backward: "ok", "WRONG", "refused: <why>", or
    "not checked" (no gradients for this op). checks: name -> error, bound, verdict.
    forward_s / fwd_bwd_s: wall seconds of the gate's (synchronised) forward and
    forward + backward calls; for the first shape of a run these are the first calls of
    the process, JIT compilation and autotuning included."""

    forward_ok: bool
    backward: str
    checks: dict = field(default_factory=dict)
    forward_s: float | None = None
    fwd_bwd_s: float | None = None
    gradient_of: str | None = None  # the runner's `gradient_of` description, where its backward was checked

    def failures(self) -> str:
        bad = [f"{name} {c['error']:.3g} > {c['bound']:.3g}" for name, c in self.checks.items() if not c["passed"]]
        return ", ".join(bad)


def _compare(name: str, candidate: torch.Tensor | None, exp: Expected, checks: dict, factor: float) -> bool:
    if candidate is None:
        checks[name] = dict(error=float("nan"), eager_error=float("nan"), bound=float("nan"), passed=False,
                            note="no gradient returned")
        return False
    # Results are stored in their dtype: which way an element near a rounding boundary
    # goes is luck, so each element may be one unit in its last place off on top.
    rounding = candidate.dtype if candidate.dtype in (torch.float16, torch.bfloat16) else None
    outcome = noise_relative_check(candidate, exp.golden[name], exp.eager[name], factor=factor,
                                   atol=GATE_ATOL, rounding=rounding)
    checks[name] = dict(error=outcome.error, eager_error=outcome.eager_error, bound=outcome.bound,
                        passed=outcome.passed)
    return outcome.passed


def check(runner: Runner, exp: Expected) -> GateResult:
    """Run `runner` on the gate inputs and compare with `exp`: first the forward alone
    (under no_grad, as it is timed; an exception propagates and the caller records it),
    then, only if it passed, forward + backward, where any exception (a missing
    backward, a refusal) makes the backward "refused". The gradients are compared with
    `exp`'s, or with those of the runner's `gradient_of` function where it has one."""
    device = exp.inputs["q"].device
    factor = GATE_FACTOR if runner.is_ours else PEER_GATE_FACTOR
    checks: dict = {}
    args = native_args(runner, exp.inputs)
    with torch.no_grad():
        forward_s, out = timed_call(lambda: as_tuple(runner.fn(**args)), device)
    verdicts = [_compare(name, from_native(runner, y), exp, checks, factor) for name, y in zip(exp.results, out)]
    result = GateResult(all(verdicts), "not checked", checks, forward_s=forward_s)
    if not exp.grad_names:
        return result
    if not result.forward_ok:
        result.backward = "not run (forward WRONG)"
        return result
    args = leaves(exp.inputs, exp.grad_names, lambda x: to_native(runner, x))

    def forward_backward():
        with torch.enable_grad():
            as_tuple(runner.fn(**args))[0].backward(to_native(runner, exp.upstream))

    try:
        result.fwd_bwd_s, _ = timed_call(forward_backward, device)
    except Exception as exc:
        result.backward = f"refused: {type(exc).__name__}: {exc}"
        return result
    # A runner whose backward is the gradient of another function is checked against
    # that function (same inputs, same seeded upstream gradient).
    exp_grad = exp
    if runner.gradient_of is not None:
        result.gradient_of, function = runner.gradient_of
        exp_grad = expected(function, exp.inputs, exp.results, exp.grad_names)
    verdicts = []
    for name in exp.grad_names:
        grad = args[name].grad
        verdicts.append(_compare(f"d{name}", None if grad is None else from_native(runner, grad), exp_grad, checks,
                                 factor))
    result.backward = "ok" if all(verdicts) else "WRONG"
    return result

