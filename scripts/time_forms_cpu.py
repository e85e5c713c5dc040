"""CPU wall time of the chunk form against the recurrent form, every family.

    python scripts/time_forms_cpu.py [--T 4096]

B=1, H=4, K=V=64, float32 inputs, reference implementation; median of 3 runs after a
warm-up on a short prefix. A measurement for the notes, not a test: timings vary with
the machine and its load.
"""
import argparse
import statistics
import time

import torch

import attnforms as af
from attnforms.testing import aaren_inputs, gated_delta_inputs, mlstm_inputs, softmax_inputs


def cases(T: int):
    shape = dict(B=1, T=T, H=4, K=64, V=64, dtype=torch.float32)
    yield "softmax_attention causal", af.softmax_attention, softmax_inputs(**shape), {}
    yield "softmax_attention window 256", af.softmax_attention, softmax_inputs(**shape), dict(window=256)
    for gate in ("none", "scalar", "channel"):
        for beta in (False, True):
            inputs = gated_delta_inputs(**shape, gate=gate, beta=beta)
            yield f"gated_delta_rule g={gate} beta={'yes' if beta else 'no'}", af.gated_delta_rule, inputs, {}
    for gate in ("exp", "sigmoid"):
        yield f"mlstm {gate}", af.mlstm, mlstm_inputs(**shape), dict(input_gate=gate)
    yield "aaren", af.aaren, aaren_inputs(**shape), {}


def seconds(op, inputs, options, form, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        op(**inputs, **options, form=form)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=4096)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={args.T}")
    print(f"{'op':<36} {'chunk s':>9} {'recurrent s':>12} {'ratio':>7}")
    with torch.no_grad():
        for name, op, inputs, options in cases(args.T):
            short = {n: x if n == "q" and x.ndim == 3 else (None if x is None else x[:, :64]) for n, x in inputs.items()}
            for form in ("chunk", "recurrent"):
                op(**short, **options, form=form)
            chunk = seconds(op, inputs, options, "chunk")
            recurrent = seconds(op, inputs, options, "recurrent")
            print(f"{name:<36} {chunk:>9.3f} {recurrent:>12.3f} {recurrent / chunk:>6.1f}x")


if __name__ == "__main__":
    main()
