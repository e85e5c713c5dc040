"""Development run on the GPU: the gated delta rule's forward under several tilings of
the sequential pass (`launch.STATE_FORWARD`, per gate layout), with each setting's
per-kernel device times. Writes $OUT/gdr_sweep.json.

    OUT=<folder> python3 scripts/device_gdr_sweep.py
"""
import json
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(__file__))
from device_gdr_profile import OPS, SHAPES, kernel_times, run  # noqa: E402

from attnforms.ops.gated_delta.triton import launch  # noqa: E402
from attnforms.ops.gated_delta.triton.launch import StateTiling  # noqa: E402
from attnforms.testing import gated_delta_inputs  # noqa: E402

# Tilings of the sequential forward pass, by gate layout (1: per head, 2: per channel).
SETTINGS = {
    1: [StateTiling(128 * 32, 8, 2), StateTiling(128 * 64, 8, 1), StateTiling(128 * 32, 4, 2),
        StateTiling(128 * 64, 4, 2), StateTiling(128 * 16, 4, 2)],
    2: [StateTiling(128 * 32, 8, 1), StateTiling(128 * 32, 4, 2), StateTiling(128 * 64, 8, 1),
        StateTiling(128 * 16, 4, 2)],
}
CASES = {1: [("S1", "GDN"), ("S1", "simple GLA"), ("S2", "GDN"), ("S2", "simple GLA")],
         2: [("S1", "KDA"), ("S2", "KDA")]}


def main():
    results = {"device": torch.cuda.get_device_name(), "sweep": []}
    default = dict(launch.STATE_FORWARD)
    for gate_mode, tilings in SETTINGS.items():
        for tiling in tilings:
            launch.STATE_FORWARD = {**default, gate_mode: tiling}
            for shape, op in CASES[gate_mode]:
                B, T = SHAPES[shape]
                gate, beta = OPS[op]
                x = gated_delta_inputs(B, T, 16, 128, 128, gate=gate, beta=beta, dtype=torch.bfloat16, device="cuda")

                def fwd():
                    with torch.no_grad():
                        return run(x)

                entry = {"tiling": str(tiling), "shape": shape, "op": op,
                         "fwd_ms": do_bench(fwd, warmup=25, rep=100, return_mode="median"),
                         "kernels_ms": {k: round(v, 4) for k, v in kernel_times(fwd).items() if v > 0.005}}
                results["sweep"].append(entry)
                print(json.dumps(entry), flush=True)
    launch.STATE_FORWARD = default
    with open(os.path.join(os.environ.get("OUT", "."), "gdr_sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\ntiling shape op fwd_ms")
    for e in results["sweep"]:
        print(e["tiling"], e["shape"], e["op"], round(e["fwd_ms"], 3))


if __name__ == "__main__":
    main()
