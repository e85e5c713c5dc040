"""`run_demo`: check the ops, train every formulation on MQAR (and more with `full`),
measure decoding cost, and write the report folder."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from .. import models
from ..check import run_check
from ..tasks import MQAR_SETTINGS, CharLM
from ..tasks.char_lm import unigram_entropy_bits
from ..tasks.train import TrainConfig, train
from .costs import decode_cost
from .lineup import LABELS, PRESET_NAMES, SHORT_CONV_NOTE, lineup, state_bytes_per_layer
from .mqar_baselines import (
    accuracy_by_distance, banded_accuracy, chance_accuracy, direct_lookup_reach, fraction_within, receptive_field,
    window_reach_fraction,
)
from .report import write_report
from .settings import FIXED_STATE_TARGET, DemoSettings, settings_for

SWA_WINDOW = 8
MAX_THREADS = 8


def choose_threads() -> int:
    """Intra-op threads: the cores this process may use (at most 8; these models are
    small, so more threads mostly add synchronisation)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_THREADS, cores))


def say(line: str) -> None:
    """Print one progress line now (through tqdm, so a live bar is not torn; flushed, so
    a log file or a remote console shows it at once)."""
    tqdm.write(line)
    sys.stdout.flush()


@contextmanager
def timed(phases: dict[str, float], name: str):
    """Record the wall seconds of the `with` block as `phases[name]` (the report's "Time"
    section and results.json's `phases_s`)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = time.perf_counter() - start


def _check_summary(device: str) -> dict:
    """`attnforms check` on `device` (on a GPU it also runs, and first compiles, every
    Triton kernel), printing one line per case as it finishes."""
    say(f"check: every family x form against float64 on {device}"
        + (" (each Triton kernel compiles on first use: tens of seconds each)" if device.startswith("cuda") else ""))

    def on_case(case, rows, seconds):
        bad = sum(not row.passed for row in rows)
        say(f"  check {case.op} / {case.name}: {len(rows) - bad} of {len(rows)} rows pass ({seconds:.1f} s)")

    rows = run_check(device=device, on_case=on_case)
    failed = [f"{row.op} / {row.case} / {row.form} / {row.impl}: {row.failure or 'error above bound'}"
              for row in rows if not row.passed]
    return {"rows": len(rows), "passed": len(rows) - len(failed), "failed": failed}


def _train_one(entry, task, settings: DemoSettings, device: str, steps: int, seed: int) -> tuple[dict, models.CausalLM]:
    mqar = task.name == "mqar"
    steps = settings.steps_for(entry.preset, steps) if mqar else steps
    torch.manual_seed(seed)
    model = models.build_model(entry.config)
    config = TrainConfig(
        steps=steps, batch_size=settings.batch_size, lr=settings.lr_for(entry.preset),
        warmup_steps=settings.warmup_for(entry.preset, steps), eval_every=min(settings.eval_every, steps),
        eval_examples=settings.eval_examples,
        train_examples=settings.train_examples if mqar else None,
        seed=seed, device=device, progress=False,
        stop_at=settings.stop_for(entry.preset) if mqar else None,
    )
    start = time.perf_counter()
    log = train(model, task, config)
    seconds = time.perf_counter() - start
    metric = log["metric"]
    rates = [e["tokens_per_s"] for e in log["evals"]]
    return {
        "label": entry.label, "d_model": entry.config.d_model, "n_heads": entry.config.n_heads,
        "lr": settings.lr_for(entry.preset), "warmup_steps": settings.warmup_for(entry.preset, steps),
        "parameters": entry.parameters, metric: log["final"][metric], "steps": log["stopped_at"],
        "budget": steps, "stop_at": config.stop_at,
        "curve": [[e["step"], e[metric]] for e in log["evals"]],
        "tokens_per_s": sum(rates) / len(rates), "train_s": seconds,
        "eval_s": sum(e["eval_s"] for e in log["evals"]),
        "state_bytes_per_layer": state_bytes_per_layer(entry.config, task.seq_len),
    }, model


def _train_lineup(name: str, task, entries, settings, device, steps, bar, seed=0) -> tuple[dict, dict]:
    results, trained = {}, {}
    for entry in entries:
        bar.set_description(f"{name}: {entry.label}")
        row, trained[entry.preset] = _train_one(entry, task, settings, device, steps, seed)
        results[entry.preset] = row
        metric = task.metric
        say(f"  {name} {entry.label}: {metric.replace('_', ' ')} {row[metric]:.3f} after {row['steps']} steps "
            f"({row['train_s']:.0f} s, of which {row['eval_s']:.1f} s evaluating; {row['tokens_per_s']:,.0f} tok/s)")
        bar.update(1)
    return results, trained


def _lookups(block: dict, task, config: models.ModelConfig, trained: dict) -> None:
    """Add to an MQAR task's `block` what the window model can reach, chance, and for
    every trained model its accuracy per query-key distance (`by_distance`, `bands`)."""
    # The receptive field of the demo's sliding-window model: its windows and the
    # block convolution before each of them (mqar_baselines.receptive_field).
    conv_size = config.conv_size if config.block_conv else 1
    block["window_reach"] = window_reach_fraction(task, SWA_WINDOW, layers=config.n_layers, conv_size=conv_size)
    block["window_reach_tokens"] = receptive_field(SWA_WINDOW, layers=config.n_layers, conv_size=conv_size)
    block["window_reach_no_conv"] = window_reach_fraction(task, SWA_WINDOW, layers=config.n_layers)
    block["chance"] = chance_accuracy(task)
    # Which lookups each model makes: accuracy per query-key distance, and over the
    # bands of the window model's one-step lookup and its receptive field.
    block["window_direct_tokens"] = direct_lookup_reach(SWA_WINDOW, conv_size=conv_size)
    bounds = {"direct": block["window_direct_tokens"], "field": block["window_reach_tokens"]}
    block["window_direct_reach"] = fraction_within(task, block["window_direct_tokens"])
    for preset, model in trained.items():
        by_distance = accuracy_by_distance(model, task)
        block["results"][preset]["by_distance"] = by_distance
        block["results"][preset]["bands"] = banded_accuracy(by_distance, bounds)


def run_demo(level: str = "default", out: str | Path | None = None, device: str | None = None,
             presets=PRESET_NAMES, progress: bool = True) -> tuple[dict, Path]:
    """Run the demo at `level` ("quick", "default", "full") on `device` (default: CUDA
    when present) for `presets`; write the report into `out` (default
    demo-report/<timestamp>). Returns (results dict, report folder)."""
    start = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    settings = settings_for(level, on_gpu)
    out = Path(out) if out is not None else Path("demo-report") / time.strftime("%Y%m%d-%H%M%S")
    threads = choose_threads()
    torch.set_num_threads(threads)

    t0a = MQAR_SETTINGS["T0-a"].task
    chunk = settings.chunk_size
    entries = lineup(t0a.vocab_size, n_heads=1, presets=presets, chunk_size=chunk)
    runs = [("T0-a", t0a, entries, settings.steps)]
    if settings.t0b:
        t0b = MQAR_SETTINGS["T0-b"].task
        runs.append(("T0-b", t0b, lineup(t0b.vocab_size, n_heads=8, presets=presets, chunk_size=chunk), settings.steps))
    if settings.char_lm_steps:
        char = CharLM(seq_len=128, corpus="pydoc_topics")
        runs.append(("char-LM", char, lineup(char.vocab_size, n_heads=1, presets=presets, chunk_size=chunk), settings.char_lm_steps))
    total = sum(len(r[2]) for r in runs) + len(entries) + 1
    bar = tqdm(total=total, disable=not progress, unit="job", dynamic_ncols=True, leave=False)

    bar.set_description("check")
    phases: dict[str, float] = {}
    with timed(phases, "check"):
        check = _check_summary(device)
    say(f"check: {check['passed']} of {check['rows']} rows pass ({phases['check']:.1f} s)")
    results = {
        "level": level, "settings": settings.__dict__, "device": device, "threads": threads,
        "torch": torch.__version__, "short_conv": SHORT_CONV_NOTE, "labels": dict(LABELS),
        "check": check, "tasks": {}, "decode": {}, "phases_s": phases,
    }
    bar.update(1)
    trained_t0a = {}
    for name, task, task_entries, steps in runs:
        stop = ""
        if settings.stop_at and task.name == "mqar":
            stop = (f", stopping at accuracy {settings.stop_at}" + (f" ({FIXED_STATE_TARGET} for the fixed-state ones)"
                                                                  if settings.stop_at_target else ""))
        say(f"train {name}: {len(task_entries)} formulations, at most {steps} steps each{stop}")
        with timed(phases, f"train {name}"):
            task_results, trained = _train_lineup(name, task, task_entries, settings, device, steps, bar)
        say(f"train {name}: done ({phases[f'train {name}']:.0f} s)")
        block = {"task": {"name": task.name, **task.__dict__}, "metric": task.metric, "steps": steps,
                 "results": task_results}
        if task.name == "mqar":
            with timed(phases, f"lookups {name}"):
                _lookups(block, task, task_entries[0].config, trained)
            say(f"lookups {name}: accuracy by query-key distance, window reach and chance "
                f"({phases[f'lookups {name}']:.1f} s)")
        if task.name == CharLM.name:
            # The baseline a character model must beat: the best context-free predictor.
            block["unigram_bits"] = {split: unigram_entropy_bits(task.split_ids(split), task.vocab_size)
                                     for split in ("train", "validation")}
        results["tasks"][name] = block
        if name == "T0-a":
            trained_t0a = trained
    say(f"decode: time per token and cache at contexts {', '.join(map(str, settings.contexts))}")
    with timed(phases, "decode"):
        for preset, model in trained_t0a.items():
            bar.set_description(f"decode: {LABELS[preset]}")
            results["decode"][preset] = [decode_cost(model, c, settings.new_tokens) for c in settings.contexts]
            bar.update(1)
    say(f"decode: done ({phases['decode']:.1f} s)")
    bar.close()
    results["wall_s"] = time.perf_counter() - start
    write_report(results, out)
    return results, out
