"""Development run on the GPU: the same gated delta configurations under several launch
settings of `attnforms.ops.gated_delta.triton.launch`, each checked and timed.

    OUT=<folder> python3 scripts/device_gdr_variants.py 'DENSE_PREPARE_PRECISION=tf32;PREPARE_WARPS=4' ...

Each argument is one variant: NAME=VALUE settings of launch's module constants,
separated by ';' (the script's own: CHECK=0 skips the checks, SHAPES=S1+S2 picks the
shapes, `decode` among them the GDN decode step at B 1 / 64 / 256; default $SHAPES or
S1+S2). Per variant: the bf16 check of device_gdr_profile.py (output
and every gradient against float64 under the noise rule) for GDN and simple GLA, a hard
check of GDN (T 4096, log-gates down to -20 per step, runs of repeated keys), then the
forward and forward + backward at S1 and S2 with each kernel's device time. $OPS picks
other configurations: OPS='KDA,GLA' (names as in ALL_OPS). Writes
$OUT/gdr_variants.json.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from device_gdr_profile import check, check_inputs, hard_inputs, time_configuration, time_decode  # noqa: E402
from launch_settings import apply_variant  # noqa: E402

from attnforms.ops.gated_delta.triton import launch  # noqa: E402

device = "cuda"
ALL_OPS = {"GDN": ("scalar", True), "simple GLA": ("scalar", False), "KDA": ("channel", True),
           "GLA": ("channel", False)}
# $OPS picks the configurations (default GDN,simple GLA).
OPS = {name: ALL_OPS[name] for name in os.environ.get("OPS", "GDN,simple GLA").split(",")}


DEFAULTS = {name: value for name, value in vars(launch).items() if name.isupper()}


def apply(variant: str) -> dict:
    """Reset launch's constants to their defaults, then set them from `NAME=VALUE;...`
    (launch_settings.apply_variant); CHECK and SHAPES are the script's own."""
    return apply_variant(launch, DEFAULTS, variant)


def hard_check():
    """GDN in device_gdr_profile's hard case (T 4096, log-gates down to -20, repeated keys)."""
    return check_inputs("hard", hard_inputs("scalar"))


def timings(shapes):
    rows = []
    for shape in shapes:
        if shape == "decode":  # the GDN decode step at the bench's batches
            for B in (1, 64, 256):
                rows.append(time_decode(B))
                print(json.dumps(rows[-1]), flush=True)
            continue
        for name, (gate, beta) in OPS.items():
            rows.append(time_configuration(shape, name, gate, beta))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    results = {"device": torch.cuda.get_device_name(), "variants": []}
    for variant in sys.argv[1:]:
        entry = {"settings": apply(variant), "checks": {}}
        print("== variant", entry["settings"], flush=True)
        for name, (gate, beta) in OPS.items():
            if entry["settings"].get("CHECK") == "0":
                break
            try:
                entry["checks"][name] = check(name, gate, beta)
            except Exception as exc:  # recorded, the run goes on
                entry["checks"][name] = repr(exc)[:300]
                print(name, "check failed", repr(exc)[:300], flush=True)
        try:
            if entry["settings"].get("CHECK") != "0":
                entry["checks"]["hard"] = hard_check()
        except Exception as exc:
            entry["checks"]["hard"] = repr(exc)[:300]
            print("hard check failed", repr(exc)[:300], flush=True)
        shapes = entry["settings"].get("SHAPES", os.environ.get("SHAPES", "S1+S2"))
        entry["timing"] = timings(shapes.split("+"))
        results["variants"].append(entry)
        with open(os.path.join(os.environ.get("OUT", "."), "gdr_variants.json"), "w") as f:
            json.dump(results, f, indent=1)
    print("\nvariant shape op fwd_ms fwd_bwd_ms")
    for entry in results["variants"]:
        for row in entry["timing"]:
            print(entry["settings"], row["shape"], row["op"], round(row["fwd_ms"], 3), round(row["fwd_bwd_ms"], 3))


if __name__ == "__main__":
    main()
