"""The softmax family's benchmark cases (issue 6): `softmax_attention` causal, causal with
a sliding window, causal with the ALiBi score_mod (forward only), one-token decoding
over a long KV cache, and the first call of a never-seen score_mod, against torch SDPA
(flash, cuDNN, default backends) and compiled FlexAttention (`softmax_peers.py`).

Op keys (`--ops`) and what they time, bf16, `[B, T, H, D]` with H 16, D 128 at S1
(B 8, T 4096) and S2 (B 1, T 32768):

    softmax_causal   fwd, fwd+bwd   vs sdpa flash, sdpa cudnn, flex (compiled)
    softmax_window   fwd, fwd+bwd   causal + window 1024, vs flex
    softmax_alibi    fwd            causal + `mods.alibi(H)`, vs flex (same function)
    softmax_new_mod  fwd, fwd+bwd   a score_mod no cache has seen; its row's first-call
                                    times are the compile time of a new mod (target 30 s)
    softmax_decode   fwd            B 64, one new token, 32768 cached tokens (shape
                                    "decode"), vs sdpa (default), flash, cudnn

Gates run at a reduced size, the float64 reference being dense (`shapes.SoftmaxSizes`):
sequence ops at B = 2, T = min(T, 2048); decode at B 64 with a 2048-token cache.

Order: the new mod first (the first call of the freshly spawned measuring process, and
never warmed up, so its first calls are a cold compile: trace, code generation, Triton
compile; CUDA and Triton start-up are already done by its float64 gate reference, bar
Triton's own driver set-up), then decode, then each sequence shape, ours before peers.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

import attnforms as af
from .. import mods
from ..core.states import KVCache
from . import flops
from .family import GateCase, Item, ours_label
from .peers import Runner
from .report import Pairing, Row
from .shapes import ShapeSet
from .softmax_peers import FLEX_LABEL, flex, sdpa, sdpa_decode, sdpa_label

DTYPE = torch.bfloat16
NEW_MOD_LIMIT_S = 30.0  # issue 6: "first call with a new mod compiles in under 30 s"


# ----------------------------------------------------------------------------- mods

@functools.cache
def _alibi(num_heads: int, device: torch.device) -> Callable:
    """One ALiBi score_mod per head count and device, so that its slope table is built
    once, not on every timed call."""
    return mods.alibi(num_heads, device=device)


@functools.cache
def new_score_mod() -> Callable:
    """A score_mod no cache has seen: a linear distance penalty whose slope is unique to
    this process and moment. The slope is a literal in the generated kernel source, so
    neither attnforms' module cache nor Triton's cache hold it. Cached per process, so
    that the gate's reference and our runner use the same function."""
    slope = 1e-3 * (1.0 + ((time.time_ns() ^ os.getpid()) % 1_000_003) / 1e7)

    def new_mod(score, b, h, q_idx, kv_idx):
        return score - slope * (q_idx - kv_idx)

    return new_mod


def score_mod_factory(kind: str | None) -> Callable[[int, torch.device], Callable] | None:
    """`(H, device) -> score_mod` of a score kind (None: no score_mod)."""
    if kind == "alibi":
        return _alibi
    if kind == "new":
        return lambda num_heads, device: new_score_mod()
    return None


# ----------------------------------------------------------------------------- ops

@dataclass(frozen=True)
class SoftmaxOp:
    """One causal softmax attention configuration.

    window:   with the ShapeSet's `softmax.window`.
    score:    None, "alibi" or "new" (see `score_mod_factory`).
    backward: forward + backward is checked and timed.
    peers:    labels of the peers that compute the same function.
    """

    key: str
    name: str
    window: bool = False
    score: str | None = None
    backward: bool = True
    peers: tuple[str, ...] = ()

    def call(self, impl: str, window: int) -> Callable[..., torch.Tensor]:
        """`fn(q, k, v)` with q, k, v `[B, T, H, D]` -> output `[B, T, H, D]`."""
        modify = score_mod_factory(self.score)

        def run(q, k, v):
            return af.softmax_attention(
                q, k, v, causal=True, window=window if self.window else None,
                score_mod=None if modify is None else modify(q.shape[2], q.device), form="parallel", impl=impl,
            ).output
        return run

    def flops(self, dims: dict, window: int) -> float:
        return flops.softmax_flops(**dims, window=window if self.window else None)


SEQUENCE_OPS = (
    SoftmaxOp("softmax_new_mod", "new score_mod", score="new"),
    SoftmaxOp("softmax_causal", "softmax causal", peers=(sdpa_label("flash"), sdpa_label("cudnn"), FLEX_LABEL)),
    SoftmaxOp("softmax_window", "softmax window", window=True, peers=(FLEX_LABEL,)),
    SoftmaxOp("softmax_alibi", "softmax ALiBi", score="alibi", backward=False, peers=(FLEX_LABEL,)),
)
OPS = {op.key: op for op in SEQUENCE_OPS}
DECODE_KEY = "softmax_decode"
DECODE_NAME = "softmax decode"
DECODE_PEERS = (sdpa_label(None), sdpa_label("flash"), sdpa_label("cudnn"))
OP_KEYS = (*OPS, DECODE_KEY)
ITEM_KEYS = OP_KEYS

# Issue 6's targets on the H200: (op key, peer label) -> the least `peer time / our
# time` by kind. The first-call target is `NEW_MOD_LIMIT_S` on the new mod's row.
FLOORS = {
    ("softmax_causal", FLEX_LABEL): (("fwd", 1.1), ("fwd_bwd", 1.1)),
    ("softmax_causal", sdpa_label("cudnn")): (("fwd", 0.8),),
    ("softmax_window", FLEX_LABEL): (("fwd", 1.1), ("fwd_bwd", 1.1)),
    ("softmax_alibi", FLEX_LABEL): (("fwd", 1.1),),
    (DECODE_KEY, sdpa_label(None)): (("fwd", 0.9),),
}


def pairings(op_keys: tuple[str, ...]) -> list[Pairing]:
    """Ours against every peer of each selected op, with the issue's floors."""
    named = [(op.key, op.name, op.peers) for op in SEQUENCE_OPS] + [(DECODE_KEY, DECODE_NAME, DECODE_PEERS)]
    return [Pairing(f"{name} vs {label}", key, key, label, FLOORS.get((key, label), ()))
            for key, name, peers in named if key in op_keys for label in peers]


# ----------------------------------------------------------------------------- plan

def plan(op_keys: tuple[str, ...], shape_names: tuple[str, ...], shapes: ShapeSet, impl: str) -> list[Item]:
    """The new mod (at the first sequence shape, not warmed up), decode, then every
    sequence shape in turn; ours before the peers."""
    ours = ours_label(impl)
    sequence_shapes = [name for name in shape_names if name in shapes.sequences]
    items = []
    if "softmax_new_mod" in op_keys and sequence_shapes:
        items.append(Item("sequence", "softmax_new_mod", ours, sequence_shapes[0], warm_up=False))
    if DECODE_KEY in op_keys and "decode" in shape_names:
        for B in shapes.softmax.decode_batches:
            items += [Item("decode", DECODE_KEY, label, f"B={B}") for label in (ours, *DECODE_PEERS)]
    for shape_name in sequence_shapes:
        for op in SEQUENCE_OPS:
            if op.key in op_keys and op.key != "softmax_new_mod":
                items += [Item("sequence", op.key, label, shape_name) for label in (ours, *op.peers)]
    return items


def _decode_dims(shapes: ShapeSet, B: int) -> dict:
    return dict(B=B, T=1, H=shapes.decode_heads, K=shapes.decode_K, V=shapes.decode_V, L=shapes.softmax.decode_cache)


def blank_row(item: Item, shapes: ShapeSet) -> Row:
    """The row of `item` before anything is measured: names, dims, FLOP and byte counts,
    and the first-call limit of the new mod."""
    ours = item.runner.startswith("ours")
    if item.section == "decode":
        dims = _decode_dims(shapes, int(item.shape.removeprefix("B=")))
        nbytes = flops.softmax_decode_bytes(dims["B"], dims["L"], dims["H"], dims["K"], dims["V"])
        return Row("decode", item.op_key, DECODE_NAME, item.runner, ours, item.shape, dims,
                   flops_fwd=flops.softmax_decode_flops(dims["B"], dims["L"], dims["H"], dims["K"], dims["V"]),
                   bytes_floor=nbytes, floor_ms=flops.floor_seconds(nbytes) * 1e3)
    op, shape = OPS[item.op_key], shapes.sequences[item.shape]
    window = shapes.softmax.window
    dims = dict(shape.dims(), **({"window": window} if op.window else {}))
    forward = op.flops(shape.dims(), window)
    nbytes = flops.sequence_bytes(**shape.dims(), gate="none", beta=False)
    return Row("sequence", op.key, op.name, item.runner, ours, shape.name, dims,
               fwd_bwd_status="not run" if op.backward else "n/a", flops_fwd=forward,
               flops_fwd_bwd=flops.softmax_fwd_bwd_flops(forward) if op.backward else None,
               bytes_floor=nbytes, floor_ms=flops.floor_seconds(nbytes) * 1e3,
               first_call_limit_s=NEW_MOD_LIMIT_S if op.score == "new" and ours else None)


# ----------------------------------------------------------------------------- runners

def _decode_call(impl: str, form: str) -> Callable[..., torch.Tensor]:
    """`fn(q, k, v, cache_k, cache_v, positions, next_position)` -> output `[B, 1, H, V]`:
    one new token per row after the cached ones."""
    def run(q, k, v, cache_k, cache_v, positions, next_position):
        cache = KVCache(cache_k, cache_v, positions, next_position)
        return af.softmax_attention(q, k, v, causal=True, initial_state=cache, form=form, impl=impl).output
    return run


def make_runner(item: Item, impl: str, device, shapes: ShapeSet) -> Runner:
    """The implementation `item.runner` names."""
    device = torch.device(device)
    if item.section == "decode":
        if item.runner.startswith("ours"):
            return Runner(ours_label(impl), _decode_call(impl, "recurrent"), is_ours=True)
        backend = None if item.runner == sdpa_label(None) else item.runner.removeprefix("sdpa ")
        return sdpa_decode(backend, device)
    op, window = OPS[item.op_key], shapes.softmax.window
    if item.runner.startswith("ours"):
        return Runner(ours_label(impl), op.call(impl, window), is_ours=True)
    if item.runner == FLEX_LABEL:
        return flex(device, window=window if op.window else None, score_mod=score_mod_factory(op.score))
    return sdpa(item.runner.removeprefix("sdpa "), device)


# ----------------------------------------------------------------------------- inputs

def _randn(*shape: int, generator: torch.Generator, device) -> torch.Tensor:
    """Standard normal bf16, drawn on `device` (a full-size decode cache is 8.6 GB per
    tensor: no float32 or host copy)."""
    return torch.randn(*shape, generator=generator, device=device, dtype=DTYPE)


def sequence_inputs(B: int, T: int, H: int, K: int, V: int, device, seed: int) -> dict:
    """q, k `[B, T, H, K]`, v `[B, T, H, V]`, standard normal bf16 (scores of unit
    variance after the `K ** -0.5` scale)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return dict(q=_randn(B, T, H, K, generator=generator, device=device),
                k=_randn(B, T, H, K, generator=generator, device=device),
                v=_randn(B, T, H, V, generator=generator, device=device))


def decode_inputs(B: int, L: int, H: int, K: int, V: int, device, seed: int) -> dict:
    """One new token q, k `[B, 1, H, K]`, v `[B, 1, H, V]` after a full cache cache_k
    `[B, L, H, K]`, cache_v `[B, L, H, V]` at positions 0..L-1 (`positions [B, L]`,
    `next_position [B]` = L, int64)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    token = {name: _randn(B, 1, H, D, generator=generator, device=device) for name, D in (("q", K), ("k", K), ("v", V))}
    return dict(token, cache_k=_randn(B, L, H, K, generator=generator, device=device),
                cache_v=_randn(B, L, H, V, generator=generator, device=device),
                positions=torch.arange(L, device=device).expand(B, L).contiguous(),
                next_position=torch.full((B,), L, dtype=torch.int64, device=device))


class WorkerInputs:
    """Gate cases and timing inputs of the softmax items inside one worker (`family.py`).
    Timing inputs are kept for the current shape only (a full decode cache is 17 GB)."""

    def __init__(self, session):
        self.shapes, self.device = session.shapes, session.device
        self.full: dict = {}

    def gate_case(self, item: Item) -> GateCase:
        sizes = self.shapes.softmax
        if item.section == "decode":
            dims = _decode_dims(self.shapes, int(item.shape.removeprefix("B=")))
            inputs = decode_inputs(dims["B"], sizes.decode_gate_cache, dims["H"], dims["K"], dims["V"],
                                   self.device, seed=3)
            return GateCase(_decode_call("reference", "parallel"), inputs, ("output",), ())
        op, shape = OPS[item.op_key], self.shapes.sequences[item.shape]
        inputs = sequence_inputs(sizes.gate_B, min(shape.T, sizes.gate_T), shape.H, shape.K, shape.V, self.device,
                                 seed=1)
        return GateCase(op.call("reference", sizes.window), inputs, ("output",), ("q", "k", "v") if op.backward else ())

    def timing_inputs(self, item: Item) -> dict:
        key = (item.section, item.shape)
        if key not in self.full:
            self.full = {}  # drop the previous shape's tensors before drawing
            if item.section == "decode":
                dims = _decode_dims(self.shapes, int(item.shape.removeprefix("B=")))
                self.full[key] = decode_inputs(dims["B"], dims["L"], dims["H"], dims["K"], dims["V"], self.device,
                                               seed=4)
            else:
                shape = self.shapes.sequences[item.shape]
                self.full[key] = sequence_inputs(shape.B, shape.T, shape.H, shape.K, shape.V, self.device, seed=2)
        return self.full[key]
