"""The linear family's benchmark cases: the gated delta rule's four named configurations
and the mLSTM in the chunk form, and Gated DeltaNet's one-token decode step, each against
the peers that compute the same function.

For every op, shape and implementation, in this order:
1. a first call (forward, then forward + backward) at the timed shape, wall-timed: the
   process's first call of a kernel includes its JIT compile and autotuning;
2. the correctness gate (`gate.py`) at the shape's B, H, K, V and `check_T` tokens;
   a WRONG forward is not timed, a WRONG or refused backward leaves fwd+bwd untimed;
3. the forward (under `torch.no_grad`) and forward + backward (a random upstream
   gradient) timed with do_bench, and the peak memory of one call of each.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

import attnforms as af
from ..core.dispatch import ImplUnavailableError
from ..core.states import LinearState
from ..testing import gated_delta_inputs, mlstm_inputs
from . import flops
from .gate import Expected, as_tuple, check, expected, leaves, to_native
from .peers import DECODE_PEERS, SEQUENCE_PEERS, Runner
from .report import Pairing, Row
from .shapes import Shape, ShapeSet
from .timing import TimingSettings, first_call_seconds, median_ms, peak_extra_bytes

DTYPE = torch.bfloat16


@dataclass(frozen=True)
class SequenceOp:
    """One function, as attnforms computes it.

    key:   the name `--ops` takes.
    gate:  "channel" `[B, T, H, K]` / "scalar" `[B, T, H]` log-decay, or "mlstm" (i, f
           pre-activations).
    names: the inputs it takes (attnforms names); all of them get gradients.
    call:  `call(impl)(**inputs)` -> output `[B, T, H, V]`.
    """

    key: str
    name: str
    gate: str
    beta: bool
    names: tuple[str, ...]
    call: Callable[[str], Callable[..., torch.Tensor]]

    def flops(self, shape: Shape) -> float:
        dims = shape.dims()
        if self.gate == "mlstm":
            return flops.mlstm_flops(**dims)
        return flops.gated_delta_flops(**dims, beta=self.beta)

    def bytes(self, shape: Shape) -> int:
        return flops.sequence_bytes(**shape.dims(), gate=self.gate, beta=self.beta)


def _chunk(op: Callable, **fixed) -> Callable[[str], Callable[..., torch.Tensor]]:
    return lambda impl: lambda *args, **kw: op(*args, **kw, **fixed, form="chunk", impl=impl).output


SEQUENCE_OPS = (
    SequenceOp("kda", "KDA", "channel", True, ("q", "k", "v", "g", "beta"), _chunk(af.kda)),
    SequenceOp("gdn", "GDN", "scalar", True, ("q", "k", "v", "g", "beta"), _chunk(af.gated_deltanet)),
    SequenceOp("simple_gla", "simple GLA", "scalar", False, ("q", "k", "v", "g"), _chunk(af.simple_gla)),
    SequenceOp("gla", "GLA", "channel", False, ("q", "k", "v", "g"), _chunk(af.gla)),
    SequenceOp("mlstm", "mLSTM exp", "mlstm", False, ("q", "k", "v", "i", "f"), _chunk(af.mlstm, input_gate="exp")),
)
OP_KEYS = tuple(op.key for op in SEQUENCE_OPS)
DECODE_KEY = "gdn_decode"  # decode runs Gated DeltaNet's recurrent step; needs "gdn" in --ops

# Comparisons across functions: our GDN against TFLA's mLSTM (the fastest chunkwise
# kernel of another family, the number a GDN training kernel should be near).
CROSS_PAIRINGS = (Pairing("GDN (ours) vs mlstm_kernels TFLA", "gdn", "mlstm", "mlstm_kernels triton_xl_chunk"),)


@dataclass
class Session:
    """What one run needs: where, how long, and where rows go.

    emit(row) records a finished row (and may write the JSON so far); log(text) prints.
    """

    device: torch.device
    impl: str
    shapes: ShapeSet
    settings: TimingSettings
    deadline: float  # time.monotonic() after which no new measurement starts
    emit: Callable[[Row], None]
    log: Callable[[str], None] = print
    start: float = field(default_factory=time.monotonic)

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline


def ours(op: SequenceOp, impl: str) -> Runner:
    return Runner(f"ours ({impl})", op.call(impl), is_ours=True)


def pairings(op_keys: tuple[str, ...]) -> list[Pairing]:
    """Every peer against ours for the same op, then the cross-family pairings."""
    found = [
        Pairing(f"{op.name} vs {make().label}", op.key, op.key, make().label)
        for op in SEQUENCE_OPS if op.key in op_keys for make in SEQUENCE_PEERS[op.key]
    ]
    found += [p for p in CROSS_PAIRINGS if p.ours_op in op_keys and p.peer_op in op_keys]
    if "gdn" in op_keys:
        found += [Pairing(f"GDN decode vs {make().label}", DECODE_KEY, DECODE_KEY, make().label) for make in DECODE_PEERS]
    return found


# ----------------------------------------------------------------------------- inputs

def _draw(gate: str, shape: Shape, T: int, device) -> dict:
    """Every input of the ops with this gate kind, from the family's factory (keys
    L2-normalised, log-gates <= 0), drawn in float64 from a fixed seed and rounded to bf16."""
    dims = dict(B=shape.B, T=T, H=shape.H, K=shape.K, V=shape.V, dtype=DTYPE, device=device, seed=0)
    if gate == "mlstm":
        return mlstm_inputs(**dims)
    return gated_delta_inputs(**dims, gate=gate, beta=True)


class InputCache:
    """Inputs shared by the ops of one shape: KDA and GLA take the same q, k, v, g (GLA no
    beta), GDN and simple GLA likewise. One draw per (gate kind, shape, T)."""

    def __init__(self, device):
        self.device, self.entries = device, {}

    def get(self, op: SequenceOp, shape: Shape, T: int) -> dict:
        key = (op.gate, shape, T)
        if key not in self.entries:
            self.entries[key] = _draw(op.gate, shape, T, self.device)
        return {name: self.entries[key][name] for name in op.names}

    def clear(self) -> None:
        self.entries.clear()


# ----------------------------------------------------------------------------- measuring

def _failure(exc: BaseException) -> str:
    if isinstance(exc, ImplUnavailableError):
        return f"unavailable: {exc}"
    return f"failed: {type(exc).__name__}: {exc}"


def _release(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(session: Session, runner: Runner, row: Row, full: dict, exp_fn: Callable[[], Expected],
            backward: bool) -> None:
    """Steps 1-3 of the module docstring for one runner, filling `row`. Raises on a
    forward failure (the caller records it)."""
    device = session.device
    args = {name: to_native(runner, x) for name, x in full.items()}

    def forward():
        with torch.no_grad():
            return runner.fn(**args)

    grad_args, upstream, step = None, None, None
    if backward:
        grad_args = leaves(full, tuple(full), lambda x: to_native(runner, x))
        upstream = to_native(runner, torch.randn_like(full["v"]))

        def step():
            as_tuple(runner.fn(**grad_args))[0].backward(upstream)

    row.first_call_fwd_s = first_call_seconds(forward, device)
    first_backward_error = None
    if backward:
        try:
            row.first_call_fwd_bwd_s = first_call_seconds(step, device)
        except Exception as exc:  # the gate below records the refusal
            first_backward_error = exc
    exp = exp_fn()
    gate = check(runner, exp)
    row.gate, row.gate_T = gate.checks, exp.inputs["q"].shape[1]
    if not gate.forward_ok:
        row.status = "WRONG"
        session.log(f"    WRONG: {gate.failures()}")
        return
    row.fwd_ms = median_ms(forward, device, session.settings)
    row.peak_fwd_bytes = peak_extra_bytes(forward, device)
    if not backward:
        return
    row.fwd_bwd_status = gate.backward
    if gate.backward != "ok":
        session.log(f"    fwd+bwd {gate.backward if gate.backward != 'WRONG' else 'WRONG: ' + gate.failures()}"[:300])
        return
    if first_backward_error is not None:  # passed the gate at check_T but not at this shape
        row.fwd_bwd_status = _failure(first_backward_error)
        return
    if session.out_of_time():
        row.fwd_bwd_status = "skipped: time budget"
        return
    row.fwd_bwd_ms = median_ms(step, device, session.settings, grad_to_none=list(grad_args.values()))
    row.peak_fwd_bwd_bytes = peak_extra_bytes(step, device)


def _run_one(session: Session, runner: Runner, row: Row, measure_it: Callable[[], None]) -> Row:
    if runner.unavailable:
        row.status = runner.unavailable
    elif session.out_of_time():
        row.status = "skipped: time budget"
    else:
        try:
            measure_it()
        except Exception as exc:
            row.status = _failure(exc)
    if row.fwd_bwd_status == "n/a" and row.section == "sequence" and row.status != "ok":
        row.fwd_bwd_status = "not run"
    _release(session.device)
    elapsed = time.monotonic() - session.start
    times = f"fwd {row.fwd_ms:.3f} ms" if row.fwd_ms is not None else ""
    if row.fwd_bwd_ms is not None:
        times += f", fwd+bwd {row.fwd_bwd_ms:.3f} ms"
    session.log(f"[{elapsed:6.1f}s] {row.shape:<6} {row.op:<11} {row.runner:<38} {row.status[:120]} {times}")
    session.emit(row)
    return row


def run_sequences(session: Session, op_keys: tuple[str, ...], shape_names: tuple[str, ...]) -> None:
    """Every selected op at every selected sequence shape: ours first, then its peers."""
    cache = InputCache(session.device)
    ops = [op for op in SEQUENCE_OPS if op.key in op_keys]
    for shape_name in [s for s in shape_names if s in session.shapes.sequences]:
        shape = session.shapes.sequences[shape_name]
        for op in ops:
            runners = [ours(op, session.impl)] + [make() for make in SEQUENCE_PEERS[op.key]]
            expected_cache: dict = {}

            def exp_fn(op=op, expected_cache=expected_cache):
                if "exp" not in expected_cache:
                    gate_inputs = cache.get(op, shape, session.shapes.check_T)
                    reference = op.call("reference")
                    expected_cache["exp"] = expected(reference, gate_inputs, ("output",), op.names)
                return expected_cache["exp"]

            f_fwd = op.flops(shape)
            for runner in runners:
                row = Row("sequence", op.key, op.name, runner.label, runner.is_ours, shape.name, shape.dims(),
                          flops_fwd=f_fwd, flops_fwd_bwd=flops.fwd_bwd_flops(f_fwd), bytes_floor=op.bytes(shape),
                          floor_ms=flops.floor_seconds(op.bytes(shape)) * 1e3)

                def measure_it(runner=runner, row=row, op=op):
                    measure(session, runner, row, cache.get(op, shape, shape.T), exp_fn, backward=True)
                    row.tflops_fwd = flops.tflops(row.flops_fwd, row.fwd_ms)
                    row.tflops_fwd_bwd = flops.tflops(row.flops_fwd_bwd, row.fwd_bwd_ms)

                _run_one(session, runner, row, measure_it)
            expected_cache.clear()
        cache.clear()
        _release(session.device)


# ----------------------------------------------------------------------------- decode

def _decode_reference(q, k, v, g, beta, S):
    result = af.gated_deltanet(q, k, v, g, beta, initial_state=LinearState(S), output_final_state=True,
                               form="recurrent", impl="reference")
    return result.output, result.final_state.S


def ours_decode(impl: str) -> Runner:
    def run(q, k, v, g, beta, S):
        result = af.gated_deltanet(q, k, v, g, beta, initial_state=LinearState(S), output_final_state=True,
                                   form="recurrent", impl=impl)
        return result.output, result.final_state.S
    return Runner(f"ours ({impl})", run, is_ours=True)


def decode_inputs(shapes: ShapeSet, B: int, device) -> dict:
    """One bf16 token (q, k, v `[B, 1, H, D]`, g, beta `[B, 1, H]`) and a float32 state
    `S [B, H, K, V]`: the reference's state after a `decode_prefix`-token prefix."""
    dims = dict(B=B, H=shapes.decode_heads, K=shapes.decode_K, V=shapes.decode_V, device=device)
    prefix = gated_delta_inputs(**dims, T=shapes.decode_prefix, gate="scalar", beta=True, dtype=torch.float32, seed=12)
    with torch.no_grad():
        state = af.gated_deltanet(**prefix, output_final_state=True, form="chunk", impl="reference").final_state.S
    token = gated_delta_inputs(**dims, T=1, gate="scalar", beta=True, dtype=DTYPE, seed=11)
    return dict(token, S=state.float())


def run_decode(session: Session) -> None:
    """Gated DeltaNet's recurrent step at every decode batch size, ours then peers."""
    shapes = session.shapes
    for B in shapes.decode_batches:
        inputs = decode_inputs(shapes, B, session.device)
        state_bytes = flops.decode_state_bytes(B, shapes.decode_heads, shapes.decode_K, shapes.decode_V)
        expected_cache: dict = {}

        def exp_fn(inputs=inputs, expected_cache=expected_cache):
            if "exp" not in expected_cache:
                expected_cache["exp"] = expected(_decode_reference, inputs, ("output", "state"), ())
            return expected_cache["exp"]

        for runner in [ours_decode(session.impl)] + [make() for make in DECODE_PEERS]:
            row = Row("decode", DECODE_KEY, "GDN decode", runner.label, runner.is_ours, f"B={B}",
                      dict(B=B, T=1, H=shapes.decode_heads, K=shapes.decode_K, V=shapes.decode_V),
                      bytes_floor=state_bytes, floor_ms=flops.floor_seconds(state_bytes) * 1e3)

            def measure_it(runner=runner, row=row):
                measure(session, runner, row, inputs, exp_fn, backward=False)
                if row.fwd_ms:
                    row.achieved_bytes_per_s = state_bytes / (row.fwd_ms * 1e-3)

            _run_one(session, runner, row, measure_it)
        del inputs
        expected_cache.clear()
        _release(session.device)
