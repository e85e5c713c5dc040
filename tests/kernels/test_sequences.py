"""`attnforms.kernels.sequences`: the chunk tables and `chunk_bounds` against its `_ref`
twin, under the interpreter (set by the conftest)."""
import torch
import triton
import triton.language as tl

from attnforms.kernels.sequences import (
    chunk_bounds, chunk_bounds_ref, chunk_tables, cu_seqlens_tensor, sequence_head_program,
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
