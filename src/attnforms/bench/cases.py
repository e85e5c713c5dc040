"""The registry of benchmarked families (see `family.py` for what each provides): op
keys, the plan of a run, pairings, rows and runners, each dispatched on the op key.

Softmax comes first in a run: its first item measures the compile time of a new
score_mod, which must be the first call of a fresh measuring process.
"""
from __future__ import annotations

from types import ModuleType

from . import linear, softmax
from .family import Item
from .peers import Runner
from .report import Pairing, Row
from .shapes import ShapeSet

FAMILIES: tuple[ModuleType, ...] = (softmax, linear)
OP_KEYS: tuple[str, ...] = tuple(key for family in FAMILIES for key in family.OP_KEYS)


def family_of(op_key: str) -> ModuleType:
    """The family module whose op (or decode step) `op_key` is."""
    for family in FAMILIES:
        if op_key in family.ITEM_KEYS:
            return family
    raise KeyError(f"no benchmarked family has the op {op_key!r}")


def plan(op_keys: tuple[str, ...], shape_names: tuple[str, ...], shapes: ShapeSet, impl: str) -> list[Item]:
    """Every family's items in its own order, the families in `FAMILIES` order."""
    return [item for family in FAMILIES for item in family.plan(op_keys, shape_names, shapes, impl)]


def pairings(op_keys: tuple[str, ...]) -> list[Pairing]:
    return [pairing for family in FAMILIES for pairing in family.pairings(op_keys)]


def blank_row(item: Item, shapes: ShapeSet) -> Row:
    return family_of(item.op_key).blank_row(item, shapes)


def make_runner(item: Item, impl: str, device, shapes: ShapeSet) -> Runner:
    return family_of(item.op_key).make_runner(item, impl, device, shapes)
