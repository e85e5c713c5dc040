"""Development run on the GPU: Aaren's chunk kernels under several launch settings of
`attnforms.ops.aaren.triton.launch`, each checked and timed, against the issue's
yardstick measured once in the same process.

    OUT=<folder> python3 scripts/device_aaren_variants.py 'HALF_P=True' 'HALF_P=True;CHUNK_WARPS=8' ...

Each argument is one variant: NAME=VALUE settings of launch's module constants
separated by ';' (values as in launch_settings.apply_variant; the empty string is the
defaults; CHECK=0 skips the checks). Per variant: the bf16 checks of
device_mlstm_check.py (output, final triple and every gradient against the float64
reference under the noise rule, four shapes, chunk and recurrent forms), then forward
and forward + backward at $SHAPES (default S1) with each kernel's device time at S1.
The yardstick (our causal softmax kernel with Aaren's query repeated over the sequence,
the same computation) is timed first and last, so a drift of the process shows. Writes
$OUT/aaren_variants.json. DRY=1: a CPU dry run of the script (interpreter, tiny shapes).

    python3 scripts/device_aaren_variants.py --best <folder>/aaren_variants.json

prints the BENCH_SETTINGS of the fastest variant whose checks passed.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from device_mlstm_check import DEVICE, _timed_pair, check_aaren  # noqa: E402
from launch_settings import apply_variant  # noqa: E402

import attnforms as af  # noqa: E402
from attnforms.bench.shapes import CANONICAL  # noqa: E402
from attnforms.bench.timing import kernel_times_ms  # noqa: E402
from attnforms.ops.aaren.triton import launch  # noqa: E402
from attnforms.testing import aaren_inputs  # noqa: E402

DEFAULTS = {name: value for name, value in vars(launch).items() if name.isupper()}
DRY = os.environ.get("DRY") == "1"
CHECK_SHAPES = ([(1, 65, 2, 32, 32)] if DRY else
                [(2, 256, 4, 128, 128), (1, 4096, 2, 128, 128), (2, 1000, 2, 100, 60), (1, 512, 2, 256, 256)])


def _inputs(shape):
    s = CANONICAL.sequences[shape]
    dims = (1, 128, 2, 32, 32) if DRY else (s.B, s.T, s.H, s.K, s.V)
    return aaren_inputs(*dims, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)


def yardstick(shape):
    """(forward, forward + backward) ms of our causal softmax kernel on Aaren's inputs
    with the query repeated over the sequence."""
    x = _inputs(shape)
    B, T, H, K = x["k"].shape
    q = x["q"][:, None].expand(B, T, H, K)
    return _timed_pair(lambda: af.softmax_attention(q, x["k"], x["v"], causal=True, impl="triton",
                                                    form="parallel").output, list(x.values()), dry=DRY)


def time_variant(shape, profile):
    x = _inputs(shape)
    fn = lambda: af.aaren(**x, impl="triton", form="chunk").output  # noqa: E731
    row = dict(shape=shape)
    row["fwd_ms"], row["fwd_bwd_ms"] = _timed_pair(fn, list(x.values()), dry=DRY)
    if profile and not DRY:
        upstream = torch.randn_like(fn())
        row["kernels_fwd_bwd_ms"] = kernel_times_ms(lambda: torch.autograd.backward(fn(), upstream),
                                                    grad_to_none=list(x.values()))
    return row


def best_settings(path: str) -> str:
    """BENCH_SETTINGS (`aaren:NAME=VALUE;...`) of the variant in a results file with the
    fastest S1 forward + backward among those whose checks passed (a CHECK=0 variant
    counts as passing: the defaults, checked before)."""
    with open(path) as f:
        variants = json.load(f)["variants"]
    timed = [(row["fwd_bwd_ms"], entry["settings"]) for entry in variants
             if entry.get("all_checks_passed", entry["settings"].get("CHECK") == "0")
             for row in entry.get("timing", []) if row["shape"] == "S1"]
    _, settings = min(timed, key=lambda item: item[0])
    return "aaren:" + ";".join(f"{name}={value}" for name, value in settings.items() if name != "CHECK")


def main():
    if sys.argv[1:2] == ["--best"]:
        print(best_settings(sys.argv[2]))
        return
    shapes = os.environ.get("SHAPES", "S1").split(",")
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run)"
    results = {"device": device, "yardstick_first": {}, "variants": []}
    path = os.path.join(os.environ.get("OUT", "."), "aaren_variants.json")

    def save():
        with open(path, "w") as f:
            json.dump(results, f, indent=1)

    results["yardstick_first"] = {shape: yardstick(shape) for shape in shapes}
    print("yardstick", results["yardstick_first"], flush=True)
    for variant in sys.argv[1:]:
        settings = apply_variant(launch, DEFAULTS, variant, own=("CHECK",))
        entry = {"settings": settings}
        print("== variant", settings, flush=True)
        try:
            if settings.get("CHECK") != "0":
                checks = check_aaren(CHECK_SHAPES)
                entry["all_checks_passed"] = all(c.get("passed") for c in checks)
                entry["failed_checks"] = [c for c in checks if not c.get("passed")]
            entry["timing"] = [time_variant(shape, profile=shape == "S1") for shape in shapes]
        except Exception as exc:  # recorded, the run goes on
            entry["failure"] = repr(exc)[:500]
        print(json.dumps({k: v for k, v in entry.items() if k != "failed_checks"})[:1500], flush=True)
        results["variants"].append(entry)
        save()
    apply_variant(launch, DEFAULTS, "")
    results["yardstick_last"] = {shape: yardstick(shape) for shape in shapes}
    save()
    print("\nyardstick first / last:", results["yardstick_first"], results["yardstick_last"])
    for entry in results["variants"]:
        for row in entry.get("timing", []):
            ratio = results["yardstick_first"][row["shape"]][1] / row["fwd_bwd_ms"]
            print(entry["settings"], entry.get("all_checks_passed"), row["shape"], round(row["fwd_ms"], 3),
                  round(row["fwd_bwd_ms"], 3), f"{ratio:.2f}x")


if __name__ == "__main__":
    main()
