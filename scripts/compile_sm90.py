"""Compile our Triton kernels for the H200 (sm_90) on a machine without a GPU, with the
Triton version the GPU machine has, and report each kernel's shared memory, registers
and spills, and how many of its programs fit on a multiprocessor at once. Catches
compile errors and shared-memory overflows at no device time.

    pip install --no-deps --target /tmp/triton36 triton==3.6.0
    python scripts/compile_sm90.py /tmp/triton36 [NAME=VALUE ...] [case ...]

NAME=VALUE (or family.NAME=VALUE, family one of gated_delta, softmax, mlstm, aaren) sets
a module constant of the launcher that has it first (e.g. BWD_BK=64,
STATE_BACKWARD={(1,True):StateTiling(8192,8,2)}, DENSE_PREPARE_PRECISION=tf32), to compare tile choices; a case is a substring of the case names (e.g. "K128 V128").

How: Triton's launch path is kept, but the active driver is replaced by one that
reports an sm_90 target, and every launch is turned into a warm-up (compile, no run);
the launchers run on CPU tensors whose contents never matter. Registers and spills come
from the bundled ptxas run on each kernel's PTX. With DUMP_IR=<folder> in the
environment each kernel's TTGIR and PTX are written there too (<kernel>.ttgir/.ptx) and
the count of layout conversions through shared memory is printed: a loop that converts
a tile every step is a common hidden cost. With TRACE=1 a failed compile prints its
cause's whole traceback.
"""
import itertools
import os
import re
import subprocess
import sys
import tempfile
import traceback

sys.path.insert(0, sys.argv[1])
import triton  # noqa: E402  (the version under argv[1])

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sm90_compile_only  # noqa: E402
from launch_settings import apply_variant  # noqa: E402

SHARED_LIMIT = 232448  # bytes per block on sm_90 (Triton's OutOfResources bound)
compiled = []
sm90_compile_only.install(lambda name, kernel: compiled.append((name, kernel)))


def programs_per_multiprocessor(warps: int, regs: int, shared: int) -> int:
    """How many programs of a kernel fit on one sm_90 multiprocessor at once: the least
    of what its 64K registers (allocated per warp in steps of 256), its 228 KB of
    shared memory (1 KB reserved per program), its 64 warps and 32 programs allow.
    A latency-bound kernel at 1 wants fewer registers before anything else."""
    regs_per_warp = -(-regs * 32 // 256) * 256
    by_regs = (65536 // regs_per_warp) // warps
    by_shared = 233472 // (shared + 1024)
    return min(by_regs, by_shared, 64 // warps, 32)


def ptxas_report(ptx: str) -> tuple[int, int]:
    """(registers, spill bytes) of one kernel's PTX, from ptxas -v."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
                         capture_output=True, text=True).stderr
    os.unlink(f.name)
    regs = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill", out))
    return regs, spills


def dump_ir(kernel_name, kernel) -> str:
    """With $DUMP_IR set: write the kernel's TTGIR and PTX there; returns a note of its
    layout conversions (convert_layout ops in the TTGIR), else nothing."""
    folder = os.environ.get("DUMP_IR")
    if not folder:
        return ""
    os.makedirs(folder, exist_ok=True)
    for kind in ("ttgir", "ptx"):
        with open(os.path.join(folder, f"{kernel_name}.{kind}"), "w") as f:
            f.write(kernel.asm[kind])
    return f" convert_layout {kernel.asm['ttgir'].count('ttg.convert_layout')}"


def gated_delta_cases():
    """Every launcher of the gated delta rule at the benchmark's head size, all switches."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from attnforms.ops.gated_delta.triton import launch

    # The CPU tensors here stand for CUDA ones: compile the GPU's 16-bit product path.
    launch.low_precision_products = lambda x: x.dtype in (torch.bfloat16, torch.float16)
    B, T, H = 1, 128, 2
    # (128, 129): mLSTMsig through these kernels (mlstm/triton/sigmoid_as_gla.py), values [v | 1].
    for K, V in ((128, 128), (64, 64), (256, 256), (100, 60), (128, 129), (128, 192), (128, 16)):
        for gate in ("none", "scalar", "channel"):
            for use_beta in (False, True):
                name = f"gdr K{K} V{V} g={gate} beta={use_beta}"
                q, k = (torch.randn(B, T, H, K, dtype=torch.bfloat16) for _ in range(2))
                v = torch.randn(B, T, H, V, dtype=torch.bfloat16)
                g = None if gate == "none" else torch.zeros(B, T, H, *((K,) if gate == "channel" else ()))
                beta = torch.rand(B, T, H, dtype=torch.bfloat16) if use_beta else None
                state = torch.zeros(B, H, K, V)
                yield name + " fwd", lambda: launch.chunk_forward(q, k, v, g, beta, 0.1, state, True, None, 64,
                                                                  save=False)

                def backward(q=q, k=k, v=v, g=g, beta=beta, state=state):
                    _, _, saved = launch.chunk_forward(q, k, v, g, beta, 0.1, state, True, None, 64)
                    launch.chunk_backward(q, k, v, g, beta, 0.1, state, saved, torch.randn_like(v),
                                          torch.randn_like(state), None, 64)
                yield name + " bwd", backward
                yield name + " recurrent", lambda: launch.recurrent_forward(
                    q[:, :1], k[:, :1], v[:, :1], None if g is None else g[:, :1],
                    None if beta is None else beta[:, :1], 0.1, state, True, None)


def softmax_cases():
    """Every softmax-attention kernel variant at the benchmark's head size and the other
    head dims (bf16): flash forward / backward with each masking feature, a compiled
    score_mod (ALiBi, its captured-tensor gradient) and mask_mod with a block mask, a KV
    cache, packed sequences, and the split-KV decode and combine kernels."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from attnforms.ops.softmax.triton import launch, modc
    from attnforms.mods import create_block_mask

    B, T, H = 1, 256, 4
    slopes = torch.rand(H, requires_grad=True)
    alibi = modc.trace(lambda s, b, h, q, kv: s - slopes[h] * (q - kv), "score")
    doc = torch.zeros(B, T, dtype=torch.int32)
    document = lambda b, h, q, kv: doc[b, q] == doc[b, kv]  # noqa: E731
    mask = modc.trace(document, "mask")
    block_mask = create_block_mask(document, B, 1, T, T)
    table = torch.randn(H, 32, requires_grad=True)
    t5 = modc.trace(lambda s, b, h, q, kv: s + table[h, torch.clamp(q - kv, 0, 31)], "score")
    cum = torch.randn(B, H, T, requires_grad=True)
    forget = modc.trace(lambda s, b, h, q, kv: 5.0 * torch.tanh(s / 5.0) + cum[b, h, q] - cum[b, h, kv], "score")
    variants = {
        "causal": dict(causal=True, window=None),
        "bidirectional": dict(causal=False, window=None),
        "window": dict(causal=True, window=64),
        "sinks": dict(causal=True, window=None, sinks=torch.zeros(H)),
        "alibi": dict(causal=True, window=None, score_graph=alibi),
        "t5-bias": dict(causal=False, window=None, score_graph=t5),
        "forgetting+softcap": dict(causal=True, window=None, score_graph=forget),
        "mask+blockmask": dict(causal=False, window=None, mask_graph=mask, block_mask=block_mask),
        "cache": dict(causal=True, window=None, cache=True),
        "varlen": dict(causal=True, window=None, varlen=True),
    }
    for D in (64, 128, 256, 96, 32):
        for name, options in variants.items():
            if D in (96, 32) and name not in ("causal",):
                continue
            options = dict(options)
            cache = options.pop("cache", False)
            varlen = options.pop("varlen", False)
            q, k = (torch.randn(B, T, H, D, dtype=torch.bfloat16) for _ in range(2))
            v = torch.randn(B, T, H, D, dtype=torch.bfloat16)
            plan = launch.Plan(scale=D ** -0.5, qoff=0, **options)
            if cache:
                plan.kvpos = torch.arange(T, dtype=torch.int32)[None]
                plan.qoff = torch.zeros(B, dtype=torch.int32)
            if varlen:
                plan.cu = torch.tensor([0, 100, T], dtype=torch.int32)
                plan.max_len = 156
            label = f"softmax D{D} {name}"

            def backward(q=q, k=k, v=v, plan=plan):
                lse = torch.zeros(H, B * T)
                grads = {0: torch.zeros(H)} if plan.score_graph is not None else {}
                launch.backward(q, k, v, torch.randn_like(v), lse, lse, plan, grads)
            yield label + " fwd", lambda q=q, k=k, v=v, plan=plan: launch.forward(q, k, v, plan)
            if D != 32 and D != 96 or name == "causal":
                yield label + " bwd", backward
        for R in (1, 4):
            q = torch.randn(8, 1, 4 * R, D, dtype=torch.bfloat16)
            k = torch.randn(8, 1, 4, D, dtype=torch.bfloat16)
            cache = torch.randn(8, 4096, 4, D, dtype=torch.bfloat16)
            pos = torch.arange(4096)[None].expand(8, -1).contiguous()
            plan = launch.Plan(causal=True, window=None, scale=D ** -0.5, score_graph=alibi if R == 4 else None)
            yield f"softmax D{D} decode R{R}", lambda q=q, k=k, cache=cache, pos=pos, plan=plan: launch.decode(
                q, k, k, cache, cache, pos, torch.full((8,), 4096, dtype=torch.int32), plan)
def mlstm_cases():
    """Every mLSTM launcher at the benchmark's head size and at wide / awkward heads, both
    input gates, at the default chunk and the ends of the chunk sweep."""
    from attnforms.ops.mlstm.triton import launch

    launch.NATIVE_ON_CPU = True
    B, T, H = 1, 256, 2
    for K, V in ((128, 128), (64, 64), (256, 256), (100, 60)):
        for stabilise in (True, False):
            for chunk in (launch.CHUNK, 64, 256):
                if chunk != launch.CHUNK and (K, V) != (128, 128):
                    continue
                name = f"mlstm K{K} V{V} {'exp' if stabilise else 'sig'} chunk{chunk}"
                q, k = (torch.randn(B, T, H, K, dtype=torch.bfloat16) for _ in range(2))
                v = torch.randn(B, T, H, V, dtype=torch.bfloat16)
                i, f = torch.randn(B, T, H), torch.randn(B, T, H)
                state = (torch.zeros(B, H, K, V), torch.zeros(B, H, K), torch.zeros(B, H))

                def forward(q=q, k=k, v=v, i=i, f=f, state=state, stabilise=stabilise, chunk=chunk):
                    return launch.chunk_forward(q, k, v, i, f, 0.1, stabilise, state, True, None, chunk,
                                                out_dtype=torch.float32)

                yield name + " fwd", forward

                def backward(q=q, k=k, v=v, i=i, f=f, state=state, stabilise=stabilise, chunk=chunk, forward=forward):
                    o, final, saved = forward()
                    saved = saved._replace(m_row=torch.zeros_like(saved.m_row), li=torch.ones_like(saved.li),
                                           den_row=torch.ones_like(saved.den_row), final=state)
                    launch.chunk_backward(q, k, v, i, f, 0.1, stabilise, state, saved, torch.zeros(B, T, H, V),
                                          torch.randn(B, T, H, V, dtype=torch.bfloat16), state, None, chunk)
                yield name + " bwd", backward
                yield name + " recurrent", lambda q=q, k=k, v=v, i=i, f=f, state=state, stabilise=stabilise: (
                    launch.recurrent_forward(q[:, :1], k[:, :1], v[:, :1], i[:, :1], f[:, :1], 0.1, stabilise,
                                             state, True, None))


def aaren_cases():
    """Every Aaren launcher (score, scans, recurrent step) at several head sizes."""
    from attnforms.ops.aaren.triton import launch

    launch.NATIVE_ON_CPU = True
    B, T, H = 1, 256, 2
    for K, V in ((128, 128), (64, 64), (256, 256), (100, 60)):
        name = f"aaren K{K} V{V}"
        q = torch.randn(B, H, K, dtype=torch.bfloat16)
        k = torch.randn(B, T, H, K, dtype=torch.bfloat16)
        v = torch.randn(B, T, H, V, dtype=torch.bfloat16)
        state = (torch.zeros(B, H), torch.ones(B, H), torch.zeros(B, H, V))

        def forward(q=q, k=k, v=v, state=state):
            return launch.forward(q, k, v, 0.1, state, True, None)

        yield name + " fwd", forward

        def backward(q=q, k=k, v=v, state=state, V=V):
            chunks = T // launch.CHUNK
            saved = (torch.zeros(B * T, H), torch.zeros(B * T, H), torch.zeros(chunks, H), torch.zeros(chunks, H),
                     torch.zeros(chunks, H, V))  # s, L and the triples entering each chunk
            launch.backward(q, k, v, 0.1, state, saved, state, torch.randn(B, T, H, V, dtype=torch.bfloat16),
                            (torch.ones(B, H), torch.ones(B, H), torch.ones(B, H, V)), None)
        yield name + " bwd", backward
        yield name + " recurrent", lambda q=q, k=k, v=v, state=state: launch.recurrent_forward(
            q, k[:, :1], v[:, :1], 0.1, state, True, None)


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from attnforms.ops.aaren.triton import launch as aaren_launch
    from attnforms.ops.gated_delta.triton import launch as gated_delta_launch
    from attnforms.ops.mlstm.triton import launch as mlstm_launch
    from attnforms.ops.softmax.triton import launch as softmax_launch
    launchers = dict(gated_delta=gated_delta_launch, softmax=softmax_launch, mlstm=mlstm_launch, aaren=aaren_launch)
    # The CPU tensors here stand for an sm_90 device's: the kernels' TMA paths apply.
    softmax_launch.tma_device = lambda device: True
    settings = [a for a in sys.argv[2:] if re.fullmatch(r"([a-z_]+\.)?[A-Z_0-9]+=\S+", a)]
    wanted = [a for a in sys.argv[2:] if a not in settings]
    for setting in settings:
        name, value = setting.split("=", 1)
        # `family.NAME` names the launcher; a bare NAME takes the first that has it
        # (gated delta, softmax, mLSTM, Aaren).
        family, _, name = name.rpartition(".")
        candidates = [launchers[family]] if family else launchers.values()
        launch = next((m for m in candidates if hasattr(m, name)), None)
        if launch is None:
            sys.exit(f"no launcher has a constant {name}")
        # An expression in the launcher's names (an int, StateTiling(4096, 4, 2)) or a
        # bare string (tf32).
        apply_variant(launch, {}, f"{name}={value}", own=())
    failures = 0
    seen = set()
    for name, call in itertools.chain(gated_delta_cases(), softmax_cases(), mlstm_cases(), aaren_cases()):
        if wanted and not any(w in name for w in wanted):
            continue
        compiled.clear()
        try:
            call()
        except Exception as exc:  # report and go on: one broken case should not hide others
            failures += 1
            print(f"FAIL {name}: {type(exc).__name__}: {str(exc)[-1500:]} CAUSE {exc.__cause__!r}", flush=True)
            if os.environ.get("TRACE"):  # the cause's whole traceback (where in Triton it failed)
                traceback.print_exception(exc.__cause__ or exc)
            continue
        for kernel_name, kernel in compiled:
            key = (kernel_name, kernel.hash)
            if key in seen:
                continue
            seen.add(key)
            regs, spills = ptxas_report(kernel.asm["ptx"])
            shared = kernel.metadata.shared
            flag = "  OVER SHARED LIMIT" if shared > SHARED_LIMIT else ""
            failures += bool(flag)
            warps = kernel.metadata.num_warps
            per_sm = programs_per_multiprocessor(warps, regs, shared)
            print(f"{name:44s} {kernel_name:22s} warps {warps} stages "
                  f"{kernel.metadata.num_stages} shared {shared:6d} regs {regs:3d} spills {spills} "
                  f"per SM {per_sm}{flag}"
                  + dump_ir(kernel_name, kernel), flush=True)
    print(f"{failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
