"""`attnforms demo`: the command-line wrapper of `run_demo`."""
from __future__ import annotations

import argparse
from pathlib import Path

from .lineup import PRESET_NAMES
from .report import main_table


def add_demo_options(command: argparse.ArgumentParser) -> None:
    size = command.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run: under a minute on 2 CPU cores")
    size.add_argument("--full", action="store_true",
                      help="train longer, and also on MQAR T0-b and a character LM")
    command.add_argument("--out", type=Path, help="report folder (default demo-report/<timestamp>)")
    command.add_argument("--presets", default=",".join(PRESET_NAMES),
                         help=f"comma-separated subset of {','.join(PRESET_NAMES)} (default: all)")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.add_argument("--workers", type=int,
                         help="training runs at once, each in its own process (default on a CPU: one per core, "
                              "each with one thread; 1: one after the other in this process)")


def run_demo_command(args: argparse.Namespace) -> int:
    from .run import run_demo

    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    level = "quick" if args.quick else "full" if args.full else "default"
    try:
        results, out = run_demo(level, out=args.out, device=args.device, presets=presets,
                                progress=not args.no_progress, workers=args.workers)
    except ValueError as error:
        print(f"attnforms demo: {error}")
        return 2
    print(main_table(results))
    check = results["check"]
    print(f"\ncheck: {check['passed']} of {check['rows']} rows pass; wall time {results['wall_s']:.0f} s")
    print(f"report: {out / 'report.md'}")
    return 0 if not check["failed"] else 1
