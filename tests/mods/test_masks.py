"""Mask mods: each against a boolean mask written as plain-Python loops over the definition,
then through every form of `softmax_attention` against SDPA with that explicit mask."""
import pytest
import torch

from attnforms.mods import (
    and_masks, causal, document, neighbourhood_2d, or_masks, prefix_lm, sink_tokens, sliding_window,
)
from attnforms.ops.softmax import softmax_attention
from attnforms.testing import max_error, softmax_inputs
from mods_reference import FORMS, coordinates, loop_mask, sdpa

DOCS = [0] * 9 + [1] * 14 + [2] + [3] * 13  # 37 tokens, a one-token document included
ROW_DOCS = [DOCS, [0] * 20 + [1] * 17]
PREFIXES = [0, 12]


def in_window(q, kv, W):
    return q - W < kv <= q


def neighbour(q, kv, height, width, kernel):
    """NATTEN's rule restated: the kernel x kernel window centred on the pixel, moved
    inwards so it stays inside the grid."""
    (qy, qx), (ky, kx) = divmod(q, width), divmod(kv, width)
    y0 = min(max(qy - kernel // 2, 0), height - kernel)
    x0 = min(max(qx - kernel // 2, 0), width - kernel)
    return y0 <= ky < y0 + kernel and x0 <= kx < x0 + kernel


# (id, mod, predicate(b, h, q, kv), B, T, S)
CASES = [
    ("causal", causal(), lambda b, h, q, kv: kv <= q, 2, 37, 37),
    ("causal-S>T", causal(), lambda b, h, q, kv: kv <= q, 2, 13, 40),
    ("causal-S<T", causal(), lambda b, h, q, kv: kv <= q, 1, 30, 11),
    ("sliding-window-5", sliding_window(5), lambda b, h, q, kv: in_window(q, kv, 5), 2, 37, 37),
    ("sliding-window-1", sliding_window(1), lambda b, h, q, kv: kv == q, 1, 9, 9),
    ("sliding-window-S>T", sliding_window(7), lambda b, h, q, kv: in_window(q, kv, 7), 2, 13, 40),
    ("prefix-lm-int", prefix_lm(12), lambda b, h, q, kv: kv < 12 or kv <= q, 2, 37, 37),
    ("prefix-lm-per-row", prefix_lm(torch.tensor(PREFIXES)),
     lambda b, h, q, kv: kv < PREFIXES[b] or kv <= q, 2, 37, 37),
    ("document-shared", document(torch.tensor(DOCS)), lambda b, h, q, kv: DOCS[q] == DOCS[kv], 2, 37, 37),
    ("document-per-row", document(torch.tensor(ROW_DOCS)),
     lambda b, h, q, kv: ROW_DOCS[b][q] == ROW_DOCS[b][kv], 2, 37, 37),
    ("sink-tokens", sink_tokens(3, 5), lambda b, h, q, kv: kv <= q and (kv < 3 or q - 5 < kv), 2, 37, 37),
    ("sink-tokens-no-sink", sink_tokens(0, 4), lambda b, h, q, kv: in_window(q, kv, 4), 1, 20, 20),
    ("neighbourhood-5x7-k3", neighbourhood_2d(5, 7, 3), lambda b, h, q, kv: neighbour(q, kv, 5, 7, 3), 2, 35, 35),
    ("neighbourhood-6x5-k5", neighbourhood_2d(6, 5, 5), lambda b, h, q, kv: neighbour(q, kv, 6, 5, 5), 1, 30, 30),
    ("neighbourhood-k1", neighbourhood_2d(3, 4, 1), lambda b, h, q, kv: q == kv, 1, 12, 12),
    ("and-causal-document", and_masks(causal(), document(torch.tensor(DOCS))),
     lambda b, h, q, kv: kv <= q and DOCS[q] == DOCS[kv], 2, 37, 37),
    ("or-window-prefix", or_masks(sliding_window(4), prefix_lm(6)),
     lambda b, h, q, kv: in_window(q, kv, 4) or kv < 6 or kv <= q, 2, 37, 37),
    ("or-window-sinks", or_masks(sliding_window(4), and_masks(causal(), lambda b, h, q, kv: kv < 2)),
     lambda b, h, q, kv: in_window(q, kv, 4) or (kv <= q and kv < 2), 1, 37, 37),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name, mod, predicate, B, T, S", CASES, ids=IDS)
def test_mask_equals_loops(name, mod, predicate, B, T, S):
    H = 3
    keep = mod(*coordinates(B, H, T, S))
    assert keep.dtype == torch.bool
    assert torch.equal(keep.expand(B, H, T, S), loop_mask(predicate, B, H, T, S))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name, mod, predicate, B, T, S", CASES, ids=IDS)
def test_mask_in_softmax_attention_equals_sdpa(name, mod, predicate, B, T, S, form):
    H = 4
    x = softmax_inputs(B=B, T=T, S=S, H=H, G=2, K=8, V=8)
    expected = sdpa(**x, keep=loop_mask(predicate, B, H, T, S))
    out = softmax_attention(**x, causal=False, mask_mod=mod, form=form, chunk_size=8, impl="reference")
    assert max_error(out.output, expected) < 1e-12


@pytest.mark.parametrize("W", [1, 6, 40])
def test_sliding_window_equals_the_window_keyword(W):
    x = softmax_inputs(B=2, T=29, H=2, K=8)
    by_keyword = softmax_attention(**x, window=W, impl="reference").output
    by_mask = softmax_attention(**x, causal=False, mask_mod=sliding_window(W), impl="reference").output
    assert max_error(by_keyword, by_mask) < 1e-12


def test_prefix_lm_per_sequence_with_cu_seqlens():
    """With cu_seqlens b is the sequence index and positions are local: a `[N]` prefix
    tensor gives each packed sequence its own prefix, as running each alone."""
    lengths, prefixes = [11, 5, 17], [3, 0, 8]
    x = softmax_inputs(B=1, T=sum(lengths), H=2, K=8)
    cu = torch.tensor([0, 11, 16, 33])
    packed = softmax_attention(**x, causal=False, mask_mod=prefix_lm(torch.tensor(prefixes)),
                               cu_seqlens=cu, impl="reference").output
    for n, (start, end) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        alone = softmax_attention(**{k: t[:, start:end] for k, t in x.items()}, causal=False,
                                  mask_mod=prefix_lm(prefixes[n]), impl="reference").output
        assert max_error(packed[:, start:end], alone) < 1e-12


def test_document_continues_across_a_cache():
    """Positions are absolute, so a mask over the whole stream applies unchanged when the
    stream is split into calls that hand a KV cache on."""
    ids = torch.tensor([0] * 6 + [1] * 10)
    mod = and_masks(causal(), document(ids))
    x = softmax_inputs(B=1, T=16, H=2, K=8)
    whole = softmax_attention(**x, causal=False, mask_mod=mod, impl="reference").output
    first = softmax_attention(**{k: t[:, :7] for k, t in x.items()}, causal=False, mask_mod=mod,
                              output_final_state=True, impl="reference")
    for form in FORMS:
        rest = softmax_attention(**{k: t[:, 7:] for k, t in x.items()}, causal=False, mask_mod=mod,
                                 initial_state=first.final_state, form=form, impl="reference").output
        assert max_error(rest, whole[:, 7:]) < 1e-12


def test_document_reads_in_bounds_at_empty_cache_slots():
    """Empty cache slots carry position -1 (the pair is masked anyway); the lookups are
    clamped, so they stay in bounds for both layouts of doc_ids."""
    for ids in (torch.tensor([0, 0, 1]), torch.tensor([[0, 0, 1], [0, 1, 1]])):
        keep = document(ids)(torch.arange(2).view(2, 1, 1, 1), torch.zeros(1, 1, 1, 1, dtype=torch.long),
                             torch.tensor([2, 2]).view(2, 1, 1, 1), torch.tensor([-1, 0, 2]).view(1, 1, 1, 3))
        assert keep.shape == (2, 1, 1, 3)


@pytest.mark.parametrize("build, error, message", [
    (lambda: sliding_window(0), ValueError, r"^window: expected an int >= 1"),
    (lambda: sliding_window(2.5), TypeError, r"^window: expected an int"),
    (lambda: prefix_lm(-1), ValueError, r"^prefix_length"),
    (lambda: prefix_lm(torch.ones(2)), TypeError, r"^prefix_length: expected an integer"),
    (lambda: document(torch.zeros(2, 3, 4, dtype=torch.long)), ValueError, r"^doc_ids: expected 1 or 2"),
    (lambda: neighbourhood_2d(5, 5, 2), ValueError, r"^kernel: expected an odd"),
    (lambda: neighbourhood_2d(2, 5, 3), ValueError, r"^height: expected an int >= 3"),
    (lambda: sink_tokens(4, 0), ValueError, r"^window"),
    (lambda: and_masks(), ValueError, r"^and_masks: expected at least one"),
    (lambda: or_masks(causal(), 3), TypeError, r"^or_masks: argument 1"),
], ids=["window-0", "window-float", "prefix-negative", "prefix-float", "doc-rank", "kernel-even",
        "grid-small", "sink-window", "and-empty", "or-not-callable"])
def test_bad_arguments_raise_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()
