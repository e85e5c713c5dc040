"""Measurements in child processes, so that an implementation that kills the
interpreter (an LLVM assertion while compiling, a segfault, a hang) costs its own rows
rather than the run, and so that the run ends by its deadline whatever a kernel does.

Two phases, both in `spawn`ed processes:

- warm-up (CUDA; `BenchConfig.warmup_workers` > 0): every implementation's first calls,
  at its first gate shape, in parallel processes. Compilation is CPU work and the peers'
  autotuning takes minutes per op on a cold machine (fla 0.6.0 on an H200: about 30 s
  for `chunk_gated_delta_rule`, 80 s for `chunk_simple_gla`, 220 s for `chunk_gla`,
  200 s for `chunk_kda`), more than a run's budget in sequence. Autotuning results go to
  Triton's on-disk cache (`TRITON_CACHE_AUTOTUNING=1`), where the measuring process finds
  them, and every autotuning benchmark holds an exclusive lock file while it times (each
  configuration is compiled and run once before taking the lock), so configurations
  are timed one process at a time, as in a sequential run. The wall times of these first
  calls are the rows' first-call times. A runner compiled per shape (compiled
  FlexAttention: `Runner.compiles_per_shape`) is then also called once at each of its
  items' timed sizes, so that its compiles for every shape run here in parallel and the
  measuring process finds them in inductor's on-disk caches. Items with
  `warm_up=False` (a new mod's compile time) are left to the measuring process.
- measurement: the planned items in order, in one worker process; when a worker dies,
  its current item is recorded as failed, the same implementation's later items are
  skipped, and a new worker continues with the rest. At the hard stop (the budget plus
  `HARD_STOP_GRACE_S`) the worker is killed and what is left is recorded as skipped.
"""
from __future__ import annotations

import fcntl
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import asdict, dataclass, replace

import torch

from .report import Row
from .timing import TimingSettings

HARD_STOP_GRACE_S = 45.0


@dataclass(frozen=True)
class WorkerConfig:
    """What a child needs (picklable). deadline: `time.time()` after which no new
    measurement starts; start: the run's start, for log times."""

    device: str
    impl: str
    quick: bool
    settings: TimingSettings
    deadline: float
    start: float
    threads: int
    lock_path: str | None = None


def _context():
    return multiprocessing.get_context("spawn")


def _log(text: str) -> None:
    print(text, flush=True)


def _session(config: WorkerConfig):
    from .measure import Session
    from .shapes import shape_set

    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    return Session(device=device, impl=config.impl, shapes=shape_set(config.quick), settings=config.settings,
                   deadline=config.deadline, start=config.start, log=_log)


def _measure_child(conn, config: WorkerConfig, items: list) -> None:
    from .measure import ItemRunner

    runner = ItemRunner(_session(config))
    for item in items:
        conn.send(("start", item))
        conn.send(("row", item, asdict(runner.run(item))))
    conn.send(("done",))
    conn.close()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _stop(process) -> None:
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join(timeout=5)


def measure_items(config: WorkerConfig, items: list, blank_row, on_row, log=_log, target=_measure_child) -> None:
    """Run `items` in worker processes, calling `on_row(row)` for each (in order), for
    measured ones and for those a dead worker or the hard stop left behind.
    `target(conn, config, items)` is the worker's body (sends "start", "row", "done")."""
    remaining = list(items)
    hard_stop = config.deadline + HARD_STOP_GRACE_S

    def give_up(item, status: str) -> None:
        row = blank_row(item)
        row.status = status
        remaining.remove(item)
        on_row(row)

    while remaining:
        receiver, sender = _context().Pipe(duplex=False)
        process = _context().Process(target=target, args=(sender, config, list(remaining)), daemon=True)
        process.start()
        sender.close()
        current, outcome = None, None
        while outcome is None:
            wait = hard_stop - time.time()
            if wait <= 0:
                process.kill()
                outcome = "killed"
            elif receiver.poll(min(wait, 1.0)):
                try:
                    message = receiver.recv()
                except EOFError:
                    outcome = "died"
                    continue
                if message[0] == "start":
                    current = message[1]
                elif message[0] == "row":
                    remaining.remove(message[1])
                    on_row(Row(**message[2]))
                    current = None
                else:
                    outcome = "done"
            elif not process.is_alive():
                outcome = "died"
        _stop(process)
        receiver.close()
        if outcome == "done":
            return
        if outcome == "killed":
            if current is not None:
                give_up(current, "failed: killed at the run's hard stop (budget + grace) while measuring")
            for item in list(remaining):
                give_up(item, "skipped: time budget")
            return
        why = _exit_text(process.exitcode)
        if current is None:  # died outside any measurement (start-up): nothing to retry
            for item in list(remaining):
                give_up(item, f"failed: the worker process died before measuring ({why})")
            return
        log(f"    the worker process died ({why}) while measuring {current.runner} at {current.shape}; "
            "its later items are skipped, a new worker continues")
        give_up(current, f"failed: the worker process died ({why}) while measuring this")
        for item in [i for i in remaining if (i.section, i.op_key, i.runner) == (current.section, current.op_key, current.runner)]:
            give_up(item, f"skipped: this implementation killed a worker ({why}) at {current.shape}")


# ----------------------------------------------------------------------------- warm-up

def _lock_autotune_benchmarks(lock_path: str) -> None:
    """Make every autotuning benchmark in this process hold `lock_path` exclusively while
    it times; the configuration is compiled (and run once) before the lock is taken.
    Triton's autotuner fetches its benchmarker from `triton.testing.do_bench` on first use."""
    import triton.testing

    original = triton.testing.do_bench

    def locked_do_bench(fn, *args, **kwargs):
        fn()
        torch.cuda.synchronize()
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return original(fn, *args, **kwargs)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    triton.testing.do_bench = locked_do_bench


def _first_calls(runner, inputs: dict, backward: bool, device) -> dict:
    """Wall seconds of one forward (no_grad) and, with `backward`, one forward + backward
    of `runner` on `inputs` (attnforms layout)."""
    from .gate import as_tuple, leaves, native_args, to_native
    from .measure import failure
    from .timing import timed_call

    result = {}
    args = native_args(runner, inputs)
    with torch.no_grad():
        result["fwd_s"], _ = timed_call(lambda: runner.fn(**args), device)
    del args
    if backward:
        grad_args = leaves(inputs, tuple(inputs), lambda x: to_native(runner, x))
        upstream = to_native(runner, torch.randn_like(inputs["v"]))
        try:
            result["fwd_bwd_s"], _ = timed_call(
                lambda: as_tuple(runner.fn(**grad_args))[0].backward(upstream), device)
        except Exception as exc:
            result["bwd_error"] = failure(exc)
    return result


def _warm_child(conn, config: WorkerConfig, items: list) -> None:
    """The first calls of one implementation at its first item's gate case; for a runner
    compiled per shape, then one call at every item's timed size (not recorded: it fills
    the on-disk compile caches the measuring process reads)."""
    from . import cases
    from .measure import failure

    if config.lock_path:
        _lock_autotune_benchmarks(config.lock_path)
    session = _session(config)
    item = items[0]
    result: dict = {}
    try:
        runner = cases.make_runner(item, config.impl, session.device, session.shapes)
        if runner.unavailable:
            conn.send(("warm", item, dict(error=runner.unavailable)))
            return
        inputs = cases.family_of(item.op_key).WorkerInputs(session)
        case = inputs.gate_case(item)
        result.update(_first_calls(runner, case.inputs, bool(case.grad_names), session.device))
        if runner.compiles_per_shape:
            start = time.perf_counter()
            for other in items:
                full = inputs.timing_inputs(other)
                if full is not None:
                    _first_calls(runner, full, bool(case.grad_names), session.device)
                    del full
                    if session.device.type == "cuda":
                        torch.cuda.empty_cache()
            result["precompile_s"] = time.perf_counter() - start
    except Exception as exc:
        result["error"] = failure(exc)
    _log(f"[{time.time() - config.start:6.1f}s] warm-up {item.op_key} / {item.runner}: "
         + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {str(v)[:100]}" for k, v in result.items()))
    conn.send(("warm", item, result))
    conn.close()


def warm_up(config: WorkerConfig, items: list, processes: int, log=_log) -> dict:
    """First calls of every distinct implementation in `items` (at its first item's
    gate case; a runner compiled per shape also at every item's timed size),
    `processes` at a time. Returns `(section, op_key, runner) -> result` with
    `fwd_s`, `fwd_bwd_s` (wall seconds), `error` / `bwd_error`, or `died` (the process
    was killed by its implementation: the measurement phase then skips it)."""
    by_runner: dict = {}
    for item in items:
        by_runner.setdefault((item.section, item.op_key, item.runner), []).append(item)
    pending, running, results = list(by_runner.items()), {}, {}
    lock_fd, lock_path = _make_lock_file()
    config = replace(config, lock_path=lock_path)
    try:
        while pending or running:
            while pending and len(running) < processes:
                key, its_items = pending.pop(0)
                receiver, sender = _context().Pipe(duplex=False)
                process = _context().Process(target=_warm_child, args=(sender, config, its_items), daemon=True)
                process.start()
                sender.close()
                running[receiver] = (key, process)
            if time.time() > config.deadline:
                # Cut short, not failed: these make their first calls in the measuring process.
                for receiver, (key, process) in running.items():
                    process.kill()
                    results[key] = dict(note="warm-up cut at its share of the time budget")
                    log(f"    warm-up of {key[2]} ({key[1]}) cut at its share of the time budget")
                running.clear()
                for key, _ in pending:
                    results[key] = dict(note="not warmed up: the warm-up's share of the time budget ran out")
                break
            for receiver in multiprocessing.connection.wait(list(running), timeout=1.0):
                key, process = running.pop(receiver)
                try:
                    results[key] = receiver.recv()[2]
                except EOFError:
                    process.join(timeout=5)
                    results[key] = dict(died=_exit_text(process.exitcode))
                    log(f"    warm-up of {key[2]} ({key[1]}) killed its process ({results[key]['died']})")
                _stop(process)
                receiver.close()
    finally:
        os.close(lock_fd)
        os.unlink(lock_path)
    return results


def _make_lock_file():
    import tempfile

    return tempfile.mkstemp(prefix="attnforms-bench-", suffix=".lock")
