"""MQAR as Zoology's `multiquery_ar` defines it, checked by re-reading every example."""
import pytest
import torch

from attnforms.tasks import IGNORE_INDEX, MQAR, SETTINGS, generator_for


def check_example(task: MQAR, inputs: list[int], targets: list[int]) -> None:
    """Every property of one example, recomputed from its tokens with plain Python."""
    K, V, half, ctx = task.num_pairs, task.vocab_size, task.vocab_size // 2, task.context_len
    block = inputs[: 2 * K]
    keys, values = block[0::2], block[1::2]
    assert inputs[:ctx] == block * task.num_passes
    assert len(set(keys)) == K and all(1 <= k < half for k in keys)
    assert len(set(values)) == K and all(half <= v < V for v in values)
    value_of = dict(zip(keys, values))

    scored = [t for t, target in enumerate(targets) if target != IGNORE_INDEX]
    assert len(scored) == K
    assert all(t >= ctx and (t - ctx) % 2 == 0 for t in scored), "queries open their two-token slot"
    assert sorted(inputs[t] for t in scored) == sorted(keys), "every key is queried exactly once"
    for t in scored:
        assert targets[t] == value_of[inputs[t]]
    if not task.random_non_queries:
        assert all(inputs[t] == 0 for t in range(ctx, task.seq_len) if t not in scored)


@pytest.mark.parametrize("task", [
    pytest.param(MQAR(vocab_size=256, seq_len=64, num_pairs=8, random_non_queries=False), id="T0-a"),
    pytest.param(MQAR(vocab_size=256, seq_len=64, num_pairs=16, random_non_queries=False), id="T0-b-full"),
    pytest.param(MQAR(vocab_size=67, seq_len=66, num_pairs=5), id="V67-T66-random-filler"),
    pytest.param(MQAR(vocab_size=40, seq_len=34, num_pairs=4, num_passes=3), id="three-passes"),
    pytest.param(MQAR(vocab_size=5, seq_len=4, num_pairs=1), id="smallest"),
])
def test_every_answer_is_the_value_paired_with_the_queried_key(task):
    inputs, targets = task.batch(64, generator_for(1))
    for x, y in zip(inputs.tolist(), targets.tolist()):
        check_example(task, x, y)


def test_random_filler_replaces_exactly_the_zero_filler():
    zero = MQAR(vocab_size=128, seq_len=64, num_pairs=6, random_non_queries=False)
    noisy = MQAR(vocab_size=128, seq_len=64, num_pairs=6, random_non_queries=True)
    x0, y0 = zero.batch(32, generator_for(5))
    x1, y1 = noisy.batch(32, generator_for(5))
    assert torch.equal(y0, y1)
    assert torch.equal(x1[x0 != 0], x0[x0 != 0])
    filler = x1[x0 == 0]
    # Uniform over [0, V): most filler is no longer 0 and covers the whole vocabulary.
    assert (filler != 0).float().mean() > 0.95 and filler.max() >= 120 and filler.min() == 0


@pytest.mark.parametrize("power_a", [0.01, 0.5, 1.0])
def test_query_slots_follow_the_power_law(power_a):
    # With one pair there is a single draw, whose law is exactly P(g) ∝ a·(g+1)^(a-1).
    task = MQAR(vocab_size=128, seq_len=64, num_pairs=1, power_a=power_a, random_non_queries=False)
    _, targets = task.batch(20_000, generator_for(2))
    slots = ((targets != IGNORE_INDEX).long().argmax(dim=1) - 2) // 2
    observed = torch.bincount(slots, minlength=31).double() / len(slots)
    weights = torch.tensor([power_a * (g + 1) ** (power_a - 1) for g in range(31)], dtype=torch.float64)
    expected = weights / weights.sum()
    assert 0.5 * (observed - expected).abs().sum() < 0.02  # total variation


def test_default_law_crowds_queries_after_the_context():
    task = SETTINGS["T0-a"].task
    _, targets = task.batch(2000, generator_for(3))
    positions = (targets != IGNORE_INDEX).nonzero()[:, 1]
    slots = (positions - task.context_len) // 2
    counts = torch.bincount(slots, minlength=task.num_slots)
    assert counts[0] > 4 * counts[-1]
    assert (counts[:-1] >= counts[1:] * 0.8).all(), "falls with the slot index (up to sampling noise)"


def test_tier0_settings_are_the_quality_anchor_ones():
    a, b = SETTINGS["T0-a"], SETTINGS["T0-b"]
    assert a.task == MQAR(vocab_size=256, seq_len=64, num_pairs=8, power_a=0.01, random_non_queries=False)
    assert b.task == MQAR(vocab_size=256, seq_len=64, num_pairs=16, power_a=0.01, random_non_queries=False)
    assert (a.train_examples, a.eval_examples, a.steps) == (20_000, 1_000, 800)
    assert (b.train_examples, b.eval_examples, b.steps) == (20_000, 1_000, 1_000)


@pytest.mark.parametrize("options, argument", [
    (dict(vocab_size=256, seq_len=64, num_pairs=17), "num_pairs"),  # 4K > T
    (dict(vocab_size=256, seq_len=64, num_pairs=11, num_passes=2), "num_pairs"),  # 6K > T
    (dict(vocab_size=64, seq_len=64, num_pairs=4), "vocab_size"),  # Zoology needs V > T
    (dict(vocab_size=3, seq_len=2, num_pairs=1), "vocab_size"),
    (dict(vocab_size=256, seq_len=63, num_pairs=4), "seq_len"),  # odd
    (dict(vocab_size=256, seq_len=64, num_pairs=0), "num_pairs"),
    (dict(vocab_size=256, seq_len=64, num_pairs=4, power_a=0.0), "power_a"),
    (dict(vocab_size=256, seq_len=64, num_pairs=4, num_passes=0), "num_passes"),
    (dict(vocab_size=256.0, seq_len=64, num_pairs=4), "vocab_size"),
])
def test_bad_settings_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        MQAR(**options)
