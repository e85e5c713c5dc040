"""The window-reach fraction and the no-lookup chance, against plain per-example counts
on the same generated batches."""
import pytest

from attnforms.demo import chance_accuracy, window_reach_fraction
from attnforms.tasks import IGNORE_INDEX, MQAR, MQAR_SETTINGS, generator_for

T0A = MQAR_SETTINGS["T0-a"].task


def _loop_counts(task: MQAR, window: int, examples: int, seed: int) -> tuple[float, float]:
    """(reach fraction, chance) by walking every example with Python loops."""
    inputs, targets = task.batch(examples, generator_for(seed))
    within, queries, chance_sum = 0, 0, 0.0
    for row_inputs, row_targets in zip(inputs.tolist(), targets.tolist()):
        context = row_inputs[: task.context_len]
        values = {token for token in context if token >= task.vocab_size // 2}
        for position, target in enumerate(row_targets):
            if target == IGNORE_INDEX:
                continue
            key_position = max(i for i, token in enumerate(context) if token == row_inputs[position])
            within += position - key_position < 2 * window
            queries += 1
            chance_sum += 1 / len(values)
    return within / queries, chance_sum / queries


@pytest.mark.parametrize("task, window", [
    (T0A, 8),
    (T0A, 3),
    (MQAR(vocab_size=64, seq_len=32, num_pairs=4, power_a=1.0, random_non_queries=False), 5),
    (MQAR(vocab_size=128, seq_len=48, num_pairs=4, num_passes=2, random_non_queries=False), 8),
], ids=["T0-a W8", "T0-a W3", "uniform slots", "two passes"])
def test_reach_and_chance_match_independent_counts(task, window):
    reach, chance = _loop_counts(task, window, examples=200, seed=3)
    assert window_reach_fraction(task, window, examples=200, seed=3) == pytest.approx(reach, abs=1e-12)
    assert chance_accuracy(task, examples=200, seed=3)["context_values"] == pytest.approx(chance, abs=1e-12)
    assert chance_accuracy(task, examples=8)["value_vocabulary"] == 1 / (task.vocab_size - task.vocab_size // 2)


def test_t0a_numbers_are_in_the_published_band():
    # quality-anchors §5.1 T0-c: about 0.09-0.32 of the queries lie within 2 windows.
    assert 0.09 <= window_reach_fraction(T0A, 8) <= 0.32
    assert chance_accuracy(T0A)["context_values"] == pytest.approx(1 / 8)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="window"):
        window_reach_fraction(T0A, 0)
    with pytest.raises(TypeError, match="MQAR"):
        chance_accuracy("T0-a")
