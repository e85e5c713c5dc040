"""create_block_mask: the tile classes against a dense evaluation of the mask, the index
lists and their transposes, broadcasting over b / h, and its use in softmax_attention."""
import dataclasses

import pytest
import torch

from attnforms.mods import (
    BlockMask, and_masks, causal, create_block_mask, document, neighbourhood_2d, or_masks, prefix_lm,
    sink_tokens, sliding_window,
)
from attnforms.mods.block_mask import EMPTY, FULL, PARTIAL
from attnforms.ops.softmax import softmax_attention
from attnforms.testing import max_error, softmax_inputs
from mods_reference import FORMS, coordinates

DOCS = torch.tensor([0] * 50 + [1] * 3 + [2] * 90 + [3] * 57)  # 200 tokens
WIDTHS = torch.tensor([3, 40, 200])


def per_head_window(b, h, q_idx, kv_idx):
    """A window whose width depends on the head."""
    return (kv_idx <= q_idx) & (kv_idx > q_idx - WIDTHS[h])


def per_row_prefix(b, h, q_idx, kv_idx):
    return (kv_idx < 17 + 60 * b) | (kv_idx <= q_idx)


# (id, mask, B, H, T, S, block_q, block_kv)
CASES = [
    ("causal-200-64", causal(), None, None, 200, 200, 64, 64),
    ("causal-S>T", causal(), None, None, 63, 130, 16, 32),
    ("causal-S<T", causal(), None, None, 130, 63, 32, 16),
    ("window-200-blocks-32x16", sliding_window(37), None, None, 200, 200, 32, 16),
    ("document-causal", and_masks(causal(), document(DOCS)), None, None, 200, 200, 32, 32),
    ("sinks", sink_tokens(4, 50), None, None, 200, 200, 16, 16),
    ("neighbourhood", neighbourhood_2d(10, 13, 5), None, None, 130, 130, 16, 16),
    ("prefix-or-window", or_masks(sliding_window(8), prefix_lm(20)), None, None, 100, 100, 8, 8),
    ("per-head", per_head_window, None, 3, 200, 200, 32, 64),
    ("per-row", per_row_prefix, 2, None, 150, 150, 32, 32),
    ("T=1", causal(), None, None, 1, 77, 128, 32),
    ("one-block", sliding_window(3), None, None, 5, 5, 128, 128),
    ("block-1", sliding_window(3), None, None, 9, 9, 1, 1),
]
IDS = [c[0] for c in CASES]


def dense_classes(mask, B, H, T, S, block_q, block_kv):
    """Classes per tile by evaluating the mask on the whole grid and looking at every tile's
    in-range pairs."""
    Bm, Hm = B or 1, H or 1
    keep = mask(*coordinates(Bm, Hm, T, S)).expand(Bm, Hm, T, S)
    Tb, Sb = -(-T // block_q), -(-S // block_kv)
    classes = torch.zeros(Bm, Hm, Tb, Sb, dtype=torch.int8)
    for i in range(Tb):
        for j in range(Sb):
            tile = keep[:, :, i * block_q:(i + 1) * block_q, j * block_kv:(j + 1) * block_kv]
            classes[:, :, i, j] = torch.where(tile.all(dim=(2, 3)), FULL, torch.where(tile.any(dim=(2, 3)), PARTIAL, EMPTY))
    return classes


def check_lists(num, indices, grid):
    """num / indices describe the set columns of `grid` row by row, increasing, padded 0."""
    assert num.dtype == torch.int32 and indices.dtype == torch.int32
    for row in range(grid.shape[-2]):
        for (b, h) in [(b, h) for b in range(grid.shape[0]) for h in range(grid.shape[1])]:
            cols = grid[b, h, row].nonzero().flatten().tolist()
            n = int(num[b, h, row])
            assert n == len(cols)
            assert indices[b, h, row, :n].tolist() == cols
            assert (indices[b, h, row, n:] == 0).all()


@pytest.mark.parametrize("name, mask, B, H, T, S, block_q, block_kv", CASES, ids=IDS)
def test_classes_match_a_dense_evaluation(name, mask, B, H, T, S, block_q, block_kv):
    bm = create_block_mask(mask, B, H, T, S, block_q, block_kv)
    expected = dense_classes(mask, B, H, T, S, block_q, block_kv)
    assert bm.shape == tuple(expected.shape)
    assert torch.equal(bm.classes(), expected)
    check_lists(bm.kv_num_blocks, bm.kv_indices, expected == PARTIAL)
    check_lists(bm.full_kv_num_blocks, bm.full_kv_indices, expected == FULL)
    check_lists(bm.q_num_blocks, bm.q_indices, (expected == PARTIAL).transpose(-1, -2))
    check_lists(bm.full_q_num_blocks, bm.full_q_indices, (expected == FULL).transpose(-1, -2))
    assert bm.sparsity() == pytest.approx(float((expected == EMPTY).float().mean()))
    assert bm.seq_lengths == (T, S) and bm.mask_mod is mask


@pytest.mark.parametrize("name, mask, B, H, T, S, block_q, block_kv", CASES[:10], ids=IDS[:10])
def test_chunked_evaluation_gives_the_same_map(name, mask, B, H, T, S, block_q, block_kv):
    whole = create_block_mask(mask, B, H, T, S, block_q, block_kv)
    tiny = create_block_mask(mask, B, H, T, S, block_q, block_kv, max_pairs=1)
    for field in dataclasses.fields(BlockMask):
        a, b = getattr(whole, field.name), getattr(tiny, field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_chunks_never_see_positions_outside_the_sequence():
    seen = []

    def spy(b, h, q_idx, kv_idx):
        seen.append((int(q_idx.min()), int(q_idx.max()), int(kv_idx.min()), int(kv_idx.max())))
        return kv_idx <= q_idx

    create_block_mask(spy, None, None, 45, 70, 16, 32, max_pairs=600)
    assert len(seen) > 1
    assert min(s[0] for s in seen) == 25 and max(s[1] for s in seen) == 69
    assert min(s[2] for s in seen) == 0 and max(s[3] for s in seen) == 69


def test_maps_broadcast_or_not_over_b_and_h():
    assert create_block_mask(causal(), None, None, 64, 64, 16, 16).shape[:2] == (1, 1)
    assert create_block_mask(causal(), 3, 2, 64, 64, 16, 16).shape[:2] == (3, 2)
    by_head = create_block_mask(per_head_window, None, 3, 200, 200, 32, 32).classes()
    assert not torch.equal(by_head[0, 0], by_head[0, 2])


def test_repr_is_readable():
    text = repr(create_block_mask(sliding_window(40), None, None, 100, 100, 32, 32))
    lines = text.splitlines()
    assert lines[0].startswith("BlockMask(mask_mod=sliding_window(40), seq_lengths=(T=100, S=100), block=(32, 32)")
    assert "sparsity" in lines[0]
    # Query blocks 0..3 (the last holds queries 96..99 only); query q sees q-39..q.
    # Block (3, 2): keys 64..95 are all within 57..96 for every query 96..99, so full.
    assert lines[2:] == ["    ░···", "    ░░··", "    ░░░·", "    ·░█░"]


def test_block_mask_is_frozen_and_validated():
    bm = create_block_mask(causal(), None, None, 64, 64, 16, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bm.block_q = 32
    with pytest.raises(ValueError, match=r"^BlockMask.kv_indices: expected int32"):
        dataclasses.replace(bm, kv_indices=bm.kv_indices[..., :2])
    assert bm.to("cpu").classes().equal(bm.classes())


@pytest.mark.parametrize("mask_mod, error, message", [
    (lambda b, h, q, kv: (kv <= q).float(), TypeError, r"^mask_mod: expected a bool tensor"),
    (lambda b, h, q, kv: True, TypeError, r"^mask_mod: expected a bool tensor, got bool"),
    ("causal", TypeError, r"^mask_mod: expected a callable"),
], ids=["float", "python-bool", "string"])
def test_bad_mask_mods(mask_mod, error, message):
    with pytest.raises(error, match=message):
        create_block_mask(mask_mod, None, None, 10, 10, 4, 4)


# ---------------------------------------------------------------- in softmax_attention

@pytest.mark.parametrize("form", FORMS)
def test_a_block_mask_does_not_change_the_reference(form):
    mask = and_masks(causal(), document(DOCS[:90]))
    x = softmax_inputs(B=2, T=90, H=4, G=2, K=8)
    bm = create_block_mask(mask, None, None, 90, 90, 32, 32)
    plain = softmax_attention(**x, causal=False, mask_mod=mask, form=form, impl="reference").output
    mapped = softmax_attention(**x, causal=False, mask_mod=mask, block_mask=bm, form=form, impl="reference").output
    assert max_error(plain, mapped) == 0


def test_block_mask_with_cu_seqlens_uses_the_longest_sequence():
    mask = sliding_window(5)
    x = softmax_inputs(B=1, T=30, H=2, K=8)
    cu = torch.tensor([0, 12, 30])
    bm = create_block_mask(mask, 2, None, 18, 18, 8, 8)
    out = softmax_attention(**x, mask_mod=mask, block_mask=bm, cu_seqlens=cu, impl="reference").output
    assert max_error(out, softmax_attention(**x, mask_mod=mask, cu_seqlens=cu, impl="reference").output) == 0
    with pytest.raises(ValueError, match=r"^block_mask: expected seq_lengths \(T, S\) = \(18, 18\) \(the longest"):
        softmax_attention(**x, mask_mod=mask, block_mask=create_block_mask(mask, None, None, 30, 30), cu_seqlens=cu)


def test_block_mask_errors_name_the_problem():
    mask = causal()
    x = softmax_inputs(B=2, T=20, H=4, K=8)
    good = create_block_mask(mask, None, None, 20, 20, 8, 8)
    cases = [
        (dict(mask_mod=causal(), block_mask=good), ValueError, r"^block_mask: expected the map of the mask_mod passed"),
        (dict(block_mask=good), ValueError, r"^block_mask: expected the map of the mask_mod passed"),
        (dict(mask_mod=mask, block_mask=create_block_mask(mask, None, None, 20, 21)), ValueError,
         r"^block_mask: expected seq_lengths \(T, S\) = \(20, 20\), got \(20, 21\)"),
        (dict(mask_mod=mask, block_mask=create_block_mask(mask, 3, None, 20, 20)), ValueError,
         r"^block_mask: expected batch rows 1 or 2 and heads 1 or 4, got 3 and 1"),
        (dict(mask_mod=mask, block_mask=create_block_mask(mask, None, 2, 20, 20)), ValueError,
         r"^block_mask: expected batch rows 1 or 2 and heads 1 or 4, got 1 and 2"),
        (dict(mask_mod=mask, block_mask="dense"), TypeError, r"^block_mask: expected an attnforms.mods.BlockMask"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            softmax_attention(**x, **options)
    state = softmax_attention(**x, output_final_state=True).final_state
    with pytest.raises(ValueError, match=r"^block_mask: expected no initial_state"):
        softmax_attention(**x, mask_mod=mask, block_mask=good, initial_state=state)
