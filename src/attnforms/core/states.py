"""The result type of every op and the state type of every family.

All states are NamedTuples of tensors, so they unpack, move with `.to()` per field, and
pass between forms: a state returned by one form continues in any other form.
Shape legend: `B` batch (or `N` sequences with `cu_seqlens`), `H` heads, `G` key/value
heads, `K` key dim, `V` value dim, `L` cache slots.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch


class AttentionOutput(NamedTuple):
    """What every op returns.

    output:      `[B, T, H, V]` in the input dtype (`aaren`: the same layout).
    final_state: the family's state after the last token, or None unless
                 `output_final_state=True`.
    """

    output: torch.Tensor
    final_state: Any


class KVCache(NamedTuple):
    """State of `softmax_attention`: the keys and values a later query may still see.

    k:         `[B, L, G, K]` cached keys (input dtype).
    v:         `[B, L, G, V]` cached values.
    positions: `[B, L]` int64 absolute position of each slot, `-1` for an empty slot.
               Valid slots are left-aligned and sorted by position; rows of one batch
               may hold different numbers of tokens (varlen, ragged prefixes).
    next_position: `[B]` int64, the position the next token takes (tokens seen so far);
               kept apart from `positions` because a window may leave no slot at all.

    With a `window` W the cache keeps at most the last `W - 1` tokens (all the next
    query can see besides itself), so decoding memory is constant.
    """

    k: torch.Tensor
    v: torch.Tensor
    positions: torch.Tensor
    next_position: torch.Tensor


class LinearState(NamedTuple):
    """State of `gated_delta_rule` and its named forms.

    S: `[B, H, K, V]` float32 (float64 for float64 inputs); output is `o_t = S_tᵀ q_t`.
    """

    S: torch.Tensor


class MLSTMState(NamedTuple):
    """State of `mlstm`.

    C: `[B, H, K, V]` float32 matrix memory, scaled by `exp(-m)`.
    n: `[B, H, K]`    float32 normaliser, scaled by `exp(-m)`.
    m: `[B, H]`       float32 log-space stabiliser; `-inf` means "nothing written yet".
                      Always 0 for `input_gate="sigmoid"`, whose gates cannot overflow.
    """

    C: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


class AarenState(NamedTuple):
    """State of `aaren`: the running softmax triple of one query per head.

    m: `[B, H]`    running max of the scores (`-inf` before the first token).
    u: `[B, H]`    `Σ exp(s_j - m)`, the softmax denominator.
    w: `[B, H, V]` `Σ exp(s_j - m) v_j`, the numerator; the output is `w / u`.
    """

    m: torch.Tensor
    u: torch.Tensor
    w: torch.Tensor
