"""The training loop: it learns, it resumes bit for bit, it logs what it says it logs."""
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from attnforms.tasks import IGNORE_INDEX, MQAR, InductionHeads, generator_for, held_out_seed
from attnforms.tasks.checkpoint import MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE, saved_steps
from attnforms.tasks.train import TrainConfig, learning_rate_at, train

TASK = MQAR(vocab_size=32, seq_len=16, num_pairs=2, random_non_queries=False)
EVAL_FIELDS = {"step", "lr", "train_loss", "eval_loss", "accuracy", "tokens_per_s", "eval_s", "wall_s"}


def config(**changes) -> TrainConfig:
    settings = dict(steps=12, batch_size=16, lr=1e-2, warmup_steps=3, eval_every=4, eval_examples=64,
                    progress=False, device="cpu")
    return TrainConfig(**{**settings, **changes})


def held_out_loss_and_accuracy(model, task, seed, examples):
    """The held-out set regenerated here, scored with plain cross-entropy and arg-max."""
    inputs, targets = task.batch(examples, generator_for(held_out_seed(seed)), split="validation")
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    scored = targets != IGNORE_INDEX
    loss = F.cross_entropy(logits[scored], targets[scored]).item()
    accuracy = (logits.argmax(-1)[scored] == targets[scored]).float().mean().item()
    return loss, accuracy


def test_the_schedule_warms_up_then_decays_by_cosine():
    c = TrainConfig(steps=110, lr=2.0, warmup_steps=10, min_lr_ratio=0.25)
    assert [learning_rate_at(s, c) for s in range(3)] == pytest.approx([0.2, 0.4, 0.6])
    assert learning_rate_at(9, c) == 2.0
    assert learning_rate_at(109, c) == pytest.approx(0.5)
    assert learning_rate_at(59, c) == pytest.approx(0.5 + 1.5 * 0.5 * (1 + math.cos(math.pi * 49 / 99)))
    decay = [learning_rate_at(s, c) for s in range(9, 110)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_the_loss_falls_on_a_learnable_task(tiny_model):
    # At a query the answer is one of the V/2 values: a model that learns only that much
    # already drops from ln 32 to about ln 16.
    model = tiny_model(TASK.vocab_size)
    before, _ = held_out_loss_and_accuracy(model, TASK, seed=0, examples=256)
    log = train(model, TASK, config(steps=40, eval_every=20, eval_examples=256))
    assert before > math.log(32) - 0.2
    assert log["final"]["eval_loss"] < before - 0.5
    losses = log["train_losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_the_logged_evaluation_is_the_held_out_set_scored_independently(tiny_model):
    model = tiny_model(TASK.vocab_size)
    log = train(model, TASK, config(steps=6, eval_every=6, eval_examples=96, eval_batch_size=40, seed=7))
    loss, accuracy = held_out_loss_and_accuracy(model, TASK, seed=7, examples=96)
    assert log["final"]["eval_loss"] == pytest.approx(loss, rel=1e-5)
    assert log["final"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)


@pytest.mark.parametrize("train_examples", [None, 48], ids=["fresh-data", "fixed-set-of-3-batches"])
def test_resuming_gives_the_losses_of_an_uninterrupted_run(tiny_model, tmp_path, train_examples):
    c = config(steps=14, eval_every=4, checkpoint_every=5, keep_checkpoints=None, train_examples=train_examples)
    whole = tiny_model(TASK.vocab_size, seed=0)
    log = train(whole, TASK, dataclasses.replace(c, out_dir=str(tmp_path / "whole")))
    assert [step for step, _ in saved_steps(tmp_path / "whole")] == [5, 10, 14]

    # A different initialisation and a disturbed global RNG: the checkpoint must restore both.
    resumed = tiny_model(TASK.vocab_size, seed=1)
    torch.manual_seed(99)
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-00000005"
    log_resumed = train(resumed, TASK, dataclasses.replace(c, out_dir=str(tmp_path / "resumed")), resume=checkpoint)

    assert len(log["train_losses"]) == 14
    assert log_resumed["train_losses"] == log["train_losses"]
    assert log_resumed["evals"][-1]["eval_loss"] == log["evals"][-1]["eval_loss"]
    assert [e["step"] for e in log_resumed["evals"]] == [4, 8, 12, 14]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_stop_at_ends_training_after_the_first_evaluation_that_reaches_it(tiny_model, tmp_path):
    whole = train(tiny_model(TASK.vocab_size), TASK, config(steps=40, eval_every=4))
    assert whole["stopped_at"] == 40
    # The threshold: the accuracy of an evaluation in the middle of the uninterrupted run,
    # so the same run (same seed, same data) must stop exactly at the first one reaching it.
    accuracies = [e["accuracy"] for e in whole["evals"]]
    threshold = accuracies[len(accuracies) // 2]
    first = next(e["step"] for e in whole["evals"] if e["accuracy"] >= threshold)
    c = config(steps=40, eval_every=4, stop_at=threshold, out_dir=str(tmp_path / "run"))
    stopped = train(tiny_model(TASK.vocab_size), TASK, c)
    assert stopped["stopped_at"] == first == stopped["final"]["step"]
    assert len(stopped["train_losses"]) == first
    assert stopped["train_losses"] == whole["train_losses"][:first]
    assert [step for step, _ in saved_steps(tmp_path / "run")][-1] == first
    # Resuming a run that has stopped trains no further.
    again = train(tiny_model(TASK.vocab_size), TASK, c, resume=tmp_path / "run")
    assert again["stopped_at"] == first and len(again["train_losses"]) == first


def test_runs_are_reproducible_from_the_seed(tiny_model):
    first = train(tiny_model(TASK.vocab_size), TASK, config(steps=5, seed=3))
    second = train(tiny_model(TASK.vocab_size), TASK, config(steps=5, seed=3))
    other = train(tiny_model(TASK.vocab_size), TASK, config(steps=5, seed=4))
    assert first["train_losses"] == second["train_losses"]
    assert first["train_losses"] != other["train_losses"]


def test_the_log_has_its_documented_fields_and_is_written_as_json(tiny_model, tmp_path):
    log = train(tiny_model(TASK.vocab_size), TASK, config(steps=10, eval_every=4, out_dir=str(tmp_path)))
    assert set(log) == {"task", "config", "model", "device", "precision", "metric", "evals", "train_losses", "final",
                        "stopped_at"}
    assert log["task"] == {"name": "mqar", "vocab_size": 32, "seq_len": 16, "num_pairs": 2, "power_a": 0.01,
                           "num_passes": 1, "random_non_queries": False}
    assert (log["device"], log["precision"], log["metric"]) == ("cpu", "float32", "accuracy")
    assert log["model"]["parameters"] == sum(p.numel() for p in tiny_model(TASK.vocab_size).parameters())
    assert [e["step"] for e in log["evals"]] == [4, 8, 10] and log["final"] == log["evals"][-1]
    for entry, window in zip(log["evals"], [(0, 4), (4, 8), (8, 10)]):
        assert set(entry) == EVAL_FIELDS
        assert entry["train_loss"] == pytest.approx(sum(log["train_losses"][slice(*window)]) / (window[1] - window[0]))
        assert entry["tokens_per_s"] > 0 and 0 <= entry["accuracy"] <= 1
        # The evaluation's own seconds fit inside the wall time since the previous entry.
        assert 0 < entry["eval_s"] < entry["wall_s"]
    assert log["evals"][0]["wall_s"] < log["evals"][1]["wall_s"] < log["evals"][2]["wall_s"]
    assert all(e["eval_s"] < e["wall_s"] - before["wall_s"] for before, e in zip(log["evals"], log["evals"][1:]))
    assert json.loads((tmp_path / "log.json").read_text()) == json.loads(json.dumps(log))


def test_checkpoints_hold_weights_optimizer_and_trainer_state(tiny_model, tmp_path):
    train(tiny_model(TASK.vocab_size), TASK, config(steps=9, eval_every=3, out_dir=str(tmp_path)))
    (step, directory), = saved_steps(tmp_path)  # keep_checkpoints=1 keeps only the newest
    assert step == 9
    assert {p.name for p in directory.iterdir()} == {MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE}
    state = torch.load(directory / TRAINER_FILE, weights_only=True)
    assert state["step"] == 9 and len(state["log"]["train_losses"]) == 9


def test_save_and_load_are_injectable(tiny_model, tmp_path):
    calls = []

    def save(model, directory):
        calls.append(("save", directory.name))
        torch.save(model.state_dict(), directory / "weights.pt")

    def load(model, directory):
        calls.append(("load", directory.name))
        model.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))

    c = config(steps=8, eval_every=4, out_dir=str(tmp_path), keep_checkpoints=None)
    log = train(tiny_model(TASK.vocab_size), TASK, c, save_model=save, load_model=load)
    assert not (saved_steps(tmp_path)[0][1] / MODEL_FILE).exists()
    # A run directory resumes from its newest checkpoint: nothing is left to do at step 8.
    again = train(tiny_model(TASK.vocab_size, seed=5), TASK, c, resume=tmp_path, save_model=save, load_model=load)
    assert again["train_losses"] == log["train_losses"]
    assert calls == [("save", "step-00000004.partial"), ("save", "step-00000008.partial"), ("load", "step-00000008")]


def test_resuming_on_another_task_is_refused(tiny_model, tmp_path):
    train(tiny_model(TASK.vocab_size), TASK, config(steps=4, out_dir=str(tmp_path)))
    other = InductionHeads(vocab_size=32, seq_len=16)
    with pytest.raises(ValueError, match="resume"):
        train(tiny_model(32), other, config(steps=8), resume=tmp_path)
    with pytest.raises(ValueError, match="resume"):
        train(tiny_model(32), TASK, config(steps=8), resume=tmp_path / "nothing-here")


def test_a_model_with_the_wrong_vocabulary_is_refused(tiny_model):
    with pytest.raises(ValueError, match="model: expected logits"):
        train(tiny_model(TASK.vocab_size + 1), TASK, config(steps=2))


@pytest.mark.parametrize("changes, argument", [
    (dict(steps=0), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=0.0), "lr"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(betas=(0.9, 1.0)), "betas"),
    (dict(min_lr_ratio=1.5), "min_lr_ratio"),
    (dict(grad_clip=0.0), "grad_clip"),
    (dict(eval_every=0), "eval_every"),
    (dict(train_examples=8), "train_examples"),
    (dict(seed=2**31), "seed"),
    (dict(precision="fp16"), "precision"),
    (dict(keep_checkpoints=0), "keep_checkpoints"),
])
def test_bad_configs_name_the_field(changes, argument):
    with pytest.raises(ValueError, match=argument):
        config(**changes)


def test_a_new_run_will_not_write_into_another_runs_checkpoints(tiny_model, tmp_path):
    train(tiny_model(TASK.vocab_size), TASK, config(steps=4, out_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="out_dir"):
        train(tiny_model(TASK.vocab_size), TASK, config(steps=4, out_dir=str(tmp_path)))
