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
class SoftmaxSizes:
    """Sizes of the softmax ops (issue 6).

    window:       W of `softmax_window` (causal, each query sees W keys, itself included).
    gate_B, gate_T: the correctness gate of the sequence ops runs at B = gate_B and
                  T = min(shape's T, gate_T), with the shape's H and D: the float64
                  reference materialises its scores, 8·16·4096²·8 B = 17 GB per matrix at
                  S1 (and 8 times that at S2). gate_T > window, so the window cuts inside
                  the gate; gate_B = 2 checks batch indexing. One gate size for S1 and S2,
                  so compiled peers (Flex, static shapes) compile it once.
    decode_batches: batch sizes of `softmax_decode` (one new token).
    decode_cache: tokens already in the KV cache when timed.
    decode_gate_cache: the cache length of the decode gate (the batch is kept): float64
                  caches at B = 64, L = 32768 would be 2 · 34 GB. At B = 64 the split-KV
                  kernel uses one split at either length, so the gate takes the timed path.
    Heads and head dims of decode are the ShapeSet's `decode_heads`, `decode_K`, `decode_V`.
    """

    window: int
    gate_B: int
    gate_T: int
    decode_batches: tuple[int, ...]
    decode_cache: int
    decode_gate_cache: int


@dataclass(frozen=True)
class ShapeSet:
    """Everything one run needs to know about sizes.

    sequences:     name -> Shape, timed in the chunk form.
    decode_batches: batch sizes of the one-token decode step.
    decode_heads, decode_K, decode_V: heads and dims of the decode state.
    check_T:       length of the correctness gate (float64 references at long T are too
                   slow); the gate keeps the shape's B, H, K, V.
    decode_prefix: tokens run through the reference to make a realistic decode state.
    softmax:       the softmax ops' window, gate and decode sizes.
    """

    sequences: dict[str, Shape]
    decode_batches: tuple[int, ...]
    decode_heads: int
    decode_K: int
    decode_V: int
    check_T: int
    decode_prefix: int
    softmax: SoftmaxSizes


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
    softmax=SoftmaxSizes(window=1024, gate_B=2, gate_T=2048, decode_batches=(64,), decode_cache=32768,
                         decode_gate_cache=2048),
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
    # The window cuts inside the gate (T 128) and the shapes; caches span several key tiles.
    softmax=SoftmaxSizes(window=48, gate_B=2, gate_T=128, decode_batches=(3,), decode_cache=80, decode_gate_cache=40),
)

SHAPE_NAMES = ("S1", "S2", "S3", "decode")


def shape_set(quick: bool) -> ShapeSet:
    return QUICK if quick else CANONICAL
