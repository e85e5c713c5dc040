"""The per-channel kernels' choice of block anchors (ops/gated_delta/triton/common.py,
`_anchor_level`) against its definition computed here in Python: the largest level L
in [LOW, LEVELS] whose aligned blocks of 2^L steps (the last one cut at the chunk's
valid length) all decay by at most the limit on every channel, else LOW − 1. The
results it feeds are checked against float64 in test_gated_delta_triton.py; this says
which path those tests take."""
import pytest
import torch
import triton
import triton.language as tl

from attnforms.ops.gated_delta.triton.common import _anchor_level

BT, K, LOW, LEVELS, LIMIT = 64, 8, 2, 6, 40.0


@triton.jit
def _level_kernel(G, out, valid, SPAN_LIMIT: tl.constexpr, LOW: tl.constexpr, LEVELS: tl.constexpr,
                  K: tl.constexpr, BT: tl.constexpr):
    """out[0] = _anchor_level of the one chunk of G `[BT, 1, K]` (head 0, all K channels)."""
    o_k = tl.arange(0, K)
    tl.store(out, _anchor_level(G, 0, valid, 0, o_k, SPAN_LIMIT, LOW, LEVELS, 1, K, BT))


def _expected(G: torch.Tensor, valid: int, limit: float) -> int:
    """The definition, from G `[BT, K]`."""
    level = LOW - 1
    for L in range(LOW, LEVELS + 1):
        size = 1 << L
        spans = [(G[first] - G[min(first + size, valid) - 1]).max().item() for first in range(0, valid, size)]
        if max(spans) <= limit:
            level = L
    return level


@pytest.mark.parametrize("valid", [64, 50, 3])
@pytest.mark.parametrize("per_step", [0.05, 0.6, 1.0, 2.4, 5.0, 20.0])
@pytest.mark.parametrize("one_strong_channel", [False, True])
def test_anchor_level_is_the_largest_block_within_the_limit(valid, per_step, one_strong_channel):
    generator = torch.Generator().manual_seed(int(per_step * 100) + valid)
    g = -per_step * (0.9 + 0.1 * torch.rand(BT, K, generator=generator))
    if one_strong_channel:  # the largest decay of any channel decides
        g[:, 3] = -20.0
    g[valid:] = 0.0
    G = torch.cumsum(g, dim=0)
    for limit, expected in ((LIMIT, _expected(G, valid, LIMIT)), (-1.0, LOW - 1)):  # -1: ONE_ANCHOR_SPAN None
        out = torch.full((1,), -100, dtype=torch.int32)
        _level_kernel[(1,)](G.reshape(BT, 1, K).contiguous(), out, valid, SPAN_LIMIT=limit, LOW=LOW,
                            LEVELS=LEVELS, K=K, BT=BT)
        assert out.item() == expected


def test_the_definition_spans_the_levels():
    """The cases above reach every kind of choice: the whole chunk, a block level below
    it, and the tree (LOW − 1)."""
    # Constant decays d: a block of 2^L steps decays by (2^L − 1)·d. 0.05·63 <= 40: the
    # chunk; 2.4·15 <= 40 < 2.4·31: 16 steps (L 4); 20·3 > 40: not even a leaf of 4.
    levels = set()
    for per_step in (0.05, 2.4, 20.0):
        G = torch.cumsum(torch.full((BT, K), -per_step), dim=0)
        levels.add(_expected(G, BT, LIMIT))
    assert levels == {LEVELS, 4, LOW - 1}
