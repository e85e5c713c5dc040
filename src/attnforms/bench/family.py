"""What every benchmarked family of ops provides, so that planning, measuring, the
worker processes and the report handle them alike (`cases.py` holds the registry).

A family is a module (`linear.py`, `softmax.py`) with:

    OP_KEYS                                  the names `--ops` takes
    plan(op_keys, shape_names, shapes, impl) -> list[Item]   its items, in measuring order
    pairings(op_keys) -> list[Pairing]       ours against each peer (and the issue's floors)
    ITEM_KEYS                                the op keys its items carry (OP_KEYS and
                                             any decode steps they imply)
    blank_row(item, shapes) -> Row           names, dims, FLOP and byte counts, and
                                             `fwd_bwd_status` "not run" when a backward
                                             is planned, "n/a" when not
    make_runner(item, impl, device, shapes) -> Runner   the implementation an item names
    WorkerInputs(session)                    built once per worker process, see below

`WorkerInputs` draws (and caches) what the items need inside a worker:

    gate_case(item) -> GateCase              the reference and the inputs of the
                                             correctness gate (reduced size)
    timing_inputs(item) -> dict | None       the inputs at the timed size (None: the
                                             gate's inputs are already full size)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Item:
    """One implementation (`runner`, a label) of one op at one shape ("S1", or "B=64"
    for decode). warm_up: whether the warm-up phase makes its first calls (False for an
    item whose first call is itself the measurement, e.g. the compile time of a new mod)."""

    section: str  # "sequence" | "decode"
    op_key: str
    runner: str
    shape: str
    warm_up: bool = True


def ours_label(impl: str) -> str:
    """The runner label of attnforms itself, e.g. "ours (triton)"."""
    return f"ours ({impl})"


@dataclass(frozen=True)
class GateCase:
    """What the correctness gate needs for one op at one shape.

    reference:  `reference(**inputs)` -> the results named in `results`, in order
                (attnforms' reference; it gets float64 copies of the float inputs).
    inputs:     low-precision tensors in attnforms layout (integer tensors such as
                cache positions are passed through unchanged).
    results:    e.g. ("output",) or ("output", "state").
    grad_names: inputs whose gradients are checked; empty: forward only (then no
                forward + backward is timed either).
    """

    reference: Callable
    inputs: dict
    results: tuple[str, ...]
    grad_names: tuple[str, ...]
