"""`attnforms train`: build a task and a model from the command line and train it.

    attnforms train --task T0-a --preset transformer --out runs/t0a-transformer
    attnforms train --task mqar --task-option num_pairs=16 --seq-len 128 --vocab-size 512 --preset gdn
    attnforms train --task T0-a --preset transformer --out runs/t0a-transformer --resume runs/t0a-transformer

`--task` takes a task name (`attnforms.tasks.TASKS`) or a named setting
(`attnforms.tasks.SETTINGS`, e.g. T0-a, which also fixes the training- and held-out-set
sizes and the step budget unless given). The model comes from
`attnforms.tasks.model_factory.build`, a preset of `attnforms.models` (`PRESETS`) at the
given width, depth and heads; checkpoints store it with `attnforms.models.save`, so
`attnforms.models.load(<out>/checkpoints/step-...)` opens one.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path

from ..models import PRESETS
from . import SETTINGS, TASKS, make_task
from .model_factory import build, load_model, save_model
from .train import TrainConfig, train

DEFAULT_STEPS = 1000
DEFAULT_EVAL_EXAMPLES = 1000


def _task_option(text: str) -> tuple[str, object]:
    """An argparse type: KEY=VALUE, VALUE read as a Python literal when it is one."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def add_train_options(command: argparse.ArgumentParser) -> None:
    choices = ", ".join([*TASKS, *SETTINGS])
    command.add_argument("--task", required=True, help=f"task name or named setting: {choices}")
    command.add_argument("--task-option", type=_task_option, action="append", default=[], metavar="KEY=VALUE",
                         help="a task setting, e.g. num_pairs=16 (repeatable)")
    command.add_argument("--seq-len", type=int, help="sequence length T (default: the task's)")
    command.add_argument("--vocab-size", type=int, help="vocabulary size V, for tasks that take one")
    command.add_argument("--preset", required=True,
                         help=f"model preset of attnforms.models: {', '.join(PRESETS)}")
    command.add_argument("--width", type=int, default=64, help="model width (default 64)")
    command.add_argument("--depth", type=int, default=2, help="number of blocks (default 2)")
    command.add_argument("--heads", type=int, help="attention / state heads (default: the preset's)")
    command.add_argument("--steps", type=int, help=f"optimizer steps (default: the setting's, else {DEFAULT_STEPS})")
    command.add_argument("--batch-size", type=int, default=64, help="sequences per step (default 64)")
    command.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    command.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    command.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps (default 100)")
    command.add_argument("--seed", type=int, default=0, help="seed of data, dropout and held-out set (default 0)")
    command.add_argument("--eval-every", type=int, default=100, help="steps between evaluations (default 100)")
    command.add_argument("--eval-examples", type=int,
                         help=f"held-out examples (default: the setting's, else {DEFAULT_EVAL_EXAMPLES})")
    command.add_argument("--train-examples", type=int,
                         help="fixed training-set size (default: the setting's, else fresh data every step)")
    command.add_argument("--out", type=Path,
                         help="folder for log.json and checkpoints (default runs/<task>-<preset>-seed<seed>)")
    command.add_argument("--resume", type=Path, help="a checkpoint or run folder to continue from")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")


def _task_and_setting(args: argparse.Namespace):
    options = dict(args.task_option)
    if args.seq_len is not None:
        options["seq_len"] = args.seq_len
    if args.vocab_size is not None:
        options["vocab_size"] = args.vocab_size
    setting = SETTINGS.get(args.task)
    if setting is None:
        return make_task(args.task, **options), None
    try:
        return dataclasses.replace(setting.task, **options), setting
    except TypeError as error:
        raise ValueError(f"--task-option: setting {args.task!r} does not take {sorted(options)}: {error}") from error


def run_train(args: argparse.Namespace) -> int:
    """The handler of `attnforms train`; returns the exit status."""
    try:
        task, setting = _task_and_setting(args)
        heads = {} if args.heads is None else {"n_heads": args.heads}
        model = build(args.preset, task.vocab_size, args.width, args.depth, seq_len=task.seq_len, **heads)
        config = TrainConfig(
            steps=args.steps or (setting.steps if setting else DEFAULT_STEPS),
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, eval_every=args.eval_every,
            eval_examples=args.eval_examples or (setting.eval_examples if setting else DEFAULT_EVAL_EXAMPLES),
            train_examples=args.train_examples or (setting.train_examples if setting else None),
            seed=args.seed, device=args.device,
            out_dir=str(args.out or Path("runs") / f"{args.task}-{args.preset}-seed{args.seed}"),
            progress=not args.no_progress,
        )
    except ValueError as error:
        print(f"attnforms train: {error}", file=sys.stderr)
        return 2
    log = train(model, task, config, resume=args.resume, save_model=save_model, load_model=load_model)
    final = log["final"]
    print(f"{args.task} / {args.preset}: step {final['step']}, eval loss {final['eval_loss']:.4f}, "
          f"{log['metric']} {final[log['metric']]:.4f}; log in {config.out_dir}/log.json")
    return 0
