"""Development run on the GPU: softmax_attention's Triton backward under several tile
settings of `attnforms.ops.softmax.triton.launch`, each checked and timed.

    OUT=<folder> python3 scripts/device_softmax_variants.py '' 'DKDV_TILES={128: (32, 64, 8, 2)}' ...

Each argument is one variant: NAME=VALUE settings of launch's module constants (a value
is a Python expression; a dict value updates the table), separated by ';' (CHECK=0 skips
the checks). Per variant: the bf16 checks against float64 of device_softmax_check.py for
causal, window and ALiBi with its slopes' gradient (B 2, T 1024, H 16, D 128), then
forward + backward at S1 (B 8, T 4096, H 16, D 128) for causal, window 1024 and ALiBi,
with each kernel's device time. Writes $OUT/softmax_variants.json.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from device_softmax_check import alibi_mod, bench, check, draw, fwd_bwd  # noqa: E402
from launch_settings import apply_variant  # noqa: E402

from attnforms.bench.timing import kernel_times_ms  # noqa: E402
from attnforms.ops.softmax.api import softmax_attention  # noqa: E402
from attnforms.ops.softmax.triton import launch  # noqa: E402

device = torch.device("cuda")
DEFAULTS = {name: value for name, value in vars(launch).items() if name.isupper()}


def apply(variant: str) -> dict:
    """Reset launch's constants, then apply `NAME=VALUE;...` (dicts update the default
    table; launch_settings.apply_variant); CHECK is the script's own."""
    return apply_variant(launch, DEFAULTS, variant, own=("CHECK",))


def checks():
    B, T, H, D = 2, 1024, 16, 128
    base = draw(B, T, H, D, dtype=torch.float32, device=device)
    slopes = 2.0 ** -torch.arange(1, H + 1, device=device, dtype=torch.float32)
    return [
        check("causal", base, dtype=torch.bfloat16),
        check("window", base, dtype=torch.bfloat16, make_kwargs=lambda e: dict(window=256)),
        check("alibi (+dslopes)", base, dtype=torch.bfloat16, extra=dict(slopes=slopes),
              make_kwargs=lambda e: dict(score_mod=alibi_mod(e["slopes"]))),
    ]


def timings():
    B, T, H, D = 8, 4096, 16, 128
    x = {n: t.requires_grad_(True) for n, t in draw(B, T, H, D, dtype=torch.bfloat16, device=device).items()}
    slopes = 2.0 ** -torch.arange(1, H + 1, device=device, dtype=torch.float32)
    rows = []
    for name, kwargs in (("causal", {}), ("window 1024", dict(window=1024)),
                         ("alibi", dict(score_mod=alibi_mod(slopes)))):
        fn = lambda kwargs=kwargs: softmax_attention(**x, impl="triton", form="parallel", **kwargs).output  # noqa: E731
        step = fwd_bwd(fn, list(x.values()))
        row = dict(op=name, fwd_bwd_ms=bench(step, device, False),
                   kernels_ms={k[:40]: round(v, 3) for k, v in kernel_times_ms(step).items() if v > 0.02})
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    results = {"device": torch.cuda.get_device_name(), "variants": []}
    for variant in sys.argv[1:]:
        entry = {"settings": apply(variant)}
        print("== variant", entry["settings"], flush=True)
        try:
            if entry["settings"].get("CHECK") != "0":
                entry["checks"] = checks()
            entry["timing"] = timings()
        except Exception as exc:  # recorded, the run goes on
            entry["error"] = repr(exc)[:500]
            print("variant failed", entry["error"], flush=True)
        results["variants"].append(entry)
        with open(os.path.join(os.environ.get("OUT", "."), "softmax_variants.json"), "w") as f:
            json.dump(results, f, indent=1)
    print("\nvariant op fwd_bwd_ms")
    for entry in results["variants"]:
        for row in entry.get("timing", []):
            print(entry["settings"], row["op"], round(row["fwd_bwd_ms"], 3), row["kernels_ms"])


if __name__ == "__main__":
    main()
