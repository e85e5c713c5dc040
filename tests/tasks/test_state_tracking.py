"""Running sums mod m and parity, recomputed token by token."""
import pytest

from attnforms.tasks import IGNORE_INDEX, ModularSum, generator_for, parity


def test_parity_targets_are_the_running_xor():
    task = parity(seq_len=40)
    assert task.vocab_size == 3
    inputs, targets = task.batch(32, generator_for(0))
    for x, y in zip(inputs.tolist(), targets.tolist()):
        xor = 0
        for bit, target in zip(x, y):
            assert bit in (0, 1)
            xor ^= bit
            assert target == xor


@pytest.mark.parametrize("modulus, seq_len, min_length", [(5, 33, 3), (2, 17, 1), (7, 8, 8)])
def test_running_sums_stop_at_the_padding(modulus, seq_len, min_length):
    task = ModularSum(modulus=modulus, seq_len=seq_len, min_length=min_length)
    inputs, targets = task.batch(200, generator_for(1))
    lengths = set()
    for x, y in zip(inputs.tolist(), targets.tolist()):
        length = x.index(modulus) if modulus in x else seq_len
        lengths.add(length)
        assert x[length:] == [modulus] * (seq_len - length)
        assert y[length:] == [IGNORE_INDEX] * (seq_len - length)
        total = 0
        for t in range(length):
            total = (total + x[t]) % modulus
            assert y[t] == total
    assert lengths == set(range(min_length, seq_len + 1)), "lengths are uniform over [min_length, T]"


def test_sequence_classification_scores_only_the_last_symbol():
    task = ModularSum(modulus=3, seq_len=20, min_length=5, per_position=False)
    inputs, targets = task.batch(64, generator_for(2))
    for x, y in zip(inputs.tolist(), targets.tolist()):
        length = x.index(3) if 3 in x else 20
        scored = [t for t, target in enumerate(y) if target != IGNORE_INDEX]
        assert scored == [length - 1]
        assert y[length - 1] == sum(x[:length]) % 3


@pytest.mark.parametrize("options, argument", [
    (dict(modulus=1), "modulus"),
    (dict(seq_len=10, min_length=11), "min_length"),
    (dict(min_length=0), "min_length"),
    (dict(seq_len=0), "seq_len"),
    (dict(per_position="yes"), "per_position"),
])
def test_bad_settings_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        ModularSum(**options)
