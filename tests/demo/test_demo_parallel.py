"""The demo's runs side by side: worker processes give exactly what one process gives."""
import dataclasses
import operator

import pytest
import torch
from tqdm import tqdm

from attnforms.cli import main
from attnforms.demo import settings_for
from attnforms.demo.lineup import lineup
from attnforms.demo.parallel import run_in_processes
from attnforms.demo.run import _train_lineup, choose_workers
from attnforms.tasks import MQAR_SETTINGS


def test_run_in_processes_yields_every_result_and_raises_a_failure():
    assert dict(run_in_processes(operator.truediv, [(6, 3), (1, 4), (5, 5)], workers=2, threads=1)) == {
        0: 2.0, 1: 0.25, 2: 1.0}
    with pytest.raises(ZeroDivisionError):
        list(run_in_processes(operator.truediv, [(1, 0), (2, 1)], workers=2, threads=1))


def test_a_script_without_a_main_guard_gets_told_how_to_fix_it(tmp_path):
    """Worker processes import the main script; one that starts the work unguarded would
    start it again in every worker. The parent must say what to do, not just that a
    process pool broke."""
    import os
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("import operator\nfrom attnforms.demo.parallel import run_in_processes\n"
                      "print(list(run_in_processes(operator.truediv, [(1, 2), (3, 4)], workers=2, threads=1)))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr and "workers=1" in done.stderr


def test_workers_are_one_per_core_on_a_cpu_and_one_on_a_gpu():
    assert choose_workers(False, jobs=9, cores=2) == 2
    assert choose_workers(False, jobs=9, cores=16) == 9  # never more processes than runs
    assert choose_workers(False, jobs=1, cores=2) == 1
    assert choose_workers(True, jobs=9, cores=16) == 1  # the runs share the GPU


def test_runs_in_worker_processes_equal_runs_in_this_process():
    """Two formulations trained side by side in 1-thread worker processes give the same
    rows (accuracy, steps, evaluation curve) and bit-identical weights as the same runs
    one after the other in this process on 1 thread, and come back in lineup order."""
    task = MQAR_SETTINGS["T0-a"].task
    settings = dataclasses.replace(settings_for("quick", False), steps=6, eval_every=3)
    entries = lineup(task.vocab_size, presets=("gdn", "transformer", "aaren"), chunk_size=32)
    bar = tqdm(disable=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone, alone_models = _train_lineup("T0-a", task, entries, settings, "cpu", settings.steps, bar, workers=1)
    finally:
        torch.set_num_threads(threads)
    side, side_models = _train_lineup("T0-a", task, entries, settings, "cpu", settings.steps, bar, workers=2,
                                      threads=1)
    assert list(side) == list(alone) == ["transformer", "gdn", "aaren"]
    timing = {"train_s", "eval_s", "tokens_per_s"}
    for preset in alone:
        assert {k: v for k, v in side[preset].items() if k not in timing} == \
               {k: v for k, v in alone[preset].items() if k not in timing}
        for (name, mine), (_, theirs) in zip(side_models[preset].state_dict().items(),
                                             alone_models[preset].state_dict().items()):
            assert torch.equal(mine, theirs), (preset, name)


def test_workers_must_be_a_positive_count(capsys, tmp_path):
    assert main(["demo", "--quick", "--workers", "0", "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "workers" in capsys.readouterr().out
