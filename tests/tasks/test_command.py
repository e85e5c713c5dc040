"""`attnforms train`: argument wiring, named settings, and the clear error while
attnforms.models does not exist. The model factory is replaced by the tiny test model."""
import json
import sys

import pytest

from attnforms.cli import main
from attnforms.tasks import MQAR
from attnforms.tasks import command as train_command


def test_without_attnforms_models_the_command_says_so(monkeypatch, capsys):
    # None in sys.modules makes the import fail exactly as a missing package does, so this
    # holds before and after attnforms.models lands.
    monkeypatch.setitem(sys.modules, "attnforms.models", None)
    assert main(["train", "--task", "T0-a", "--preset", "softmax", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "attnforms.models is not available" in error and "train(model, task, config)" in error


def test_a_named_setting_fixes_the_task_and_its_budgets(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(train_command, "build", lambda preset, vocab, width, depth, seq_len: seen.update(
        preset=preset, vocab=vocab, width=width, depth=depth, seq_len=seq_len))

    def fake_train(model, task, config, resume=None):
        seen.update(task=task, config=config, resume=resume)
        return {"final": {"step": config.steps, "eval_loss": 0.0, "accuracy": 1.0}, "metric": "accuracy"}

    monkeypatch.setattr(train_command, "train", fake_train)
    assert main(["train", "--task", "T0-a", "--preset", "softmax", "--width", "48", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    assert seen["task"] == MQAR(vocab_size=256, seq_len=64, num_pairs=8, random_non_queries=False)
    assert (seen["preset"], seen["vocab"], seen["width"], seen["depth"], seen["seq_len"]) == ("softmax", 256, 48, 2, 64)
    c = seen["config"]
    assert (c.steps, c.train_examples, c.eval_examples, c.out_dir) == (800, 20_000, 1_000, str(tmp_path))

    assert main(["train", "--task", "T0-b", "--preset", "gdn", "--steps", "5", "--train-examples", "64",
                 "--task-option", "power_a=1.0", "--out", str(tmp_path), "--resume", str(tmp_path)]) == 0
    assert seen["task"] == MQAR(vocab_size=256, seq_len=64, num_pairs=16, power_a=1.0, random_non_queries=False)
    assert (seen["config"].steps, seen["config"].train_examples, str(seen["resume"])) == (5, 64, str(tmp_path))


def test_train_end_to_end_with_a_tiny_model_then_resume(monkeypatch, tmp_path, tiny_model):
    monkeypatch.setattr(train_command, "build", lambda preset, vocab, width, depth, seq_len: tiny_model(vocab))
    args = ["train", "--task", "mqar", "--vocab-size", "32", "--seq-len", "16", "--task-option", "num_pairs=2",
            "--task-option", "random_non_queries=False", "--preset", "tiny", "--batch-size", "8",
            "--eval-every", "3", "--eval-examples", "32", "--warmup-steps", "2", "--out", str(tmp_path),
            "--no-progress", "--device", "cpu"]
    assert main([*args, "--steps", "6"]) == 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["task"]["num_pairs"] == 2 and log["task"]["random_non_queries"] is False
    assert [e["step"] for e in log["evals"]] == [3, 6]

    assert main([*args, "--steps", "9", "--resume", str(tmp_path)]) == 0
    resumed = json.loads((tmp_path / "log.json").read_text())
    assert resumed["train_losses"][:6] == log["train_losses"] and len(resumed["train_losses"]) == 9
    assert [e["step"] for e in resumed["evals"]] == [3, 6, 9]


@pytest.mark.parametrize("extra, message", [
    (["--task", "sorting"], "name"),
    (["--task", "induction", "--task-option", "num_pairs=3"], "num_pairs"),
    (["--task", "T0-a", "--task-option", "depth=0.5"], "task-option"),
    (["--task", "char_lm", "--vocab-size", "64"], "vocab_size"),
])
def test_bad_task_arguments_are_reported(monkeypatch, capsys, extra, message):
    monkeypatch.setattr(train_command, "build", lambda *a, **k: pytest.fail("no model should be built"))
    assert main(["train", "--preset", "tiny", *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_malformed_task_option_is_a_usage_error():
    with pytest.raises(SystemExit):
        main(["train", "--task", "mqar", "--preset", "tiny", "--task-option", "num_pairs"])
