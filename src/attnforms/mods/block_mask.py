"""Block sparsity of a `mask_mod`: which (query block, key block) tiles a flash kernel
can skip, which it can compute without evaluating the mask, and which need the mask."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from ._naming import check_int, describe

EMPTY, PARTIAL, FULL = 0, 1, 2
_PICTURE = {EMPTY: "·", PARTIAL: "░", FULL: "█"}
_MAX_PICTURE = 48  # block rows / columns drawn by __repr__


@dataclass(frozen=True, eq=False)
class BlockMask:
    """The tiles of a `mask_mod` over a `T x S` grid of (query, key) positions, split into
    blocks of `block_q` queries by `block_kv` keys, with `Tb = ceil(T / block_q)` query
    blocks and `Sb = ceil(S / block_kv)` key blocks. A tile is

    * empty: the mask keeps no pair (the kernel skips it),
    * full: the mask keeps every pair inside the sequence (the kernel reads it without
      calling the mask; the last, ragged blocks still need the usual bounds checks),
    * partial: anything else (the kernel reads it and applies the mask).

    Positions are those of a call without a KV cache: key j at position j, query i at
    `S - T + i` (bottom-right aligned, as in `softmax_attention`). The map describes the
    mask alone; `causal=` / `window=` of the call still apply on top of it (put causality
    into the mask, e.g. `and_masks(causal(), ...)` with `causal=False`, to have it in
    the map). With `Bm` = B or 1 and `Hm` = H or 1 (1: the mask does not depend on b / h
    and the map broadcasts), the fields are:

    kv_num_blocks: `[Bm, Hm, Tb]` int32, partial key blocks of each query block.
    kv_indices: `[Bm, Hm, Tb, Sb]` int32, those key blocks in increasing order; the
        entries past `kv_num_blocks` are 0 and must not be read.
    full_kv_num_blocks, full_kv_indices: the same for the full key blocks.
    q_num_blocks, q_indices: `[Bm, Hm, Sb]`, `[Bm, Hm, Sb, Tb]`, the partial query blocks
        of each key block (the transposed map, for a backward pass over key blocks).
    full_q_num_blocks, full_q_indices: the same for the full query blocks.
    block_q, block_kv: the block sizes.
    mask_mod: the mask it was built from (`softmax_attention` checks that it is the one
        passed with it).
    seq_lengths: `(T, S)`.

    Building one evaluates the mask over the whole grid; build it once per mask and
    shape and reuse it across layers and training steps (it holds no gradient state).
    Use `create_block_mask` to build one.
    """

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
    seq_lengths: tuple[int, int]

    def __post_init__(self):
        T, S = self.seq_lengths
        Tb, Sb = -(-T // self.block_q), -(-S // self.block_kv)
        Bm, Hm = self.kv_num_blocks.shape[:2]
        expected = dict(
            kv_num_blocks=(Bm, Hm, Tb), kv_indices=(Bm, Hm, Tb, Sb),
            full_kv_num_blocks=(Bm, Hm, Tb), full_kv_indices=(Bm, Hm, Tb, Sb),
            q_num_blocks=(Bm, Hm, Sb), q_indices=(Bm, Hm, Sb, Tb),
            full_q_num_blocks=(Bm, Hm, Sb), full_q_indices=(Bm, Hm, Sb, Tb),
        )
        for name, shape in expected.items():
            x = getattr(self, name)
            if tuple(x.shape) != shape or x.dtype != torch.int32:
                raise ValueError(
                    f"BlockMask.{name}: expected int32 {list(shape)} for seq_lengths {self.seq_lengths} "
                    f"and blocks ({self.block_q}, {self.block_kv}), got {x.dtype} {list(x.shape)}"
                )

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """`(Bm, Hm, Tb, Sb)`."""
        return (*self.kv_num_blocks.shape[:2], *self.kv_indices.shape[2:])

    @property
    def device(self) -> torch.device:
        return self.kv_num_blocks.device

    def classes(self) -> torch.Tensor:
        """`[Bm, Hm, Tb, Sb]` int8: EMPTY (0), PARTIAL (1) or FULL (2) per tile, rebuilt from
        the key-block lists."""
        partial = _grid(self.kv_num_blocks, self.kv_indices)
        full = _grid(self.full_kv_num_blocks, self.full_kv_indices)
        return partial.to(torch.int8) * PARTIAL + full.to(torch.int8) * FULL

    def sparsity(self) -> float:
        """The fraction of tiles the kernel skips (empty ones), in [0, 1], over all
        (b, h) rows of the map."""
        read = int(self.kv_num_blocks.sum()) + int(self.full_kv_num_blocks.sum())
        total = self.kv_indices.numel()
        return 1.0 - read / total

    def to(self, device) -> "BlockMask":
        """The same map on `device` (the mask_mod is kept as is)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **moved)

    def __repr__(self) -> str:
        Bm, Hm, Tb, Sb = self.shape
        classes = self.classes()
        counts = {c: int((classes == c).sum()) for c in (FULL, PARTIAL, EMPTY)}
        lines = [
            f"BlockMask(mask_mod={describe(self.mask_mod)}, seq_lengths=(T={self.seq_lengths[0]}, "
            f"S={self.seq_lengths[1]}), block=({self.block_q}, {self.block_kv}), "
            f"maps [Bm={Bm}, Hm={Hm}] x {Tb} x {Sb} tiles: {counts[FULL]} full, "
            f"{counts[PARTIAL]} partial, {counts[EMPTY]} empty, sparsity {self.sparsity():.1%})"
        ]
        if Tb <= _MAX_PICTURE and Sb <= _MAX_PICTURE:
            lines.append(f"  b=0, h=0 (rows: query blocks, columns: key blocks; "
                         f"{_PICTURE[FULL]} full, {_PICTURE[PARTIAL]} partial, {_PICTURE[EMPTY]} empty):")
            for row in classes[0, 0].tolist():
                lines.append("    " + "".join(_PICTURE[c] for c in row))
        return "\n".join(lines)


def create_block_mask(mask_mod: Callable, B: int | None, H: int | None, T: int, S: int,
                      block_q: int = 128, block_kv: int = 128, device=None, *,
                      max_pairs: int = 1 << 24) -> BlockMask:
    """Evaluate `mask_mod` over the `T x S` grid and classify each tile (see `BlockMask`).

    Args:
        mask_mod: `mask_mod(b, h, q_idx, kv_idx) -> bool`, written for broadcasting
            tensors as for `softmax_attention`. It is called with b `[Bm, 1, 1, 1]`, h
            `[1, Hm, 1, 1]`, q_idx `[1, 1, T', 1]`, kv_idx `[1, 1, 1, S']` (int64, only
            positions inside the sequence) over chunks of the grid.
        B: batch rows, or None when the mask does not depend on b (evaluated at b = 0,
            the map has one row that broadcasts). With `cu_seqlens`, N (b is the sequence
            index) or None.
        H: query heads, or None when the mask does not depend on h (evaluated at h = 0).
        T, S: query and key lengths of the call (with `cu_seqlens`: both the length of
            the longest sequence, positions counting from each sequence's start).
        block_q, block_kv: tile sizes; the kernel's block sizes.
        device: where to evaluate and keep the map (the device of the call and of the
            tensors the mask captures); default CPU.
        max_pairs: at most about this many (b, h, query, key) pairs are evaluated at once,
            bounding the memory used (the grid is walked in tiles).

    Returns:
        A `BlockMask`. Cost: one evaluation of the mask per pair, once; reuse the result.
    """
    if not callable(mask_mod):
        raise TypeError(f"mask_mod: expected a callable mask_mod(b, h, q_idx, kv_idx) -> bool, got {type(mask_mod).__name__}")
    Bm = 1 if B is None else check_int("B", B, minimum=1)
    Hm = 1 if H is None else check_int("H", H, minimum=1)
    check_int("T", T, minimum=1)
    check_int("S", S, minimum=1)
    check_int("block_q", block_q, minimum=1)
    check_int("block_kv", block_kv, minimum=1)
    check_int("max_pairs", max_pairs, minimum=1)
    device = torch.device("cpu") if device is None else torch.device(device)
    Tb, Sb = -(-T // block_q), -(-S // block_kv)

    # Tiles of whole blocks, as many as fit in max_pairs (at least one block each way).
    per_block = Bm * Hm * block_q * block_kv
    kv_step = max(1, min(Sb, max_pairs // per_block))
    q_step = max(1, min(Tb, max_pairs // (per_block * kv_step)))
    any_kept = torch.zeros(Bm, Hm, Tb, Sb, dtype=torch.bool, device=device)
    all_kept = torch.zeros(Bm, Hm, Tb, Sb, dtype=torch.bool, device=device)
    b = torch.arange(Bm, device=device).view(-1, 1, 1, 1)
    h = torch.arange(Hm, device=device).view(1, -1, 1, 1)
    for qb in range(0, Tb, q_step):
        rows = torch.arange(qb * block_q, min(T, (qb + q_step) * block_q), device=device)
        for kb in range(0, Sb, kv_step):
            cols = torch.arange(kb * block_kv, min(S, (kb + kv_step) * block_kv), device=device)
            keep = mask_mod(b, h, (S - T + rows).view(1, 1, -1, 1), cols.view(1, 1, 1, -1))
            keep = _as_mask(keep, (Bm, Hm, rows.numel(), cols.numel()))
            blocks = (slice(None), slice(None), slice(qb, qb + q_step), slice(kb, kb + kv_step))
            any_kept[blocks] = _reduce(keep, block_q, block_kv, fill=False).any(dim=(3, 5))
            all_kept[blocks] = _reduce(keep, block_q, block_kv, fill=True).all(dim=(3, 5))

    partial, full = any_kept & ~all_kept, all_kept
    kv_num, kv_idx = _lists(partial)
    full_kv_num, full_kv_idx = _lists(full)
    q_num, q_idx = _lists(partial.transpose(-1, -2))
    full_q_num, full_q_idx = _lists(full.transpose(-1, -2))
    return BlockMask(kv_num, kv_idx, full_kv_num, full_kv_idx, q_num, q_idx, full_q_num, full_q_idx,
                     block_q=block_q, block_kv=block_kv, mask_mod=mask_mod, seq_lengths=(T, S))


def _as_mask(keep, shape) -> torch.Tensor:
    """The mask_mod's result as a bool tensor of exactly `shape`."""
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool:
        kind = keep.dtype if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise TypeError(f"mask_mod: expected a bool tensor, got {kind}")
    try:
        return keep.expand(shape)
    except RuntimeError:
        raise ValueError(
            f"mask_mod: expected a result broadcasting to [Bm, Hm, T', S'] = {list(shape)}, got "
            f"{list(keep.shape)} (does the mask depend on b or h while B or H is None?)"
        ) from None


def _reduce(keep: torch.Tensor, block_q: int, block_kv: int, *, fill: bool) -> torch.Tensor:
    """`[Bm, Hm, rows, cols]` -> `[Bm, Hm, rows/bq, bq, cols/bk, bk]`, the ragged last
    blocks padded with `fill` (pairs outside the sequence count as neither kept nor
    dropped)."""
    Bm, Hm, rows, cols = keep.shape
    pad_q, pad_kv = -rows % block_q, -cols % block_kv
    if pad_q or pad_kv:
        keep = torch.nn.functional.pad(keep, (0, pad_kv, 0, pad_q), value=fill)
    return keep.reshape(Bm, Hm, (rows + pad_q) // block_q, block_q, (cols + pad_kv) // block_kv, block_kv)


def _lists(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool `[..., n, m]` -> (count `[..., n]`, indices `[..., n, m]`) int32: per row the
    columns that are set, in increasing order, padded with 0."""
    count = grid.sum(dim=-1)
    order = torch.argsort((~grid).to(torch.int8), dim=-1, stable=True)
    valid = torch.arange(grid.shape[-1], device=grid.device) < count[..., None]
    return count.to(torch.int32), torch.where(valid, order, 0).to(torch.int32)


def _grid(count: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The inverse of `_lists`: bool `[..., n, m]`."""
    valid = torch.arange(indices.shape[-1], device=indices.device) < count[..., None].long()
    hits = torch.zeros(indices.shape, dtype=torch.int32, device=indices.device)
    return hits.scatter_add(-1, indices.long(), valid.to(torch.int32)) > 0
