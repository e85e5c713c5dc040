"""The `attnforms` command.

    attnforms list     every family, its forms, and which implementations run here
    attnforms check    every family × configuration × form against the float64 reference
"""
from __future__ import annotations

import argparse
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnforms", description="Attention formulations behind one API.")
    commands = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, handler, text in [
        ("list", _list, "list every family, its forms and the implementations that run here"),
        ("check", _check, "check every family and form against the float64 reference"),
    ]:
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--device", default=default_device, help=f"torch device (default {default_device})")
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
