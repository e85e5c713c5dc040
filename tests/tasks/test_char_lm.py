"""Character LM on Python's own text: a fixed disjoint split, windows from the right split,
and the bits-per-character arithmetic."""
import collections
import math
import sysconfig

import pytest
import torch

from attnforms.tasks import CharLM, bits_per_char, generator_for, unigram_entropy_bits
from attnforms.tasks.char_lm import (
    CHARACTERS, UNKNOWN, VOCAB_SIZE, corpus_splits, corpus_text, decode, encode, stdlib_files,
)


def test_the_corpus_is_the_sorted_top_level_stdlib_sources():
    files = stdlib_files()
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert all(f.suffix == ".py" and str(f.parent) == sysconfig.get_paths()["stdlib"] for f in files)
    assert {"os.py", "typing.py", "argparse.py"} <= {f.name for f in files}
    text = corpus_text("stdlib")
    assert text.startswith(files[0].read_text(encoding="utf-8", errors="replace"))
    assert len(text) > 1_000_000


def test_the_split_is_fixed_disjoint_and_covers_the_text():
    train, validation = corpus_splits("stdlib", 0.1)
    whole = encode(corpus_text("stdlib"))
    assert len(train) + len(validation) == len(whole)
    assert len(train) == round(0.9 * len(whole))
    assert torch.equal(torch.cat([train, validation]), whole)
    # Read again from the files, bypassing the caches: the same split.
    corpus_text.cache_clear()
    corpus_splits.cache_clear()
    train_again, validation_again = corpus_splits("stdlib", 0.1)
    assert torch.equal(train, train_again) and torch.equal(validation, validation_again)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_windows_come_from_their_split_and_targets_are_the_next_character(split):
    task = CharLM(seq_len=48)
    inputs, targets = task.batch(6, generator_for(4), split=split)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    split_text = decode(task.split_ids(split))
    for x, y in zip(inputs, targets):
        window = decode(torch.cat([x, y[-1:]]))
        assert window in split_text


def test_a_uniform_predictor_scores_log2_of_the_vocabulary():
    task = CharLM(seq_len=32)
    _, targets = task.batch(8, generator_for(0), split="validation")
    logits = torch.zeros(8, 32, task.vocab_size)
    assert bits_per_char(logits, targets) == pytest.approx(math.log2(VOCAB_SIZE), abs=1e-6)
    assert task.vocab_size == VOCAB_SIZE == 98


def test_unigram_entropy_is_the_entropy_of_the_character_counts():
    assert unigram_entropy_bits(torch.tensor([0, 0, 1, 1]), 4) == pytest.approx(1.0)
    assert unigram_entropy_bits(torch.tensor([3, 3, 3]), 4) == 0.0
    assert unigram_entropy_bits(torch.arange(64), 64) == pytest.approx(6.0)
    text = corpus_text("pydoc_topics")[:50_000]
    # Characters outside the vocabulary (curly quotes, dashes) all count as one symbol.
    counts = collections.Counter(ch if ch in CHARACTERS else None for ch in text)
    assert counts[None] > 0
    independent = -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())
    assert unigram_entropy_bits(encode(text), VOCAB_SIZE) == pytest.approx(independent, rel=1e-9)
    with pytest.raises(ValueError, match="ids"):
        unigram_entropy_bits(torch.tensor([0, 5]), 4)


def test_the_unigram_baseline_is_far_below_uniform_on_the_training_text():
    train, _ = corpus_splits("stdlib", 0.1)
    baseline = unigram_entropy_bits(train, VOCAB_SIZE)
    assert 3.5 < baseline < math.log2(VOCAB_SIZE) - 1


def test_encoding_maps_ascii_to_itself_and_the_rest_to_unknown():
    text = "def f(x):\n\treturn x  # ok\n"
    assert decode(encode(text)) == text
    ids = encode("a\u00e9\r\x0cb")
    assert ids.tolist() == [CHARACTERS.index("a"), UNKNOWN, UNKNOWN, UNKNOWN, CHARACTERS.index("b")]


@pytest.mark.parametrize("options, argument", [
    (dict(corpus="shakespeare"), "corpus"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(validation_fraction=0), "validation_fraction"),
    (dict(seq_len=0), "seq_len"),
])
def test_bad_settings_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        CharLM(**options)


def test_a_window_longer_than_the_split_is_refused():
    task = CharLM(seq_len=10_000_000, corpus="pydoc_topics")
    with pytest.raises(ValueError, match="seq_len"):
        task.batch(1, generator_for(0))
