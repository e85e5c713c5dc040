"""What every task promises: deterministic batches from a seed, the [B, T] int64 contract,
tokens inside the vocabulary, and clear errors for bad requests."""
import pytest
import torch

from attnforms.tasks import (
    IGNORE_INDEX, SETTINGS, TASKS, CharLM, InductionHeads, MQAR, ModularSum, Needle, SelectiveCopy,
    answer_accuracy, bits_per_char, generator_for, held_out_seed, make_task, metric_totals, parity,
)

SMALL_TASKS = [
    pytest.param(MQAR(vocab_size=64, seq_len=30, num_pairs=3), id="mqar-V64-T30-K3"),
    pytest.param(Needle(vocab_size=20, seq_len=37, passkey_length=4), id="needle-V20-T37-L4"),
    pytest.param(SelectiveCopy(vocab_size=8, seq_len=33, num_tokens=5), id="copy-V8-T33-n5"),
    pytest.param(InductionHeads(vocab_size=7, seq_len=29), id="induction-V7-T29"),
    pytest.param(ModularSum(modulus=5, seq_len=31, min_length=3), id="modsum-m5-T31"),
    pytest.param(parity(seq_len=1), id="parity-T1"),
    pytest.param(CharLM(seq_len=63), id="charlm-T63"),
]


@pytest.mark.parametrize("task", SMALL_TASKS)
def test_batches_follow_the_contract(task):
    inputs, targets = task.batch(5, generator_for(3))
    assert inputs.shape == targets.shape == (5, task.seq_len)
    assert inputs.dtype == targets.dtype == torch.long
    assert 0 <= int(inputs.min()) and int(inputs.max()) < task.vocab_size
    scored = targets != IGNORE_INDEX
    assert scored.any(dim=1).all(), "every example has at least one scored position"
    assert 0 <= int(targets[scored].min()) and int(targets[scored].max()) < task.vocab_size
    assert task.metric in ("accuracy", "bits_per_char")


@pytest.mark.parametrize("task", SMALL_TASKS)
def test_same_seed_same_batch_other_seed_other_batch(task):
    first = task.batch(16, generator_for(11))
    torch.manual_seed(123)  # the global RNG must play no part
    again = task.batch(16, generator_for(11))
    other = task.batch(16, generator_for(12))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not (torch.equal(first[0], other[0]) and torch.equal(first[1], other[1]))


@pytest.mark.parametrize("task", SMALL_TASKS)
def test_bad_batch_requests_name_the_argument(task):
    with pytest.raises(ValueError, match="batch_size"):
        task.batch(0, generator_for(0))
    with pytest.raises(ValueError, match="generator"):
        task.batch(2, 0)
    with pytest.raises(ValueError, match="split"):
        task.batch(2, generator_for(0), split="test")


def test_make_task_builds_by_name_and_refuses_unknown_names_and_options():
    assert make_task("mqar", vocab_size=128, seq_len=32, num_pairs=4) == MQAR(vocab_size=128, seq_len=32, num_pairs=4)
    assert make_task("parity", seq_len=9) == ModularSum(modulus=2, seq_len=9)
    assert set(TASKS) == {"mqar", "needle", "selective_copy", "induction", "modular_sum", "parity", "char_lm"}
    with pytest.raises(ValueError, match="name"):
        make_task("sorting")
    with pytest.raises(ValueError, match="num_pairs"):
        make_task("induction", num_pairs=3)


def test_held_out_seeds_sit_above_every_training_seed():
    assert held_out_seed(0) == 2**31 and held_out_seed(2**31 - 1) == 2**32 - 1
    with pytest.raises(ValueError, match="seed"):
        held_out_seed(2**31)
    with pytest.raises(ValueError, match="seed"):
        generator_for(-1)


def test_settings_are_named_tasks_with_their_budgets():
    assert {"T0-a", "T0-b"} <= set(SETTINGS)
    for setting in SETTINGS.values():
        inputs, _ = setting.task.batch(2, generator_for(0))
        assert inputs.shape == (2, setting.task.seq_len)


def test_accuracy_counts_only_scored_positions():
    # Arg-max predictions [[2, 0, 1]]; targets score positions 0 and 2 only.
    logits = torch.tensor([[[0.0, 1.0, 5.0], [9.0, 0.0, 0.0], [0.0, 3.0, 1.0]]])
    assert answer_accuracy(logits, torch.tensor([[2, 1, 0]])) == pytest.approx(1 / 3)
    assert answer_accuracy(logits, torch.tensor([[2, IGNORE_INDEX, 0]])) == 0.5
    assert metric_totals("accuracy", logits, torch.tensor([[2, IGNORE_INDEX, 1]])) == (2.0, 2)


def test_bits_per_char_is_cross_entropy_in_bits_over_scored_positions():
    probabilities = torch.tensor([[[0.5, 0.25, 0.25], [0.125, 0.375, 0.5]]])
    logits = probabilities.log()
    # -log2 of 0.25 (2 bits) and of 0.125 (3 bits); the ignored position adds nothing.
    assert bits_per_char(logits, torch.tensor([[1, 0]])) == pytest.approx(2.5)
    assert bits_per_char(logits, torch.tensor([[1, IGNORE_INDEX]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="metric"):
        metric_totals("perplexity", logits, torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="logits, targets"):
        bits_per_char(logits, torch.tensor([1, 0]))
