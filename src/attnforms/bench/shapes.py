"""The canonical benchmark shapes (see BENCHMARKS.md) and the tiny ones of `--quick`.

Every sequence shape is `(B, T)` with `H = 16` heads and head dims `K = V = 128`; all
three canonical shapes hold the same 32768 tokens, split differently between batch and
length. Decode is one new token against a float32 state, at several batch sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Shape:
    """One sequence shape: `B` batch, `T` tokens, `H` heads, `K` key dim, `V` value dim."""

    name: str
    B: int
    T: int
    H: int = 16
    K: int = 128
    V: int = 128

    def at_length(self, T: int) -> "Shape":
        """The same batch and heads at another length (the correctness gate's shorter T)."""
        return replace(self, T=T)

    def dims(self) -> dict:
        return dict(B=self.B, T=self.T, H=self.H, K=self.K, V=self.V)


@dataclass(frozen=True)
class ShapeSet:
    """Everything one run needs to know about sizes.

    sequences:     name -> Shape, timed in the chunk form.
    decode_batches: batch sizes of the one-token decode step.
    decode_heads, decode_K, decode_V: heads and dims of the decode state.
    check_T:       length of the correctness gate (float64 references at long T are too
                   slow); the gate keeps the shape's B, H, K, V.
    decode_prefix: tokens run through the reference to make a realistic decode state.
    """

    sequences: dict[str, Shape]
    decode_batches: tuple[int, ...]
    decode_heads: int
    decode_K: int
    decode_V: int
    check_T: int
    decode_prefix: int


CANONICAL = ShapeSet(
    sequences={
        "S1": Shape("S1", B=8, T=4096),
        "S2": Shape("S2", B=1, T=32768),
        "S3": Shape("S3", B=2, T=16384),
    },
    decode_batches=(1, 64, 256),
    decode_heads=16,
    decode_K=128,
    decode_V=128,
    check_T=512,
    decode_prefix=64,
)

# `--quick`: small enough for the float reference on a CPU, or the Triton interpreter,
# in a few seconds. T values are multiples of 64 and of 128 (TFLA's chunk) and are not
# all equal, so that shape handling is exercised.
QUICK = ShapeSet(
    sequences={
        "S1": Shape("S1", B=2, T=128, H=2, K=32, V=32),
        "S2": Shape("S2", B=1, T=256, H=2, K=32, V=32),
        "S3": Shape("S3", B=2, T=128, H=2, K=32, V=16),
    },
    decode_batches=(1, 4),
    decode_heads=2,
    decode_K=32,
    decode_V=32,
    check_T=128,
    decode_prefix=16,
)

SHAPE_NAMES = ("S1", "S2", "S3", "decode")


def shape_set(quick: bool) -> ShapeSet:
    return QUICK if quick else CANONICAL
