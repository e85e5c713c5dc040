"""`attnforms check`: every family × configuration × form against the float64 reference.

For each case the float64 parallel form of the reference is the golden result. Every
form and every implementation that can run here is then compared with it:
- in float64 the forms must agree to rounding (`FLOAT64_TOLERANCE`);
- in float32, bfloat16 and float16 the error may be at most `factor` times the error of the
  reference's parallel form in the same dtype, plus a tiny absolute term (the
  noise-relative rule of `attnforms.testing.tolerance`).
Triton rows appear where kernels can run (a CUDA device, or the CPU under
TRITON_INTERPRET=1) and are checked in float32, bfloat16 and float16.
Outputs and the float fields of the final state are both compared.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .core.dispatch import FORMS, IMPLS, ImplUnavailableError, resolve_impl
from .ops import FAMILIES, OPS
from .testing import aaren_inputs, gated_delta_inputs, max_error, mlstm_inputs, softmax_inputs

FLOAT64_TOLERANCE = 1e-9
NOISE_FACTOR = 2.0
NOISE_ATOL = {torch.float32: 1e-5, torch.bfloat16: 1e-3, torch.float16: 1e-4}
# float16 too: its range (65504) is what a kernel's 16-bit intermediates must respect,
# and the kernels take different paths for it than for bfloat16.
CHECK_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
# Triton kernels take half and single precision inputs only.
IMPL_DTYPES = {"reference": CHECK_DTYPES, "triton": CHECK_DTYPES[1:]}


@dataclass(frozen=True)
class CheckCase:
    """One configuration of one family: inputs from a factory plus fixed keywords."""

    op: str
    name: str
    make_inputs: Callable[..., dict]
    options: dict = field(default_factory=dict)


def _alibi(score, b, h, q_idx, kv_idx):
    """A per-head linear distance penalty, as in ALiBi."""
    return score - (h + 1) * 0.125 * (q_idx - kv_idx).abs()


def _cases() -> list[CheckCase]:
    shape = dict(B=2, T=100, K=32, V=24)
    cases = [
        CheckCase("softmax_attention", "causal", lambda **kw: softmax_inputs(H=4, **shape, **kw)),
        CheckCase("softmax_attention", "non-causal", lambda **kw: softmax_inputs(H=4, **shape, **kw), dict(causal=False)),
        CheckCase("softmax_attention", "gqa+window 17", lambda **kw: softmax_inputs(H=4, G=2, **shape, **kw), dict(window=17)),
        CheckCase("softmax_attention", "mqa+sinks", lambda **kw: softmax_inputs(H=4, G=1, **shape, **kw), dict(sinks=torch.linspace(-1.0, 1.0, 4))),
        CheckCase("softmax_attention", "cross S=130", lambda **kw: softmax_inputs(H=4, S=130, **shape, **kw)),
        CheckCase("softmax_attention", "alibi score_mod", lambda **kw: softmax_inputs(H=4, **shape, **kw), dict(score_mod=_alibi)),
    ]
    for gate in ("none", "scalar", "channel"):
        for beta in (False, True):
            name = f"g={gate}, beta={'yes' if beta else 'no'}"
            cases.append(CheckCase(
                "gated_delta_rule", name,
                lambda gate=gate, beta=beta, **kw: gated_delta_inputs(H=2, gate=gate, beta=beta, **shape, **kw),
            ))
    for gate in ("exp", "sigmoid"):
        cases.append(CheckCase("mlstm", f"input_gate={gate}", lambda **kw: mlstm_inputs(H=2, **shape, **kw), dict(input_gate=gate)))
    cases.append(CheckCase("aaren", "one query per head", lambda **kw: aaren_inputs(H=2, **shape, **kw)))
    return cases


@dataclass
class CheckRow:
    """Errors of one case in one form and implementation, per dtype."""

    op: str
    case: str
    form: str
    impl: str
    errors: dict = field(default_factory=dict)  # dtype -> (error, bound)
    failure: str | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None and all(err <= bound for err, bound in self.errors.values())


def _error(result, golden) -> float:
    """Max error over the output and the float fields of the final state."""
    errors = [max_error(result.output, golden.output)]
    for mine, theirs in zip(result.final_state, golden.final_state):
        if mine.is_floating_point():
            errors.append(max_error(mine, theirs))
    return max(errors)


def run_check(device: str = "cpu", on_case: Callable[[CheckCase, list[CheckRow], float], None] | None = None,
              ) -> list[CheckRow]:
    """Run every case in every form and runnable implementation on `device`.

    on_case: called after each case with (the case, its rows, seconds it took), so a
    caller can show progress: on a GPU the first call of each Triton kernel compiles it,
    and a whole check can take minutes before it returns."""
    rows = []
    for case in _cases():
        start, first_row = time.perf_counter(), len(rows)
        op = OPS[case.op]
        family = FAMILIES[case.op]
        # Captured tensors in the options (sink logits) live where the inputs do.
        options = {name: value.to(device) if isinstance(value, torch.Tensor) else value
                   for name, value in case.options.items()}
        run = lambda dtype, **kw: op(
            **case.make_inputs(dtype=dtype, device=device), **options,
            output_final_state=True, chunk_size=16, **kw,
        )
        golden = run(torch.float64, form="parallel", impl="reference")
        eager = {dtype: run(dtype, form="parallel", impl="reference") for dtype in CHECK_DTYPES[1:]}
        for impl in IMPLS:
            for form in FORMS:
                try:
                    resolve_impl(family, impl, form, torch.device(device))
                except ImplUnavailableError:
                    continue
                row = CheckRow(case.op, case.name, form, impl)
                try:
                    for dtype in IMPL_DTYPES[impl]:
                        error = _error(run(dtype, form=form, impl=impl), golden)
                        if dtype == torch.float64:
                            bound = FLOAT64_TOLERANCE
                        else:
                            bound = NOISE_FACTOR * _error(eager[dtype], golden) + NOISE_ATOL[dtype]
                        row.errors[dtype] = (error, bound)
                except Exception as exc:  # a crash is a failed row, reported, not hidden
                    row.failure = f"{type(exc).__name__}: {exc}"
                rows.append(row)
        if on_case is not None:
            on_case(case, rows[first_row:], time.perf_counter() - start)
    return rows


def format_rows(rows: list[CheckRow]) -> str:
    """A fixed-width table: one row per case, form and implementation."""
    header = f"{'op':<18} {'case':<22} {'form':<10} {'impl':<10}"
    for dtype in CHECK_DTYPES:
        header += f" {str(dtype).replace('torch.', '') + ' err / bound':>24}"
    lines = [header + "  result", "-" * (len(header) + 8)]
    for row in rows:
        line = f"{row.op:<18} {row.case:<22} {row.form:<10} {row.impl:<10}"
        for dtype in CHECK_DTYPES:
            if dtype in row.errors:
                error, bound = row.errors[dtype]
                line += f" {error:>11.2e} / {bound:<10.2e}"
            else:
                line += f" {'-':>24}"
        line += "  ok" if row.passed else f"  FAIL {row.failure or ''}"
        lines.append(line)
    return "\n".join(lines)
