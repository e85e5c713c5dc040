"""One benchmark run: measure the ceilings, warm every implementation up in parallel
(CUDA), measure the planned items in a worker process, write the JSON after every row
(so a run cut short keeps what it measured), then the PNG and the tables."""
from __future__ import annotations

import datetime
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from . import flops
from .gate import GATE_ATOL, GATE_FACTOR
from .cases import OP_KEYS, blank_row, pairings, plan
from .peers import versions
from .report import Row, compute_ratios, format_tables, output_stem, targets, write_json, write_png
from .shapes import SHAPE_NAMES, shape_set
from .timing import TimingSettings, measure_ceilings
from .workers import HARD_STOP_GRACE_S, WorkerConfig, measure_items, warm_up

FULL_TIMING = TimingSettings(warmup_ms=25.0, rep_ms=100.0)
QUICK_TIMING = TimingSettings(warmup_ms=1.0, rep_ms=5.0)
DEFAULT_BUDGET_S = 450.0
DEFAULT_WARMUP_WORKERS = 8
WARMUP_SHARE = 0.4  # of the time budget, at most, for the parallel warm-up


@dataclass(frozen=True)
class BenchConfig:
    """device: torch device string. shapes: subset of S1, S2, S3, decode. ops: subset of
    `cases.OP_KEYS` (the linear decode steps run with "gdn" / "mlstm"; softmax decode is
    "softmax_decode"; all decode needs "decode" in shapes). out: results folder. quick: tiny shapes.
    impl: our implementation ("triton" or "reference"). budget_s: no new measurement
    starts after this many seconds (what is left is recorded as skipped; workers are
    killed `HARD_STOP_GRACE_S` later). warmup_workers: parallel first-call processes
    on CUDA (0: none; each implementation's first calls then happen in its gate).
    graph_decode: also time decode steps replayed from a CUDA graph (TimingSettings)."""

    device: str
    shapes: tuple[str, ...] = SHAPE_NAMES
    ops: tuple[str, ...] = OP_KEYS
    out: Path = Path("bench/results")
    quick: bool = False
    impl: str = "triton"
    budget_s: float = DEFAULT_BUDGET_S
    warmup_workers: int = DEFAULT_WARMUP_WORKERS
    settings: TimingSettings | None = field(default=None)

    graph_decode: bool = False

    def timing(self) -> TimingSettings:
        return replace(self.settings or (QUICK_TIMING if self.quick else FULL_TIMING), graph_decode=self.graph_decode)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Run everything `config` selects; returns the payload written to the JSON (its
    "files" entry names the JSON and PNG)."""
    start = time.time()
    device = torch.device(config.device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    shapes = shape_set(config.quick)
    name = device_name(device)
    today = datetime.date.today().isoformat()
    stem = output_stem(Path(config.out), today, name)
    json_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
    pairs = pairings(tuple(config.ops))
    warmup_workers = config.warmup_workers if device.type == "cuda" else 0
    rows: list[Row] = []
    payload = dict(
        date=today, device=name, device_type=device.type, impl=config.impl, quick=config.quick,
        python=sys.version.split()[0], platform=platform.platform(), cuda=torch.version.cuda, versions=versions(),
        settings=dict(asdict(config.timing()), budget_s=config.budget_s, hard_stop_grace_s=HARD_STOP_GRACE_S,
                      warmup_workers=warmup_workers, check_T=shapes.check_T, gate_factor=GATE_FACTOR,
                      gate_atol=GATE_ATOL, flop_chunk=flops.CHUNK, backward_flop_factor=flops.BACKWARD_FACTOR,
                      softmax_backward_flop_factor=flops.SOFTMAX_BACKWARD_FACTOR,
                      shapes=list(config.shapes), ops=list(config.ops), dtype="bfloat16",
                      first_call=("wall time of the first forward / forward+backward of each implementation, "
                                  + ("in parallel warm-up processes (autotuning benchmarks serialised by a lock)"
                                     if warmup_workers else "in its first correctness gate")
                                  + "; items never warmed up (a new mod's compile) in the measuring process's gate")),
        shapes={k: v.dims() for k, v in shapes.sequences.items()},
        decode=dict(batches=list(shapes.decode_batches), H=shapes.decode_heads, K=shapes.decode_K, V=shapes.decode_V,
                    prefix=shapes.decode_prefix),
        softmax=asdict(shapes.softmax),
        ceilings=dict(constants=asdict(flops.H200)),
        rows=rows, ratios=[], targets=[], warm_up={}, complete=False,
    )
    log(f"attnforms bench: {name} ({device}), impl={config.impl}, quick={config.quick}, "
        f"budget {config.budget_s:.0f} s -> {json_path}")
    log("versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()))
    write_json(json_path, payload)

    measured = measure_ceilings(device, config.timing(), quick=config.quick)
    payload["ceilings"]["measured"] = measured
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "error" not in measured:
        log(f"ceilings measured: copy {measured['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
            f"bf16 matmul {measured['matmul_n']}³ {measured['matmul_flops_per_s'] / 1e12:.0f} TFLOP/s "
            f"(constants: {flops.H200.copy_bytes_per_s / 1e12:.2f} TB/s, {flops.H200.matmul_flops_per_s / 1e12:.0f} TFLOP/s)")
    else:
        log(f"ceilings not measured: {measured['error']}")

    items = plan(tuple(config.ops), tuple(config.shapes), shapes, config.impl)
    worker = WorkerConfig(device=str(device), impl=config.impl, quick=config.quick, settings=config.timing(),
                          deadline=start + config.budget_s, start=start, threads=torch.get_num_threads())
    warm: dict = {}
    warm_items = [item for item in items if item.warm_up]
    if warmup_workers and warm_items:
        log(f"warm-up: first calls of every implementation, {warmup_workers} processes at a time")
        # The warm-up gets a share of the budget: a peer that autotunes for minutes (fla's
        # chunk_kda) must not leave nothing for the measurements. What it cuts short makes
        # its first calls in the measuring process instead.
        warm = warm_up(replace(worker, deadline=start + config.budget_s * WARMUP_SHARE), warm_items,
                       warmup_workers)
        payload["warm_up"] = {" / ".join(key): result for key, result in warm.items()}
    first_items = {}
    for item in items:
        first_items.setdefault((item.section, item.op_key, item.runner), item)

    def emit(row: Row) -> None:
        key = (row.section, row.op_key, row.runner)
        result = warm.get(key, {})
        if first_items.get(key) is not None and first_items[key].shape == row.shape and "fwd_s" in result:
            row.first_call_fwd_s, row.first_call_fwd_bwd_s = result["fwd_s"], result.get("fwd_bwd_s")
        if row.bytes_floor and measured.get("copy_bytes_per_s"):
            row.floor_here_ms = row.bytes_floor / measured["copy_bytes_per_s"] * 1e3
        rows.append(row)
        payload["ratios"] = compute_ratios(rows, pairs)
        payload["targets"] = targets(rows, payload["ratios"])
        payload["elapsed_s"] = time.time() - start
        write_json(json_path, payload)

    to_measure = []
    for item in items:
        died = warm.get((item.section, item.op_key, item.runner), {}).get("died")
        if died:  # it would kill the measuring worker too
            row = blank_row(item, shapes)
            row.status = f"failed: its first call killed the warm-up process ({died})"
            emit(row)
        else:
            to_measure.append(item)
    measure_items(worker, to_measure, lambda item: blank_row(item, shapes), emit)
    order = {(i.section, i.op_key, i.runner, i.shape): n for n, i in enumerate(items)}
    rows.sort(key=lambda row: order[(row.section, row.op_key, row.runner, row.shape)])
    payload["ratios"] = compute_ratios(rows, pairs)
    payload["targets"] = targets(rows, payload["ratios"])

    payload["complete"] = True
    payload["elapsed_s"] = time.time() - start
    title = f"attnforms ({config.impl}) vs peers, {name}, {today}: peer time / our time"
    png_problem = write_png(png_path, payload["ratios"], title)
    payload["files"] = dict(json=str(json_path), png=None if png_problem else str(png_path))
    if png_problem:
        payload["png_problem"] = png_problem
    write_json(json_path, payload)
    log("")
    log(format_tables(rows, payload["ratios"]))
    log(f"\nwrote {json_path}" + (f" and {png_path}" if not png_problem else f" ({png_problem})")
        + f" in {payload['elapsed_s']:.0f} s")
    return payload


def ours_wrong(payload: dict) -> list[Row]:
    """Our rows that failed the correctness gate (forward or backward)."""
    return [r for r in payload["rows"] if r.ours and "WRONG" in (r.status, r.fwd_bwd_status)]
