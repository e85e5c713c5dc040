"""Tasks: synthetic probes of what a sequence mixer can do, one real dataset, and a
training loop (`attnforms.tasks.train`).

Every task is a frozen dataclass with `vocab_size`, `seq_len`, `metric` and

    inputs, targets = task.batch(batch_size, generator, split="train")   # [B, T], [B, T]

where targets hold IGNORE_INDEX (-100) at positions that are not scored (see `base`).

| name | what the model must do | metric |
|---|---|---|
| mqar | recall the value paired with a queried key (Zoology) | accuracy at the queries |
| needle | retrieve a passkey hidden at a given depth in filler | accuracy on the digits |
| selective_copy | copy scattered data tokens in order (Mamba) | accuracy on the copies |
| induction | complete "S x ... S" with x (induction heads) | accuracy at the end |
| modular_sum / parity | running sum mod m / running xor (state tracking) | accuracy per position |
| char_lm | next character of Python's own text | bits per character |

`make_task(name, **options)` builds one by name; `SETTINGS` holds named settings such as
the Tier-0 MQAR configurations "T0-a" and "T0-b".
"""
from __future__ import annotations

from typing import Callable

from .base import HELD_OUT_SEED_OFFSET, IGNORE_INDEX, NamedSetting, Task, describe, generator_for, held_out_seed
from .char_lm import CharLM, unigram_entropy_bits
from .induction import InductionHeads
from .metrics import answer_accuracy, bits_per_char, metric_totals
from .mqar import MQAR, MQAR_SETTINGS
from .needle import Needle
from .selective_copy import SelectiveCopy
from .state_tracking import ModularSum, parity

TASKS: dict[str, Callable[..., Task]] = {
    "mqar": MQAR,
    "needle": Needle,
    "selective_copy": SelectiveCopy,
    "induction": InductionHeads,
    "modular_sum": ModularSum,
    "parity": parity,
    "char_lm": CharLM,
}

SETTINGS: dict[str, NamedSetting] = {**MQAR_SETTINGS}


def make_task(name: str, **options) -> Task:
    """The task called `name` (a key of TASKS) with `options` as its settings."""
    if name not in TASKS:
        raise ValueError(f"name: expected one of {', '.join(TASKS)}, got {name!r}")
    try:
        return TASKS[name](**options)
    except TypeError as error:
        # An unknown keyword: say which task refused it rather than a bare TypeError.
        raise ValueError(f"options: task {name!r} does not take {sorted(options)}: {error}") from error


__all__ = [
    "HELD_OUT_SEED_OFFSET", "IGNORE_INDEX", "SETTINGS", "TASKS",
    "CharLM", "InductionHeads", "MQAR", "MQAR_SETTINGS", "ModularSum", "NamedSetting", "Needle",
    "SelectiveCopy", "Task",
    "answer_accuracy", "bits_per_char", "describe", "generator_for", "held_out_seed", "make_task",
    "metric_totals", "parity", "unigram_entropy_bits",
]
