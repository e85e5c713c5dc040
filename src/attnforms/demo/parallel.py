"""The demo's training runs side by side on a CPU: one process per core, one thread each.

Why: the demo's models are small (about 120k parameters, batches of 64 × 64 tokens), so a
training step is some 1,000 small ops. Two threads on one step wait on each other at
every op, and many ops are too small to split at all: on the 2-core development machine
a step on 2 threads took 1.2-2x less time than on 1, while two 1-thread processes side by
side each ran at 1.2-1.4x the 2-thread step time, about 1.5x the throughput
(docs/demo.md, "Where the time goes"). Runs are independent and seeded, and a 1-thread
run computes the same whichever process runs it and whatever runs beside it.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

import torch


def available_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_in_processes(function: Callable[..., Any], jobs: Sequence[tuple], workers: int,
                     threads: int) -> Iterator[tuple[int, Any]]:
    """Yield `(i, function(*jobs[i]))` as each job finishes, running up to `workers` jobs
    at once, each process with `threads` intra-op threads. `function` must be importable
    by name (module level) and its arguments and result picklable.

    Processes are started fresh ("spawn"), not forked: a fork copies the parent's OpenMP
    thread pool in a state the child cannot use. A fresh process imports the main script,
    so a script that gets here must call under `if __name__ == "__main__":`. A failed job
    raises here, and the jobs not yet started are cancelled.
    """
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_set_threads, initargs=(threads,))
    try:
        futures = {pool.submit(function, *job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BrokenProcessPool as error:
        raise RuntimeError(
            "a worker process died before finishing its job (out of memory, or killed). If this was started from "
            "a script, call it under `if __name__ == \"__main__\":`: each worker imports the main script, which "
            "must not start the work again; or pass workers=1 (--workers 1) to train in this process."
        ) from error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
