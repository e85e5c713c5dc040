"""Development run on the GPU: the gated delta rule's forward under several launcher
settings (module constants of triton/launch.py: the sequential pass's tiling per gate
layout, the preparation's warps), each with its per-kernel device times, and the decode
step (`gated_delta_rule_update_`) under several recurrent tilings. Writes
$OUT/gdr_sweep.json.

    OUT=<folder> python3 scripts/device_gdr_sweep.py
"""
import json
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(__file__))
from device_gdr_profile import OPS, SHAPES, run  # noqa: E402

import attnforms as af  # noqa: E402
from attnforms.bench.timing import kernel_times_ms  # noqa: E402
from attnforms.ops.gated_delta.triton import launch  # noqa: E402
from attnforms.ops.gated_delta.triton.launch import StateTiling  # noqa: E402
from attnforms.testing import gated_delta_inputs  # noqa: E402

# (launch constant, value) settings, each timed on its cases.
FORWARD = [
    ({"PREPARE_WARPS": 4}, [("S1", "GDN")]),
    ({"PREPARE_WARPS": 8}, [("S1", "GDN")]),
    ({"STATE_FORWARD": {(1, True): StateTiling(128 * 64, 4, 2)}}, [("S1", "GDN"), ("S1", "simple GLA"), ("S2", "GDN")]),
    ({"STATE_FORWARD": {(1, True): StateTiling(128 * 32, 4, 2)}}, [("S1", "GDN"), ("S1", "simple GLA")]),
    ({"STATE_FORWARD": {(1, True): StateTiling(128 * 16, 4, 2)}}, [("S1", "GDN"), ("S1", "simple GLA")]),
    ({"STATE_FORWARD": {(1, True): StateTiling(128 * 64, 4, 3)}}, [("S1", "GDN"), ("S1", "simple GLA")]),
    ({"STATE_FORWARD": {(2, True): StateTiling(128 * 32, 8, 1)}}, [("S1", "KDA"), ("S2", "KDA")]),
    ({"STATE_FORWARD": {(2, True): StateTiling(128 * 32, 4, 2)}}, [("S1", "KDA")]),
    ({"STATE_FORWARD": {(2, True): StateTiling(128 * 64, 4, 2)}}, [("S1", "KDA")]),
]
DECODE = [(128 * 32, 4), (128 * 64, 4), (128 * 64, 8), (128 * 16, 4), (128 * 32, 2), (128 * 128, 8)]


def apply(setting: dict, defaults: dict) -> None:
    for name, value in defaults.items():
        setattr(launch, name, value)
    for name, value in setting.items():
        setattr(launch, name, {**defaults[name], **value} if isinstance(value, dict) else value)


def forward_entry(setting, shape, op):
    B, T = SHAPES[shape]
    gate, beta = OPS[op]
    x = gated_delta_inputs(B, T, 16, 128, 128, gate=gate, beta=beta, dtype=torch.bfloat16, device="cuda")

    def fwd():
        with torch.no_grad():
            return run(x)

    return {"setting": str(setting), "shape": shape, "op": op,
            "fwd_ms": do_bench(fwd, warmup=25, rep=100, return_mode="median"),
            "kernels_ms": {k[:40]: round(v, 4) for k, v in kernel_times_ms(fwd).items() if v > 0.01}}


def decode_entry(elements, warps, B):
    launch.RECURRENT_ELEMENTS, launch.RECURRENT_WARPS = elements, warps
    x = gated_delta_inputs(B, 1, 16, 128, 128, gate="scalar", beta=True, dtype=torch.bfloat16, device="cuda")
    state = af.LinearState(torch.zeros(B, 16, 128, 128, device="cuda"))

    def step():
        return af.gated_delta_rule_update_(x["q"], x["k"], x["v"], state, g=x["g"], beta=x["beta"])

    return {"decode": f"elements={elements} warps={warps}", "B": B,
            "us": 1e3 * do_bench(step, warmup=25, rep=100, return_mode="median")}


def main():
    results = {"device": torch.cuda.get_device_name(), "forward": [], "decode": []}
    defaults = {"PREPARE_WARPS": launch.PREPARE_WARPS, "STATE_FORWARD": dict(launch.STATE_FORWARD)}
    for setting, cases in FORWARD:
        apply(setting, defaults)
        for shape, op in cases:
            try:
                entry = forward_entry(setting, shape, op)
            except Exception as exc:  # one failing setting should not hide the others
                entry = {"setting": str(setting), "shape": shape, "op": op, "error": repr(exc)[:300]}
            results["forward"].append(entry)
            print(json.dumps(entry), flush=True)
    apply({}, defaults)
    decode_defaults = (launch.RECURRENT_ELEMENTS, launch.RECURRENT_WARPS)
    for elements, warps in DECODE:
        for B in (1, 64, 256):
            entry = decode_entry(elements, warps, B)
            results["decode"].append(entry)
            print(json.dumps(entry), flush=True)
    launch.RECURRENT_ELEMENTS, launch.RECURRENT_WARPS = decode_defaults
    with open(os.path.join(os.environ.get("OUT", "."), "gdr_sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\nsetting shape op fwd_ms")
    for e in results["forward"]:
        print(e["setting"], e["shape"], e["op"], round(e.get("fwd_ms", float("nan")), 3), e.get("kernels_ms", e.get("error")))
    for e in results["decode"]:
        print(e["decode"], "B", e["B"], round(e["us"], 1), "us")


if __name__ == "__main__":
    main()
