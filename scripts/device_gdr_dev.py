"""Development run on the GPU for the gated delta rule Triton kernels (forward only):
correctness against the float64 reference, then forward times against fla at the
canonical shapes, and single-token decode times. Writes $OUT/gdr_dev.json.

    python3 scripts/device_gdr_dev.py
"""
import json
import os
import time

import torch
import triton
from triton.testing import do_bench

import attnforms as af
from attnforms.ops.gated_delta.triton.launch import chunk_forward, recurrent_forward
from attnforms.testing import gated_delta_inputs, max_error

device = "cuda"
results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
try:
    import fla
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    from fla.ops.gla import chunk_gla
    from fla.ops.kda import chunk_kda
    from fla.ops.simple_gla import chunk_simple_gla
    results["fla"] = fla.__version__
    FLA = {
        ("channel", True): lambda x, s: chunk_kda(x["q"], x["k"], x["v"], x["g"], x["beta"], scale=s)[0],
        ("scalar", True): lambda x, s: chunk_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], scale=s)[0],
        ("scalar", False): lambda x, s: chunk_simple_gla(x["q"], x["k"], x["v"], g=x["g"], scale=s)[0],
        ("channel", False): lambda x, s: chunk_gla(x["q"], x["k"], x["v"], x["g"], scale=s)[0],
    }
except Exception as exc:  # peers are optional
    results["fla"] = f"unavailable: {exc!r}"
    FLA = {}
NAMES = {("channel", True): "KDA", ("scalar", True): "GDN", ("scalar", False): "simple GLA",
         ("channel", False): "GLA", ("none", True): "DeltaNet", ("none", False): "linear"}


def ours(x, scale, form="chunk"):
    return af.gated_delta_rule(**x, scale=scale, impl="triton", form=form).output


# 1. correctness, bf16, against the float64 reference on the GPU
rows = []
for (B, T, H, K, V) in [(2, 1000, 4, 128, 128), (1, 777, 3, 100, 60), (1, 300, 2, 256, 256)]:
    for gate in ("none", "scalar", "channel"):
        for beta in (False, True):
            x = gated_delta_inputs(B, T, H, K, V, gate=gate, beta=beta, dtype=torch.float32, device=device)
            gold = af.gated_delta_rule(**{n: None if t is None else t.double() for n, t in x.items()}, impl="reference", form="chunk").output
            low = {n: None if t is None else t.bfloat16() for n, t in x.items()}
            eager = af.gated_delta_rule(**low, impl="reference", form="chunk").output
            row = {"shape": [B, T, H, K, V], "op": NAMES[(gate, beta)], "eager_err": max_error(eager, gold),
                   "rounding": torch.finfo(torch.bfloat16).eps * gold.abs().max().item()}
            for form in ("chunk", "recurrent"):
                row[f"ours_{form}_err"] = max_error(ours(low, K ** -0.5, form), gold)
            if (gate, beta) in FLA and K <= 256:
                try:
                    row["fla_err"] = max_error(FLA[(gate, beta)](low, K ** -0.5), gold)
                except Exception as exc:
                    row["fla_err"] = repr(exc)[:200]
            bound = 2 * row["eager_err"] + row["rounding"]
            row["pass"] = all(row[f"ours_{f}_err"] <= bound for f in ("chunk", "recurrent"))
            rows.append(row)
            print(row, flush=True)
results["correctness"] = rows

# 2. forward times at the canonical shapes
timing = []
for shape, (B, T) in {"S1": (8, 4096), "S2": (1, 32768), "S3": (2, 16384)}.items():
    for key in [("channel", True), ("scalar", True), ("scalar", False), ("channel", False)]:
        x = gated_delta_inputs(B, T, 16, 128, 128, gate=key[0], beta=key[1], dtype=torch.bfloat16, device=device)
        entry = {"shape": shape, "op": NAMES[key]}
        start = time.perf_counter()
        ours(x, 128 ** -0.5)
        torch.cuda.synchronize()
        entry["ours_first_call_s"] = time.perf_counter() - start
        entry["ours_ms"] = do_bench(lambda: ours(x, 128 ** -0.5), warmup=25, rep=100, return_mode="median")
        args = [x[n] for n in ("q", "k", "v", "g", "beta") if x[n] is not None]
        entry["ours_launch_ms"] = do_bench(lambda: chunk_forward(*args[:3], x["g"], x["beta"], 128 ** -0.5, None, False, None, 64), warmup=25, rep=100, return_mode="median")
        if key in FLA:
            try:
                FLA[key](x, 128 ** -0.5)
                entry["fla_ms"] = do_bench(lambda: FLA[key](x, 128 ** -0.5), warmup=25, rep=100, return_mode="median")
                entry["ratio_fla_over_ours"] = entry["fla_ms"] / entry["ours_ms"]
            except Exception as exc:
                entry["fla_ms"] = repr(exc)[:200]
        timing.append(entry)
        print(entry, flush=True)
        del x
results["forward"] = timing

# 3. decode: one token, state in and out
decode = []
for B in (1, 64, 256):
    x = gated_delta_inputs(B, 1, 16, 128, 128, gate="scalar", beta=True, dtype=torch.bfloat16, device=device)
    state = af.LinearState(torch.randn(B, 16, 128, 128, device=device))
    entry = {"B": B}
    entry["ours_api_us"] = 1e3 * do_bench(lambda: af.gated_delta_rule(**x, initial_state=state, output_final_state=True, impl="triton", form="recurrent"), warmup=25, rep=100, return_mode="median")
    entry["ours_launch_us"] = 1e3 * do_bench(lambda: recurrent_forward(x["q"], x["k"], x["v"], x["g"], x["beta"], 128 ** -0.5, state.S, True, None, final_out=state.S), warmup=25, rep=100, return_mode="median")
    entry["floor_us"] = 2 * B * 16 * 128 * 128 * 4 / 4.24e12 * 1e6
    if FLA:
        try:
            entry["fla_us"] = 1e3 * do_bench(lambda: fused_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], scale=128 ** -0.5, initial_state=state.S, output_final_state=True), warmup=25, rep=100, return_mode="median")
        except Exception as exc:
            entry["fla_us"] = repr(exc)[:200]
    decode.append(entry)
    print(entry, flush=True)
results["decode"] = decode

out = os.environ.get("OUT", ".")
with open(os.path.join(out, "gdr_dev.json"), "w") as f:
    json.dump(results, f, indent=1)
print(json.dumps({"forward": timing, "decode": decode}, indent=0))
