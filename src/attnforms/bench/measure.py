"""Measuring one item (one implementation of one op at one shape), whatever its family.

Inside a worker process (see `workers.py`) `ItemRunner` runs items in order. For each:
1. the correctness gate (`gate.py`) on the family's gate case (a reduced size: see each
   family's `WorkerInputs.gate_case`): the forward, then (if it passed and the case has
   gradients) forward + backward, each wall-timed: without a warm-up phase, at the first
   shape these are the process's first calls, compilation and autotuning included; a
   WRONG forward of ours is neither timed nor run backward, a peer's is timed forward
   only (status WRONG_TIMED); a WRONG or refused backward of ours, and a refused one of
   a peer, leave fwd+bwd untimed; a peer's WRONG backward is timed (WRONG_TIMED);
2. the forward (under `torch.no_grad`) and, where the case has gradients, forward +
   backward (a random upstream gradient) at the full shape: medians of do_bench, and the
   peak memory of one call of each.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..core.dispatch import ImplUnavailableError
from . import cases, flops
from .family import Item
from .gate import Expected, as_tuple, check, expected, leaves, native_args, to_native
from .peers import Runner
from .report import WRONG_TIMED, Row
from .shapes import ShapeSet
from .timing import TimingSettings, graph_step_ms, median_ms, peak_extra_bytes


@dataclass
class Session:
    """What a worker needs: where, how fast, until when (`deadline`: `time.time()` after
    which no new measurement starts), and where log lines go."""

    device: torch.device
    impl: str
    shapes: ShapeSet
    settings: TimingSettings
    deadline: float
    start: float = field(default_factory=time.time)
    log: Callable[[str], None] = print

    def out_of_time(self) -> bool:
        return time.time() > self.deadline


def failure(exc: BaseException) -> str:
    if isinstance(exc, ImplUnavailableError):
        return f"unavailable: {exc}"
    return f"failed: {type(exc).__name__}: {exc}"


def _release(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(session: Session, runner: Runner, row: Row, full: dict, exp: Expected) -> None:
    """Steps 1-2 of the module docstring for one runner at one shape (`full`: its inputs
    in attnforms layout), filling `row`. Raises on a forward failure (the caller
    records it)."""
    device = session.device
    gate = check(runner, exp)
    row.gate, row.gate_T = gate.checks, exp.inputs["q"].shape[1]
    row.gate_shapes = {name: list(x.shape) for name, x in exp.inputs.items()}
    row.first_call_fwd_s, row.first_call_fwd_bwd_s = gate.forward_s, gate.fwd_bwd_s
    if not gate.forward_ok:
        session.log(f"    WRONG: {gate.failures()}")
        # A peer outside the bound is still timed, forward only, and marked: the issues
        # ask for the ratio against it (mlstm_kernels' step kernel rounds its gates to
        # 16 bits), and the table shows its error beside its time. Ours never is.
        row.status = "WRONG" if runner.is_ours else WRONG_TIMED
        if runner.is_ours:
            return

    args = native_args(runner, full)

    def forward():
        with torch.no_grad():
            return runner.fn(**args)

    row.fwd_ms = median_ms(forward, device, session.settings)
    row.peak_fwd_bytes = peak_extra_bytes(forward, device)
    if row.section == "decode" and device.type == "cuda" and session.settings.graph_decode:
        try:  # a peer whose step syncs with the host cannot be captured: recorded, not fatal
            row.graph_ms = graph_step_ms(forward, device, session.settings)
        except Exception as exc:
            row.graph_status = failure(exc)[:200]
    del args
    if not exp.grad_names:
        return
    row.fwd_bwd_status = gate.backward
    row.gradient_of = gate.gradient_of or row.gradient_of  # a peer's, or the op's own (blank_row)
    if gate.backward != "ok":
        session.log(f"    fwd+bwd {gate.backward if gate.backward != 'WRONG' else 'WRONG: ' + gate.failures()}"[:300])
        # As for the forward: a peer's backward outside the bound is still timed and
        # marked (TFLA's df in bf16 is the right function, up to about 4% of its scale,
        # at 2.6-13 times the bf16 reference's error: bench/NOTES-mlstm.md, session 16).
        if gate.backward != "WRONG" or runner.is_ours:
            return
        row.fwd_bwd_status = WRONG_TIMED
    if session.out_of_time():
        row.fwd_bwd_status = "skipped: time budget"
        return
    grad_args = leaves(full, tuple(full), lambda x: to_native(runner, x))
    upstream = to_native(runner, torch.randn_like(full["v"]))

    def step():
        as_tuple(runner.fn(**grad_args))[0].backward(upstream)

    try:  # it passed the gate at a reduced size; at the full shape it may still fail (memory)
        row.fwd_bwd_ms = median_ms(step, device, session.settings, grad_to_none=list(grad_args.values()))
        row.peak_fwd_bwd_bytes = peak_extra_bytes(step, device)
    except Exception as exc:
        row.fwd_bwd_status = failure(exc)


def _rates(row: Row) -> None:
    """TFLOP/s where FLOPs are counted; bytes per second against the floor for decode."""
    if row.flops_fwd is not None:
        row.tflops_fwd = flops.tflops(row.flops_fwd, row.fwd_ms)
    if row.flops_fwd_bwd is not None:
        row.tflops_fwd_bwd = flops.tflops(row.flops_fwd_bwd, row.fwd_bwd_ms)
    if row.section == "decode" and row.fwd_ms and row.bytes_floor:
        row.achieved_bytes_per_s = row.bytes_floor / (row.fwd_ms * 1e-3)


class ItemRunner:
    """Runs items one after another, keeping what consecutive items share: each family's
    drawn inputs, the float64 expectations of the current op and shape, and the
    constructed runners."""

    def __init__(self, session: Session):
        self.session = session
        self.inputs: dict = {}  # family module -> its WorkerInputs
        self.expected: dict = {}
        self.runners: dict = {}

    def _inputs(self, item: Item):
        family = cases.family_of(item.op_key)
        if family not in self.inputs:
            self.inputs[family] = family.WorkerInputs(self.session)
        return self.inputs[family]

    def _expected(self, item: Item) -> Expected:
        key = (item.section, item.op_key, item.shape)
        if key not in self.expected:
            self.expected = {}  # only the current op and shape are kept
            case = self._inputs(item).gate_case(item)
            self.expected[key] = expected(case.reference, case.inputs, case.results, case.grad_names)
        return self.expected[key]

    def _runner(self, item: Item) -> Runner:
        key = (item.section, item.op_key, item.runner)
        if key not in self.runners:
            self.runners[key] = cases.make_runner(item, self.session.impl, self.session.device, self.session.shapes)
        return self.runners[key]

    def run(self, item: Item) -> Row:
        """Measure `item`; every failure is recorded in the returned row."""
        s = self.session
        row = cases.blank_row(item, s.shapes)
        try:
            runner = self._runner(item)
            if runner.unavailable:
                row.status = runner.unavailable
            elif s.out_of_time():
                row.status = "skipped: time budget"
            else:
                exp = self._expected(item)
                if runner.in_place:  # it writes its state argument: give it copies
                    exp = replace(exp, inputs={n: x.clone() for n, x in exp.inputs.items()})
                full = self._inputs(item).timing_inputs(item)
                measure(s, runner, row, exp.inputs if full is None else full, exp)
                _rates(row)
        except Exception as exc:
            row.status = failure(exc)
        if row.status != "ok" and row.fwd_bwd_status == "ok":
            row.fwd_bwd_status = "not run"
        _release(s.device)
        times = "" if row.fwd_ms is None else f"fwd {row.fwd_ms:.3f} ms"
        if row.fwd_bwd_ms is not None:
            times += f", fwd+bwd {row.fwd_bwd_ms:.3f} ms"
        s.log(f"[{time.time() - s.start:6.1f}s] {row.shape:<6} {row.op:<16} {row.runner:<36} {row.status[:120]} {times}")
        return row
