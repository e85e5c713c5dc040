"""The linear family's benchmark cases: the gated delta rule's four named configurations,
the mLSTM (both input gates) and Aaren in the chunk form, and the one-token decode steps
of Gated DeltaNet and the mLSTM, each against the peers that compute the same function.

A run is a plan of `Item`s (one implementation of one op at one shape), executed in
order by `ItemRunner` (inside a worker process, see `workers.py`). For each item:
1. the correctness gate (`gate.py`) at the shape's B, H, K, V and `check_T` tokens: the
   forward, then (if it passed) forward + backward, each wall-timed: without a warm-up
   phase, at the first shape these are the process's first calls, compilation and
   autotuning included; a WRONG forward is neither timed nor run backward, a WRONG or
   refused backward leaves fwd+bwd untimed;
2. the forward (under `torch.no_grad`) and forward + backward (a random upstream
   gradient) at the full shape, medians of do_bench, and the peak memory of one call of
   each.

Decode comes first (cheap), then the sequence shapes one by one, each op's own
implementation before its peers; KDA is the last op, because fla's `chunk_kda`
autotunes for minutes on its first call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

import attnforms as af
from ..core.dispatch import ImplUnavailableError
from ..core.states import LinearState, MLSTMState
from ..testing import aaren_inputs, gated_delta_inputs, mlstm_inputs
from . import flops
from .gate import Expected, as_tuple, check, expected, leaves, to_native
from .peers import DECODE_PEERS, MLSTM_DECODE_PEERS, SEQUENCE_PEERS, Runner
from .report import Pairing, Row
from .shapes import Shape, ShapeSet
from .timing import TimingSettings, median_ms, peak_extra_bytes

DTYPE = torch.bfloat16


@dataclass(frozen=True)
class SequenceOp:
    """One function, as attnforms computes it.

    key:   the name `--ops` takes.
    gate:  "channel" `[B, T, H, K]` / "scalar" `[B, T, H]` log-decay, "mlstm" (i, f
           pre-activations), or "aaren" (no gate; one query per sequence `[B, H, K]`).
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
        if self.gate == "aaren":
            return flops.aaren_flops(**dims)
        return flops.gated_delta_flops(**dims, beta=self.beta)

    def bytes(self, shape: Shape) -> int:
        return flops.sequence_bytes(**shape.dims(), gate=self.gate, beta=self.beta)


def _chunk(op: Callable, **fixed) -> Callable[[str], Callable[..., torch.Tensor]]:
    return lambda impl: lambda *args, **kw: op(*args, **kw, **fixed, form="chunk", impl=impl).output


SEQUENCE_OPS = (
    SequenceOp("gdn", "GDN", "scalar", True, ("q", "k", "v", "g", "beta"), _chunk(af.gated_deltanet)),
    SequenceOp("simple_gla", "simple GLA", "scalar", False, ("q", "k", "v", "g"), _chunk(af.simple_gla)),
    SequenceOp("gla", "GLA", "channel", False, ("q", "k", "v", "g"), _chunk(af.gla)),
    SequenceOp("mlstm", "mLSTM exp", "mlstm", False, ("q", "k", "v", "i", "f"), _chunk(af.mlstm, input_gate="exp")),
    SequenceOp("mlstm_sig", "mLSTM sig", "mlstm", False, ("q", "k", "v", "i", "f"),
               _chunk(af.mlstm, input_gate="sigmoid")),
    SequenceOp("aaren", "Aaren", "aaren", False, ("q", "k", "v"), _chunk(af.aaren)),
    SequenceOp("kda", "KDA", "channel", True, ("q", "k", "v", "g", "beta"), _chunk(af.kda)),
)
OPS = {op.key: op for op in SEQUENCE_OPS}
OP_KEYS = tuple(OPS)
DECODE_KEY = "gdn_decode"  # decode runs Gated DeltaNet's recurrent step; needs "gdn" in --ops
DECODE_NAME = "GDN decode"
MLSTM_DECODE_KEY = "mlstm_decode"  # the mLSTM's recurrent step (exp gate); needs "mlstm"
# decode key -> (table name, the sequence op that enables it, its peers)
DECODE_OPS = {
    DECODE_KEY: (DECODE_NAME, "gdn", DECODE_PEERS),
    MLSTM_DECODE_KEY: ("mLSTM decode", "mlstm", MLSTM_DECODE_PEERS),
}

# Comparisons across functions: our GDN against TFLA's mLSTM (the fastest chunkwise
# kernel of another family, the number a GDN training kernel should be near).
CROSS_PAIRINGS = (Pairing("GDN (ours) vs mlstm_kernels TFLA", "gdn", "mlstm", "mlstm_kernels triton_xl_chunk"),)


def ours_label(impl: str) -> str:
    return f"ours ({impl})"


def pairings(op_keys: tuple[str, ...]) -> list[Pairing]:
    """Every peer against ours for the same op, then the cross-family pairings."""
    found = [
        Pairing(f"{OPS[key].name} vs {label}", key, key, label)
        for key in OP_KEYS if key in op_keys for label in SEQUENCE_PEERS[key]
    ]
    found += [p for p in CROSS_PAIRINGS if p.ours_op in op_keys and p.peer_op in op_keys]
    for key, (name, needs, peers) in DECODE_OPS.items():
        if needs in op_keys:
            found += [Pairing(f"{name} vs {label}", key, key, label) for label in peers]
    return found


# ----------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Item:
    """One implementation (`runner`, a label) of one op at one shape ("S1", or "B=64"
    for decode)."""

    section: str  # "sequence" | "decode"
    op_key: str
    runner: str
    shape: str


def plan(op_keys: tuple[str, ...], shape_names: tuple[str, ...], shapes: ShapeSet, impl: str) -> list[Item]:
    """Decode first, then every sequence shape in turn; ours before the peers."""
    items = []
    for key, (_, needs, peers) in DECODE_OPS.items():
        if "decode" in shape_names and needs in op_keys:
            for B in shapes.decode_batches:
                for label in [ours_label(impl), *peers]:
                    items.append(Item("decode", key, label, f"B={B}"))
    for shape_name in [s for s in shape_names if s in shapes.sequences]:
        for key in [k for k in OP_KEYS if k in op_keys]:
            for label in [ours_label(impl), *SEQUENCE_PEERS[key]]:
                items.append(Item("sequence", key, label, shape_name))
    return items


def blank_row(item: Item, shapes: ShapeSet) -> Row:
    """The row of `item` before anything is measured: names, dims, FLOP and byte counts."""
    ours = item.runner.startswith("ours")
    if item.section == "decode":
        B = int(item.shape.removeprefix("B="))
        dims = dict(B=B, T=1, H=shapes.decode_heads, K=shapes.decode_K, V=shapes.decode_V)
        state_bytes = flops.decode_state_bytes(B, dims["H"], dims["K"], dims["V"])
        return Row("decode", item.op_key, DECODE_OPS[item.op_key][0], item.runner, ours, item.shape, dims,
                   bytes_floor=state_bytes, floor_ms=flops.floor_seconds(state_bytes) * 1e3)
    op, shape = OPS[item.op_key], shapes.sequences[item.shape]
    forward = op.flops(shape)
    return Row("sequence", op.key, op.name, item.runner, ours, shape.name, shape.dims(),
               flops_fwd=forward, flops_fwd_bwd=flops.fwd_bwd_flops(forward), bytes_floor=op.bytes(shape),
               floor_ms=flops.floor_seconds(op.bytes(shape)) * 1e3)


def make_runner(item: Item, impl: str) -> Runner:
    """The implementation `item.runner` names (a peer is imported here)."""
    if item.section == "decode":
        if item.runner.startswith("ours"):
            return ours_decode(impl) if item.op_key == DECODE_KEY else ours_mlstm_decode(impl)
        return DECODE_OPS[item.op_key][2][item.runner]()
    if item.runner.startswith("ours"):
        return Runner(ours_label(impl), OPS[item.op_key].call(impl), is_ours=True)
    return SEQUENCE_PEERS[item.op_key][item.runner]()


# ----------------------------------------------------------------------------- inputs

def _draw(gate: str, B: int, T: int, shape: Shape, device) -> dict:
    """Every input of the ops with this gate kind, from the family's factory (keys
    L2-normalised, log-gates <= 0), drawn in float64 from a fixed seed and rounded to bf16."""
    dims = dict(B=B, T=T, H=shape.H, K=shape.K, V=shape.V, dtype=DTYPE, device=device, seed=0)
    if gate == "mlstm":
        return mlstm_inputs(**dims)
    if gate == "aaren":
        return aaren_inputs(**dims)
    return gated_delta_inputs(**dims, gate=gate, beta=True)


class InputCache:
    """Inputs shared across ops and shapes. KDA and GLA take the same q, k, v, g (GLA no
    beta), GDN and simple GLA likewise. Timing inputs are drawn once per gate kind as one
    long sequence of `B·T` tokens and viewed as `[B, T, ...]`: the canonical shapes all
    hold the same number of tokens, so they share one draw (drawing is seconds of CPU
    time per full-size set). Gate inputs are drawn per shape at the gate length."""

    def __init__(self, device):
        self.device, self.entries = device, {}

    def get(self, op: SequenceOp, shape: Shape, T: int) -> dict:
        if T == shape.T and op.gate != "aaren":  # Aaren's query is per sequence: drawn per shape
            key = (op.gate, shape.B * shape.T, shape.H, shape.K, shape.V)
            if key not in self.entries:
                self.entries[key] = _draw(op.gate, 1, shape.B * shape.T, shape, self.device)
            drawn = {name: x.unflatten(1, (shape.B, shape.T)).squeeze(0) for name, x in self.entries[key].items()}
        else:
            key = (op.gate, shape, T)
            if key not in self.entries:
                self.entries[key] = _draw(op.gate, shape.B, T, shape, self.device)
            drawn = self.entries[key]
        return {name: drawn[name] for name in op.names}

    def forget_except(self, shape: Shape) -> None:
        """Drop the gate inputs of shapes other than `shape` (the long draws stay)."""
        self.entries = {k: v for k, v in self.entries.items() if not isinstance(k[1], Shape) or k[1] == shape}


def decode_inputs(shapes: ShapeSet, B: int, device, key: str = DECODE_KEY) -> dict:
    """One bf16 token (q, k, v `[B, 1, H, D]`, g, beta `[B, 1, H]`) and a float32 state
    `S [B, H, K, V]`: the reference's state after a `decode_prefix`-token prefix. For
    the mLSTM (`key`), i, f `[B, 1, H]` and the state C, n, m."""
    dims = dict(B=B, H=shapes.decode_heads, K=shapes.decode_K, V=shapes.decode_V, device=device)
    if key == MLSTM_DECODE_KEY:
        prefix = mlstm_inputs(**dims, T=shapes.decode_prefix, dtype=torch.float32, seed=12)
        with torch.no_grad():
            state = af.mlstm(**prefix, output_final_state=True, form="chunk", impl="reference").final_state
        return dict(mlstm_inputs(**dims, T=1, dtype=DTYPE, seed=11), C=state.C, n=state.n, m=state.m)
    prefix = gated_delta_inputs(**dims, T=shapes.decode_prefix, gate="scalar", beta=True, dtype=torch.float32, seed=12)
    with torch.no_grad():
        state = af.gated_deltanet(**prefix, output_final_state=True, form="chunk", impl="reference").final_state.S
    token = gated_delta_inputs(**dims, T=1, gate="scalar", beta=True, dtype=DTYPE, seed=11)
    return dict(token, S=state.float())


def _decode_reference(q, k, v, g, beta, S):
    result = af.gated_deltanet(q, k, v, g, beta, initial_state=LinearState(S), output_final_state=True,
                               form="recurrent", impl="reference")
    return result.output, result.final_state.S


def ours_decode(impl: str) -> Runner:
    """Our decoding API: the step written over a caller-owned state (`impl="triton"`),
    or the reference's recurrent form."""
    if impl == "triton":
        def run(q, k, v, g, beta, S):
            return af.gated_delta_rule_update_(q, k, v, LinearState(S), g=g, beta=beta), S
        return Runner(ours_label(impl), run, is_ours=True, in_place=True)

    def run_reference(q, k, v, g, beta, S):
        result = af.gated_deltanet(q, k, v, g, beta, initial_state=LinearState(S), output_final_state=True,
                                   form="recurrent", impl=impl)
        return result.output, result.final_state.S
    return Runner(ours_label(impl), run_reference, is_ours=True)


def _mlstm_decode(impl: str):
    def run(q, k, v, i, f, C, n, m):
        result = af.mlstm(q, k, v, i, f, initial_state=MLSTMState(C, n, m), output_final_state=True,
                          form="recurrent", impl=impl)
        return result.output, result.final_state.C
    return run


def ours_mlstm_decode(impl: str) -> Runner:
    return Runner(ours_label(impl), _mlstm_decode(impl), is_ours=True)


# ----------------------------------------------------------------------------- measuring

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


def measure(session: Session, runner: Runner, row: Row, full: dict, exp: Expected, backward: bool) -> None:
    """Steps 1-2 of the module docstring for one runner at one shape (`full`: its inputs
    in attnforms layout), filling `row`. Raises on a forward failure (the caller
    records it)."""
    device = session.device
    gate = check(runner, exp)
    row.gate, row.gate_T = gate.checks, exp.inputs["q"].shape[1]
    row.first_call_fwd_s, row.first_call_fwd_bwd_s = gate.forward_s, gate.fwd_bwd_s
    if not gate.forward_ok:
        row.status = "WRONG"
        session.log(f"    WRONG: {gate.failures()}")
        return

    args = {name: to_native(runner, x) for name, x in full.items()}

    def forward():
        with torch.no_grad():
            return runner.fn(**args)

    row.fwd_ms = median_ms(forward, device, session.settings)
    row.peak_fwd_bytes = peak_extra_bytes(forward, device)
    if not backward:
        return
    row.fwd_bwd_status = gate.backward
    if gate.backward != "ok":
        session.log(f"    fwd+bwd {gate.backward if gate.backward != 'WRONG' else 'WRONG: ' + gate.failures()}"[:300])
        return
    if session.out_of_time():
        row.fwd_bwd_status = "skipped: time budget"
        return
    grad_args = leaves(full, tuple(full), lambda x: to_native(runner, x))
    upstream = to_native(runner, torch.randn_like(full["v"]))

    def step():
        as_tuple(runner.fn(**grad_args))[0].backward(upstream)

    try:  # it passed the gate at check_T; at the full shape it may still fail (memory)
        row.fwd_bwd_ms = median_ms(step, device, session.settings, grad_to_none=list(grad_args.values()))
        row.peak_fwd_bwd_bytes = peak_extra_bytes(step, device)
    except Exception as exc:
        row.fwd_bwd_status = failure(exc)


class ItemRunner:
    """Runs items one after another, keeping what consecutive items share: inputs, the
    float64 expectations of the current op and shape, and the constructed runners."""

    def __init__(self, session: Session):
        self.session = session
        self.inputs = InputCache(session.device)
        self.expected: dict = {}
        self.runners: dict = {}

    def _expected(self, item: Item) -> Expected:
        key = (item.section, item.op_key, item.shape)
        if key not in self.expected:
            self.expected = {}  # only the current op and shape are kept
            s = self.session
            if item.section == "decode":
                inputs = decode_inputs(s.shapes, int(item.shape.removeprefix("B=")), s.device, item.op_key)
                reference = _decode_reference if item.op_key == DECODE_KEY else _mlstm_decode("reference")
                self.expected[key] = expected(reference, inputs, ("output", "state"), ())
            else:
                op, shape = OPS[item.op_key], s.shapes.sequences[item.shape]
                gate_inputs = self.inputs.get(op, shape, s.shapes.check_T)
                self.expected[key] = expected(op.call("reference"), gate_inputs, ("output",), op.names)
        return self.expected[key]

    def _runner(self, item: Item) -> Runner:
        key = (item.section, item.op_key, item.runner)
        if key not in self.runners:
            self.runners[key] = make_runner(item, self.session.impl)
        return self.runners[key]

    def run(self, item: Item) -> Row:
        """Measure `item`; every failure is recorded in the returned row."""
        s = self.session
        row = blank_row(item, s.shapes)
        if item.section == "sequence":
            row.fwd_bwd_status = "not run"
        try:
            runner = self._runner(item)
            if runner.unavailable:
                row.status = runner.unavailable
            elif s.out_of_time():
                row.status = "skipped: time budget"
            elif item.section == "decode":
                exp = self._expected(item)
                if runner.in_place:
                    exp = replace(exp, inputs={**exp.inputs, "S": exp.inputs["S"].clone()})
                measure(s, runner, row, exp.inputs, exp, backward=False)
                if row.fwd_ms:
                    row.achieved_bytes_per_s = row.bytes_floor / (row.fwd_ms * 1e-3)
            else:
                op, shape = OPS[item.op_key], s.shapes.sequences[item.shape]
                self.inputs.forget_except(shape)
                exp = self._expected(item)
                measure(s, runner, row, self.inputs.get(op, shape, shape.T), exp, backward=True)
                row.tflops_fwd = flops.tflops(row.flops_fwd, row.fwd_ms)
                row.tflops_fwd_bwd = flops.tflops(row.flops_fwd_bwd, row.fwd_bwd_ms)
        except Exception as exc:
            row.status = failure(exc)
        if row.status != "ok" and row.fwd_bwd_status == "ok":
            row.fwd_bwd_status = "not run"
        _release(s.device)
        times = "" if row.fwd_ms is None else f"fwd {row.fwd_ms:.3f} ms"
        if row.fwd_bwd_ms is not None:
            times += f", fwd+bwd {row.fwd_bwd_ms:.3f} ms"
        s.log(f"[{time.time() - s.start:6.1f}s] {row.shape:<6} {row.op:<11} {row.runner:<38} {row.status[:120]} {times}")
        return row
