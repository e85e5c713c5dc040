"""The window-reach fraction and the no-lookup chance, against plain per-example counts
on the same generated batches."""
import pytest
import torch

from attnforms import models
from attnforms.demo import chance_accuracy, window_reach_fraction
from attnforms.demo.mqar_baselines import accuracy_by_distance, banded_accuracy, direct_lookup_reach, receptive_field
from attnforms.tasks import IGNORE_INDEX, MQAR, MQAR_SETTINGS, generator_for

T0A = MQAR_SETTINGS["T0-a"].task


def _measured_receptive_field(window: int, layers: int, conv_size: int | None) -> int:
    """How far back the last output of a real sliding-window model depends on its input:
    the farthest position whose embedding gets a nonzero gradient."""
    torch.manual_seed(0)
    config = models.ModelConfig(vocab_size=64, d_model=16, n_heads=1, n_layers=layers, layers="swa",
                                window=window, block_conv=conv_size is not None, conv_size=conv_size or 4)
    model = models.build_model(config).double()
    T = 48
    x = torch.randn(1, T, 16, dtype=torch.float64, requires_grad=True)
    model.stack(x).hidden[0, -1].sum().backward()
    seen = x.grad[0].abs().sum(-1).nonzero().flatten()
    return T - 1 - int(seen.min())


@pytest.mark.parametrize("window, layers, conv_size", [(8, 2, None), (8, 2, 4), (5, 3, 3), (3, 1, 4)])
def test_receptive_field_is_what_a_real_model_sees(window, layers, conv_size):
    assert receptive_field(window, layers=layers, conv_size=conv_size or 1) == \
        _measured_receptive_field(window, layers, conv_size)


def _loop_counts(task: MQAR, window: int, examples: int, seed: int, reach: int) -> tuple[float, float]:
    """(fraction of queries whose key is at most `reach` tokens back, chance) by walking
    every example with Python loops."""
    inputs, targets = task.batch(examples, generator_for(seed))
    within, queries, chance_sum = 0, 0, 0.0
    for row_inputs, row_targets in zip(inputs.tolist(), targets.tolist()):
        context = row_inputs[: task.context_len]
        values = {token for token in context if token >= task.vocab_size // 2}
        for position, target in enumerate(row_targets):
            if target == IGNORE_INDEX:
                continue
            key_position = max(i for i, token in enumerate(context) if token == row_inputs[position])
            within += position - key_position <= reach
            queries += 1
            chance_sum += 1 / len(values)
    return within / queries, chance_sum / queries


@pytest.mark.parametrize("task, window, conv_size", [
    (T0A, 8, 1),
    (T0A, 8, 4),
    (T0A, 3, 1),
    (MQAR(vocab_size=64, seq_len=32, num_pairs=4, power_a=1.0, random_non_queries=False), 5, 1),
    (MQAR(vocab_size=128, seq_len=48, num_pairs=4, num_passes=2, random_non_queries=False), 8, 4),
], ids=["T0-a W8", "T0-a W8 conv4", "T0-a W3", "uniform slots", "two passes"])
def test_reach_and_chance_match_independent_counts(task, window, conv_size):
    # Two layers: the window adds W - 1 tokens per layer, the convolution c - 1.
    reach, chance = _loop_counts(task, window, examples=200, seed=3, reach=2 * (window - 1 + conv_size - 1))
    got = window_reach_fraction(task, window, conv_size=conv_size, examples=200, seed=3)
    assert got == pytest.approx(reach, abs=1e-12)
    assert chance_accuracy(task, examples=200, seed=3)["context_values"] == pytest.approx(chance, abs=1e-12)
    assert chance_accuracy(task, examples=8)["value_vocabulary"] == 1 / (task.vocab_size - task.vocab_size // 2)


def test_t0a_numbers_are_in_the_published_band():
    # quality-anchors §5.1 T0-c (no convolution): about 0.09-0.32 of the queries lie within 2 windows.
    assert 0.09 <= window_reach_fraction(T0A, 8) <= 0.32
    # A convolution before each window only widens the reach.
    assert window_reach_fraction(T0A, 8, conv_size=4) > window_reach_fraction(T0A, 8)
    assert chance_accuracy(T0A)["context_values"] == pytest.approx(1 / 8)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="window"):
        window_reach_fraction(T0A, 0)
    with pytest.raises(ValueError, match="conv_size"):
        window_reach_fraction(T0A, 8, conv_size=0)
    with pytest.raises(TypeError, match="MQAR"):
        chance_accuracy("T0-a")


class _Oracle(torch.nn.Module):
    """Answers an MQAR query exactly when its key lies at most `reach` tokens back (by
    reading the inputs), and predicts token 0 otherwise."""

    def __init__(self, task: MQAR, reach: int):
        super().__init__()
        self.task, self.reach = task, reach
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, inputs):
        B, T = inputs.shape
        logits = torch.zeros(B, T, self.task.vocab_size)
        logits[..., 0] = 1.0
        for b in range(B):
            for t in range(self.task.context_len, T):
                for back in range(2, min(self.reach, t) + 1, 2):
                    key = t - back
                    if key < self.task.context_len and key % 2 == 0 and inputs[b, key] == inputs[b, t]:
                        logits[b, t, inputs[b, key + 1]] = 2.0
        return logits


def test_accuracy_by_distance_finds_a_models_reach():
    task = MQAR(vocab_size=64, seq_len=32, num_pairs=4, random_non_queries=False)
    table = accuracy_by_distance(_Oracle(task, reach=10), task, examples=64, seed=5)
    assert sum(share for share, _ in table.values()) == pytest.approx(1.0)
    assert all(acc == (1.0 if d <= 10 else 0.0) for d, (_, acc) in table.items())
    bands = banded_accuracy(table, {"direct": 6, "field": 10})
    assert bands["direct"] == bands["field"] == 1.0 and bands["beyond"] == 0.0
    # The shares are those the reach fraction counts.
    within = sum(share for d, (share, _) in table.items() if d <= 10)
    assert within == pytest.approx(window_reach_fraction(task, 6, layers=2, examples=64, seed=5), abs=1e-12)


def test_direct_lookup_reach():
    # The value after the key must sit among the last window's W inputs, each mixing c inputs.
    assert direct_lookup_reach(8, conv_size=4) == 11 and direct_lookup_reach(8) == 8
    assert direct_lookup_reach(8, conv_size=4) < receptive_field(8, layers=2, conv_size=4)
