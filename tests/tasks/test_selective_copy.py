"""Selective copying: the answers are the non-blank tokens of the region, in order."""
import pytest

from attnforms.tasks import IGNORE_INDEX, SelectiveCopy, generator_for


@pytest.mark.parametrize("vocab_size, seq_len, num_tokens", [(16, 256, 16), (5, 33, 7), (3, 2, 1), (10, 20, 10)])
def test_targets_are_the_data_tokens_in_order(vocab_size, seq_len, num_tokens):
    task = SelectiveCopy(vocab_size=vocab_size, seq_len=seq_len, num_tokens=num_tokens)
    inputs, targets = task.batch(32, generator_for(0))
    region = seq_len - num_tokens
    for x, y in zip(inputs.tolist(), targets.tolist()):
        data = [t for t in x[:region] if t != 0]
        assert len(data) == num_tokens and all(1 <= t <= vocab_size - 2 for t in data)
        assert y[region:] == data
        assert y[:region] == [IGNORE_INDEX] * region
        assert x[region:] == [vocab_size - 1] * num_tokens


def test_data_positions_are_spread_over_the_region():
    task = SelectiveCopy(vocab_size=16, seq_len=64, num_tokens=4)
    inputs, _ = task.batch(500, generator_for(1))
    used = (inputs[:, :60] != 0).float().mean(dim=0)
    assert (used > 0).all(), "every region position holds data in some example"


@pytest.mark.parametrize("options, argument", [
    (dict(vocab_size=2), "vocab_size"),
    (dict(seq_len=31, num_tokens=16), "num_tokens"),
    (dict(num_tokens=0), "num_tokens"),
])
def test_bad_settings_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        SelectiveCopy(**options)
