"""The linear family's benchmark cases: the gated delta rule's four named configurations,
the mLSTM (both input gates) and Aaren in the chunk form, and the one-token decode steps
of Gated DeltaNet and the mLSTM, each against the peers that compute the same function.

The family interface (`family.py`) is implemented at the end of this module; measuring
is generic (`measure.py`). Gate cases keep the shape's B, H, K, V at `check_T` tokens.

Decode comes first (cheap), then the sequence shapes one by one, each op's own
implementation before its peers; KDA is the last op, because fla's `chunk_kda`
autotunes for minutes on its first call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import attnforms as af
from ..core.states import LinearState, MLSTMState
from ..testing import aaren_inputs, gated_delta_inputs, mlstm_inputs
from . import flops
from .conventions import HELD_NORMALISER
from .family import GateCase, Item, ours_label
from .peers import DECODE_PEERS, MLSTM_DECODE_PEERS, SEQUENCE_PEERS, Runner
from .report import Pairing, Row
from .shapes import Shape, ShapeSet

DTYPE = torch.bfloat16


@dataclass(frozen=True)
class SequenceOp:
    """One function, as attnforms computes it.

    key:   the name `--ops` takes.
    gate:  "channel" `[B, T, H, K]` / "scalar" `[B, T, H]` log-decay, "mlstm" (i, f
           pre-activations), or "aaren" (no gate; one query per sequence `[B, H, K]`).
    names: the inputs it takes (attnforms names); all of them get gradients.
    call:  `call(impl)(**inputs)` -> output `[B, T, H, V]`.
    gradient_of: None (the exact gradient), or what its backward computes instead (the
           tables' words, as for a peer: bench/conventions.py).
    """

    key: str
    name: str
    gate: str
    beta: bool
    names: tuple[str, ...]
    call: Callable[[str], Callable[..., torch.Tensor]]
    gradient_of: str | None = None

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
    # The mLSTM with TFLA's gradient (normaliser_gradient="held"): like for like with
    # TFLA's forward + backward (CROSS_PAIRINGS).
    SequenceOp("mlstm_held", "mLSTM exp held", "mlstm", False, ("q", "k", "v", "i", "f"),
               _chunk(af.mlstm, input_gate="exp", normaliser_gradient="held"), HELD_NORMALISER),
    SequenceOp("mlstm_sig_held", "mLSTM sig held", "mlstm", False, ("q", "k", "v", "i", "f"),
               _chunk(af.mlstm, input_gate="sigmoid", normaliser_gradient="held"), HELD_NORMALISER),
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
ITEM_KEYS = OP_KEYS + tuple(DECODE_OPS)  # the op keys its items and rows carry

# Comparisons across functions: our GDN against TFLA's mLSTM (the fastest chunkwise
# kernel of another family, the number a GDN training kernel should be near).
# Issue 3: GDN's forward + backward in at most TFLA's time.
# Issue 7: the mLSTM's forward + backward against TFLA's, with the gradient TFLA
# computes (the exact one's ratio is the same-op pairing's, marked as comparing different
# gradients).
CROSS_PAIRINGS = (
    Pairing("GDN (ours) vs mlstm_kernels TFLA", "gdn", "mlstm", "mlstm_kernels triton_xl_chunk", (("fwd_bwd", 1.0),)),
    Pairing("mLSTM exp held vs mlstm_kernels triton_xl_chunk", "mlstm_held", "mlstm",
            "mlstm_kernels triton_xl_chunk", (("fwd_bwd", 1.1),)),
    Pairing("mLSTM sig held vs mlstm_kernels triton_xl_chunk_siging", "mlstm_sig_held", "mlstm_sig",
            "mlstm_kernels triton_xl_chunk_siging", (("fwd_bwd", 1.1),)),
)


# Issues 3 and 7's targets on the H200: (op key, peer label) -> the least `peer time /
# our time` by kind, at every shape (the issues name S1-S3; Aaren's 5x is named at S1,
# and the other shapes clear it many times over). The absolute targets (GDN decode at
# B 1 under 15 µs, B 256 within 1.25x of the state floor) are the decode table's columns.
FLOORS = {
    ("kda", "fla chunk_kda"): (("fwd", 1.5), ("fwd_bwd", 1.5)),
    ("gdn", "fla chunk_gated_delta_rule"): (("fwd", 1.2),),
    ("simple_gla", "fla chunk_simple_gla"): (("fwd", 1.0),),
    ("mlstm", "mlstm_kernels triton_xl_chunk"): (("fwd", 1.1), ("fwd_bwd", 1.1)),
    ("mlstm_sig", "mlstm_kernels triton_xl_chunk_siging"): (("fwd", 1.1), ("fwd_bwd", 1.1)),
    ("aaren", "softmax triton, q repeated"): (("fwd_bwd", 5.0),),
    (MLSTM_DECODE_KEY, "mlstm_kernels step"): (("fwd", 1.0),),
}


def pairings(op_keys: tuple[str, ...]) -> list[Pairing]:
    """Every peer against ours for the same op, then the cross-family pairings, with
    the issues' floors."""
    found = [
        Pairing(f"{OPS[key].name} vs {label}", key, key, label, FLOORS.get((key, label), ()))
        for key in OP_KEYS if key in op_keys for label in SEQUENCE_PEERS[key]
    ]
    found += [p for p in CROSS_PAIRINGS if p.ours_op in op_keys and p.peer_op in op_keys]
    for key, (name, needs, peers) in DECODE_OPS.items():
        if needs in op_keys:
            found += [Pairing(f"{name} vs {label}", key, key, label, FLOORS.get((key, label), ())) for label in peers]
    return found


# ----------------------------------------------------------------------------- plan

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
    return Row("sequence", op.key, op.name, item.runner, ours, shape.name, shape.dims(), fwd_bwd_status="not run",
               flops_fwd=forward, flops_fwd_bwd=flops.fwd_bwd_flops(forward), bytes_floor=op.bytes(shape),
               floor_ms=flops.floor_seconds(op.bytes(shape)) * 1e3, gradient_of=op.gradient_of)


def make_runner(item: Item, impl: str, device=None, shapes: ShapeSet | None = None) -> Runner:
    """The implementation `item.runner` names (a peer is imported here; `device` and
    `shapes` are not needed: the linear peers fail by themselves where they cannot run)."""
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


# ----------------------------------------------------------------------------- worker side

class WorkerInputs:
    """Gate cases and timing inputs of the linear items inside one worker (`family.py`);
    the drawn sequence inputs are shared across ops and shapes (`InputCache`)."""

    def __init__(self, session):
        self.shapes = session.shapes
        self.cache = InputCache(session.device)

    def gate_case(self, item: Item) -> GateCase:
        if item.section == "decode":
            inputs = decode_inputs(self.shapes, int(item.shape.removeprefix("B=")), self.cache.device, item.op_key)
            reference = _decode_reference if item.op_key == DECODE_KEY else _mlstm_decode("reference")
            return GateCase(reference, inputs, ("output", "state"), ())
        op, shape = OPS[item.op_key], self.shapes.sequences[item.shape]
        self.cache.forget_except(shape)
        return GateCase(op.call("reference"), self.cache.get(op, shape, self.shapes.check_T), ("output",), op.names)

    def timing_inputs(self, item: Item) -> dict | None:
        """Decode is timed on its gate inputs (already full size)."""
        if item.section == "decode":
            return None
        op, shape = OPS[item.op_key], self.shapes.sequences[item.shape]
        return self.cache.get(op, shape, shape.T)
