"""softmax_attention's Triton kernels on the H200: correctness against float64, then
timings against SDPA (flash and cuDNN backends) and compiled FlexAttention.

    OUT=/some/dir python scripts/device_softmax_check.py            # on the GPU
    ... --part checks / --part timing                               # half each
    ... --set DKDV_TMA=False                                         # a launcher constant
    TRITON_INTERPRET=1 python scripts/device_softmax_check.py --dry # CPU smoke run

Writes `$OUT/softmax_check.json` (or `--out`). Every item is guarded: a failure is
recorded with its error and the run goes on.

Correctness (bf16 inputs; golden = the reference on float64 copies; eager = the reference
on the bf16 inputs, which computes in float32 and rounds): ours passes when
`err <= 2 · err(eager) + 1e-3`, discounting one bf16 ulp per element (the project's gate
rule, `attnforms.testing.noise_relative_check`), for the output, the lse and the
gradient of every input (q, k, v, sinks, captured tensors).

Timings (`triton.testing.do_bench` medians, ms) at S1 = (B 8, T 4096) and
S2 = (B 1, T 32768), H 16, D 128: causal fwd and fwd+bwd; causal + window 1024 fwd and
fwd+bwd; causal + ALiBi score_mod fwd; decode B 64 against a 32768-token cache; the
first call of a never-seen mod (trace + code generation + Triton compile).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import attnforms as af  # noqa: E402
from attnforms.ops.softmax.api import softmax_attention  # noqa: E402
from attnforms.mods import create_block_mask  # noqa: E402
from attnforms.testing import noise_relative_check  # noqa: E402

FACTOR, ATOL = 2.0, 1e-3


def log(*args):
    print(*args, flush=True)


# ----------------------------------------------------------------------------- inputs
def draw(B, T, H, D, *, S=None, G=None, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    S = S or T
    G = G or H
    make = lambda *shape: torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
    return dict(q=make(B, T, H, D), k=make(B, S, G, D), v=make(B, S, G, D))


def alibi_mod(slopes):
    return lambda score, b, h, q_idx, kv_idx: score - slopes[h] * (q_idx - kv_idx)


# ----------------------------------------------------------------------------- checks
def run_op(inputs, dtype, impl, form, extra_leaves, make_kwargs, grad):
    """Returns (output, lse, grads by name)."""
    leaves = {n: x.detach().to(dtype).requires_grad_(grad) for n, x in inputs.items()}
    extras = {n: x.detach().to(dtype if x.is_floating_point() else x.dtype).requires_grad_(grad and x.is_floating_point())
              for n, x in extra_leaves.items()}
    kwargs = make_kwargs(extras)
    out = softmax_attention(**leaves, **kwargs, impl=impl, form=form, return_lse=True)
    grads = {}
    if grad:
        gen = torch.Generator().manual_seed(11)
        weight = torch.randn(out.output.shape, generator=gen).to(out.output.device, out.output.dtype)
        (out.output * weight).sum().backward()
        grads = {n: x.grad for n, x in {**leaves, **extras}.items() if x.requires_grad}
    return out.output, out.lse, grads


def check(name, inputs, *, dtype, form="parallel", extra=None, make_kwargs=lambda e: {}, grad=True):
    extra = extra or {}
    golden = run_op(inputs, torch.float64, "reference", "parallel", extra, make_kwargs, grad)
    eager = run_op(inputs, dtype, "reference", "parallel", extra, make_kwargs, grad)
    ours = run_op(inputs, dtype, "triton", form, extra, make_kwargs, grad)
    rounding = dtype if dtype != torch.float32 else None
    results, passed = {}, True
    pairs = [("output", ours[0], golden[0], eager[0])]
    finite = torch.isfinite(golden[1])
    pairs.append(("lse", ours[1][finite], golden[1][finite], eager[1][finite]))
    pairs += [(f"d{n}", ours[2].get(n), g, eager[2][n]) for n, g in golden[2].items()]
    for label, cand, gold, eag in pairs:
        if cand is None:
            results[label] = dict(passed=False, error="no gradient")
            passed = False
            continue
        c = noise_relative_check(cand, gold, eag, factor=FACTOR, atol=ATOL,
                                 rounding=None if label == "lse" else rounding)
        results[label] = dict(error=c.error, eager_error=c.eager_error, bound=c.bound, passed=c.passed)
        passed &= c.passed
    log(f"check {name:34s} {'PASS' if passed else 'FAIL'} " + " ".join(
        f"{k}={v.get('error', float('nan')):.2e}/{v.get('bound', float('nan')):.2e}" for k, v in results.items()))
    return dict(name=name, passed=bool(passed), results=results)


def checks(device, dtype, dry):
    B, T, H, D = (1, 40, 2, 32) if dry else (2, 1024, 16, 128)
    W = 16 if dry else 256
    items = []

    def add(name, fn):
        try:
            items.append(fn())
        except Exception as exc:  # keep going: one failure should not hide the rest
            log(f"check {name}: ERROR {type(exc).__name__}: {exc}")
            items.append(dict(name=name, passed=False, error=f"{type(exc).__name__}: {exc}",
                              trace=traceback.format_exc()[-3000:]))

    base = draw(B, T, H, D, dtype=torch.float32, device=device)
    add("causal", lambda: check("causal", base, dtype=dtype))
    add("bidirectional", lambda: check("bidirectional", base, dtype=dtype,
                                       make_kwargs=lambda e: dict(causal=False)))
    add("window", lambda: check("window", base, dtype=dtype, make_kwargs=lambda e: dict(window=W)))
    sinks = torch.linspace(-1, 2, H, device=device)
    add("sinks+window", lambda: check("sinks+window", base, dtype=dtype, extra=dict(sinks=sinks),
                                      make_kwargs=lambda e: dict(sinks=e["sinks"], window=W)))
    gqa = draw(B, T, H, D, G=max(1, H // 4), S=T + T // 2, dtype=torch.float32, device=device, seed=1)
    add("gqa cross S=1.5T", lambda: check("gqa cross S=1.5T", gqa, dtype=dtype))
    slopes = 2.0 ** -torch.arange(1, H + 1, device=device, dtype=torch.float32)
    add("alibi score_mod (+dslopes)", lambda: check(
        "alibi score_mod (+dslopes)", base, dtype=dtype, extra=dict(slopes=slopes),
        make_kwargs=lambda e: dict(score_mod=alibi_mod(e["slopes"]))))
    doc = (torch.arange(T, device=device) * 3 // T)[None].expand(B, T).contiguous()
    document = lambda b, h, q_idx, kv_idx: doc[b, q_idx] == doc[b, kv_idx]  # noqa: E731
    bm = create_block_mask(document, B, 1, T, T, 16 if dry else 128, 16 if dry else 128, device=device)
    add("document mask_mod + block_mask", lambda: check(
        "document mask_mod + block_mask", base, dtype=dtype,
        make_kwargs=lambda e: dict(mask_mod=document, block_mask=bm)))
    cu = torch.tensor([0, T // 3, T // 3 + 1, T], device=device)
    packed = {n: x[:1] for n, x in base.items()}
    add("varlen", lambda: check("varlen", packed, dtype=dtype, make_kwargs=lambda e: dict(cu_seqlens=cu)))
    for d in ((64,) if dry else (64, 96, 256)):
        other = draw(B, T if dry else 512, H, d, dtype=torch.float32, device=device, seed=2)
        add(f"head dim {d}", lambda other=other, d=d: check(f"head dim {d}", other, dtype=dtype,
                                                            grad=d != 96))
    # Decoding: one and three new tokens against a cache (GQA), split-KV.
    L = 64 if dry else 4096
    Bd = 2 if dry else 4
    for T_new, options in ((1, {}), (3, dict(window=W))):
        def decode(T_new=T_new, options=options):
            gen = torch.Generator().manual_seed(3)
            G = max(1, H // 2)
            cache = af.KVCache(torch.randn(Bd, L, G, D, generator=gen).to(device, dtype),
                               torch.randn(Bd, L, G, D, generator=gen).to(device, dtype),
                               torch.arange(L, device=device)[None].expand(Bd, L).contiguous(),
                               torch.full((Bd,), L, device=device))
            new = draw(Bd, T_new, H, D, G=G, dtype=dtype, device=device, seed=4)
            kwargs = dict(initial_state=cache, sinks=sinks[:H], **options)
            golden = softmax_attention(**{n: x.double() for n, x in new.items()},
                                       **{**kwargs, "initial_state": af.KVCache(cache.k.double(), cache.v.double(), cache.positions, cache.next_position),
                                          "sinks": sinks.double()}, impl="reference", form="parallel")
            eager = softmax_attention(**new, **kwargs, impl="reference", form="parallel")
            ours = softmax_attention(**new, **kwargs, impl="triton", form="recurrent")
            c = noise_relative_check(ours.output, golden.output, eager.output, factor=FACTOR,
                                     atol=ATOL, rounding=dtype if dtype != torch.float32 else None)
            name = f"decode T={T_new} cache {L} {options}"
            log(f"check {name:34s} {'PASS' if c.passed else 'FAIL'} output={c.error:.2e}/{c.bound:.2e}")
            return dict(name=name, passed=bool(c.passed), results=dict(output=c._asdict()))
        add(f"decode T={T_new}", decode)
    return items


# ----------------------------------------------------------------------------- timing
def bench(fn, device, dry):
    if dry or device.type != "cuda":
        fn()
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def fwd_bwd(fn, leaves):
    def step():
        for x in leaves:
            x.grad = None
        out = fn()
        out.backward(torch.ones_like(out))
    return step


def timings(device, dtype, dry, only_shapes=("S1", "S2"), decode=True):
    shapes = {"S1": (8, 4096), "S2": (1, 32768)} if not dry else {"S1": (1, 64), "S2": (1, 96)}
    shapes = {name: shape for name, shape in shapes.items() if name in only_shapes}
    H, D = (16, 128) if not dry else (2, 32)
    W = 1024 if not dry else 16
    rows = []
    flex = None
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False) if not dry else flex_attention
    except Exception as exc:
        log(f"flex_attention unavailable: {exc}")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def record(op, shape, impl, fwd=None, fwdbwd=None, flops=None, error=None):
        row = dict(op=op, shape=shape, impl=impl, fwd_ms=fwd, fwd_bwd_ms=fwdbwd, error=error)
        if flops and fwd:
            row["fwd_tflops"] = flops / fwd / 1e9
        if flops and fwdbwd:
            row["fwd_bwd_tflops"] = 3.5 * flops / fwdbwd / 1e9
        rows.append(row)
        log(f"time {op:22s} {shape} {impl:22s} fwd {fwd if fwd is None else round(fwd, 3)} ms  "
            f"fwd+bwd {fwdbwd if fwdbwd is None else round(fwdbwd, 3)} ms {error or ''}")

    def guarded(op, shape, impl, fwd_fn, leaves, flops, backward=True):
        f = fb = None
        errors = []
        try:
            with torch.no_grad():
                f = bench(fwd_fn, device, dry)
        except Exception as exc:
            errors.append(f"fwd: {type(exc).__name__}: {str(exc)[:300]}")
        try:
            fb = bench(fwd_bwd(fwd_fn, leaves), device, dry) if backward else None
        except Exception as exc:
            errors.append(f"fwd+bwd: {type(exc).__name__}: {str(exc)[:300]}")
        try:
            record(op, shape, impl, f, fb, flops, error="; ".join(errors) or None)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for shape, (B, T) in shapes.items():
        x = draw(B, T, H, D, dtype=dtype, device=device)
        ours = {n: t.requires_grad_(True) for n, t in x.items()}
        heads = {n: t.detach().transpose(1, 2).contiguous().requires_grad_(True) for n, t in x.items()}
        causal_flops = 4 * B * H * T * T * D / 2
        slopes = 2.0 ** -torch.arange(1, H + 1, device=device, dtype=torch.float32)
        alibi = alibi_mod(slopes)

        def mine(**kw):
            return lambda: softmax_attention(**ours, impl="triton", form="parallel", **kw).output
        guarded("causal", shape, "attnforms triton", mine(), list(ours.values()), causal_flops)
        for backend, name in ((SDPBackend.FLASH_ATTENTION, "sdpa flash"),
                              (SDPBackend.CUDNN_ATTENTION, "sdpa cudnn")):
            def sdpa(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(heads["q"], heads["k"], heads["v"], is_causal=True)
            guarded("causal", shape, name, sdpa, list(heads.values()), causal_flops)
        window_pairs = B * H * sum(min(i + 1, W) for i in range(T))
        guarded(f"causal+window{W}", shape, "attnforms triton", mine(window=W), list(ours.values()),
                4 * window_pairs * D)
        guarded("causal+alibi", shape, "attnforms triton", mine(score_mod=alibi), list(ours.values()),
                causal_flops, backward=False)
        if flex is not None:
            try:
                causal_mask = lambda b, h, q, kv: q >= kv  # noqa: E731
                window_mask = lambda b, h, q, kv: (q >= kv) & (q - kv < W)  # noqa: E731
                bm_causal = create_block_mask(causal_mask, None, None, T, T, device=device)
                bm_window = create_block_mask(window_mask, None, None, T, T, device=device)
                guarded("causal", shape, "flex compiled", lambda: flex(heads["q"], heads["k"], heads["v"], block_mask=bm_causal),
                        list(heads.values()), causal_flops)
                guarded(f"causal+window{W}", shape, "flex compiled",
                        lambda: flex(heads["q"], heads["k"], heads["v"], block_mask=bm_window),
                        list(heads.values()), 4 * window_pairs * D)
                guarded("causal+alibi", shape, "flex compiled",
                        lambda: flex(heads["q"], heads["k"], heads["v"], score_mod=alibi, block_mask=bm_causal),
                        list(heads.values()), causal_flops, backward=False)
            except Exception as exc:
                record("flex setup", shape, "flex compiled", error=f"{type(exc).__name__}: {str(exc)[:300]}")
        del x, ours, heads
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if not decode:
        return rows
    # Decoding: one new token per row against a full cache.
    Bd, L = (64, 32768) if not dry else (2, 64)
    try:
        gen = torch.Generator(device=device).manual_seed(5) if device.type == "cuda" else torch.Generator().manual_seed(5)
        cache = af.KVCache(torch.randn(Bd, L, H, D, device=device, dtype=dtype, generator=gen),
                           torch.randn(Bd, L, H, D, device=device, dtype=dtype, generator=gen),
                           torch.arange(L, device=device)[None].expand(Bd, L).contiguous(),
                           torch.full((Bd,), L, device=device))
        new = draw(Bd, 1, H, D, dtype=dtype, device=device, seed=6)
        with torch.no_grad():
            ms = bench(lambda: softmax_attention(**new, initial_state=cache, impl="triton",
                                                 form="recurrent").output, device, dry)
        record(f"decode B{Bd} cache{L}", "decode", "attnforms triton", ms)
        kq = new["q"].transpose(1, 2)
        kk = torch.cat([cache.k, new["k"]], 1).transpose(1, 2).contiguous()
        kv = torch.cat([cache.v, new["v"]], 1).transpose(1, 2).contiguous()
        for backend, name in ((SDPBackend.FLASH_ATTENTION, "sdpa flash"),
                              (SDPBackend.CUDNN_ATTENTION, "sdpa cudnn")):
            try:
                def sdpa(backend=backend):
                    with sdpa_kernel(backend), torch.no_grad():
                        return F.scaled_dot_product_attention(kq, kk, kv)
                record(f"decode B{Bd} cache{L}", "decode", name, bench(sdpa, device, dry))
            except Exception as exc:
                record(f"decode B{Bd} cache{L}", "decode", name, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        del cache, kk, kv
    except Exception as exc:
        record("decode", "decode", "attnforms triton", error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return rows


def first_call(device, dtype, dry):
    """A mod never seen before (a fresh constant makes a new graph): trace, code
    generation and Triton compile, then the warm call."""
    B, T, H, D = (1, 32, 2, 32) if dry else (1, 4096, 16, 128)
    x = draw(B, T, H, D, dtype=dtype, device=device)
    c = round(0.5 + (time.time() % 1000) / 1e4, 6)
    mod = lambda s, b, h, q, kv: torch.where(q - kv > 100, s - c, s)  # noqa: E731
    result = {}
    for label in ("first_call_s", "second_call_s"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        softmax_attention(**x, score_mod=mod, impl="triton", form="parallel")
        if device.type == "cuda":
            torch.cuda.synchronize()
        result[label] = time.perf_counter() - t
    log(f"compile: new mod first call {result['first_call_s']:.2f} s, then {result['second_call_s'] * 1e3:.2f} ms")
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--part", choices=("all", "checks", "timing"), default="all",
                        help="run only the correctness checks or only the timings (each fits "
                             "a 10-minute device call; the JSON is named after the part)")
    parser.add_argument("--shapes", default="S1,S2", help="timing shapes (S1, S2)")
    parser.add_argument("--no-decode", action="store_true", help="skip the decoding timing")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set a constant of attnforms.ops.softmax.triton.launch first (e.g. DKDV_TMA=False)")
    args = parser.parse_args()
    if args.set:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from launch_settings import apply_variant
        from attnforms.ops.softmax.triton import launch
        apply_variant(launch, {}, ";".join(args.set), own=())
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("no GPU: run with TRITON_INTERPRET=1 and --dry")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import triton
    report = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
                  torch=torch.__version__, triton=triton.__version__, dtype=str(dtype), dry=args.dry,
                  settings=args.set)
    t0 = time.time()
    if args.part in ("all", "checks"):
        report["checks"] = checks(device, dtype, args.dry)
        report["all_checks_passed"] = all(c["passed"] for c in report["checks"])
    if args.part in ("all", "timing"):
        try:
            report["first_call"] = first_call(device, dtype, args.dry)
        except Exception as exc:
            report["first_call"] = dict(error=f"{type(exc).__name__}: {exc}")
        report["timings"] = timings(device, dtype, args.dry, args.shapes.split(","), not args.no_decode)
    report["wall_s"] = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    name = "softmax_check.json" if args.part == "all" else f"softmax_check_{args.part}.json"
    path = os.path.join(args.out, name)
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=lambda o: o if not isinstance(o, float) or math.isfinite(o) else str(o))
    verdict = report.get("all_checks_passed")
    log(f"wrote {path}; checks {'not run' if verdict is None else 'all passed' if verdict else 'FAILED'}; "
        f"{report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
