"""Find the mLSTM kernel behind the illegal memory access seen on the GPU (sessions 8 and
10: the restructured exp forward's split form at S1, once at chunk 64 with 8 warps, once at
chunk 128), one variant per child process (a fault poisons its CUDA context):

    python scripts/device_mlstm_fault.py [--shape B,T,H] [--chunk 128] [--repeats 3]
        [--variant 'NAME=VALUE;NAME=VALUE' ...] [--blocking] [--sanitizer]

Each child runs the exp-gate chunk form `--repeats` times forward without a gradient, then
forward + backward, synchronising after each, and prints OK or the error with the Python
line that raised it (with --blocking, CUDA_LAUNCH_BLOCKING=1, so that line is the faulting
launch). --sanitizer runs each child under compute-sanitizer when the machine has it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def child(shape, chunk, repeats, variant):
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    sys.path.insert(0, HERE)
    import attnforms as af
    from attnforms.ops.mlstm.triton import launch
    from attnforms.testing import mlstm_inputs
    from launch_settings import apply_variant
    apply_variant(launch, {}, variant, own=())
    B, T, H = shape
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run under the interpreter
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    x = mlstm_inputs(B, T, H, 128, 128, dtype=torch.bfloat16, device=device, requires_grad=True)
    step = "setup"
    try:
        for r in range(repeats):
            step = f"forward {r}"
            with torch.no_grad():
                af.mlstm(**x, input_gate="exp", chunk_size=chunk, impl="triton", form="chunk")
            sync()
        for r in range(repeats):
            step = f"forward + backward {r}"
            out = af.mlstm(**x, input_gate="exp", chunk_size=chunk, impl="triton", form="chunk").output
            out.float().square().mean().backward()
            sync()
        print(f"OK {variant!r} chunk {chunk} shape {shape}", flush=True)
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "attnforms" in f.filename]
        where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.line}" for f in frames[-3:])
        print(f"FAULT {variant!r} chunk {chunk} at {step}: {type(exc).__name__}: {str(exc)[:160]} | {where}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8,4096,16")
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--blocking", action="store_true")
    parser.add_argument("--sanitizer", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if args.child is not None:
        return child(shape, args.chunk, args.repeats, args.child)
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1") if args.blocking else dict(os.environ)
    sanitizer = shutil.which("compute-sanitizer") or (
        "/usr/local/cuda/bin/compute-sanitizer" if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") else None)
    if args.sanitizer and sanitizer is None:
        print("no compute-sanitizer on this machine", flush=True)
    for variant in args.variant or [""]:
        command = [sys.executable, __file__, "--shape", args.shape, "--chunk", str(args.chunk),
                   "--repeats", str(args.repeats), "--child", variant]
        if args.sanitizer and sanitizer:
            command = [sanitizer, "--print-limit", "5", *command]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [l for l in (result.stdout + result.stderr).splitlines()
                 if l.startswith(("OK", "FAULT", "=========")) and "warning" not in l.lower()]
        print("\n".join(lines[:14]) or f"exit {result.returncode}: {result.stderr[-400:]}", flush=True)


if __name__ == "__main__":
    main()
