"""Induction heads: the answer is the token that followed the special token's first occurrence."""
import pytest

from attnforms.tasks import IGNORE_INDEX, InductionHeads, generator_for


@pytest.mark.parametrize("vocab_size, seq_len", [(16, 256), (3, 3), (7, 65)])
def test_the_answer_followed_the_first_special_token(vocab_size, seq_len):
    task = InductionHeads(vocab_size=vocab_size, seq_len=seq_len)
    inputs, targets = task.batch(64, generator_for(0))
    special = vocab_size - 1
    for x, y in zip(inputs.tolist(), targets.tolist()):
        where = [t for t, token in enumerate(x) if token == special]
        assert len(where) == 2 and where[1] == seq_len - 1 and where[0] <= seq_len - 3
        assert y[-1] == x[where[0] + 1] != special
        assert y[:-1] == [IGNORE_INDEX] * (seq_len - 1)


def test_the_first_occurrence_can_be_anywhere_allowed():
    task = InductionHeads(vocab_size=5, seq_len=12)
    inputs, _ = task.batch(1000, generator_for(1))
    first = (inputs[:, :-1] == 4).long().argmax(dim=1)
    assert set(first.tolist()) == set(range(10))


@pytest.mark.parametrize("options, argument", [(dict(vocab_size=2), "vocab_size"), (dict(seq_len=2), "seq_len")])
def test_bad_settings_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        InductionHeads(**options)
