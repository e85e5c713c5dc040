"""FLOP and byte counts, and the hardware ceilings they are compared with.

FLOPs are model FLOPs of the chunkwise algorithm at chunk length `C = 64` (the default
chunk of attnforms and flash-linear-attention), whatever chunking an implementation
really uses, so every implementation of one op is divided by the same count. A matrix
product `[m, n] @ [n, p]` counts `2·m·n·p`. Per head and chunk of `C` tokens:

    every variant                      Q Kᵀ          2·C²·K     (full C×C tile, as kernels compute it)
                                       scores @ U    2·C²·V
                                       Q S           2·C·K·V    (the state's contribution)
                                       Kᵀ U          2·C·K·V    (the state update)
    delta rule (beta given), extra     K Kᵀ          2·C²·K
                                       (I + A)⁻¹     C³/3       (unit-lower-triangular inverse)
                                       W = A⁻¹ βK    2·C²·K
                                       U = A⁻¹ βV    2·C²·V
                                       V − W S       2·C·K·V
    mLSTM (exp gate), extra            Q n, Kᵀ 1     4·C·K      (the normaliser)

Elementwise work (decays, exponentials, gating) is not counted. A last partial chunk
counts as a full one. The backward pass counts twice the forward (two products per
forward product); recomputation is not counted, so fwd+bwd = 3 × fwd.

Softmax attention counts model FLOPs of the visible query-key pairs, whatever tiles a
kernel computes: per head and visible pair, `2·K` for the score and `2·V` for the
weighted value (BENCHMARKS.md's `4·B·H·T²·D / 2` for causal at K = V = D, counting
T(T+1)/2 pairs, 0.02% more at T = 4096); the backward counts 2.5 times the forward (five
products to the forward's two), so fwd+bwd = 3.5 × fwd.

Bytes are the least HBM traffic of a call: every input read once and the output written
once in the input dtype; for decode, the float32 state read and written once (the
linear families) or the KV cache read once (softmax).
"""
from __future__ import annotations

from dataclasses import dataclass

CHUNK = 64
BACKWARD_FACTOR = 2.0  # backward FLOPs per forward FLOP
SOFTMAX_BACKWARD_FACTOR = 2.5  # softmax attention's backward: dV, dP, dQ, dK and the recomputed scores


@dataclass(frozen=True)
class Ceilings:
    """What one card can do at best."""

    matmul_flops_per_s: float  # dense bf16 matrix product
    copy_bytes_per_s: float  # device-to-device copy, read + write counted


# Measured on an H200 (PyTorch 2.11, Triton 3.6), BENCHMARKS.md: bf16 8192³ matmul and a
# large device-to-device copy. Every floor in the reports divides by these; each run also
# measures them again and stores both in its JSON.
H200 = Ceilings(matmul_flops_per_s=780e12, copy_bytes_per_s=4.24e12)


def _chunks(T: int, C: int) -> int:
    return -(-T // C)


def gated_delta_flops(B: int, T: int, H: int, K: int, V: int, *, beta: bool, C: int = CHUNK) -> float:
    """Forward FLOPs of the gated delta rule's chunk form (any gate; see the module
    docstring for the terms)."""
    per_chunk = 2 * C * C * K + 2 * C * C * V + 4 * C * K * V
    if beta:
        per_chunk += 4 * C * C * K + 2 * C * C * V + 2 * C * K * V + C ** 3 / 3
    return float(B * H * _chunks(T, C) * per_chunk)


def mlstm_flops(B: int, T: int, H: int, K: int, V: int, *, C: int = CHUNK) -> float:
    """Forward FLOPs of the mLSTM's chunk form: linear attention plus the normaliser."""
    return gated_delta_flops(B, T, H, K, V, beta=False, C=C) + float(B * H * _chunks(T, C) * 4 * C * K)


def aaren_flops(B: int, T: int, H: int, K: int, V: int, *, C: int = CHUNK) -> float:
    """Aaren's chunk form: the scores (2K per token) and, per chunk, the masked `[C, C]`
    weights times the values (C·V multiply-adds per token, half of them masked)."""
    return 2.0 * B * T * H * (K + C * V / 2)


def fwd_bwd_flops(forward: float) -> float:
    """FLOPs of one forward and one backward pass."""
    return forward * (1.0 + BACKWARD_FACTOR)


def sequence_bytes(
    B: int, T: int, H: int, K: int, V: int, *, gate: str, beta: bool, itemsize: int = 2
) -> int:
    """Forward HBM floor: q, k, v, the gate (`"none"`, `"scalar"` [B,T,H], `"channel"`
    [B,T,H,K], `"mlstm"`: two [B,T,H] gates, or `"aaren"`: no gate and q per sequence),
    beta, read once; o written once."""
    tokens = B * T * H
    elements = tokens * (2 * K + 2 * V)  # q, k, v, o
    # Aaren's query is one per sequence, not one per token: its q is not counted.
    elements += {"none": 0, "scalar": tokens, "channel": tokens * K, "mlstm": 2 * tokens, "aaren": -tokens * K}[gate]
    if beta:
        elements += tokens
    return elements * itemsize


def causal_pairs(T: int, window: int | None = None) -> int:
    """Query-key pairs a causal query sequence of length T sees: query i sees
    min(i + 1, window) keys."""
    if window is None or window >= T:
        return T * (T + 1) // 2
    return window * (window + 1) // 2 + (T - window) * window


def softmax_flops(B: int, T: int, H: int, K: int, V: int, *, window: int | None = None) -> float:
    """Forward FLOPs of causal softmax attention (with an optional window)."""
    return float(B * H * causal_pairs(T, window) * 2 * (K + V))


def softmax_fwd_bwd_flops(forward: float) -> float:
    return forward * (1.0 + SOFTMAX_BACKWARD_FACTOR)


def softmax_decode_flops(B: int, L: int, H: int, K: int, V: int) -> float:
    """One new token per row against L cached keys (L + 1 keys visible)."""
    return float(B * H * (L + 1) * 2 * (K + V))


def softmax_decode_bytes(B: int, L: int, H: int, K: int, V: int, *, G: int | None = None, itemsize: int = 2) -> int:
    """Least traffic of one decode step: the L cached and the new key / value of each of
    G key heads read once (G = H without GQA), the query read and the output written."""
    G = H if G is None else G
    return (B * (L + 1) * G * (K + V) + B * H * (K + V)) * itemsize


def decode_state_bytes(B: int, H: int, K: int, V: int, *, state_itemsize: int = 4) -> int:
    """The decode step's state traffic: `S [B, H, K, V]` read once and written once."""
    return 2 * B * H * K * V * state_itemsize


def floor_seconds(nbytes: float, ceilings: Ceilings = H200) -> float:
    """Time to move `nbytes` at the copy bandwidth."""
    return nbytes / ceilings.copy_bytes_per_s


def tflops(flops: float, ms: float | None) -> float | None:
    """TFLOP/s of `flops` done in `ms` milliseconds (None when not timed)."""
    if ms is None or ms <= 0:
        return None
    return flops / (ms * 1e-3) / 1e12
