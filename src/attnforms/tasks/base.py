"""What every task shares: the batch contract, the ignore label, seeds and argument checks.

A task is a frozen dataclass whose fields are its settings. It draws batches

    inputs, targets = task.batch(batch_size, generator, split="train")
    # inputs  [B, T] int64 token ids in [0, task.vocab_size)
    # targets [B, T] int64; the token to predict at each position, IGNORE_INDEX where
    #         nothing is scored (loss and metric read only the other positions)

from a CPU `torch.Generator`, so the same seed gives the same tokens on every machine and
device. Every task also names its `vocab_size`, its `seq_len` and its `metric`:
"accuracy" (arg-max prediction equals the target, over the scored positions) or
"bits_per_char" (mean cross-entropy in bits over the scored positions).

Synthetic tasks draw train and held-out data from the same distribution; what keeps them
apart is the seed, as in Zoology: training seeds are below `HELD_OUT_SEED_OFFSET` and
held-out seeds at or above it. Tasks with real data (`char_lm`) read `split`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

# The label that cross-entropy and every metric skip (PyTorch's default ignore_index).
IGNORE_INDEX = -100

SPLITS = ("train", "validation")
METRICS = ("accuracy", "bits_per_char")

# Held-out data is drawn from seed + 2**31, training data from seeds below 2**31: the
# split Zoology uses between its train and test seeds.
HELD_OUT_SEED_OFFSET = 2**31


class Task(Protocol):
    """The interface every task offers (see the module docstring for the batch contract)."""

    name: ClassVar[str]
    metric: ClassVar[str]

    @property
    def vocab_size(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class NamedSetting:
    """A task fixed together with the data budget a published or house protocol uses.

    task: the task with its settings. train_examples: size of the fixed training set
    (None: fresh data every step). eval_examples: size of the held-out set. steps: the
    training budget. note: the model and pass criterion the setting was written for.
    """

    task: Any
    train_examples: int | None
    eval_examples: int
    steps: int
    note: str = ""


def generator_for(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (an int in [0, 2**63))."""
    check_int("seed", seed, minimum=0)
    return torch.Generator().manual_seed(seed)


def held_out_seed(seed: int) -> int:
    """The seed of the held-out data that goes with training seed `seed` (< 2**31)."""
    check_int("seed", seed, minimum=0)
    if seed >= HELD_OUT_SEED_OFFSET:
        raise ValueError(f"seed: expected a training seed below 2**31, got {seed}")
    return seed + HELD_OUT_SEED_OFFSET


def describe(task: Task) -> dict:
    """The task's name and settings as a JSON-ready dict (for logs and checkpoints)."""
    return {"name": task.name, **dataclasses.asdict(task)}


def check_int(name: str, value: Any, *, minimum: int) -> None:
    """Raise ValueError naming `name` unless `value` is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def check_batch_request(batch_size: int, generator: torch.Generator, split: str) -> None:
    """The checks every `Task.batch` starts with."""
    check_int("batch_size", batch_size, minimum=1)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator: expected a CPU torch.Generator, got {generator!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")


def random_subsets(batch: int, population: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` distinct integers from [0, population) per row, in random order.

    Returns `[batch, size]` int64. Each row is a uniform draw without replacement: the
    first `size` entries of a uniformly random permutation (arg-sort of float64 noise, so
    that ties, which would bias the order, practically never happen). Memory is
    `batch × population`; callers generating many rows do it in chunks.
    """
    noise = torch.rand(batch, population, generator=generator, dtype=torch.float64)
    return noise.argsort(dim=1)[:, :size]


def ignored_targets(batch_size: int, seq_len: int) -> torch.Tensor:
    """`[B, T]` int64 filled with IGNORE_INDEX, for a task to write its scored positions into."""
    return torch.full((batch_size, seq_len), IGNORE_INDEX, dtype=torch.long)
