"""Needle in a haystack: the passkey sits at the requested depth and is the answer."""
import math

import pytest

from attnforms.tasks import IGNORE_INDEX, Needle, generator_for
from attnforms.tasks.needle import FIRST_FILLER, NEEDLE, QUERY


def parts(task: Needle, inputs: list[int], targets: list[int]):
    """(needle start, passkey) of one example, after checking its layout with plain Python."""
    T, L = task.seq_len, task.passkey_length
    assert inputs.count(NEEDLE) == 1 and inputs.count(QUERY) == 1
    start = inputs.index(NEEDLE)
    passkey = inputs[start + 1 : start + 1 + L]
    assert all(0 <= d <= 9 for d in passkey)
    assert inputs[T - L] == QUERY and inputs[T - L + 1 :] == passkey[:-1]
    assert targets[T - L :] == passkey and all(t == IGNORE_INDEX for t in targets[: T - L])
    haystack = inputs[:start] + inputs[start + 1 + L : T - L]
    assert len(haystack) == T - 2 * L - 1 and all(FIRST_FILLER <= t < task.vocab_size for t in haystack)
    return start, passkey


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("seq_len, passkey_length", [(64, 5), (45, 3), (7, 3)])
def test_the_needle_sits_at_the_requested_depth(depth, seq_len, passkey_length):
    task = Needle(vocab_size=24, seq_len=seq_len, passkey_length=passkey_length, depth=depth)
    inputs, targets = task.batch(16, generator_for(0))
    haystack_len = seq_len - 2 * passkey_length - 1
    for x, y in zip(inputs.tolist(), targets.tolist()):
        start, _ = parts(task, x, y)
        assert start == math.floor(depth * haystack_len + 0.5)


def test_without_a_depth_the_needle_goes_anywhere():
    task = Needle(vocab_size=16, seq_len=40, passkey_length=2)
    inputs, targets = task.batch(2000, generator_for(1))
    starts = {parts(task, x, y)[0] for x, y in zip(inputs.tolist(), targets.tolist())}
    assert starts == set(range(task.haystack_len + 1))


def test_a_repeated_haystack_is_one_passage_cycled():
    task = Needle(vocab_size=19, seq_len=50, passkey_length=4, depth=0.4, haystack="repeated")
    inputs, targets = task.batch(8, generator_for(2))
    for x, y in zip(inputs.tolist(), targets.tolist()):
        start, _ = parts(task, x, y)
        haystack = x[:start] + x[start + 5 : 50 - 4]
        steps = {(b - a) % task.num_filler for a, b in zip(haystack, haystack[1:])}
        assert steps == {1}


@pytest.mark.parametrize("options, argument", [
    (dict(vocab_size=12), "vocab_size"),
    (dict(seq_len=10, passkey_length=5), "seq_len"),
    (dict(passkey_length=0), "passkey_length"),
    (dict(depth=1.5), "depth"),
    (dict(depth=-0.1), "depth"),
    (dict(haystack="essays"), "haystack"),
])
def test_bad_settings_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        Needle(**options)
