"""`attnforms demo`: one command that shows what the library does, on any machine.

It runs `attnforms check`, trains every formulation (softmax and sliding-window
transformers, linear attention, GLA, DeltaNet, Gated DeltaNet, KDA, mLSTM, Aaren) at an
equal parameter count on MQAR T0-a (research/quality-anchors.md §5.1), measures training
throughput and decoding cost, and writes a report folder (report.md, results.json, PNGs).

    from attnforms.demo import run_demo

    if __name__ == "__main__":  # on a CPU the runs go to worker processes, which import this script
        results, folder = run_demo("quick", out="demo-report/smoke")
"""
from .mqar_baselines import chance_accuracy, window_reach_fraction
from .run import run_demo
from .settings import LEVELS, DemoSettings, settings_for

__all__ = ["DemoSettings", "LEVELS", "chance_accuracy", "run_demo", "settings_for", "window_reach_fraction"]
