"""Benchmarks: every op at the canonical shapes against the installed peers, each
implementation checked against the float64 reference before it is timed.

    shapes.py   canonical and `--quick` shapes, decode batch sizes
    flops.py    chunkwise FLOP counts, byte floors, the hardware ceilings
    timing.py   do_bench medians, peak memory, first-call time, measured ceilings
    gate.py     the correctness gate (noise-relative rule against float64)
    peers.py    the Runner, optional peer runners (fla, mlstm_kernels) and their conventions
    family.py   what a family of ops provides (Item, GateCase, the interface)
    linear.py   the gated-delta-rule / mLSTM / Aaren cases and decode steps
    softmax.py  softmax attention: causal, window, ALiBi, a new mod's compile, decode
    softmax_peers.py  torch SDPA (flash, cuDNN, default) and compiled FlexAttention
    cases.py    the registry of families: op keys, plan, pairings, rows, runners
    measure.py  one item: the gate, then the timings (ItemRunner, in a worker)
    workers.py  parallel warm-up and isolated measuring processes, the hard stop
    report.py   rows, ratios, targets, tables, JSON and PNG
    suite.py    one run end to end (`attnforms bench`)

On the GPU machine: `OUT=<folder> bash scripts/device_bench.sh`.
"""
from .suite import BenchConfig, ours_wrong, run_bench

__all__ = ["BenchConfig", "ours_wrong", "run_bench"]
