"""Train one demo formulation on MQAR T0-a and print its held-out accuracy per
query–key distance: which lookups a model can make, not only how many.

    PYTHONPATH=src python scripts/mqar_by_distance.py --preset swa-transformer --lrs 1e-3,3e-3 --steps 800

Prints, per learning rate, the accuracy curve and a table: distance d (query position −
key position), the share of queries at d, and the accuracy at d.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from attnforms import models
from attnforms.demo.lineup import lineup
from attnforms.demo.mqar_baselines import _query_key_distances
from attnforms.tasks import IGNORE_INDEX, MQAR_SETTINGS, generator_for
from attnforms.tasks.train import TrainConfig, train


@torch.no_grad()
def accuracy_by_distance(model, task, examples: int = 2000, seed: int = 12345) -> dict[int, tuple[int, float]]:
    """{distance: (queries, accuracy)} over `examples` fresh examples."""
    inputs, targets = task.batch(examples, generator_for(seed))
    model.eval()
    predictions = torch.cat([model(inputs[i:i + 256]).logits.argmax(-1) for i in range(0, examples, 256)])
    scored = targets != IGNORE_INDEX
    correct = (predictions == targets)[scored]  # row-major, as the distances are
    distances = _query_key_distances(inputs, targets, task.context_len)
    table = {}
    for d in distances.unique().tolist():
        hit = correct[distances == d]
        table[d] = (int(hit.numel()), float(hit.float().mean()))
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="swa-transformer")
    parser.add_argument("--lrs", default="3e-3")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--no-block-conv", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = MQAR_SETTINGS["T0-a"].task
    (entry,) = lineup(task.vocab_size, n_heads=1, presets=(args.preset,), chunk_size=args.chunk)
    config = entry.config
    if args.preset == "swa-transformer":
        config = dataclasses.replace(config, window=args.window)
    if args.no_block_conv:
        config = dataclasses.replace(config, block_conv=False)
    for lr in (float(x) for x in args.lrs.split(",")):
        torch.manual_seed(0)
        model = models.build_model(config)
        start = time.perf_counter()
        log = train(model, task, TrainConfig(steps=args.steps, batch_size=64, lr=lr, warmup_steps=args.warmup,
                                             eval_every=max(100, args.steps // 8), eval_examples=500, train_examples=20_000,
                                             device="cpu", progress=False))
        curve = " ".join(f"{e['step']}:{e['accuracy']:.3f}" for e in log["evals"])
        print(f"{args.preset} lr={lr:g} steps={args.steps} | {curve} | {time.perf_counter() - start:.0f} s")
        table = accuracy_by_distance(model, task)
        total = sum(n for n, _ in table.values())
        print("  d: share acc  " + "  ".join(f"{d}:{n / total:.3f} {a:.2f}" for d, (n, a) in sorted(table.items())
                                          if n / total > 0.004), flush=True)


if __name__ == "__main__":
    main()
