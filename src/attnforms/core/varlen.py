"""Variable-length batches: `cu_seqlens` validation and the per-sequence runner.

A packed batch puts N sequences end to end along time with `B == 1`; `cu_seqlens` is
`[N + 1]` int offsets, starting at 0, strictly increasing, ending at `T`. States are then
`[N, ...]`: one per sequence.
"""
from __future__ import annotations

from typing import Callable

import torch

from .shapes import INDEX_DTYPES, check_tensor
from .states import AttentionOutput, KVCache


def check_cu_seqlens(cu_seqlens, *, batch: int, total: int, device: torch.device) -> list[int]:
    """Validate `cu_seqlens` and return it as a Python list of offsets."""
    check_tensor("cu_seqlens", cu_seqlens, floating=False)
    if cu_seqlens.dtype not in INDEX_DTYPES:
        raise TypeError(f"cu_seqlens: expected an int64 (or int32) tensor, got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(
            f"cu_seqlens: expected shape [N + 1] with N >= 1, got shape {list(cu_seqlens.shape)}"
        )
    if cu_seqlens.device != device:
        raise ValueError(
            f"cu_seqlens: expected a tensor on {device} (the device of q), got one on {cu_seqlens.device}"
        )
    if batch != 1:
        raise ValueError(f"cu_seqlens: expects a packed batch with B == 1, got B = {batch}")
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens: expected to start at 0, got {offsets[0]}")
    if any(b <= a for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"cu_seqlens: expected strictly increasing offsets, got {offsets}")
    if offsets[-1] != total:
        raise ValueError(
            f"cu_seqlens: expected to end at the total length T = {total}, got {offsets[-1]}"
        )
    return offsets


def select_state(state, index: int):
    """Row `index` of a batched state, keeping the batch dimension (`[1, ...]`)."""
    return type(state)(*(field[index : index + 1] for field in state))


def concat_states(states: list):
    """Concatenate `[1, ...]` states along the batch; KV caches of different lengths are
    padded with empty slots (position -1) to the longest."""
    first = states[0]
    if isinstance(first, KVCache):
        slots = max(s.positions.shape[1] for s in states)
        states = [_pad_cache(s, slots) for s in states]
    return type(first)(*(torch.cat(fields, dim=0) for fields in zip(*states)))


def _pad_cache(cache: KVCache, slots: int) -> KVCache:
    missing = slots - cache.positions.shape[1]
    if missing == 0:
        return cache
    pad_kv = lambda x: torch.nn.functional.pad(x, (0, 0, 0, 0, 0, missing))
    positions = torch.nn.functional.pad(cache.positions, (0, missing), value=-1)
    return KVCache(pad_kv(cache.k), pad_kv(cache.v), positions, cache.next_position)


def run_per_sequence(
    run: Callable[..., AttentionOutput],
    offsets: list[int],
    *,
    per_token: dict[str, torch.Tensor | None],
    per_sequence: dict[str, torch.Tensor | None] | None = None,
    initial_state=None,
    output_final_state: bool,
) -> AttentionOutput:
    """Run `run(n, **tensors, initial_state=..., output_final_state=...)` on each packed
    sequence `n` and reassemble the results.

    per_token:    tensors `[1, T, ...]` sliced along time per sequence (None passes through).
    per_sequence: tensors `[N, ...]` with one row per sequence (e.g. aaren's query).
    initial_state: a state with `N` rows, or None.
    Returns the outputs concatenated along time (`[1, T, ...]`) and the final states
    stacked to `N` rows.
    """
    outputs, finals = [], []
    for n, (start, end) in enumerate(zip(offsets, offsets[1:])):
        kwargs = {name: None if t is None else t[:, start:end] for name, t in per_token.items()}
        for name, t in (per_sequence or {}).items():
            kwargs[name] = None if t is None else t[n : n + 1]
        state = None if initial_state is None else select_state(initial_state, n)
        result = run(n, **kwargs, initial_state=state, output_final_state=output_final_state)
        outputs.append(result.output)
        finals.append(result.final_state)
    final = concat_states(finals) if output_final_state else None
    return AttentionOutput(torch.cat(outputs, dim=1), final)
