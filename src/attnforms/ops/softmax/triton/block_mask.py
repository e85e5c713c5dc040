"""A minimal BlockMask builder, private to the kernel's tests and benchmarks until
`attnforms.mods.create_block_mask` lands (softmax-mods branch); the kernels read only the
fields below (duck typing), so either builder's masks run.

Convention (MODS.md): query block r covers query rows [r·block_q, (r+1)·block_q) of the T
queries, key block c covers keys [c·block_kv, ...) of the S keys; the mask is evaluated
at the query's position S - T + i (bottom-right alignment) and the key's position j.
`kv_indices[b, h, r, :kv_num_blocks[b, h, r]]` are the *partial* blocks (some pair
masked, some kept), `full_kv_indices[b, h, r, :full_kv_num_blocks[b, h, r]]` the *full*
ones (every in-range pair kept); a block is in at most one list, as in FlexAttention.
`q_*` are the same maps transposed (per key block, its query blocks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True, eq=False)
class BlockMask:
    kv_num_blocks: torch.Tensor
    kv_indices: torch.Tensor
    full_kv_num_blocks: torch.Tensor
    full_kv_indices: torch.Tensor
    q_num_blocks: torch.Tensor
    q_indices: torch.Tensor
    full_q_num_blocks: torch.Tensor
    full_q_indices: torch.Tensor
    block_q: int
    block_kv: int
    mask_mod: Callable
    seq_lengths: tuple


def _lists(blocks: torch.Tensor):
    """bool `[..., n]` -> (count `[...]` int32, indices `[..., n]` int32, listed first)."""
    count = blocks.sum(-1).to(torch.int32)
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return count, order


def from_block_maps(partial: torch.Tensor, full: torch.Tensor, mask_mod, T: int, S: int,
                    block_q: int, block_kv: int) -> BlockMask:
    """A BlockMask from bool maps `[B|1, H|1, T_blocks, S_blocks]` of partial and full
    blocks (disjoint)."""
    kvn, kvi = _lists(partial)
    fkvn, fkvi = _lists(full)
    qn, qi = _lists(partial.transpose(-1, -2))
    fqn, fqi = _lists(full.transpose(-1, -2))
    return BlockMask(kvn, kvi, fkvn, fkvi, qn, qi, fqn, fqi, block_q, block_kv, mask_mod, (T, S))


def build_block_mask(mask_mod, B: int, H: int, T: int, S: int, block_q: int = 128,
                     block_kv: int = 128, device="cpu") -> BlockMask:
    """Evaluate `mask_mod` densely (broadcasting, as the reference calls it) and reduce
    per block."""
    TB, SB = -(-T // block_q), -(-S // block_kv)
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    q_idx = (S - T + torch.arange(T, device=device)).view(1, 1, T, 1)
    kv_idx = torch.arange(S, device=device).view(1, 1, 1, S)
    keep = torch.as_tensor(mask_mod(b, h, q_idx, kv_idx), device=device).expand(B, H, T, S)
    padded = torch.ones(B, H, TB * block_q, SB * block_kv, dtype=torch.bool, device=device)
    inside = torch.zeros_like(padded)
    padded[:, :, :T, :S] = keep
    inside[:, :, :T, :S] = True
    shape = (B, H, TB, block_q, SB, block_kv)
    any_kept = (padded & inside).view(shape).any(dim=(3, 5))
    all_kept = padded.view(shape).all(dim=(3, 5))  # out-of-range pairs count as kept
    full = any_kept & all_kept
    partial = any_kept & ~all_kept
    return from_block_maps(partial, full, mask_mod, T, S, block_q, block_kv)
