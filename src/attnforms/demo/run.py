"""`run_demo`: check the ops, train every formulation on MQAR (and more with `full`),
measure decoding cost, and write the report folder."""
from __future__ import annotations

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
from .parallel import available_cores, run_in_processes
from .report import write_report
from .settings import FIXED_STATE_TARGET, DemoSettings, settings_for

SWA_WINDOW = 8
MAX_THREADS = 8


def choose_threads(cores: int | None = None) -> int:
    """Intra-op threads of one process on `cores` cores (default: those this process may
    use), at most 8: these models are small, so more threads mostly add synchronisation."""
    return max(1, min(MAX_THREADS, available_cores() if cores is None else cores))


def choose_workers(on_gpu: bool, jobs: int, cores: int | None = None) -> int:
    """Training processes to run at once: on a CPU one per core, at most one per job
    (`parallel`: side by side, 1-thread processes outrun one 2-thread process); on a GPU
    one, this process, as the runs share the device."""
    if on_gpu:
        return 1
    return max(1, min(jobs, available_cores() if cores is None else cores))


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


def _train_job(entry, task, settings: DemoSettings, steps: int, seed: int) -> tuple[dict, dict]:
    """One run in a worker process (on the CPU): its row and its trained weights."""
    row, model = _train_one(entry, task, settings, "cpu", steps, seed)
    return row, model.state_dict()


def _runs(task, entries, settings, device, steps, bar, workers: int, threads: int, seed: int):
    """Yield `(entry, row, trained model)` for every entry as its run finishes: one after
    the other in this process (`workers` 1), or `workers` at once in processes of
    `threads` threads each, the longest budgets first so that the last to start is short."""
    if workers == 1:
        for entry in entries:
            bar.set_description(entry.label)
            yield (entry, *_train_one(entry, task, settings, device, steps, seed))
        return
    budget = (lambda entry: settings.steps_for(entry.preset, steps)) if task.name == "mqar" else (lambda entry: steps)
    order = sorted(entries, key=budget, reverse=True)
    bar.set_description(f"{workers} runs at a time")
    jobs = [(entry, task, settings, steps, seed) for entry in order]
    for index, (row, weights) in run_in_processes(_train_job, jobs, workers, threads):
        model = models.build_model(order[index].config)
        model.load_state_dict(weights)
        yield order[index], row, model


def _train_lineup(name: str, task, entries, settings, device, steps, bar, workers: int = 1, threads: int = 1,
                  seed: int = 0) -> tuple[dict, dict]:
    """Train every entry on `task`; returns its rows and trained models by preset, in
    lineup order whatever order the runs finished in, printing a line per run."""
    results, trained = {}, {}
    for entry, row, model in _runs(task, entries, settings, device, steps, bar, workers, threads, seed):
        results[entry.preset], trained[entry.preset] = row, model
        metric = task.metric
        say(f"  {name} {entry.label}: {metric.replace('_', ' ')} {row[metric]:.3f} after {row['steps']} steps "
            f"({row['train_s']:.0f} s, of which {row['eval_s']:.1f} s evaluating; {row['tokens_per_s']:,.0f} tok/s)")
        bar.update(1)
    order = [entry.preset for entry in entries]
    return {p: results[p] for p in order}, {p: trained[p] for p in order}


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
             presets=PRESET_NAMES, progress: bool = True, workers: int | None = None) -> tuple[dict, Path]:
    """Run the demo at `level` ("quick", "default", "full") on `device` (default: CUDA
    when present) for `presets`; write the report into `out` (default
    demo-report/<timestamp>). workers: training runs at once, each in its own process
    (default `choose_workers`: one per core on a CPU; 1 trains in this process).
    Returns (results dict, report folder)."""
    start = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    settings = settings_for(level, on_gpu)
    out = Path(out) if out is not None else Path("demo-report") / time.strftime("%Y%m%d-%H%M%S")
    if workers is None:
        workers = choose_workers(on_gpu, jobs=len(presets))
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    elif workers > 1 and on_gpu:
        raise ValueError(f"workers: runs share one GPU, so only 1 on {device}, got {workers}")
    # With worker processes, this one runs only the check, the lookups and the decoding
    # measurement, between the training phases: small ops, on one thread as the workers.
    # (On 2 threads, a machine shared with one other busy job made them 10-40x slower and
    # the decoding times meaningless: docs/demo.md, "Where the time goes".)
    threads = choose_threads() if workers == 1 else 1
    torch.set_num_threads(threads)
    # The cores shared out among the training processes.
    worker_threads = choose_threads(available_cores() // workers) if workers > 1 else threads

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
        "workers": workers, "worker_threads": worker_threads,
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
        side_by_side = (f"; {workers} at a time, {worker_threads} thread{'s' if worker_threads > 1 else ''} each"
                        if workers > 1 else "")
        say(f"train {name}: {len(task_entries)} formulations, at most {steps} steps each{stop}{side_by_side}")
        with timed(phases, f"train {name}"):
            task_results, trained = _train_lineup(name, task, task_entries, settings, device, steps, bar,
                                                  workers, worker_threads)
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
