"""Numerics run on the GPU for issue 3's rule: bf16 kernel error against float64 at most
twice the bf16 reference's own error, for the output and every gradient, at T up to
32768 and log-gates down to -20 per step.

    OUT=<folder> python3 scripts/device_gdr_numerics.py [--draws 10] [--long-T 32768] [--dry]
                                                       [--set NAME=VALUE ...]

(--set: a constant of `attnforms.ops.gated_delta.triton.launch`, e.g. KEEP_16BIT=False
to see whether the 16-bit states and dS the backward keeps carry a failing gradient.)

(--dry: tiny shapes on the CPU through the Triton interpreter, to check the script.)

1. The hard case of device_gdr_variants.py (GDN, T 4096, log-gates uniform in [-20, 0]
   on half the heads, every key repeated over runs of 8 tokens) and its per-channel
   twin (KDA), over `--draws` draws of the output gradient dO: each draw's ratio
   error / bf16 reference error per output and gradient, so a failure shows whether it
   is a rare draw or the usual case.
2. GDN, KDA, GLA and simple GLA at T = `--long-T` (B 1, H 2, K = V = 128), log-gates down
   to -20 on one head: the same check once.

Writes $OUT/gdr_numerics.json after every case (a run cut short keeps what it did).
"""
import argparse
import json
import os
import sys
import time

import torch

DRY = "--dry" in sys.argv
if DRY:
    os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, os.path.dirname(__file__))
import device_gdr_profile  # noqa: E402
from launch_settings import apply_variant  # noqa: E402

from attnforms.testing import gated_delta_inputs  # noqa: E402

device = "cpu" if DRY else "cuda"
device_gdr_profile.device = device
HARD_T, D = (128, 32) if DRY else (4096, 128)
OPS = {"GDN": ("scalar", True), "KDA": ("channel", True), "GLA": ("channel", False),
       "simple GLA": ("scalar", False)}


def long_inputs(gate: str, beta: bool, T: int) -> dict:
    """B 1, H 2, K = V = 128 at length T; head 0's log-gates uniform in [-20, 0]."""
    x = gated_delta_inputs(1, T, 2, D, D, gate=gate, beta=beta, dtype=torch.float32, device=device)
    x["g"][:, :, :1] = -20 * torch.rand_like(x["g"][:, :, :1])
    return x


def ratios(row: dict) -> dict:
    return {key: round(r["error"] / max(r["eager_error"], 1e-30), 3) for key, r in row.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--long-T", type=int, default=256 if DRY else 32768)
    parser.add_argument("--dry", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    from attnforms.ops.gated_delta.triton import launch
    settings = apply_variant(launch, {}, ";".join(args.set), own=())
    results = {"device": "cpu (interpreter)" if DRY else torch.cuda.get_device_name(), "settings": settings,
               "hard": {}, "long": {}}
    suffix = "".join("-" + "".join(c for c in item if c.isalnum()) for item in args.set)
    path = os.path.join(os.environ.get("OUT", "."), f"gdr_numerics{suffix}.json")

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    for name, gate in (("GDN", "scalar"), ("KDA", "channel")):
        torch.manual_seed(1000)  # the hard gates' draw, whatever ran before
        x = device_gdr_profile.hard_inputs(gate, HARD_T, D)
        draws = results["hard"][name] = []
        for draw in range(args.draws):
            torch.manual_seed(draw)  # the draw of dO inside check_inputs
            row = device_gdr_profile.check_inputs(f"hard {name} draw {draw}", x)
            draws.append({"draw": draw, "passed": all(r["passed"] for r in row.values()), "ratio": ratios(row),
                          "rows": row})
            save()
    for name, (gate, beta) in OPS.items():
        t0 = time.time()
        torch.manual_seed(0)  # the gates' and dO's draws
        row = device_gdr_profile.check_inputs(f"T {args.long_T} {name}", long_inputs(gate, beta, args.long_T))
        results["long"][name] = {"T": args.long_T, "passed": all(r["passed"] for r in row.values()),
                                 "ratio": ratios(row), "rows": row, "seconds": time.time() - t0}
        save()
    print("\ncase passed ratios (error / bf16 reference error)")
    for name, draws in results["hard"].items():
        for d in draws:
            print(f"hard {name} draw {d['draw']}", d["passed"], d["ratio"])
    for name, r in results["long"].items():
        print(f"T {r['T']} {name}", r["passed"], r["ratio"])


if __name__ == "__main__":
    main()
