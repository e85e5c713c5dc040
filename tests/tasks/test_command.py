"""`attnforms train`: argument wiring and named settings (with the model factory replaced),
and end to end with a real tiny preset of attnforms.models, checkpointed and resumed."""
import json

import pytest

from attnforms import models
from attnforms.cli import main
from attnforms.tasks import MQAR
from attnforms.tasks import command as train_command


def test_a_named_setting_fixes_the_task_and_its_budgets(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(train_command, "build", lambda preset, vocab, width, depth, seq_len: seen.update(
        preset=preset, vocab=vocab, width=width, depth=depth, seq_len=seq_len))

    def fake_train(model, task, config, resume=None, **checkpoint_functions):
        seen.update(task=task, config=config, resume=resume)
        return {"final": {"step": config.steps, "eval_loss": 0.0, "accuracy": 1.0}, "metric": "accuracy"}

    monkeypatch.setattr(train_command, "train", fake_train)
    assert main(["train", "--task", "T0-a", "--preset", "transformer", "--width", "48", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    assert seen["task"] == MQAR(vocab_size=256, seq_len=64, num_pairs=8, random_non_queries=False)
    assert (seen["preset"], seen["vocab"], seen["width"], seen["depth"], seen["seq_len"]) == ("transformer", 256, 48, 2, 64)
    c = seen["config"]
    assert (c.steps, c.train_examples, c.eval_examples, c.out_dir) == (800, 20_000, 1_000, str(tmp_path))

    assert main(["train", "--task", "T0-b", "--preset", "gdn", "--steps", "5", "--train-examples", "64",
                 "--task-option", "power_a=1.0", "--out", str(tmp_path), "--resume", str(tmp_path)]) == 0
    assert seen["task"] == MQAR(vocab_size=256, seq_len=64, num_pairs=16, power_a=1.0, random_non_queries=False)
    assert (seen["config"].steps, seen["config"].train_examples, str(seen["resume"])) == (5, 64, str(tmp_path))


def test_train_end_to_end_with_a_real_tiny_preset_then_resume(tmp_path):
    args = ["train", "--task", "mqar", "--vocab-size", "32", "--seq-len", "16", "--task-option", "num_pairs=2",
            "--task-option", "random_non_queries=False", "--preset", "gdn", "--width", "16", "--depth", "1",
            "--heads", "2", "--batch-size", "8", "--eval-every", "3", "--eval-examples", "32",
            "--warmup-steps", "2", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main([*args, "--steps", "6"]) == 0
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["task"]["num_pairs"] == 2 and log["task"]["random_non_queries"] is False
    assert log["model"]["class"] == "CausalLM"
    assert [e["step"] for e in log["evals"]] == [3, 6]
    # Checkpoints are attnforms.models directories: models.load opens them.
    model = models.load(tmp_path / "checkpoints" / "step-00000006")
    assert (model.config.layers, model.config.d_model, model.config.n_heads) == ("gdn", 16, 2)

    assert main([*args, "--steps", "9", "--resume", str(tmp_path)]) == 0
    resumed = json.loads((tmp_path / "log.json").read_text())
    assert resumed["train_losses"][:6] == log["train_losses"] and len(resumed["train_losses"]) == 9
    assert [e["step"] for e in resumed["evals"]] == [3, 6, 9]


def test_resuming_with_another_width_is_refused(tmp_path):
    args = ["train", "--task", "mqar", "--vocab-size", "32", "--seq-len", "16", "--task-option", "num_pairs=2",
            "--preset", "linear", "--depth", "1", "--heads", "2", "--batch-size", "8", "--eval-examples", "16",
            "--warmup-steps", "1", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main([*args, "--width", "16", "--steps", "2"]) == 0
    with pytest.raises(ValueError, match="d_model"):
        main([*args, "--width", "24", "--steps", "4", "--resume", str(tmp_path)])


def test_an_unknown_preset_is_reported(capsys):
    assert main(["train", "--task", "T0-a", "--preset", "softmax", "--no-progress"]) == 2
    assert "unknown preset 'softmax'" in capsys.readouterr().err


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
