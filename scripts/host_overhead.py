"""The host cost of one decoding step of each recurrent kernel: the Python between the
call and the launch (validation, dispatch, allocation), with every Triton launch
replaced by a no-op, on CPU tensors. At B = 1 this cost, not the kernel, is most of a
step on the GPU (bench/NOTES-mlstm.md, decode against mlstm_kernels' bare kernel call).

    TRITON_INTERPRET=1 python scripts/host_overhead.py

Prints microseconds per call (the fastest of 25 rounds of 300 calls), under torch.no_grad()
and in grad mode with inputs that need no gradient.
"""
import os
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import attnforms as af  # noqa: E402
from attnforms.testing import aaren_inputs, gated_delta_inputs, mlstm_inputs  # noqa: E402

# Every kernel launch `kernel[grid](...)` becomes a no-op: what is left is the host's part.
JITFunction.__getitem__ = lambda self, grid: (lambda *args, **kwargs: None)
InterpretedFunction.__getitem__ = lambda self, grid: (lambda *args, **kwargs: None)


def per_call_us(fn, calls=300, rounds=25) -> float:
    """The fastest round's µs per call: on a shared machine other work only ever adds
    time, and the median of a few rounds moved by up to 50% between runs."""
    for _ in range(100):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return min(times)


def steps(B=1, H=16, K=128, V=128):
    """name -> a one-token step from a state, bf16 inputs as in the bench's decode rows."""
    x = mlstm_inputs(B, 1, H, K, V, dtype=torch.bfloat16)
    mlstm_state = af.MLSTMState(torch.zeros(B, H, K, V), torch.zeros(B, H, K), torch.zeros(B, H))
    g = gated_delta_inputs(B, 1, H, K, V, gate="scalar", beta=True, dtype=torch.bfloat16)
    gdn_state = af.LinearState(torch.zeros(B, H, K, V))
    a = aaren_inputs(B, 1, H, K, V, dtype=torch.bfloat16)
    aaren_state = af.AarenState(torch.zeros(B, H), torch.ones(B, H), torch.zeros(B, H, V))
    common = dict(output_final_state=True, impl="triton", form="recurrent")
    return {
        "mlstm (exp gate)": lambda: af.mlstm(**x, input_gate="exp", initial_state=mlstm_state, **common),
        "gated delta rule (GDN)": lambda: af.gated_delta_rule(**g, initial_state=gdn_state, **common),
        "aaren": lambda: af.aaren(**a, initial_state=aaren_state, **common),
    }


def main():
    for name, step in steps().items():
        with torch.no_grad():
            no_grad = per_call_us(step)
        grad_mode = per_call_us(step)
        print(f"{name:24s} no_grad {no_grad:6.1f} us   grad mode {grad_mode:6.1f} us")


if __name__ == "__main__":
    main()
