"""Find the kernel behind an illegal memory access on the GPU, one variant of the op's
launch settings per child process (a fault poisons its CUDA context). Written for the
mLSTM split form's fault (sessions 8-14: the restructured exp forward's split form at S1)
and used since for KDA at head size 32 (session 15):

    python scripts/device_fault.py [--op mlstm|gdn|sgla|kda|gla] [--shape B,T,H]
        [--heads K,V] [--chunk 128 (mlstm)] [--repeats 3]
        [--variant 'NAME=VALUE;NAME=VALUE' ...] [--blocking] [--sanitizer]

Each child runs the op's chunk form (mlstm: exp gate) `--repeats` times forward without
a gradient, then forward + backward, synchronising after each, and prints OK or the
error with the Python line that raised it (with --blocking, CUDA_LAUNCH_BLOCKING=1, so
that line is the faulting launch). A variant sets the op's launch module's constants
(mlstm: ops/mlstm/triton/launch.py, the others ops/gated_delta/triton/launch.py).
--sanitizer runs each child under compute-sanitizer when the machine has it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


# The gated delta rule's families: (gate layout, beta).
GATED_DELTA = {"gdn": ("scalar", True), "sgla": ("scalar", False), "kda": ("channel", True),
               "gla": ("channel", False)}


def op_call(op, shape, heads, chunk, device):
    """(launch module, a function running the op's chunk form once -> its output) on
    bf16 inputs that require gradients."""
    import torch
    import attnforms as af
    from attnforms.testing import gated_delta_inputs, mlstm_inputs
    B, T, H = shape
    K, V = heads
    if op == "mlstm":
        from attnforms.ops.mlstm.triton import launch
        x = mlstm_inputs(B, T, H, K, V, dtype=torch.bfloat16, device=device, requires_grad=True)
        return launch, lambda: af.mlstm(**x, input_gate="exp", chunk_size=chunk, impl="triton",
                                        form="chunk").output
    from attnforms.ops.gated_delta.triton import launch
    gate, beta = GATED_DELTA[op]
    x = gated_delta_inputs(B, T, H, K, V, gate=gate, beta=beta, dtype=torch.bfloat16, device=device)
    x = {n: None if t is None else t.requires_grad_() for n, t in x.items()}
    return launch, lambda: af.gated_delta_rule(**x, impl="triton", form="chunk").output


def child(op, shape, heads, chunk, repeats, variant):
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    sys.path.insert(0, HERE)
    from launch_settings import apply_variant
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run under the interpreter
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    launch, call = op_call(op, shape, heads, chunk, device)
    apply_variant(launch, {}, variant, own=())
    step = "setup"
    try:
        for r in range(repeats):
            step = f"forward {r}"
            with torch.no_grad():
                call()
            sync()
        for r in range(repeats):
            step = f"forward + backward {r}"
            call().float().square().mean().backward()
            sync()
        print(f"OK {op} {variant!r} chunk {chunk} shape {shape} heads {heads}", flush=True)
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "attnforms" in f.filename]
        where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.line}" for f in frames[-3:])
        print(f"FAULT {op} {variant!r} chunk {chunk} at {step}: {type(exc).__name__}: {str(exc)[:160]} | {where}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="mlstm", choices=["mlstm", *GATED_DELTA])
    parser.add_argument("--shape", default="8,4096,16")
    parser.add_argument("--heads", default="128,128", help="K,V")
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--blocking", action="store_true")
    parser.add_argument("--sanitizer", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    heads = tuple(int(s) for s in args.heads.split(","))
    if args.child is not None:
        return child(args.op, shape, heads, args.chunk, args.repeats, args.child)
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1") if args.blocking else dict(os.environ)
    sanitizer = shutil.which("compute-sanitizer") or (
        "/usr/local/cuda/bin/compute-sanitizer" if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") else None)
    if args.sanitizer and sanitizer is None:
        print("no compute-sanitizer on this machine", flush=True)
    for variant in args.variant or [""]:
        command = [sys.executable, __file__, "--op", args.op, "--shape", args.shape, "--heads", args.heads,
                   "--chunk", str(args.chunk),
                   "--repeats", str(args.repeats), "--child", variant]
        if args.sanitizer and sanitizer:
            command = [sanitizer, "--print-limit", "5", *command]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [l for l in (result.stdout + result.stderr).splitlines()
                 if l.startswith(("OK", "FAULT", "=========")) and "warning" not in l.lower()]
        print("\n".join(lines[:14]) or f"exit {result.returncode}: {result.stderr[-400:]}", flush=True)


if __name__ == "__main__":
    main()
