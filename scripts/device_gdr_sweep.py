"""Development run on the GPU: the gated delta rule's forward and forward + backward
under several launcher tile settings (module constants of triton/launch.py), with each
setting's per-kernel device times. The profile script's correctness check runs first,
at the default setting. Writes $OUT/gdr_sweep.json.

    OUT=<folder> python3 scripts/device_gdr_sweep.py
"""
import json
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(__file__))
from device_gdr_profile import GRADS, OPS, SHAPES, check, kernel_times, run  # noqa: E402

from attnforms.ops.gated_delta.triton import launch  # noqa: E402
from attnforms.ops.gated_delta.triton.launch import StateTiling  # noqa: E402
from attnforms.testing import gated_delta_inputs  # noqa: E402

SETTINGS = [
    {},
    {"STATE_FORWARD": StateTiling(128 * 64, 4, 3), "STATE_BACKWARD": StateTiling(128 * 64, 4, 2)},
    {"STATE_FORWARD": StateTiling(128 * 32, 4, 2), "STATE_BACKWARD": StateTiling(128 * 32, 4, 2)},
    {"STATE_FORWARD_CHANNEL": StateTiling(128 * 32, 4, 2), "BWD_WARPS": 4, "BWD_STAGES": 1},
]
CASES = [("S1", "GDN"), ("S1", "simple GLA"), ("S1", "KDA"), ("S2", "GDN")]


def main():
    results = {"device": torch.cuda.get_device_name(), "checks": {}, "sweep": []}
    for name in ("GDN", "KDA"):
        results["checks"][name] = check(name, *OPS[name])
    defaults = {name: getattr(launch, name) for setting in SETTINGS for name in setting}
    for setting in SETTINGS:
        for name, value in {**defaults, **setting}.items():
            setattr(launch, name, value)
        for shape, op in CASES:
            B, T = SHAPES[shape]
            gate, beta = OPS[op]
            x = gated_delta_inputs(B, T, 16, 128, 128, gate=gate, beta=beta, dtype=torch.bfloat16, device="cuda")
            leaves = {n: None if t is None else t.requires_grad_(n in GRADS) for n, t in x.items()}
            do = torch.randn(B, T, 16, 128, device="cuda", dtype=torch.bfloat16)

            def fwd():
                with torch.no_grad():
                    return run(leaves)

            def fwd_bwd():
                run(leaves).backward(do)

            entry = {"setting": {k: str(v) for k, v in setting.items()}, "shape": shape, "op": op,
                     "fwd_ms": do_bench(fwd, warmup=25, rep=100, return_mode="median"),
                     "fwd_bwd_ms": do_bench(fwd_bwd, warmup=25, rep=100, return_mode="median",
                                            grad_to_none=[t for t in leaves.values() if t is not None]),
                     "kernels_ms": {k: round(v, 4) for k, v in kernel_times(fwd_bwd).items() if v > 0.01}}
            results["sweep"].append(entry)
            print(json.dumps(entry), flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gdr_sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\nsetting shape op fwd_ms fwd_bwd_ms")
    for e in results["sweep"]:
        print(e["setting"], e["shape"], e["op"], round(e["fwd_ms"], 3), round(e["fwd_bwd_ms"], 3))


if __name__ == "__main__":
    main()
