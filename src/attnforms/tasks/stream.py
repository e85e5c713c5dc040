"""Where training and held-out examples come from: reproducible from a seed, resumable
from a saved state.

- `generate_examples`: n examples of a task in chunks (the subset draws of the
  generators hold `chunk × vocabulary` numbers at once, so 100k examples at V 8192 are
  made a few thousand at a time).
- `BatchStream`: training batches. Without a fixed training set every batch is fresh
  data from the stream's generator; with `train_examples` it first draws that many
  examples, then serves them in a new random order every epoch (dropping the last
  incomplete batch), as Zoology and MAD train on a fixed set for several epochs.
"""
from __future__ import annotations

import torch

from .base import Task, check_int, generator_for

EXAMPLES_PER_CHUNK = 4096


def generate_examples(
    task: Task, num_examples: int, generator: torch.Generator, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs `[N, T]` int64 and targets `[N, T]` int64, drawn from `generator` in chunks
    of EXAMPLES_PER_CHUNK; the result depends only on the generator's state."""
    check_int("num_examples", num_examples, minimum=1)
    chunks = []
    for start in range(0, num_examples, EXAMPLES_PER_CHUNK):
        chunks.append(task.batch(min(EXAMPLES_PER_CHUNK, num_examples - start), generator, split))
    return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])


class BatchStream:
    """Training batches of `task` from seed `seed`: `next()` gives inputs `[B, T]` and
    targets `[B, T]` on the CPU. `state_dict()` / `load_state_dict()` save and restore
    the position, so a resumed stream continues with exactly the batches an
    uninterrupted one would give."""

    def __init__(self, task: Task, batch_size: int, seed: int, train_examples: int | None = None):
        check_int("batch_size", batch_size, minimum=1)
        if train_examples is not None:
            check_int("train_examples", train_examples, minimum=batch_size)
        self.task, self.batch_size = task, batch_size
        self.generator = generator_for(seed)
        self.pool = None if train_examples is None else generate_examples(task, train_examples, self.generator, "train")
        self.order: torch.Tensor | None = None
        self.cursor = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is None:
            return self.task.batch(self.batch_size, self.generator, "train")
        pool_inputs, pool_targets = self.pool
        if self.order is None or self.cursor + self.batch_size > len(pool_inputs):
            self.order = torch.randperm(len(pool_inputs), generator=self.generator)
            self.cursor = 0
        chosen = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return pool_inputs[chosen], pool_targets[chosen]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.cursor = state["order"], state["cursor"]
