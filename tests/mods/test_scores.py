"""Score mods: ALiBi slopes against the paper's formula, T5 buckets against a per-element
restatement of T5's code, each mod through every form against SDPA with an explicit
additive bias (or explicitly written scores), and gradients into the captured tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnforms.mods import (
    alibi, alibi_slopes, box_rpb, box_rpb_tables, compose_scores, cumulative_log_forget, forgetting,
    t5_bucket, t5_relative_bias, tanh_softcap,
)
from attnforms.ops.softmax import softmax_attention
from attnforms.testing import max_error, softmax_inputs
from mods_reference import FORMS, explicit, loop_bias, loop_mask, positions, sdpa

CAUSAL = lambda b, h, q, kv: kv <= q  # noqa: E731


def run(x, form, **options):
    return softmax_attention(**x, form=form, chunk_size=8, impl="reference", **options).output


# ---------------------------------------------------------------- ALiBi

def paper_slopes(n: int) -> list[float]:
    """Press et al.: a geometric sequence starting at and with ratio 2^(-8/n) for a power of
    two n; otherwise the m = 2^floor(log2 n) slopes, then slopes halfway (in the exponent)
    between consecutive ones, 2^(-8 (j + 1/2) / m), for the remaining heads."""
    m = 1 << (n.bit_length() - 1)
    ratio = 2.0 ** (-8.0 / m)
    return [ratio ** i for i in range(1, m + 1)] + [2.0 ** (-8.0 * (j + 0.5) / m) for j in range(n - m)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 12, 16, 20, 24, 32, 40, 96])
def test_alibi_slopes_follow_the_paper(n):
    assert alibi_slopes(n) == pytest.approx(paper_slopes(n), rel=1e-14, abs=0)


def test_alibi_slopes_examples_from_the_paper():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -i for i in range(1, 9)], rel=1e-15)
    assert alibi_slopes(16) == pytest.approx([2.0 ** (-i / 2) for i in range(1, 17)], rel=1e-15)
    assert len(set(alibi_slopes(12))) == 12


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_alibi_equals_sdpa_with_the_bias(bidirectional, form):
    B, T, S, H = 2, 21, 30, 6
    x = softmax_inputs(B=B, T=T, S=S, H=H, G=3, K=8)
    slopes = alibi_slopes(H)
    if bidirectional:
        bias = loop_bias(lambda b, h, q, kv: -slopes[h] * abs(q - kv), B, H, T, S)
        keep = None
    else:
        bias = loop_bias(lambda b, h, q, kv: -slopes[h] * (q - kv), B, H, T, S)
        keep = loop_mask(CAUSAL, B, H, T, S)
    mod = alibi(H, bidirectional=bidirectional, dtype=torch.float64)
    out = run(x, form, causal=not bidirectional, score_mod=mod)
    assert max_error(out, sdpa(**x, keep=keep, bias=bias)) < 1e-12


def test_alibi_float32_table_in_a_float64_call_is_accurate():
    """The default float32 slope table promotes in a float64 call; the result is cast back
    and agrees to float32 precision of the slopes."""
    x = softmax_inputs(B=1, T=17, H=5, K=8)
    slopes = alibi_slopes(5)
    bias = loop_bias(lambda b, h, q, kv: -slopes[h] * (q - kv), 1, 5, 17, 17)
    out = run(x, "parallel", score_mod=alibi(5))
    assert max_error(out, sdpa(**x, keep=loop_mask(CAUSAL, 1, 5, 17, 17), bias=bias)) < 1e-5


def test_float64_table_in_a_float32_call_runs_in_float32():
    x = softmax_inputs(B=1, T=17, H=4, K=8, dtype=torch.float32)
    out = run(x, "chunk", score_mod=alibi(4, dtype=torch.float64))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ---------------------------------------------------------------- soft-cap and composition

@pytest.mark.parametrize("form", FORMS)
def test_tanh_softcap_equals_explicit_scores(form):
    x = softmax_inputs(B=2, T=19, H=2, K=8)
    x["q"] = x["q"] * 6.0  # scores well beyond the cap
    keep = loop_mask(CAUSAL, 2, 2, 19, 19)
    expected = explicit(**x, modify=lambda s: 2.0 * torch.tanh(s / 2.0), keep=keep)
    assert max_error(run(x, form, score_mod=tanh_softcap(2.0)), expected) < 1e-12


@pytest.mark.parametrize("form", FORMS)
def test_compose_scores_applies_in_order(form):
    """ALiBi first, then the cap: the cap bounds the biased score."""
    B, T, H = 1, 23, 4
    x = softmax_inputs(B=B, T=T, H=H, K=8)
    slopes = alibi_slopes(H)
    bias = loop_bias(lambda b, h, q, kv: -slopes[h] * (q - kv), B, H, T, T)
    expected = explicit(**x, modify=lambda s: 3.0 * torch.tanh((s + bias) / 3.0), keep=loop_mask(CAUSAL, B, H, T, T))
    mod = compose_scores(alibi(H, dtype=torch.float64), tanh_softcap(3.0))
    assert max_error(run(x, form, score_mod=mod), expected) < 1e-12


# ---------------------------------------------------------------- T5

def t5_bucket_by_hand(relative_position: int, num_buckets: int, bidirectional: bool, max_distance: int) -> int:
    """T5's `_relative_position_bucket` restated for one Python int."""
    bucket, n = 0, -relative_position
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


T5_CONFIGS = [(32, True, 128), (32, False, 128), (8, True, 20), (16, False, 50), (6, True, 7)]


@pytest.mark.parametrize("num_buckets, bidirectional, max_distance", T5_CONFIGS)
def test_t5_bucket_follows_t5(num_buckets, bidirectional, max_distance):
    rel = torch.arange(-400, 401)
    got = t5_bucket(rel, num_buckets=num_buckets, bidirectional=bidirectional, max_distance=max_distance)
    expected = [t5_bucket_by_hand(r, num_buckets, bidirectional, max_distance) for r in rel.tolist()]
    assert got.tolist() == expected


@pytest.mark.parametrize("num_buckets, bidirectional, max_distance", T5_CONFIGS)
def test_t5_mod_uses_the_bucket_of_every_distance(num_buckets, bidirectional, max_distance):
    """The comparison-only bucketing inside the mod equals the formula at every distance."""
    table = torch.arange(num_buckets, dtype=torch.float64)[None].repeat(2, 1)  # bias = bucket
    mod = t5_relative_bias(table, bidirectional=bidirectional, max_distance=max_distance)
    q_idx = torch.full((1, 1, 1, 1), 400)
    kv_idx = torch.arange(0, 801).view(1, 1, 1, -1)
    got = mod(torch.zeros(()), torch.zeros(1, 1, 1, 1, dtype=torch.long), torch.arange(2).view(1, 2, 1, 1), q_idx, kv_idx)
    expected = [t5_bucket_by_hand(j - 400, num_buckets, bidirectional, max_distance) for j in range(801)]
    assert got[0, 0, 0].tolist() == expected and got[0, 1, 0].tolist() == expected


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("bidirectional", [True, False], ids=["encoder", "decoder"])
def test_t5_equals_sdpa_with_the_bias(bidirectional, form):
    B, T, H, nb, md = 2, 40, 3, 8, 20
    x = softmax_inputs(B=B, T=T, H=H, K=8)
    table = torch.randn(H, nb, dtype=torch.float64)
    bias = loop_bias(lambda b, h, q, kv: table[h, t5_bucket_by_hand(kv - q, nb, bidirectional, md)], B, H, T, T)
    keep = None if bidirectional else loop_mask(CAUSAL, B, H, T, T)
    mod = t5_relative_bias(table, bidirectional=bidirectional, max_distance=md)
    out = run(x, form, causal=not bidirectional, score_mod=mod, scale=1.0)
    assert max_error(out, sdpa(**x, keep=keep, bias=bias, scale=1.0)) < 1e-12


def test_t5_table_gradient():
    x = softmax_inputs(B=1, T=9, H=2, K=4)
    table = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)

    def f(table):
        mod = t5_relative_bias(table, bidirectional=True, max_distance=7)
        return softmax_attention(**x, causal=False, score_mod=mod, impl="reference", form="chunk", chunk_size=4).output

    assert torch.autograd.gradcheck(f, (table,))


# ---------------------------------------------------------------- forgetting attention

def forget_bias(log_f, b, h, q, kv):
    """Σ_{kv < l <= q} log f_l, summed term by term."""
    return sum(float(log_f[b, l, h]) for l in range(kv + 1, q + 1))


@pytest.mark.parametrize("form", FORMS)
def test_forgetting_equals_sdpa_with_the_decay(form):
    B, T, H = 2, 26, 3
    x = softmax_inputs(B=B, T=T, H=H, K=8)
    logits = torch.randn(B, T, H, dtype=torch.float64) + 1.0
    log_f = F.logsigmoid(logits)
    bias = loop_bias(lambda b, h, q, kv: forget_bias(log_f, b, h, q, kv) if kv <= q else 0.0, B, H, T, T)
    out = run(x, form, score_mod=forgetting(cumulative_log_forget(logits)))
    assert max_error(out, sdpa(**x, keep=loop_mask(CAUSAL, B, H, T, T), bias=bias)) < 1e-12


def test_forgetting_with_cu_seqlens_restarts_each_sequence():
    lengths = [7, 12, 4]
    cu = torch.tensor([0, 7, 19, 23])
    x = softmax_inputs(B=1, T=23, H=2, K=8)
    logits = torch.randn(1, 23, 2, dtype=torch.float64)
    cum = cumulative_log_forget(logits, cu)
    assert cum.shape == (3, 2, max(lengths))
    packed = softmax_attention(**x, score_mod=forgetting(cum), cu_seqlens=cu, impl="reference").output
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        mod = forgetting(cumulative_log_forget(logits[:, start:end]))
        alone = softmax_attention(**{k: t[:, start:end] for k, t in x.items()}, score_mod=mod, impl="reference").output
        assert max_error(packed[:, start:end], alone) < 1e-12


@pytest.mark.parametrize("form", ["parallel", "recurrent"])
def test_forget_gate_gradient(form):
    x = softmax_inputs(B=1, T=7, H=2, K=4)
    logits = torch.randn(1, 7, 2, dtype=torch.float64, requires_grad=True)

    def f(logits):
        mod = forgetting(cumulative_log_forget(logits))
        return softmax_attention(**x, score_mod=mod, impl="reference", form=form).output

    assert torch.autograd.gradcheck(f, (logits,))


# ---------------------------------------------------------------- BoxRPB

def mlp(w1, b1, w2):
    """Plain DETR's per-axis MLP: Linear(2, hidden) -> ReLU -> Linear(hidden, H, no bias)."""
    return lambda d: torch.relu(d @ w1.T + b1) @ w2.T


def box_params(B, Q, H, hidden=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    xy1 = torch.rand(B, Q, 2, generator=g, dtype=torch.float64) * 40
    boxes = torch.cat([xy1, xy1 + 5 + torch.rand(B, Q, 2, generator=g, dtype=torch.float64) * 30], dim=-1)
    weights = [r(hidden, 2) * 0.1, r(hidden), r(H, hidden) * 0.5, r(hidden, 2) * 0.1, r(hidden), r(H, hidden) * 0.5]
    return boxes, weights


def naive_box_bias(boxes, weights, height, width, stride, H, transform="linear"):
    """`[B, H, Q, height·width]`: for every (box, pixel) pair, both MLPs on that pair's
    corner offsets (the paper's decomposed bias, evaluated pair by pair)."""
    mx, my = mlp(*weights[:3]), mlp(*weights[3:])
    squash = (lambda d: d) if transform == "linear" else (lambda d: math.copysign(math.log2(abs(d) + 1), d) / 3)
    B, Q = boxes.shape[:2]
    bias = torch.zeros(B, H, Q, height * width, dtype=torch.float64)
    for b in range(B):
        for k in range(Q):
            x1, y1, x2, y2 = boxes[b, k].tolist()
            for v in range(height):
                for u in range(width):
                    px, py = (u + 0.5) * stride, (v + 0.5) * stride
                    dx = torch.tensor([squash(x1 - px), squash(x2 - px)], dtype=torch.float64)
                    dy = torch.tensor([squash(y1 - py), squash(y2 - py)], dtype=torch.float64)
                    bias[b, :, k, v * width + u] = mx(dx) + my(dy)
    return bias


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("transform", ["linear", "log"])
def test_box_rpb_equals_sdpa_with_the_naive_bias(transform, form):
    B, Q, H, height, width, stride = 2, 5, 3, 3, 4, 16.0
    boxes, weights = box_params(B, Q, H)
    x = softmax_inputs(B=B, T=Q, S=height * width, H=H, K=8)
    bias_x, bias_y = box_rpb_tables(boxes, mlp(*weights[:3]), mlp(*weights[3:]), height=height, width=width,
                                    stride=stride, transform=transform)
    assert bias_x.shape == (B, Q, width, H) and bias_y.shape == (B, Q, height, H)
    out = run(x, form, causal=False, score_mod=box_rpb(bias_x, bias_y))
    expected = sdpa(**x, bias=naive_box_bias(boxes, weights, height, width, stride, H, transform))
    assert max_error(out, expected) < 1e-12


def test_box_rpb_gradient_into_boxes_and_mlps():
    B, Q, H, height, width = 1, 3, 2, 2, 3
    boxes, weights = box_params(B, Q, H, hidden=3, seed=1)
    x = softmax_inputs(B=B, T=Q, S=height * width, H=H, K=4)
    inputs = [t.clone().requires_grad_() for t in (boxes, *weights)]

    def f(boxes, *weights):
        tables = box_rpb_tables(boxes, mlp(*weights[:3]), mlp(*weights[3:]), height=height, width=width, stride=8.0)
        return softmax_attention(**x, causal=False, score_mod=box_rpb(*tables), impl="reference").output

    assert torch.autograd.gradcheck(f, tuple(inputs))


def test_box_rpb_shape_errors():
    with pytest.raises(ValueError, match=r"^bias_y: expected \[B, Q, height, H\]"):
        box_rpb(torch.zeros(1, 3, 4, 2), torch.zeros(1, 2, 5, 2))
    with pytest.raises(ValueError, match=r"^boxes: expected \[B, Q, 4\]"):
        box_rpb_tables(torch.zeros(1, 3, 2), None, None, height=2, width=2)


@pytest.mark.parametrize("build, error, message", [
    (lambda: tanh_softcap(0.0), ValueError, r"^cap: expected a finite positive"),
    (lambda: alibi(0), ValueError, r"^num_heads"),
    (lambda: t5_relative_bias(torch.zeros(2, 7)), ValueError, r"^table: expected an even"),
    (lambda: t5_relative_bias(torch.zeros(2, 8, dtype=torch.long)), TypeError, r"^table: expected a floating"),
    (lambda: forgetting(torch.zeros(2, 3)), ValueError, r"^cum_log_forget: expected 3"),
    (lambda: compose_scores(), ValueError, r"^compose_scores"),
], ids=["cap-zero", "alibi-heads", "t5-odd", "t5-int", "forget-rank", "compose-empty"])
def test_bad_arguments_raise_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_positions_helper_is_bottom_right():
    assert positions(3, 5) == [2, 3, 4]
