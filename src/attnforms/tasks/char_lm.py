"""Character-level language modelling on text that ships with Python, in bits per character.

Corpora (no download; both come with every CPython install):

- "stdlib": the source of the standard library's top-level modules, the files
  `<stdlib>/*.py` (`sysconfig.get_paths()["stdlib"]`), in sorted file-name order, read as
  UTF-8, joined with a newline. About 4.7M characters on CPython 3.11. The text depends on
  the Python version, so compare numbers within one version.
- "pydoc_topics": the English help topics of `pydoc_data.topics` in sorted topic order
  (about 465K characters); the text Tier 1's char-LM sanity check names (T1-j).

Vocabulary (fixed, independent of the text): tab, newline, the 95 printable ASCII
characters, and one token for every other character: 98 tokens.

Split: the first `1 - validation_fraction` of the characters are training text, the rest
validation; fixed, contiguous and disjoint. A batch is `B` windows of T + 1 characters at
uniform random offsets inside one split; inputs are the first T, targets the last T (every
position is scored). The metric is bits per character: mean cross-entropy / ln 2.
`unigram_entropy_bits` gives the baseline a model must beat: the entropy of the training
text's character frequencies.
"""
from __future__ import annotations

import functools
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .base import check_batch_request, check_int

CORPORA = ("stdlib", "pydoc_topics")
CHARACTERS = "\t\n" + "".join(chr(code) for code in range(32, 127))
UNKNOWN = len(CHARACTERS)
VOCAB_SIZE = len(CHARACTERS) + 1
_ASCII_TO_ID = np.full(128, UNKNOWN, dtype=np.int64)
_ASCII_TO_ID[[ord(char) for char in CHARACTERS]] = np.arange(len(CHARACTERS))


def stdlib_files() -> list[Path]:
    """The corpus files of "stdlib": `<stdlib>/*.py`, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(root.glob("*.py"), key=lambda path: path.name)


@functools.lru_cache(maxsize=None)
def corpus_text(corpus: str) -> str:
    """The whole text of `corpus` ("stdlib" or "pydoc_topics"), read deterministically."""
    if corpus == "stdlib":
        files = stdlib_files()
        if not files:
            raise ValueError("corpus: no *.py files under the standard library path of this Python")
        # Text mode turns \r\n into \n; undecodable bytes (rare) become U+FFFD, one UNKNOWN.
        return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in files)
    if corpus == "pydoc_topics":
        try:
            from pydoc_data.topics import topics
        except ImportError as error:
            raise ValueError("corpus: this Python install has no pydoc_data; use corpus='stdlib'") from error
        return "\n".join(topics[name] for name in sorted(topics))
    raise ValueError(f"corpus: expected one of {CORPORA}, got {corpus!r}")


def encode(text: str) -> torch.Tensor:
    """Token ids `[len(text)]` int64 of `text` (characters outside the vocabulary: UNKNOWN)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids = np.full(codes.shape, UNKNOWN, dtype=np.int64)
    ascii_positions = codes < 128
    ids[ascii_positions] = _ASCII_TO_ID[codes[ascii_positions]]
    return torch.from_numpy(ids)


def decode(ids: torch.Tensor) -> str:
    """The text of token ids `[N]`; UNKNOWN decodes as U+FFFD."""
    table = CHARACTERS + "\ufffd"
    return "".join(table[i] for i in ids.tolist())


@functools.lru_cache(maxsize=None)
def corpus_splits(corpus: str, validation_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train `[N_train]`, validation `[N_val]`) int64 ids: the first and the last part of
    the encoded corpus, cut at round(N · (1 - validation_fraction))."""
    ids = encode(corpus_text(corpus))
    cut = round(len(ids) * (1 - validation_fraction))
    return ids[:cut], ids[cut:]


def unigram_entropy_bits(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy in bits of the token frequencies of `ids` (any shape, values in
    [0, vocab_size)): the bits per character of the best predictor that ignores context."""
    check_int("vocab_size", vocab_size, minimum=1)
    if ids.numel() == 0:
        raise ValueError("ids: expected at least one token, got an empty tensor")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"ids: expected values in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
    counts = torch.bincount(ids.reshape(-1), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


@dataclass(frozen=True)
class CharLM:
    """Character LM. seq_len: T; corpus: "stdlib" or "pydoc_topics"; validation_fraction:
    the share of the text (at its end) held out for validation, in (0, 1)."""

    name: ClassVar[str] = "char_lm"
    metric: ClassVar[str] = "bits_per_char"
    vocab_size: ClassVar[int] = VOCAB_SIZE

    seq_len: int = 256
    corpus: str = "stdlib"
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        check_int("seq_len", self.seq_len, minimum=1)
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus: expected one of {CORPORA}, got {self.corpus!r}")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"validation_fraction: expected a float in (0, 1), got {fraction!r}")

    def split_ids(self, split: str) -> torch.Tensor:
        """The encoded text of `split` ("train" or "validation"), `[N]` int64."""
        train, validation = corpus_splits(self.corpus, float(self.validation_fraction))
        return train if split == "train" else validation

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs `[B, T]` int64 and targets `[B, T]` int64 (inputs shifted by one: every
        position scored), windows at uniform random offsets inside `split`."""
        check_batch_request(batch_size, generator, split)
        text = self.split_ids(split)
        if len(text) < self.seq_len + 1:
            raise ValueError(
                f"seq_len: {self.seq_len} needs windows of {self.seq_len + 1} characters, but the "
                f"{split} split of {self.corpus!r} has only {len(text)}"
            )
        starts = torch.randint(len(text) - self.seq_len, (batch_size, 1), generator=generator)
        windows = text[starts + torch.arange(self.seq_len + 1)]  # [B, T + 1]
        return windows[:, :-1], windows[:, 1:]
