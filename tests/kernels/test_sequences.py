"""`attnforms.kernels.sequences`: the chunk tables and `chunk_bounds` against its `_ref`
twin, under the interpreter (set by the conftest)."""
import torch
import triton
import triton.language as tl

from attnforms.kernels.sequences import (
    chunk_bounds, chunk_bounds_ref, chunk_tables, cu_seqlens_tensor, segment_tables, sequence_head_program,
    sequence_head_program_ref, sequence_offsets,
)


@triton.jit
def _bounds_kernel(chunk_indices, cu_seqlens, out, BT: tl.constexpr):
    i_c = tl.program_id(0).to(tl.int64)
    i_n, start, valid = chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    tl.store(out + i_c * 3, i_n)
    tl.store(out + i_c * 3 + 1, start)
    tl.store(out + i_c * 3 + 2, valid)


def test_chunk_bounds_matches_its_reference_on_ragged_packings():
    offsets = sequence_offsets(1, 0, [0, 1, 1 + 65, 1 + 65 + 64, 1 + 65 + 64 + 200])
    BT = 64
    chunk_indices, chunk_base = chunk_tables(offsets, BT, torch.device("cpu"))
    cu_seqlens = cu_seqlens_tensor(offsets, torch.device("cpu"))
    # One chunk for lengths 1 and 64, two for 65, four for 200.
    assert chunk_indices.shape[0] == 1 + 2 + 1 + 4
    assert chunk_base.tolist() == [0, 1, 3, 4]
    out = torch.empty(chunk_indices.shape[0], 3, dtype=torch.int64)
    _bounds_kernel[(chunk_indices.shape[0],)](chunk_indices, cu_seqlens, out, BT=BT)
    expected = [chunk_bounds_ref(chunk_indices, cu_seqlens, i, BT) for i in range(chunk_indices.shape[0])]
    assert out.tolist() == [list(row) for row in expected]
    # Every token row is covered exactly once.
    covered = sorted(r for _, start, valid in expected for r in range(start, start + valid))
    assert covered == list(range(offsets[-1]))


def test_plain_batch_offsets():
    assert sequence_offsets(3, 5, None) == (0, 5, 10, 15)


@triton.jit
def _program_kernel(cu_seqlens, out, H: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    p = out + (i_v * tl.num_programs(1) + i_nh) * 6
    tl.store(p, i_v)
    tl.store(p + 1, i_nh)
    tl.store(p + 2, i_n)
    tl.store(p + 3, i_h)
    tl.store(p + 4, bos)
    tl.store(p + 5, eos)


def test_sequence_head_program_matches_its_reference():
    cu_seqlens = cu_seqlens_tensor((0, 3, 3, 10), torch.device("cpu"))
    H, tiles = 2, 2
    out = torch.empty(tiles, 3 * H, 6, dtype=torch.int64)
    _program_kernel[(tiles, 3 * H)](cu_seqlens, out, H=H)
    expected = [[list(sequence_head_program_ref(cu_seqlens, v, nh, H)) for nh in range(3 * H)] for v in range(tiles)]
    assert out.tolist() == expected


def test_segments_cover_every_chunk_once_in_order():
    """`segment_tables` on a ragged packing: each segment's chunks are the packing's rows
    for chunks [s·count, (s + 1)·count) of every sequence, its bounds the rows of those
    chunks (empty past a sequence's end) and its chunk_base their global ids."""
    offsets = (0, 1, 66, 130, 330)
    BT, count = 64, 2
    device = torch.device("cpu")
    chunk_indices, chunk_base = chunk_tables(offsets, BT, device)
    segments = segment_tables(offsets, BT, count, device)
    assert len(segments) == 2  # the longest sequence (200 rows) has 4 chunks
    rows = torch.cat([segment.chunk_indices for segment in segments])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, chunk_indices.tolist()))
    for s, segment in enumerate(segments):
        for n, (start, end) in enumerate(zip(offsets, offsets[1:])):
            first, last = min(start + s * count * BT, end), min(start + (s + 1) * count * BT, end)
            assert segment.bounds[n].tolist() == [first, last]
            assert int(segment.chunk_base[n]) == int(chunk_base[n]) + s * count
            mine = [t for m, t in segment.chunk_indices.tolist() if m == n]
            assert mine == list(range(s * count, s * count + triton.cdiv(last - first, BT)))


@triton.jit
def _segment_program_kernel(bounds, out, H: tl.constexpr):
    _, i_nh, _, _, bos, eos = sequence_head_program(bounds, H, 2)
    tl.store(out + i_nh * 2, bos)
    tl.store(out + i_nh * 2 + 1, eos)


def test_sequence_head_program_reads_a_segment_table_at_stride_2():
    offsets, H = (0, 1, 66, 130, 330), 2
    segment = segment_tables(offsets, 64, 2, torch.device("cpu"))[1]
    out = torch.empty(4 * H, 2, dtype=torch.int64)
    _segment_program_kernel[(1, 4 * H)](segment.bounds, out, H=H)
    assert out.tolist() == segment.bounds.repeat_interleave(H, dim=0).tolist()
