"""Check every linear family on the GPU at the head sizes the other device checks leave
out: 64 and 32 (they check 128, 100 / 60 and 256).

Why: flash-linear-attention records Hopper miscompiles in Triton 3.4 to 3.7.0 (its
issues 640 and 984: a transposed product result fed to another product, wrong at
64-wide tiles and right at 128; one setting raising an illegal memory access), and our
backward kernels transpose product results too (e.g. gated_delta chunk_bwd.py's Aᵀ dO
and u dSᵀ). Each row: the output and every gradient (and the final state, for mLSTM and
Aaren) in bf16 against float64 under the noise rule, as the other device checks do.

    OUT=<folder> python3 scripts/device_head_sizes.py [--sizes 64x64,32x32,64x128]
        [--ops GDN,simple GLA,KDA,GLA,mLSTM,Aaren]        # DRY=1: tiny, on the CPU

Writes $OUT/head_sizes[-SIZES-OPS].json; prints one line per row and `all checks passed:
...`. A fault poisons the process's CUDA context: run one op per process to see the rest
(device_pending.sh part 3 does).
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))
DRY = os.environ.get("DRY") == "1"
if DRY:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import device_gdr_profile as gdr  # noqa: E402
import device_mlstm_check as mlstm_check  # noqa: E402
from attnforms.testing import gated_delta_inputs  # noqa: E402

DEVICE = "cpu" if DRY else "cuda"
gdr.device = DEVICE
HEAD_SIZES = "16x16" if DRY else "64x64,32x32,64x128"
OPS = [*gdr.OPS, "mLSTM", "Aaren"]
B, T, H = (1, 40, 2) if DRY else (2, 1000, 4)


def gated_delta_rows(K, V, names):
    rows = []
    for name in names:
        gate, beta = gdr.OPS[name]
        x = gated_delta_inputs(B, T, H, K, V, gate=gate, beta=beta, dtype=torch.float32, device=DEVICE)
        checks = gdr.check_inputs(f"{name} K{K} V{V}", x)
        rows.append(dict(op=name, K=K, V=V, checks=checks,
                         passed=all(c["passed"] for c in checks.values())))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=HEAD_SIZES, help="KxV,KxV,...")
    parser.add_argument("--ops", default=",".join(OPS))
    args = parser.parse_args()
    ops = args.ops.split(",")
    unknown = set(ops) - set(OPS)
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}; known: {OPS}")
    out = os.environ.get("OUT", ".")
    rows = []
    for size in args.sizes.split(","):
        K, V = (int(n) for n in size.split("x"))
        rows += gated_delta_rows(K, V, [name for name in ops if name in gdr.OPS])
        if "mLSTM" in ops:
            rows += mlstm_check.check_mlstm([(B, T, H, K, V)])
        if "Aaren" in ops:
            rows += mlstm_check.check_aaren([(B, T, H, K, V)])
    passed = all(row["passed"] for row in rows)
    default = args.sizes == HEAD_SIZES and ops == OPS
    suffix = "" if default else "-" + "-".join([args.sizes, *ops]).replace(",", "_").replace(" ", "_")
    with open(os.path.join(out, f"head_sizes{suffix}.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name() if not DRY else "cpu", rows=rows,
                       all_checks_passed=passed), f, indent=1, default=str)
    for row in rows:
        if not row["passed"]:
            print("FAILED", json.dumps({k: v for k, v in row.items() if k != "trace"}, default=str)[:600])
    print(f"all checks passed: {passed} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
