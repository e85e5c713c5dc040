"""Screen the demo's MQAR T0-a training for one formulation: learning rates, steps,
warm-up, batch size. One process, one thread (the sweeps of docs/demo.md ran this way).

    PYTHONPATH=src python scripts/demo_sweep.py --preset linear --lrs 3e-3,1e-2 --steps 400

Prints one line per run: preset, lr, steps, warm-up, batch, the accuracy curve
(step:accuracy every --eval-every steps), final accuracy and seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import time

import torch

from attnforms import models
from attnforms.demo.lineup import lineup
from attnforms.tasks import MQAR_SETTINGS
from attnforms.tasks.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", required=True)
    parser.add_argument("--lrs", default="3e-3")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stop-at", type=float, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="ModelConfig.chunk_size")
    parser.add_argument("--patch", action="append", default=[],
                        help="screen a constant: module:NAME=value (e.g. attnforms.layers.recurrent:INPUT_GATE_BIAS_STD=0.0)")
    args = parser.parse_args()
    for patch in args.patch:
        module, assignment = patch.split(":")
        name, value = assignment.split("=")
        setattr(importlib.import_module(module), name, eval(value))
    torch.set_num_threads(args.threads)
    task = MQAR_SETTINGS["T0-a"].task
    (entry,) = lineup(task.vocab_size, n_heads=1, presets=(args.preset,))
    for lr in (float(x) for x in args.lrs.split(",")):
        torch.manual_seed(args.seed)
        model = models.build_model(dataclasses.replace(entry.config, chunk_size=args.chunk))
        config = TrainConfig(steps=args.steps, batch_size=args.batch, lr=lr, warmup_steps=args.warmup,
                             eval_every=args.eval_every, eval_examples=args.eval_examples,
                             train_examples=20_000, seed=args.seed, device="cpu", progress=False,
                             stop_at=args.stop_at)
        start = time.perf_counter()
        log = train(model, task, config)
        curve = " ".join(f"{e['step']}:{e['accuracy']:.3f}" for e in log["evals"])
        print(f"{args.preset} {' '.join(args.patch)} lr={lr:g} steps={args.steps} warmup={args.warmup} batch={args.batch} "
              f"seed={args.seed} | {curve} | final {log['final']['accuracy']:.3f} at {log['stopped_at']} "
              f"| {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
