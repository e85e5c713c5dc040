"""Development run on the GPU: where the time of our gated delta rule kernels goes.

For each configuration (GDN, simple GLA, KDA, GLA) at S1 and S2: the forward and the
forward + backward (medians of do_bench) and the device time of every kernel in them
(torch.profiler, summed over 5 calls). First, each configuration's output and every
gradient are checked in bf16 against the float64 reference at a small shape with the
noise-relative rule. No peers (their numbers are in BENCHMARKS.md; the comparison run
is `scripts/device_bench.sh`). Writes $OUT/gdr_profile.json.

    OUT=<folder> python3 scripts/device_gdr_profile.py [S1,S2]

$LOG_GATE_PER_STEP (e.g. -2.4) sets the log-gates of the check and the timed inputs to
about that per step (with_decay), for the per-channel kernels' block anchors.
"""
import json
import os
import sys

import torch
from triton.testing import do_bench

import attnforms as af
from attnforms.bench.timing import kernel_times_ms
from attnforms.testing import gated_delta_inputs, noise_relative_check

device = "cuda"
OPS = {"GDN": ("scalar", True), "simple GLA": ("scalar", False), "KDA": ("channel", True),
       "GLA": ("channel", False)}
SHAPES = {"S1": (8, 4096), "S2": (1, 32768), "S3": (2, 16384)}
GRADS = ("q", "k", "v", "g", "beta")


def run(x, form="chunk"):
    return af.gated_delta_rule(**x, scale=128 ** -0.5, impl="triton", form=form).output


def outputs_and_grads(x, do, impl):
    leaves = {n: None if t is None else t.detach().clone().requires_grad_(n in GRADS) for n, t in x.items()}
    o = af.gated_delta_rule(**leaves, scale=128 ** -0.5, impl=impl, form="chunk").output
    o.backward(do.to(o.dtype))
    return {"o": o.detach(), **{f"d{n}": leaves[n].grad for n in GRADS if leaves[n] is not None}}


def check(name, gate, beta):
    x = gated_delta_inputs(2, 1000, 4, 128, 128, gate=gate, beta=beta, dtype=torch.float32, device=device)
    return check_inputs(name, with_decay(x))


def check_inputs(name, x):
    """The output and every gradient of ours in bf16 against float64, under the noise
    rule (the reference run in bf16 sets the allowance), for float32 inputs x."""
    do = torch.randn(*x["v"].shape, device=device)
    gold = outputs_and_grads({n: None if t is None else t.double() for n, t in x.items()}, do.double(), "reference")
    low = {n: None if t is None else t.bfloat16() for n, t in x.items()}
    eager = outputs_and_grads(low, do, "reference")
    ours = outputs_and_grads(low, do, "triton")
    row = {}
    for key in gold:
        result = noise_relative_check(ours[key], gold[key], eager[key], rounding=torch.bfloat16)
        row[key] = {"passed": result.passed, "error": result.error, "eager_error": result.eager_error}
    print(name, row, flush=True)
    return row


def hard_inputs(gate: str, T: int = 4096, D: int = 128) -> dict:
    """The hard case: T tokens, 4 heads, K = V = D, log-gates uniform in [-20, 0] on half
    the heads and every key repeated over runs of 8 tokens (near-singular in-chunk
    systems), float32 on `device`."""
    x = gated_delta_inputs(1, T, 4, D, D, gate=gate, beta=True, dtype=torch.float32, device=device)
    x["g"][:, :, :2] = -20 * torch.rand_like(x["g"][:, :, :2])
    x["k"] = x["k"][:, ::8].repeat_interleave(8, dim=1)
    return x


def decode_fast_path_check():
    """The in-place decode API on CUDA (no host gate check on CUDA) against the
    reference's recurrent form, and a positive log-gate turning into NaN."""
    x = gated_delta_inputs(4, 3, 16, 128, 128, gate="scalar", beta=True, dtype=torch.bfloat16, device=device)
    S = torch.randn(4, 16, 128, 128, device=device) * 0.1
    expected = af.gated_delta_rule(**{n: None if t is None else t.double() for n, t in x.items()},
                                   initial_state=af.LinearState(S.double()), output_final_state=True,
                                   form="recurrent", impl="reference")
    cache = af.LinearState(S.clone())
    o = af.gated_delta_rule_update_(x["q"], x["k"], x["v"], cache, g=x["g"], beta=x["beta"])
    g = x["g"].clone()
    g[0, 1, 3] = 0.5
    poisoned = af.gated_delta_rule_update_(x["q"], x["k"], x["v"], af.LinearState(S.clone()), g=g, beta=x["beta"])
    row = {"output_error": (o.double() - expected.output).abs().max().item(),
           "state_error": (cache.S.double() - expected.final_state.S).abs().max().item(),
           "positive_gate_gives_nan": bool(torch.isnan(poisoned[0, 1:, 3]).all()),
           "other_heads_finite": bool(torch.isfinite(poisoned[:, :, :3]).all())}
    print("decode fast path", row, flush=True)
    return row


def with_decay(x: dict) -> dict:
    """x with its log-gates set to about $LOG_GATE_PER_STEP per step (between 0.9 and 1
    times it, e.g. -2.4: the per-channel kernels then anchor 16-step blocks) where that
    is set; the factory's (about -0.05 per step) otherwise."""
    step = os.environ.get("LOG_GATE_PER_STEP")
    if step and x.get("g") is not None:
        g = x["g"]
        x["g"] = (float(step) * (0.9 + 0.1 * torch.rand(g.shape, device=g.device))).to(g.dtype)
    return x


def time_configuration(shape, name, gate, beta):
    """Forward (no_grad) and forward + backward medians at `shape` (H 16, K = V = 128,
    bf16), and each kernel's device time in both."""
    B, T = SHAPES[shape]
    x = with_decay(gated_delta_inputs(B, T, 16, 128, 128, gate=gate, beta=beta, dtype=torch.bfloat16,
                                      device=device))
    leaves = {n: None if t is None else t.requires_grad_(n in GRADS) for n, t in x.items()}
    do = torch.randn(B, T, 16, 128, device=device, dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            return run(leaves)

    def fwd_bwd():
        run(leaves).backward(do)

    return {"shape": shape, "op": name,
            "fwd_ms": do_bench(fwd, warmup=25, rep=100, return_mode="median"),
            "fwd_bwd_ms": do_bench(fwd_bwd, warmup=25, rep=100, return_mode="median",
                                   grad_to_none=[t for t in leaves.values() if t is not None]),
            "fwd_kernels_ms": kernel_times_ms(fwd),
            "fwd_bwd_kernels_ms": kernel_times_ms(fwd_bwd, grad_to_none=[t for t in leaves.values() if t is not None])}


def time_decode(B):
    """The in-place decode step (`gated_delta_rule_update_`, one bf16 token, float32
    state `[B, 16, 128, 128]`) as the bench times it: median µs, and the state's bytes
    (read + written) per second."""
    x = gated_delta_inputs(B, 1, 16, 128, 128, gate="scalar", beta=True, dtype=torch.bfloat16, device=device)
    cache = af.LinearState(torch.randn(B, 16, 128, 128, device=device) * 0.1)
    ms = do_bench(lambda: af.gated_delta_rule_update_(x["q"], x["k"], x["v"], cache, g=x["g"], beta=x["beta"]),
                  warmup=25, rep=100, return_mode="median")
    return {"shape": f"decode B={B}", "op": "GDN", "fwd_ms": ms, "fwd_bwd_ms": float("nan"),
            "state_TB_per_s": 2 * cache.S.numel() * 4 / (ms * 1e-3) / 1e12}


def main():
    shapes = sys.argv[1].split(",") if len(sys.argv) > 1 else ["S1", "S2"]
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "checks": {}, "timing": []}
    results["decode_fast_path"] = decode_fast_path_check()
    for name, (gate, beta) in OPS.items():
        try:
            results["checks"][name] = check(name, gate, beta)
        except Exception as exc:
            results["checks"][name] = repr(exc)[:300]
            print(name, "check failed", repr(exc)[:300], flush=True)
    for shape in shapes:
        for name, (gate, beta) in OPS.items():
            entry = time_configuration(shape, name, gate, beta)
            results["timing"].append(entry)
            print(json.dumps(entry), flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gdr_profile.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\nshape op fwd_ms fwd_bwd_ms")
    for e in results["timing"]:
        print(e["shape"], e["op"], round(e["fwd_ms"], 3), round(e["fwd_bwd_ms"], 3))


if __name__ == "__main__":
    main()
