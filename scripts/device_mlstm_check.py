"""Check and time the mLSTM and Aaren Triton kernels on one GPU, in one call.

    python scripts/device_mlstm_check.py [--dry] [--out DIR] [--sections check,time,profile,sweep,peers]
                                         [--set NAME=VALUE ...]

1. Correctness: every forward output, final state and gradient (q, k, v, gates, the
   initial state) in bf16 against the float64 reference, with the noise-relative rule
   (error <= 2 x the reference's own bf16 error, one ulp of rounding on top), at a few
   shapes up to T = 4096, both input gates, chunk and recurrent forms.
2. Timing (`triton.testing.do_bench`, median ms): our chunk kernels, forward and
   forward + backward, at S1 / S2 / S3 of bench/shapes.py, against mlstm_kernels'
   `chunkwise--triton_xl_chunk` (exp gate) and `chunkwise--triton_xl_chunk_siging`
   (normalize=True, the same function as input_gate="sigmoid"); the decode step against
   mlstm_kernels' step kernel; Aaren against our softmax reference with the query
   repeated over time (causal) and a torch.cumsum baseline. Peers run in a subprocess
   each (mlstm_kernels can abort the interpreter while compiling), and are optional;
   TFLA's rows carry its forward's device ms per kernel too.
3. A sweep of the level-1 chunk size (64, 128, 256) at S1, and the variant that rounds
   the gate-weighted scores to bf16 (`launch.HALF_PRECISION_P`): accuracy and time.
4. That no kernel compiles anew for a new sequence length (compiled-variant counts).
5. (profile, GPU only) device ms per kernel, ours and torch's ops, of the forward and
   forward + backward at S1, each gate: where the exp gate's backward time goes.

Everything lands in DIR/device_mlstm_check[-SECTIONS].json (DIR: --out, else $OUT, else .),
rewritten after every section, so a run cut short keeps what it measured.
`--dry` runs tiny shapes (on the CPU through the Triton interpreter when there is no
GPU) to check that the script itself works.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import attnforms as af  # noqa: E402
from launch_settings import apply_variant  # noqa: E402
from attnforms.bench.shapes import CANONICAL  # noqa: E402
from attnforms.testing import aaren_inputs, mlstm_inputs, noise_relative_check  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GATES = ("exp", "sigmoid")
DEFAULT_SECTIONS = "check,time,profile,sweep,peers"


def _bench(fn, grad_to_none=None, dry=False):
    if dry:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    import triton.testing
    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def _verdict(candidate, golden, eager, rounding):
    """The 2x rule. bf16 results: one ulp of rounding on top (the helper's rule). float32
    results (states and their gradients): both sides sit at float32 noise, summed in
    different orders, so the floor is 1e-5 of the largest magnitude."""
    atol = 1e-6 if rounding is not None else 1e-5 * golden.abs().max().item()
    check = noise_relative_check(candidate, golden, eager, factor=2.0, atol=atol, rounding=rounding)
    return dict(error=check.error, eager_error=check.eager_error, bound=check.bound, passed=check.passed)


# ---------------------------------------------------------------------------- correctness

def _mlstm_state(B, H, K, V, gate, device):
    """A random initial state (m = 0 for the sigmoid gate, which keeps no stabiliser)."""
    g = torch.Generator().manual_seed(7)
    C, n = torch.randn(B, H, K, V, generator=g) * 0.3, torch.randn(B, H, K, generator=g) * 0.3
    m = torch.randn(B, H, generator=g) if gate == "exp" else torch.zeros(B, H)
    return af.MLSTMState(C.to(device), n.to(device), m.to(device))


def _run_with_grads(op, inputs, state, state_cls, upstream, **kwargs):
    """Output, final state and the gradients of every input and the initial state."""
    inputs = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    state = state_cls(*(x.detach().clone().requires_grad_() for x in state))
    result = op(**inputs, initial_state=state, output_final_state=True, **kwargs)
    loss = sum((x.float() * u.to(x.device)).sum() for x, u in zip((result.output, *result.final_state), upstream))
    grads = torch.autograd.grad(loss, [*inputs.values(), *state])
    names = list(inputs) + [f"state.{n}" for n in state_cls._fields]
    return result, dict(zip(names, grads))


def _compare(golden, eager, ours, report, pinned_m_state=None):
    """pinned_m_state: the initial MLSTMState when the gate pins m at 0 (sigmoid): see
    `_pinned_m_verdict`."""
    (g_res, g_grads), (e_res, e_grads), (o_res, o_grads) = golden, eager, ours
    report["output"] = _verdict(o_res.output, g_res.output, e_res.output, torch.bfloat16)
    for name, o, g, e in zip(type(o_res.final_state)._fields, o_res.final_state, g_res.final_state, e_res.final_state):
        report[f"final.{name}"] = _verdict(o, g, e, None)
    for name in o_grads:
        rounding = None if name.startswith("state.") else torch.bfloat16
        report[f"grad.{name}"] = _verdict(o_grads[name], g_grads[name], e_grads[name], rounding)
    if pinned_m_state is not None:
        report["grad.state.m"] = _pinned_m_verdict(o_grads, g_grads, pinned_m_state, report)


def _compare_inference(golden, eager, op, inputs, state, report, **kwargs):
    """The output and final state of `op` under torch.no_grad() (inference: a forward
    that keeps nothing for a backward, and may round more, `launch.OUTPUT_PRODUCTS`)
    against the golden and eager results."""
    with torch.no_grad():
        result = op(**inputs, initial_state=state, output_final_state=True, **kwargs)
    report["inference.output"] = _verdict(result.output, golden.output, eager.output, torch.bfloat16)
    for name, o, g, e in zip(type(result.final_state)._fields, result.final_state, golden.final_state,
                             eager.final_state):
        report[f"inference.final.{name}"] = _verdict(o, g, e, None)


def _pinned_m_verdict(ours, golden, state, report):
    """With m pinned at 0 (sigmoid gate) the entering m only scales the entering state,
    by exp(m): its gradient is exactly <dC0, C0> + <dn0, n0> per (batch, head), a
    linear image of the state gradients checked on their own. Its bound is their bounds'
    image, |C0| and |n0| summed: what those checks passing allow. (The 2x rule on the
    sum itself fails at K 64, V 128 on an H100 with dC0 within its bound: the eager
    reference's float32 element errors cancel in the sum, the kernels' bf16 products'
    do not.) Also checked: ours obeys the identity to float32 noise."""
    C0, n0, _ = (x.double().cpu() for x in state)
    dC, dn, dm = (ours[f"state.{n}"].double().cpu() for n in ("C", "n", "m"))
    identity = (dC * C0).sum((-1, -2)) + (dn * n0).sum(-1)
    identity_error = (dm - identity).abs().max().item()
    identity_ok = identity_error <= 1e-5 * identity.abs().max().item() + 1e-6
    bound = (report["grad.state.C"]["bound"] * C0.abs().sum((-1, -2))
             + report["grad.state.n"]["bound"] * n0.abs().sum(-1))  # [B, H]
    error = (dm - golden["state.m"].double().cpu()).abs()  # [B, H]
    return dict(error=error.max().item(), bound=bound.min().item(), identity_error=identity_error,
                passed=identity_ok and bool((error <= bound).all()) and report["grad.state.C"]["passed"]
                and report["grad.state.n"]["passed"])


def check_mlstm(shapes):
    results = []
    for (B, T, H, K, V) in shapes:
        for gate in GATES:
            for form in ("chunk", "recurrent"):
                if form == "recurrent" and T > 1024:
                    continue
                entry = dict(op="mlstm", gate=gate, form=form, B=B, T=T, H=H, K=K, V=V)
                try:
                    inputs = mlstm_inputs(B, T, H, K, V, dtype=torch.float64, device=DEVICE)
                    state = _mlstm_state(B, H, K, V, gate, DEVICE)
                    g = torch.Generator().manual_seed(9)
                    upstream = [torch.randn(B, T, H, V, generator=g), torch.randn(B, H, K, V, generator=g),
                                torch.randn(B, H, K, generator=g), torch.randn(B, H, generator=g)]
                    low = {n: x.to(torch.bfloat16) for n, x in inputs.items()}
                    lowd = {n: x.double() for n, x in low.items()}
                    run = lambda x, impl, f: _run_with_grads(af.mlstm, x, state, af.MLSTMState, upstream,
                                                             input_gate=gate, impl=impl, form=f)
                    golden, eager = run(lowd, "reference", "chunk"), run(low, "reference", "chunk")
                    _compare(golden, eager, run(low, "triton", form), entry,
                             pinned_m_state=state if gate == "sigmoid" else None)
                    _compare_inference(golden[0], eager[0], af.mlstm, low, state, entry, input_gate=gate,
                                       impl="triton", form=form)
                    entry["passed"] = all(v["passed"] for v in entry.values() if isinstance(v, dict))
                except Exception as exc:
                    entry.update(passed=False, failure=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-2000:])
                print(json.dumps({k: v for k, v in entry.items() if k != "trace"})[:400], flush=True)
                results.append(entry)
    return results


def check_aaren(shapes):
    results = []
    for (B, T, H, K, V) in shapes:
        for form in ("chunk", "recurrent"):
            if form == "recurrent" and T > 1024:
                continue
            entry = dict(op="aaren", form=form, B=B, T=T, H=H, K=K, V=V)
            try:
                inputs = aaren_inputs(B, T, H, K, V, dtype=torch.float64, device=DEVICE)
                g = torch.Generator().manual_seed(7)
                state = af.AarenState(torch.randn(B, H, generator=g).to(DEVICE), (torch.rand(B, H, generator=g) + 1).to(DEVICE),
                                      torch.randn(B, H, V, generator=g).to(DEVICE))
                upstream = [torch.randn(B, T, H, V, generator=g), torch.randn(B, H, generator=g),
                            torch.randn(B, H, generator=g), torch.randn(B, H, V, generator=g)]
                low = {n: x.to(torch.bfloat16) for n, x in inputs.items()}
                lowd = {n: x.double() for n, x in low.items()}
                run = lambda x, impl, f: _run_with_grads(af.aaren, x, state, af.AarenState, upstream, impl=impl, form=f)
                _compare(run(lowd, "reference", "chunk"), run(low, "reference", "chunk"), run(low, "triton", form), entry)
                entry["passed"] = all(v["passed"] for v in entry.values() if isinstance(v, dict))
            except Exception as exc:
                entry.update(passed=False, failure=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-2000:])
            print(json.dumps({k: v for k, v in entry.items() if k != "trace"})[:400], flush=True)
            results.append(entry)
    return results


def _compiled_variants(kernel) -> int:
    """How many compiled variants `kernel` holds (-1 where this Triton keeps them
    elsewhere)."""
    try:
        caches = getattr(kernel, "device_caches", None)
        if caches is not None:  # Triton >= 3.2: device -> (kernel cache, ...)
            return sum(len(entry[0]) for entry in caches.values())
        return sum(len(c) for c in getattr(kernel, "cache", {}).values())
    except Exception:
        return -1


def check_no_recompile(lengths):
    """Run the chunk forward + backward at several lengths; a kernel that took T as a
    compile-time constant would compile once per length."""
    import importlib
    names = ["mlstm.triton.chunk_fwd", "mlstm.triton.chunk_bwd", "aaren.triton.scan", "aaren.triton.scan_bwd"]
    kernels = {f"{m}.{n}": getattr(mod, n) for m in names for mod in [importlib.import_module(f"attnforms.ops.{m}")]
               for n in dir(mod) if n.endswith("_kernel")}
    counts = []
    try:
        return _count_variants(kernels, lengths, counts)
    except Exception as exc:
        return dict(lengths=list(lengths), failure=f"{type(exc).__name__}: {exc}", passed=False)


def _count_variants(kernels, lengths, counts):
    for T in lengths:
        x = mlstm_inputs(1, T, 2, 64, 64, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)
        af.mlstm(**x, impl="triton", form="chunk").output.sum().backward()
        y = aaren_inputs(1, T, 2, 64, 64, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)
        af.aaren(**y, impl="triton", form="chunk").output.sum().backward()
        counts.append({name: _compiled_variants(k) for name, k in kernels.items()})
    grown = {name: [c[name] for c in counts] for name in kernels if counts[-1][name] != counts[0][name]}
    return dict(lengths=list(lengths), variants_after_each=counts, grown=grown, passed=not grown)


# ---------------------------------------------------------------------------- timing

def _record(rows, entry):
    """Print one result row as a JSON line (a run cut short keeps it in its log), keep
    it, and return the GPU memory it used to the pool."""
    print(json.dumps(entry), flush=True)
    rows.append(entry)
    torch.cuda.empty_cache() if DEVICE == "cuda" else None


def _timed_pair(forward, tensors, dry):
    """(forward ms under no_grad, forward + backward ms) of `forward()` -> output."""
    def inference():
        with torch.no_grad():
            return forward()
    fwd = _bench(inference, dry=dry)
    out = forward()
    upstream = torch.randn_like(out)

    def step():
        torch.autograd.backward(forward(), upstream)
    return fwd, _bench(step, grad_to_none=tensors, dry=dry)


def time_ours(shapes, dry, chunk_sizes=(None,)):
    rows = []
    for name, (B, T, H, K, V) in shapes.items():
        for gate in GATES:
            for chunk in chunk_sizes:
                entry = dict(op="mlstm", impl="ours", gate=gate, shape=name, B=B, T=T, H=H, K=K, V=V, chunk=chunk)
                try:
                    x = mlstm_inputs(B, T, H, K, V, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)
                    fn = lambda: af.mlstm(**x, input_gate=gate, impl="triton", form="chunk", chunk_size=chunk).output
                    entry["fwd_ms"], entry["fwdbwd_ms"] = _timed_pair(fn, list(x.values()), dry)
                except Exception as exc:
                    entry["failure"] = f"{type(exc).__name__}: {exc}"
                _record(rows, entry)
    return rows


def profile_ours(shapes):
    """Device ms per kernel (ours and torch's own ops) of the chunk form's forward and
    forward + backward, each gate, at each shape: where the time goes."""
    from attnforms.bench.timing import kernel_times_ms
    rows = []
    for name, (B, T, H, K, V) in shapes.items():
        for gate in GATES:
            x = mlstm_inputs(B, T, H, K, V, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)
            fn = lambda: af.mlstm(**x, input_gate=gate, impl="triton", form="chunk").output  # noqa: E731
            upstream = torch.randn_like(fn())

            def inference():
                with torch.no_grad():
                    return fn()
            entry = dict(gate=gate, shape=name, fwd_kernels_ms=kernel_times_ms(inference),
                         fwd_bwd_kernels_ms=kernel_times_ms(lambda: torch.autograd.backward(fn(), upstream),
                                                            grad_to_none=list(x.values())))
            _record(rows, entry)
    return rows


def time_decode(batches, H, K, V, dry):
    rows = []
    for B in batches:
        for gate in GATES:
            entry = dict(op="mlstm decode", impl="ours", gate=gate, B=B, H=H, K=K, V=V)
            try:
                x = mlstm_inputs(B, 1, H, K, V, dtype=torch.bfloat16, device=DEVICE)
                state = _mlstm_state(B, H, K, V, gate, DEVICE)
                entry["ms"] = _bench(lambda: af.mlstm(**x, input_gate=gate, initial_state=state, output_final_state=True,
                                                      impl="triton", form="recurrent"), dry=dry)
            except Exception as exc:
                entry["failure"] = f"{type(exc).__name__}: {exc}"
            _record(rows, entry)
    return rows


def decode_host_cost(batches, H, K, V, dry):
    """Why a one-token step times at 85 µs under do_bench at B 1 (session 10, H100), where
    the peer's bare kernel call times 9: the wall time per call of 200 back-to-back calls
    (the host's cost when it is the bottleneck), and the CUDA runtime calls one step makes
    that can block the host (synchronisations, blocking copies, allocations)."""
    rows = []
    blocking = ("Synchronize", "Memcpy", "Malloc", "Free", "EventSynchronize", "StreamWait")
    for B in batches:
        entry = dict(op="mlstm decode host", gate="exp", B=B, H=H, K=K, V=V)
        try:
            x = mlstm_inputs(B, 1, H, K, V, dtype=torch.bfloat16, device=DEVICE)
            state = _mlstm_state(B, H, K, V, "exp", DEVICE)

            def step():
                return af.mlstm(**x, input_gate="exp", initial_state=state, output_final_state=True,
                                impl="triton", form="recurrent")

            for _ in range(20):
                step()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(200):
                step()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            entry["wall_us_per_call"] = (time.perf_counter() - t0) / 200 * 1e6
            if DEVICE == "cuda" and not dry:
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    step()
                    torch.cuda.synchronize()
                events = [e.name for e in prof.events()]
                entry["runtime_calls"] = sorted({n for n in events if n.startswith("cuda")})
                entry["blocking_calls"] = sorted({n for n in events if n.startswith("cuda") and any(b in n for b in blocking)})
        except Exception as exc:
            entry["failure"] = f"{type(exc).__name__}: {exc}"
        _record(rows, entry)
    return rows


def time_aaren(shapes, dry):
    rows = []
    for name, (B, T, H, K, V) in shapes.items():
        x = aaren_inputs(B, T, H, K, V, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)

        def softmax_equivalent(impl):
            q = x["q"][:, None].expand(B, T, H, K)
            return lambda: af.softmax_attention(q, x["k"], x["v"], causal=True, impl=impl, form="parallel").output

        def cumsum_baseline():
            s = torch.einsum("bhk,bthk->bth", x["q"].float(), x["k"].float()) * K ** -0.5
            w = torch.exp(s - s.amax(dim=1, keepdim=True))
            return (torch.cumsum(w[..., None] * x["v"].float(), dim=1) / torch.cumsum(w, dim=1)[..., None]).to(x["v"].dtype)

        candidates = {
            "ours (triton, chunk)": lambda: af.aaren(**x, impl="triton", form="chunk").output,
            # The same computation as causal softmax attention with the query repeated
            # over time: the yardstick (Aaren f+b >= 5x faster than our kernel).
            "softmax triton, q repeated": softmax_equivalent("triton"),
            "torch.cumsum baseline": cumsum_baseline,
        }
        if T <= 4096:  # the reference materialises [T, T] scores per head
            candidates["softmax reference, q repeated"] = softmax_equivalent("reference")
        for label, fn in candidates.items():
            entry = dict(op="aaren", impl=label, shape=name, B=B, T=T, H=H, K=K, V=V)
            try:
                entry["fwd_ms"], entry["fwdbwd_ms"] = _timed_pair(fn, list(x.values()), dry)
            except Exception as exc:
                entry["failure"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            _record(rows, entry)
    return rows


# ---------------------------------------------------------------------------- peers

def time_aaren_decode(batches, H, K, V, prefixes, dry):
    """Aaren's one-token step (recurrent form) from the state after each prefix length:
    checked against the float64 reference step from the same state, then timed, with the
    state's bytes and the GPU memory one step allocates. The issue asks for a step whose
    time and memory do not grow with the tokens seen (measured at 1k and 32k)."""
    rows = []
    for B in batches:
        for prefix in prefixes:
            entry = dict(op="aaren decode", impl="ours (triton, recurrent)", B=B, prefix=prefix, H=H, K=K, V=V)
            try:
                x = aaren_inputs(B, prefix, H, K, V, dtype=torch.bfloat16, device=DEVICE, seed=prefix)
                state = af.aaren(**x, impl="triton", form="chunk", output_final_state=True).final_state
                new = aaren_inputs(B, 1, H, K, V, dtype=torch.bfloat16, device=DEVICE, seed=prefix + 1)
                new["q"] = x["q"]  # the same query per head, one more token
                del x

                def step():
                    return af.aaren(**new, initial_state=state, output_final_state=True, impl="triton",
                                    form="recurrent")

                out = step()
                golden = af.aaren(**{n: t.double() for n, t in new.items()},
                                  initial_state=af.AarenState(*(t.double() for t in state)),
                                  output_final_state=True, impl="reference", form="recurrent")
                entry["max_error_vs_float64"] = (out.output.double() - golden.output).abs().max().item()
                entry["bf16_output_rounding"] = golden.output.abs().max().item() * 2.0 ** -8
                entry["passed"] = entry["max_error_vs_float64"] <= 2 * entry["bf16_output_rounding"]
                entry["state_bytes"] = sum(t.numel() * t.element_size() for t in state)
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                    before = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    step()
                    torch.cuda.synchronize()
                    entry["step_peak_bytes"] = torch.cuda.max_memory_allocated() - before
                entry["ms"] = _bench(step, dry=dry)
            except Exception as exc:
                entry["failure"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            _record(rows, entry)
    return rows


def peer_main(kind, gate, B, T, H, K, V):
    """In a subprocess: time one mlstm_kernels kernel and print one JSON line."""
    from mlstm_kernels.torch import get_mlstm_kernel

    entry = dict(op="mlstm" if kind == "chunk" else "mlstm decode", gate=gate, B=B, T=T, H=H, K=K, V=V)
    x = mlstm_inputs(B, T, H, K, V, dtype=torch.bfloat16, device=DEVICE)
    # Gates in float32: with bf16 gates Triton 3.6 aborts compiling TFLA (session 13; the
    # bench passes float32 gates too).
    head_major = {n: (t.float() if n in ("i", "f") else t).transpose(1, 2).contiguous().requires_grad_()
                  for n, t in x.items()}
    if kind == "chunk":
        name = "chunkwise--triton_xl_chunk" if gate == "exp" else "chunkwise--triton_xl_chunk_siging"
        kernel = get_mlstm_kernel(name)
        extra = {} if gate == "exp" else dict(normalize=True)
        fn = lambda: kernel(**head_major, return_last_states=False, eps=1e-6, chunk_size=128, **extra)
        entry["impl"] = f"mlstm_kernels {name}"
        entry["fwd_ms"], entry["fwdbwd_ms"] = _timed_pair(fn, list(head_major.values()), False)
        # Where TFLA's time goes, next to profile_ours's rows for ours.
        from attnforms.bench.timing import kernel_times_ms

        def inference():
            with torch.no_grad():
                return fn()
        entry["fwd_kernels_ms"] = kernel_times_ms(inference)
        upstream = torch.randn_like(inference())
        entry["fwd_bwd_kernels_ms"] = kernel_times_ms(lambda: torch.autograd.backward(fn(), upstream),
                                                      grad_to_none=list(head_major.values()))
    else:
        from mlstm_kernels.torch import get_available_mlstm_step_kernels, get_mlstm_step_kernel
        names = get_available_mlstm_step_kernels()
        name = next((n for n in ("triton", "triton_fused") if n in names), names[0])
        step = get_mlstm_step_kernel(name)
        state = _mlstm_state(B, H, K, V, "exp", DEVICE)
        q, k, v = (head_major[n].detach()[:, :, 0] for n in "qkv")
        i, f = (head_major[n].detach()[:, :, :1] for n in "if")
        c, n, m = state.C, state.n, state.m[..., None]
        entry["impl"] = f"mlstm_kernels step {name}"
        entry["ms"] = _bench(lambda: step(q=q, k=k, v=v, i=i, f=f, c=c, n=n, m=m, eps=1e-6))
    print("PEER " + json.dumps(entry), flush=True)


def run_peer(kind, gate, dims, timeout=600):
    command = [sys.executable, os.path.abspath(__file__), "--peer", kind, gate, *map(str, dims)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(kind=kind, gate=gate, dims=dims, failure="timed out")
    for line in done.stdout.splitlines():
        if line.startswith("PEER "):
            return json.loads(line[5:])
    return dict(kind=kind, gate=gate, dims=dims, failure=f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")


def time_peers(shapes, batches, H, K, V):
    rows = []
    for name, dims in shapes.items():
        for gate in GATES:
            entry = run_peer("chunk", gate, dims)
            entry["shape"] = name
            print(json.dumps(entry)[:600], flush=True)
            rows.append(entry)
    for B in batches:
        entry = run_peer("step", "exp", (B, 1, H, K, V))
        print(json.dumps(entry)[:600], flush=True)
        rows.append(entry)
    return rows


# ---------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny shapes; checks the script itself")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--sections", default=DEFAULT_SECTIONS,
                        help="comma-separated subset of check,time,profile,sweep,peers (default: all), or aaren "
                             "(Aaren's checks and timing alone), decode (the mLSTM step alone), decode_host (its host cost), aaren_decode (its one-token step after "
                             "1k and 32k tokens)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set a constant of attnforms.ops.mlstm.triton.launch first (a Python "
                             "expression or a bare string), e.g. STATE_PRODUCT=split16; repeatable")
    parser.add_argument("--shapes", default="S1,S2,S3", help="the timing shapes (default S1,S2,S3)")
    parser.add_argument("--peer", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from attnforms.ops.mlstm.triton import launch as mlstm_launch
    for setting in args.set:
        if not hasattr(mlstm_launch, setting.split("=", 1)[0]):
            parser.error(f"mlstm launch has no constant {setting}")
    apply_variant(mlstm_launch, {}, ";".join(args.set), own=())
    if args.peer:
        kind, gate, *dims = args.peer
        return peer_main(kind, gate, *map(int, dims))

    if args.dry:
        check_shapes = [(1, 65, 2, 32, 32), (2, 130, 2, 20, 12)]
        seq_shapes = {"S1": (1, 128, 2, 32, 32)}
        batches, decode_dims = (1,), (2, 32, 32)
        sweep = (64, 128)
    else:
        check_shapes = [(2, 256, 4, 128, 128), (1, 4096, 2, 128, 128), (2, 1000, 2, 100, 60), (1, 512, 2, 256, 256)]
        seq_shapes = {n: (s.B, s.T, s.H, s.K, s.V) for n, s in CANONICAL.sequences.items()
                      if n in args.shapes.split(",")}
        batches, decode_dims = CANONICAL.decode_batches, (CANONICAL.decode_heads, CANONICAL.decode_K, CANONICAL.decode_V)
        sweep = (64, 128, 256)
    report = dict(device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (interpreter)", dry=args.dry)
    from attnforms.bench.peers import versions
    report["versions"] = versions()
    os.makedirs(args.out, exist_ok=True)
    report["settings"] = args.set
    suffix = "" if args.sections == DEFAULT_SECTIONS else "-" + args.sections.replace(",", "-")
    suffix += "".join("-" + "".join(c for c in setting if c.isalnum()) for setting in args.set)
    path = os.path.join(args.out, f"device_mlstm_check{suffix}.json")
    t0 = time.time()

    def save():  # after every section: a run cut short still leaves what it measured
        report["seconds"] = time.time() - t0
        with open(path, "w") as f:
            json.dump(report, f, indent=1)

    sections = set(args.sections.split(","))
    if "check" in sections:
        report["check_mlstm"] = check_mlstm(check_shapes)
        report["check_aaren"] = check_aaren(check_shapes)
        if DEVICE == "cuda":
            report["no_recompile"] = check_no_recompile((1000, 1001, 4096, 777))
            print(json.dumps(report["no_recompile"].get("grown")), flush=True)
        report["all_checks_passed"] = (all(e.get("passed") for e in report["check_mlstm"] + report["check_aaren"])
                                       and report.get("no_recompile", {}).get("passed", True))
        save()
    if "time" in sections:
        report["time_mlstm"] = time_ours(seq_shapes, args.dry)
        report["time_decode"] = time_decode(batches, *decode_dims, args.dry)
        report["time_aaren"] = time_aaren(seq_shapes, args.dry)
        save()
    if "decode" in sections:  # the decoding step alone (a tile sweep: --set RECURRENT_...)
        report["time_decode"] = time_decode(batches, *decode_dims, args.dry)
        save()
    if "decode_host" in sections:  # the step's host cost and its blocking runtime calls
        report["decode_host"] = decode_host_cost(batches, *decode_dims, args.dry)
        save()
    if "aaren" in sections:  # Aaren alone: its checks and timing
        report["check_aaren"] = check_aaren(check_shapes)
        report["all_checks_passed"] = all(e.get("passed") for e in report["check_aaren"])
        report["time_aaren"] = time_aaren(seq_shapes, args.dry)
        save()
    if "aaren_decode" in sections:
        prefixes = (64, 200) if args.dry else (1024, 32768)
        # B 256 after 32k tokens would draw 68 GB of keys and values for the prefix.
        report["time_aaren_decode"] = time_aaren_decode([b for b in batches if b <= 64], *decode_dims, prefixes,
                                                        args.dry)
        save()
    if "profile" in sections and DEVICE == "cuda":
        report["profile"] = profile_ours({"S1": seq_shapes["S1"]})
        save()
    if "sweep" in sections:
        report["chunk_sweep"] = time_ours({"S1": seq_shapes["S1"]}, args.dry, chunk_sizes=sweep)
        # The faster, less precise variant: gate-weighted scores rounded to bf16 before
        # their products (launch.HALF_PRECISION_P); its accuracy and speed.
        from attnforms.ops.mlstm.triton import launch
        launch.HALF_PRECISION_P = True
        try:
            report["half_p_check"] = check_mlstm(check_shapes[:1])
            report["half_p_time"] = time_ours({"S1": seq_shapes["S1"]}, args.dry)
        finally:
            launch.HALF_PRECISION_P = False
        save()
    if "peers" in sections and not args.dry:
        report["peers"] = time_peers(seq_shapes, batches, *decode_dims)
        save()
    save()
    print(f"all checks passed: {report.get('all_checks_passed')}; wrote {path} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
