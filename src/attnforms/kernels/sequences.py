"""Packed sequences and their chunks, shared by every chunked kernel family.

A batch is addressed as packed sequences: `cu_seqlens [N + 1]` int64 offsets (a plain
batch `[B, T]` is B sequences of length T), and a chunked kernel's program `i_c` finds
its chunk through `chunk_indices [chunks, 2]` int32 (sequence, chunk in sequence). T is
then never a compile-time constant, so a new length never recompiles a kernel.
"""
from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import torch
import triton
import triton.language as tl


def sequence_offsets(B: int, T: int, offsets) -> tuple[int, ...]:
    """Packed-sequence offsets as a tuple; a plain batch is B sequences of length T."""
    return tuple(range(0, B * T + 1, T)) if offsets is None else tuple(int(x) for x in offsets)


@functools.lru_cache(maxsize=64)
def cu_seqlens_tensor(offsets: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`[N + 1]` int64 offsets on `device`, made once per packing: a host to device copy
    on every call would cost more than a decoding step."""
    return torch.tensor(offsets, dtype=torch.int64, device=device)


@functools.lru_cache(maxsize=64)
def batch_cu_seqlens(B: int, T: int, device: torch.device) -> torch.Tensor:
    """`cu_seqlens_tensor` of a plain batch, keyed by (B, T): no offsets tuple to build
    and hash on every decoding step."""
    return torch.arange(0, B * T + 1, T, dtype=torch.int64, device=device)


def chunk_counts(offsets: tuple[int, ...], chunk_size: int) -> list[int]:
    """How many chunks of `chunk_size` rows each sequence of a packing has."""
    return [triton.cdiv(end - start, chunk_size) for start, end in zip(offsets, offsets[1:])]


@functools.lru_cache(maxsize=64)
def chunk_tables(offsets: tuple[int, ...], chunk_size: int, device: torch.device):
    """Chunk tables of one packing, made once per (offsets, chunk size, device).

    Returns chunk_indices `[chunks, 2]` int32 (sequence, chunk in sequence) and
    chunk_base `[N]` int64 (global id of each sequence's first chunk).
    """
    counts = chunk_counts(offsets, chunk_size)
    chunk_indices = torch.tensor([[n, t] for n, count in enumerate(counts) for t in range(count)],
                                 dtype=torch.int32, device=device).reshape(-1, 2)
    chunk_base = torch.tensor([0] + counts[:-1], device=device).cumsum(0)
    return chunk_indices, chunk_base


class Segment(NamedTuple):
    """One segment of every sequence of a packing: each sequence's chunks
    `[first, first + count)` (fewer where a sequence ends sooner, none past its end).

    bounds: `[N, 2]` int64 (first row, end row) per sequence (a sequential pass's
    `cu_seqlens` at STRIDE 2); chunk_indices: `[chunks in the segment, 2]` int32, the
    packing's rows for the segment's chunks (a chunked kernel's table, read with the
    packing's cu_seqlens); chunk_base: `[N]` int64 global id of each sequence's first
    chunk in the segment.
    """

    bounds: torch.Tensor
    chunk_indices: torch.Tensor
    chunk_base: torch.Tensor


@functools.lru_cache(maxsize=64)
def segment_tables(offsets: tuple[int, ...], chunk_size: int, segment_chunks: int,
                   device: torch.device) -> tuple[Segment, ...]:
    """The packing cut into segments of `segment_chunks` chunks of every sequence, in
    order: a pass that carries a state can walk segment s while a chunked kernel works on
    segment s + 1 (the gated delta rule's pipelined forward)."""
    starts, ends = offsets[:-1], offsets[1:]
    counts = chunk_counts(offsets, chunk_size)
    bases = [0, *itertools.accumulate(counts)][:-1]
    span = segment_chunks * chunk_size
    segments = []
    for first in range(0, max(counts, default=0), segment_chunks):
        bounds = [(min(start + first * chunk_size, end), min(start + first * chunk_size + span, end))
                  for start, end in zip(starts, ends)]
        rows = [[n, t] for n, count in enumerate(counts) for t in range(first, min(first + segment_chunks, count))]
        segments.append(Segment(
            torch.tensor(bounds, dtype=torch.int64, device=device).reshape(-1, 2),
            torch.tensor(rows, dtype=torch.int32, device=device).reshape(-1, 2),
            torch.tensor([base + first for base in bases], dtype=torch.int64, device=device),
        ))
    return tuple(segments)


@triton.jit
def chunk_bounds(chunk_indices, cu_seqlens, i_c, BT: tl.constexpr):
    """The sequence of global chunk i_c: (sequence index, first token row of the chunk,
    number of valid rows in it), int64."""
    i_n = tl.load(chunk_indices + i_c * 2).to(tl.int64)
    i_t = tl.load(chunk_indices + i_c * 2 + 1).to(tl.int64)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    start = bos + i_t * BT
    return i_n, start, tl.minimum(eos - start, BT)


@triton.jit
def global_chunk_id(chunk_indices, chunk_base, i_c, i_n):
    """The global id (index into `[chunks, ...]` per-chunk tensors) of row i_c of
    `chunk_indices`, a chunk of sequence i_n: equal to i_c for the whole packing's
    table, and right for a segment's subset too (`segment_tables`), int64."""
    return tl.load(chunk_base + i_n) + tl.load(chunk_indices + i_c * 2 + 1).to(tl.int64)


@triton.jit
def chunk_head_program(chunk_indices, cu_seqlens, H: tl.constexpr, BT: tl.constexpr):
    """A program of a grid `(chunks, H)` over one whole chunk of one head: (chunk i_c,
    head i_h, sequence i_n, the chunk's first token row, its valid rows, the rows' index
    in the chunk o_t `[BT]`, which of them are valid m_t `[BT]`, and their index into a
    time-major `[tokens, H]` tensor p_t `[BT]`)."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, start, valid = chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    return i_c, i_h, i_n, start, valid, o_t, m_t, (start + o_t) * H + i_h


@triton.jit
def sequence_head_program(cu_seqlens, H: tl.constexpr, STRIDE: tl.constexpr = 1):
    """A program of a grid `(value tiles, N·H)` over packed sequences: (value tile, sequence
    and head i_nh, sequence, head, first row, end row of the sequence), int64.
    STRIDE 2: `cu_seqlens` is a `[N, 2]` table of (first row, end row) per sequence
    instead, which can name one segment of every sequence (`segment_tables`)."""
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n = i_nh // H
    bos = tl.load(cu_seqlens + i_n * STRIDE).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n * STRIDE + 1).to(tl.int64)
    return i_v, i_nh, i_n, i_nh % H, bos, eos


def sequence_head_program_ref(cu_seqlens: torch.Tensor, i_v: int, i_nh: int, H: int):
    """`sequence_head_program` in plain Python, for program (i_v, i_nh)."""
    n = i_nh // H
    return i_v, i_nh, n, i_nh % H, int(cu_seqlens[n]), int(cu_seqlens[n + 1])


def chunk_bounds_ref(chunk_indices: torch.Tensor, cu_seqlens: torch.Tensor, i_c: int, BT: int) -> tuple[int, int, int]:
    """`chunk_bounds` in plain Python."""
    n, t = (int(x) for x in chunk_indices[i_c])
    bos, eos = int(cu_seqlens[n]), int(cu_seqlens[n + 1])
    start = bos + t * BT
    return n, start, min(eos - start, BT)
