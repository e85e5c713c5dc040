"""The `attnforms` command.

    attnforms list     every family, its forms, and which implementations run here
    attnforms check    every family × configuration × form against the float64 reference
    attnforms bench    every op at the canonical shapes against the installed peers
    attnforms train    a model of attnforms.models on a task of attnforms.tasks
    attnforms demo     check, train every formulation on MQAR, measure, write a report
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _list(args: argparse.Namespace) -> int:
    from .core.dispatch import FORMS, triton_unavailable_reason
    from .ops import FAMILIES

    device = torch.device(args.device)
    triton_reason = triton_unavailable_reason(device)
    print(f"device: {device}; triton: {'runs here' if triton_reason is None else triton_reason}")
    for family in FAMILIES.values():
        print(f"\n{family.name}  (form='auto' -> recurrent for one token, else {family.auto_form})")
        if family.variants:
            print(f"  named configurations: {', '.join(family.variants)}")
        for form in FORMS:
            impls = ["reference"]
            if form in family.triton:
                impls.append("triton" if triton_reason is None else "triton (not here)")
            print(f"  {form:<10} {', '.join(impls)}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .check import format_rows, run_check

    rows = run_check(device=args.device)
    print(format_rows(rows))
    failed = [row for row in rows if not row.passed]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} rows pass" + (f", {len(failed)} FAIL" if failed else ""))
    return 1 if failed else 0


def _csv(allowed: tuple[str, ...]):
    """An argparse type: a comma-separated subset of `allowed`, in the given order."""

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [part for part in chosen if part not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}"
            )
        return chosen

    return parse


def _bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, ours_wrong, run_bench

    config = BenchConfig(
        device=args.device, shapes=args.shapes, ops=args.ops, out=args.out, quick=args.quick,
        impl=args.impl, budget_s=args.budget_s, warmup_workers=args.warmup_workers,
        graph_decode=args.graph_decode,
    )
    wrong = ours_wrong(run_bench(config))
    if wrong:
        print(f"\n{len(wrong)} of our rows failed the correctness gate")
    return 1 if wrong else 0


def _add_bench_options(command: argparse.ArgumentParser) -> None:
    from .bench.cases import OP_KEYS
    from .bench.shapes import SHAPE_NAMES
    from .bench.suite import DEFAULT_BUDGET_S, DEFAULT_WARMUP_WORKERS

    command.add_argument("--shapes", type=_csv(SHAPE_NAMES), default=SHAPE_NAMES,
                         help=f"comma-separated subset of {','.join(SHAPE_NAMES)} (default: all)")
    command.add_argument("--ops", type=_csv(OP_KEYS), default=OP_KEYS,
                         help=f"comma-separated subset of {','.join(OP_KEYS)} (default: all; with the decode shape, "
                              "gdn and mlstm bring their decode steps, softmax_decode is its own)")
    command.add_argument("--out", type=Path, default=Path("bench/results"),
                         help="folder for <date>-<gpu>.json and .png (default: bench/results)")
    command.add_argument("--quick", action="store_true",
                         help="tiny shapes: a smoke run on the CPU (reference, or TRITON_INTERPRET=1)")
    command.add_argument("--impl", choices=("triton", "reference"), default="triton",
                         help="our implementation to time (default: triton)")
    command.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                         help=f"start no new measurement after this many seconds (default {DEFAULT_BUDGET_S:.0f})")
    command.add_argument("--graph-decode", action="store_true",
                         help="also time each decode step replayed from a CUDA graph (the GPU's time without "
                              "host launch overhead)")
    command.add_argument("--warmup-workers", type=int, default=DEFAULT_WARMUP_WORKERS,
                         help="parallel processes for every implementation's first call (compile, autotune) "
                              f"on CUDA; 0 for none (default {DEFAULT_WARMUP_WORKERS})")


def _train(args: argparse.Namespace) -> int:
    from .tasks.command import run_train

    return run_train(args)


def _demo(args: argparse.Namespace) -> int:
    from .demo.command import run_demo_command

    return run_demo_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnforms", description="Attention formulations behind one API.")
    commands = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, handler, text in [
        ("list", _list, "list every family, its forms and the implementations that run here"),
        ("check", _check, "check every family and form against the float64 reference"),
        ("bench", _bench, "check, then time every op at the canonical shapes against the installed peers"),
        ("train", _train, "train a model of attnforms.models on a task, with evaluation and checkpoints"),
        ("demo", _demo, "check the ops, train every formulation on MQAR, measure speed and memory, write a report"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--device", default=default_device, help=f"torch device (default {default_device})")
        if name == "bench":
            _add_bench_options(command)
        if name == "train":
            from .tasks.command import add_train_options

            add_train_options(command)
        if name == "demo":
            from .demo.command import add_demo_options

            add_demo_options(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
