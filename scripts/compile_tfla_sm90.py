"""Compile mlstm_kernels' TFLA kernels for the H200 (sm_90) without a GPU, with the
Triton version the GPU machine has: a peer that aborts its process there (an LLVM
assertion while compiling) can be reproduced and its inputs varied here.

    pip install --no-deps --target /tmp/t36 triton==3.6.0
    pip install --no-deps --target /tmp/peers .whl/mlstm_kernels-*.whl .whl/einops-*.whl
    TORCHDYNAMO_DISABLE=1 python scripts/compile_tfla_sm90.py /tmp/t36 /tmp/peers \\
        [chunkwise--triton_xl_chunk] [bfloat16|float32]

Every launch is turned into a compile (no run) for an sm_90 target, on CPU tensors
(B 1, H 2, T 256, K = V = 128, bf16 q, k, v, gates in the dtype named), forward then
backward; each kernel's name is printed before its compile, so an abort names it.
Found with it (session 13): with bf16 gates Triton 3.6 aborts in
`mlstm_chunkwise__parallel_fw_Hintra_kernel` (SLPVectorizer), with float32 gates every
kernel compiles; the bench passes mlstm_kernels float32 gates.
"""
import os
import sys

sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[2])
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sm90_compile_only  # noqa: E402

sm90_compile_only.install()


def main():
    from mlstm_kernels.torch import get_mlstm_kernel

    name = sys.argv[3] if len(sys.argv) > 3 else "chunkwise--triton_xl_chunk"
    gate_dtype = getattr(torch, sys.argv[4] if len(sys.argv) > 4 else "bfloat16")
    kernel = get_mlstm_kernel(name)
    B, H, T, K = 1, 2, 256, 128
    q, k, v = (torch.randn(B, H, T, K, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    i, f = (torch.randn(B, H, T, dtype=gate_dtype, requires_grad=True) for _ in range(2))
    options = dict(normalize=True) if "siging" in name else {}
    h = kernel(q, k, v, i, f, return_last_states=False, eps=1e-6, **options)
    print("forward compiled", flush=True)
    h.float().sum().backward()
    print("backward compiled", flush=True)


if __name__ == "__main__":
    main()
