"""Timing: medians of `triton.testing.do_bench` on CUDA, peak memory, first-call time,
and the measured ceilings (copy bandwidth, bf16 matrix product).

On a CPU (the `--quick` smoke run) `do_bench` cannot run (it times with CUDA events), so
the same median is taken over `time.perf_counter` laps; those numbers only show that the
harness works.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass(frozen=True)
class TimingSettings:
    """do_bench's warm-up and repetition budgets, in milliseconds of GPU time.
    graph_decode: also time decode steps replayed from a CUDA graph (`graph_step_ms`).
    Off by default until a GPU run has shown that a step which cannot be captured leaves
    the worker's CUDA context usable (decode runs first in a worker); its first GPU run
    (2026-12-07, H100) captured every step, ours and the peers', so that case is untried."""

    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    graph_decode: bool = False


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn: Callable[[], object], device: torch.device, settings: TimingSettings,
    grad_to_none: Sequence[torch.Tensor] = (),
) -> float:
    """Median milliseconds of one call of `fn` (gradients of `grad_to_none` reset to None
    before every call, so a backward never accumulates)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(
            fn, warmup=settings.warmup_ms, rep=settings.rep_ms,
            grad_to_none=list(grad_to_none) or None, return_mode="median",
        ))
    return _cpu_median_ms(fn, settings, grad_to_none)


def graph_step_ms(fn: Callable[[], object], device: torch.device, settings: TimingSettings,
                  steps: int = 20) -> float:
    """Median milliseconds of one call of `fn` replayed from a CUDA graph holding `steps`
    calls: the GPU's time, without the host's launch overhead, which at a decode step of
    a few microseconds is most of an eager call's time and varies with the host (decoding
    engines replay graphs). Raises where `fn` cannot be captured (a host sync, say)."""
    if device.type != "cuda":
        raise RuntimeError("graph_step_ms: CUDA graphs need a CUDA device")
    from triton.testing import do_bench

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(steps):
            fn()
    return float(do_bench(graph.replay, warmup=settings.warmup_ms, rep=settings.rep_ms,
                          return_mode="median")) / steps


def _cpu_median_ms(fn, settings: TimingSettings, grad_to_none) -> float:
    def lap() -> float:
        for x in grad_to_none:
            x.grad = None
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    estimate = lap()
    warmup = min(10, int(settings.warmup_ms / max(estimate, 1e-3)))
    for _ in range(warmup):
        lap()
    repeats = max(1, min(50, int(settings.rep_ms / max(estimate, 1e-3))))
    return statistics.median(lap() for _ in range(repeats))


def timed_call(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Wall seconds of one synchronised call of `fn`, and its result. On a process's
    first call of a kernel this is its JIT compile (and autotuning) time plus one run."""
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return time.perf_counter() - start, value


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory allocated during one call of `fn`, above what was allocated before it
    (inputs and anything else alive): the call's working memory and its outputs.
    None off CUDA."""
    if device.type != "cuda":
        return None
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def kernel_times_ms(fn: Callable[[], object], calls: int = 5,
                    grad_to_none: Sequence[torch.Tensor] = ()) -> dict[str, float]:
    """Device milliseconds per call of `fn`, by kernel name (Triton kernels and torch's
    own), largest first: torch.profiler over `calls` calls after one unprofiled call.
    Gradients of `grad_to_none` are reset before every call (no accumulation kernels)."""
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    def call():
        for t in grad_to_none:
            t.grad = None
        fn()

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] += event.device_time / calls / 1e3
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def measure_ceilings(device: torch.device, settings: TimingSettings, *, quick: bool) -> dict:
    """Measure the device-to-device copy bandwidth (read + write bytes per second) and the
    bf16 matrix-product rate on `device`: 2 GiB copied and 8192³, or small sizes with
    `quick` or off CUDA."""
    large = device.type == "cuda" and not quick
    result: dict = {}
    try:  # a failed measurement is recorded, the run goes on
        result.update(_copy_rate(device, settings, (1 << 30) if large else (1 << 22)))
        result.update(_matmul_rate(device, settings, 8192 if large else 256))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def _copy_rate(device, settings, elements: int) -> dict:
    source = torch.ones(elements, dtype=torch.bfloat16, device=device)
    target = torch.zeros_like(source)
    ms = median_ms(lambda: target.copy_(source), device, settings)
    nbytes = 2 * source.numel() * source.element_size()  # read + write
    return dict(copy_bytes=nbytes, copy_ms=ms, copy_bytes_per_s=nbytes / (ms * 1e-3))


def _matmul_rate(device, settings, n: int) -> dict:
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    ms = median_ms(lambda: a @ b, device, settings)
    return dict(matmul_n=n, matmul_ms=ms, matmul_flops_per_s=2 * n ** 3 / (ms * 1e-3))
