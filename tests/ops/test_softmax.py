"""softmax_attention: forms agree, states hand off, varlen equals a loop, gradients, agreement
with PyTorch's SDPA, clear errors, and finite results on extreme valid inputs."""
from itertools import accumulate

import pytest
import torch
import torch.nn.functional as F

from attnforms.core.states import KVCache
from attnforms.core.varlen import concat_states, select_state
from attnforms.ops.softmax import sliding_window_attention, softmax_attention
from attnforms.testing import max_error, noise_relative_check, softmax_inputs

FORMS = ("parallel", "chunk", "recurrent")
EXACT = 1e-12  # float64 forms differ only by summation order


# Mods written with broadcasting tensor ops, as the API requires.
def alibi(score, b, h, q_idx, kv_idx):
    """ALiBi-like: a per-head slope times the distance, in either direction."""
    slope = torch.exp2(-(h + 1.0))
    return score - slope * (q_idx - kv_idx).abs()


def document(b, h, q_idx, kv_idx):
    """Documents of 29 tokens that only see themselves."""
    return q_idx // 29 == kv_idx // 29


def prefix_lm(b, h, q_idx, kv_idx):
    """A 20-token prefix seen by everyone, causal after it (with causal=False)."""
    return (kv_idx < 20) | (kv_idx <= q_idx)


def sinks_for(H: int) -> torch.Tensor:
    return torch.linspace(-1.0, 2.0, H, dtype=torch.float64)


def prefix_cache(lengths, *, G: int, K: int, V: int = 16, window=None, dtype=torch.float64) -> KVCache:
    """A cache with one row per entry of `lengths`, rows of different fill (ragged), made
    by a packed run over prefixes of those lengths."""
    x = softmax_inputs(B=1, T=sum(lengths), H=G, G=G, K=K, V=V, dtype=dtype, seed=1)
    cu_seqlens = torch.tensor([0, *accumulate(lengths)])
    return softmax_attention(**x, window=window, cu_seqlens=cu_seqlens, output_final_state=True).final_state


def trim(cache: KVCache) -> KVCache:
    """Drop the trailing empty slots of a one-row cache."""
    filled = int((cache.positions != -1).sum())
    return KVCache(cache.k[:, :filled], cache.v[:, :filled], cache.positions[:, :filled], cache.next_position)


def assert_states_equal(a: KVCache, b: KVCache, atol: float = 0.0) -> None:
    assert torch.equal(a.positions, b.positions)
    assert torch.equal(a.next_position, b.next_position)
    assert max_error(a.k, b.k) <= atol and max_error(a.v, b.v) <= atol


def case(*, S=None, H=2, G=None, K=16, cache=None, with_sinks=False, **options):
    """A form-agreement case: S as a function of T, the row lengths of a ragged initial
    cache, sinks on or off, and the op's keyword options."""

    def make(T: int):
        x = softmax_inputs(B=2, T=T, S=None if S is None else S(T), H=H, G=G, K=K)
        extra = dict(options)
        if cache is not None:
            extra["initial_state"] = prefix_cache(cache, G=G or H, K=K, window=options.get("window"))
        if with_sinks:
            extra["sinks"] = sinks_for(H)
        return x, extra

    return make


longer = lambda T: T + 37
shorter = lambda T: max(1, T // 3)

AGREEMENT_CASES = [
    pytest.param(case(), id="causal"),
    pytest.param(case(causal=False), id="bidirectional"),
    pytest.param(case(H=4, G=2, K=60), id="gqa"),
    pytest.param(case(H=4, G=1), id="mqa"),
    pytest.param(case(window=17, K=60), id="window"),
    pytest.param(case(S=longer), id="cross-longer-causal"),
    pytest.param(case(S=longer, causal=False), id="cross-longer-bidirectional"),
    pytest.param(case(S=shorter), id="cross-shorter-causal"),
    pytest.param(case(S=shorter, causal=False), id="cross-shorter-bidirectional"),
    pytest.param(case(with_sinks=True), id="sinks"),
    pytest.param(case(score_mod=alibi, K=60), id="score-mod-alibi"),
    pytest.param(case(mask_mod=document), id="mask-mod-document"),
    pytest.param(case(causal=False, mask_mod=prefix_lm), id="mask-mod-prefix-lm"),
    pytest.param(case(cache=(5, 30)), id="cache"),
    pytest.param(case(S=longer, causal=False, cache=(5, 30)), id="cache-cross-bidirectional"),
    pytest.param(case(H=4, G=2, cache=(3, 40), window=17, with_sinks=True), id="cache-window-sinks-gqa"),
    pytest.param(
        case(S=lambda T: T + 5, H=4, G=1, K=60, cache=(9, 2), window=23, with_sinks=True,
             score_mod=alibi, mask_mod=document),
        id="everything",
    ),
]


@pytest.mark.parametrize("T", [1, 63, 65, 200])
@pytest.mark.parametrize("make", AGREEMENT_CASES)
def test_forms_agree(make, T):
    x, options = make(T)
    golden = softmax_attention(**x, **options, output_final_state=True, form="parallel")
    runs = {f"chunk-{size}": dict(form="chunk", chunk_size=size) for size in (16, 64, 100)}
    runs["recurrent"] = dict(form="recurrent")
    for name, run in runs.items():
        result = softmax_attention(**x, **options, output_final_state=True, **run)
        assert max_error(result.output, golden.output) < EXACT, name
        assert_states_equal(result.final_state, golden.final_state)


@pytest.mark.parametrize("window", [None, 9], ids=["full", "window-9"])
@pytest.mark.parametrize(
    "first_form, rest_form",
    [("parallel", "parallel"), ("chunk", "recurrent"), ("recurrent", "chunk")],
    ids=["parallel-parallel", "chunk-recurrent", "recurrent-chunk"],
)
def test_split_sequence_continues_from_state(first_form, rest_form, window):
    x = softmax_inputs(B=2, T=65, H=4, G=2, K=60)
    options = dict(window=window, sinks=sinks_for(4), score_mod=alibi, mask_mod=document,
                   output_final_state=True, chunk_size=16)
    whole = softmax_attention(**x, **options, form="parallel")
    cut = 40
    first = softmax_attention(**{n: t[:, :cut] for n, t in x.items()}, **options, form=first_form)
    if window is not None:
        assert first.final_state.positions.shape[1] == window - 1
    rest = softmax_attention(
        **{n: t[:, cut:] for n, t in x.items()}, **options, initial_state=first.final_state,
        form=rest_form,
    )
    assert max_error(torch.cat([first.output, rest.output], dim=1), whole.output) < EXACT
    assert_states_equal(rest.final_state, whole.final_state)


@pytest.mark.parametrize("window", [None, 8], ids=["full", "window-8"])
def test_token_by_token_decoding_equals_full_run(window):
    x = softmax_inputs(B=2, T=40, H=4, G=1, K=16)
    options = dict(window=window, sinks=sinks_for(4), output_final_state=True)
    whole = softmax_attention(**x, **options)
    state, outputs = None, []
    for t in range(40):
        step = softmax_attention(**{n: v[:, t : t + 1] for n, v in x.items()}, **options, initial_state=state)
        state = step.final_state
        outputs.append(step.output)
        # The rolling cache never holds more than the window minus the next query's own key.
        assert state.positions.shape[1] == (min(t + 1, window - 1) if window else t + 1)
    assert max_error(torch.cat(outputs, dim=1), whole.output) < EXACT
    assert_states_equal(state, whole.final_state)


def batch_cosine(score, b, h, q_idx, kv_idx):
    """A score_mod that depends on every index, b included."""
    return score + 0.5 * torch.cos(b + 0.3 * h + 0.1 * (q_idx - kv_idx))


@pytest.mark.parametrize("window", [None, 7], ids=["full", "window-7"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no-state", "state"])
@pytest.mark.parametrize("form", FORMS)
def test_varlen_equals_loop_over_sequences(form, with_state, window):
    lengths = [1, 63, 20, 65]
    x = softmax_inputs(B=1, T=sum(lengths), H=4, G=2, K=16)
    cu_seqlens = torch.tensor([0, *accumulate(lengths)])
    state = prefix_cache((4, 1, 12, 30), G=2, K=16, window=window) if with_state else None
    options = dict(window=window, sinks=sinks_for(4), output_final_state=True, form=form, chunk_size=16)
    packed = softmax_attention(**x, **options, score_mod=batch_cosine, cu_seqlens=cu_seqlens, initial_state=state)
    outputs, finals = [], []
    for n, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        # Run alone, sequence n is batch row 0: shift b so the mod sees the same index.
        shifted = lambda s, b, h, q, kv, n=n: batch_cosine(s, b + n, h, q, kv)
        one = softmax_attention(
            **{name: t[:, start:end] for name, t in x.items()}, **options, score_mod=shifted,
            initial_state=None if state is None else trim(select_state(state, n)),
        )
        outputs.append(one.output)
        finals.append(one.final_state)
    assert max_error(packed.output, torch.cat(outputs, dim=1)) < EXACT
    assert_states_equal(packed.final_state, concat_states(finals))


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(dict(window=4), id="causal-window"),
        pytest.param(dict(causal=False, score_mod=alibi), id="bidirectional-alibi"),
    ],
)
@pytest.mark.parametrize("form", FORMS)
def test_gradients(form, options):
    x = softmax_inputs(B=1, T=5, H=2, G=1, K=4, V=3, requires_grad=True)
    sinks = sinks_for(2).requires_grad_()
    cache_k = torch.randn(1, 4, 1, 4, dtype=torch.float64, requires_grad=True)
    cache_v = torch.randn(1, 4, 1, 3, dtype=torch.float64, requires_grad=True)
    # The last slot is empty: its gradient must come out 0.
    positions, next_position = torch.tensor([[0, 1, 2, -1]]), torch.tensor([3])

    def run(q, k, v, sinks, cache_k, cache_v):
        cache = KVCache(cache_k, cache_v, positions, next_position)
        out = softmax_attention(q, k, v, sinks=sinks, initial_state=cache, output_final_state=True,
                                form=form, chunk_size=2, **options)
        return out.output, out.final_state.k, out.final_state.v

    assert torch.autograd.gradcheck(run, (x["q"], x["k"], x["v"], sinks, cache_k, cache_v))


def sdpa(q, k, v, mask):
    """PyTorch's SDPA on our layout, k / v repeated to every query head, mask `[T, S]`."""
    repeat = q.shape[2] // k.shape[2]
    heads = lambda t: t.transpose(1, 2)
    k, v = (heads(t).repeat_interleave(repeat, dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(heads(q), k, v, attn_mask=mask).transpose(1, 2)


def visibility(T, S, *, causal=True, window=None):
    """Bool `[T, S]`: bottom-right aligned causal / window mask, built independently."""
    q_pos = torch.arange(T)[:, None] + S - T
    kv_pos = torch.arange(S)[None, :]
    keep = (kv_pos <= q_pos) if causal else torch.ones(T, S, dtype=torch.bool)
    if window is not None:
        keep &= kv_pos > q_pos - window
    return keep


@pytest.mark.parametrize(
    "shape, options",
    [
        pytest.param(dict(T=63, H=2), dict(), id="causal"),
        pytest.param(dict(T=65, H=4, G=2, K=60), dict(), id="gqa"),
        pytest.param(dict(T=200, H=2), dict(window=31), id="window"),
        pytest.param(dict(T=63, S=100, H=2), dict(causal=False), id="cross-bidirectional"),
    ],
)
@pytest.mark.parametrize("form", FORMS)
def test_equals_torch_sdpa(form, shape, options):
    x = softmax_inputs(B=2, **shape)
    T, S = x["q"].shape[1], x["k"].shape[1]
    expected = sdpa(x["q"], x["k"], x["v"], visibility(T, S, **options))
    assert max_error(softmax_attention(**x, **options, form=form).output, expected) < EXACT


def test_low_precision_error_within_sdpa_noise():
    x = softmax_inputs(B=2, T=65, H=4, G=2, K=60)
    golden = softmax_attention(**x).output
    low = {n: t.to(torch.bfloat16) for n, t in x.items()}
    result = softmax_attention(**low, output_final_state=True)
    assert result.output.dtype == torch.bfloat16 and result.final_state.k.dtype == torch.bfloat16
    eager = sdpa(low["q"], low["k"], low["v"], visibility(65, 65))
    check = noise_relative_check(result.output, golden, eager, atol=1e-3)
    assert check.passed, check


def empty_cache(B=2, L=3, G=2, K=16, V=16, dtype=torch.float32) -> KVCache:
    return KVCache(torch.zeros(B, L, G, K, dtype=dtype), torch.zeros(B, L, G, V, dtype=dtype),
                   torch.full((B, L), -1), torch.zeros(B, dtype=torch.int64))


def packed(x):
    """The first batch row alone, as a packed batch needs B == 1."""
    return {n: t[:1] for n, t in x.items()}


BAD_INPUTS = [
    pytest.param(lambda x: dict(x, q=x["q"].tolist()), TypeError, r"^q: expected a torch.Tensor", id="q-not-tensor"),
    pytest.param(lambda x: dict(x, q=x["q"].long()), TypeError, r"^q: expected a floating dtype", id="q-int-dtype"),
    pytest.param(lambda x: dict(x, k=x["k"].double()), TypeError, r"^k: expected dtype torch.float32", id="k-dtype"),
    pytest.param(lambda x: dict(x, v=x["v"].half()), TypeError, r"^v: expected dtype torch.float32", id="v-dtype"),
    pytest.param(lambda x: dict(x, q=x["q"][0]), ValueError, r"^q: expected 4 dimensions", id="q-rank"),
    pytest.param(lambda x: dict(x, k=x["k"][..., :-1]), ValueError, r"^k: .*K=16", id="k-key-dim"),
    pytest.param(lambda x: dict(x, v=x["v"][:1]), ValueError, r"^v: .*B=2", id="v-batch"),
    pytest.param(lambda x: dict(x, v=x["v"][:, :-1]), ValueError, r"^v: .*S=8", id="v-length"),
    pytest.param(lambda x: dict(x, k=x["k"][:, :, :1].expand(-1, -1, 3, -1),
                                v=x["v"][:, :, :1].expand(-1, -1, 3, -1)),
                 ValueError, r"^k: .*dividing .*H = 4, got G = 3", id="heads-not-divisible"),
    pytest.param(lambda x: dict(x, k=x["k"].to("meta")), ValueError, r"^k: .*got one on meta", id="k-device"),
    pytest.param(lambda x: dict(x, q=x["q"][:, :0]), ValueError, r"^q: expected at least one token", id="no-tokens"),
    pytest.param(lambda x: dict(x, causal=1), TypeError, r"^causal: expected a bool", id="causal-not-bool"),
    pytest.param(lambda x: dict(x, window=0), ValueError, r"^window: expected a positive int", id="window-zero"),
    pytest.param(lambda x: dict(x, window=2.5), TypeError, r"^window: expected a positive int", id="window-float"),
    pytest.param(lambda x: dict(x, window=4, causal=False), ValueError, r"^window: expected causal=True.*mask_mod",
                 id="window-bidirectional"),
    pytest.param(lambda x: dict(x, sinks=torch.zeros(3)), ValueError, r"^sinks: .*H=4", id="sinks-shape"),
    pytest.param(lambda x: dict(x, sinks=torch.zeros(4, dtype=torch.long)), TypeError, r"^sinks: expected a floating",
                 id="sinks-int"),
    pytest.param(lambda x: dict(x, score_mod=3), TypeError, r"^score_mod: expected a callable", id="score-mod"),
    pytest.param(lambda x: dict(x, mask_mod="doc"), TypeError, r"^mask_mod: expected a callable", id="mask-mod"),
    pytest.param(lambda x: dict(x, scale=float("nan")), ValueError, r"^scale: expected a finite", id="scale-nan"),
    pytest.param(lambda x: dict(x, chunk_size=0), ValueError, r"^chunk_size: expected a positive int", id="chunk-zero"),
    pytest.param(lambda x: dict(x, chunk_size=2.0), TypeError, r"^chunk_size: expected a positive int",
                 id="chunk-float"),
    pytest.param(lambda x: dict(x, form="dense"), ValueError, r"^form: expected one of", id="form"),
    pytest.param(lambda x: dict(x, cu_seqlens=torch.tensor([0, 8])), ValueError, r"^cu_seqlens: .*B == 1",
                 id="cu-seqlens-batch"),
    pytest.param(lambda x: dict(packed(x), cu_seqlens=torch.tensor([0, 3, 5])), ValueError,
                 r"^cu_seqlens: expected to end at the total length", id="cu-seqlens-end"),
    pytest.param(lambda x: dict(packed(x), cu_seqlens=torch.tensor([0, 5, 3, 8])), ValueError,
                 r"^cu_seqlens: expected strictly increasing", id="cu-seqlens-order"),
    pytest.param(lambda x: dict(packed(x), k=x["k"][:1, :6], v=x["v"][:1, :6], cu_seqlens=torch.tensor([0, 3, 8])),
                 ValueError, r"^cu_seqlens: packs self-attention only", id="cu-seqlens-cross"),
    pytest.param(lambda x: dict(x, initial_state=tuple(empty_cache())), TypeError, r"^initial_state: expected a KVCache",
                 id="state-type"),
    pytest.param(lambda x: dict(x, initial_state=empty_cache(G=1)), ValueError, r"^initial_state.k: .*G=2",
                 id="state-heads"),
    pytest.param(lambda x: dict(x, initial_state=empty_cache(B=3)), ValueError, r"^initial_state.k: .*B=2",
                 id="state-batch"),
    pytest.param(lambda x: dict(packed(x), cu_seqlens=torch.tensor([0, 3, 8]), initial_state=empty_cache(B=1)),
                 ValueError, r"^initial_state.k: .*N=2", id="state-sequences"),
    pytest.param(lambda x: dict(x, initial_state=empty_cache(dtype=torch.float64)), TypeError,
                 r"^initial_state.k: expected dtype torch.float32", id="state-dtype"),
    pytest.param(lambda x: dict(x, initial_state=empty_cache()._replace(positions=torch.zeros(2, 3))), TypeError,
                 r"^initial_state.positions: expected dtype torch.int64", id="state-positions-dtype"),
    pytest.param(lambda x: dict(x, initial_state=empty_cache()._replace(next_position=torch.zeros(2, 1,
                 dtype=torch.int64))), ValueError, r"^initial_state.next_position: expected 1 dimensions",
                 id="state-next-position-rank"),
]


@pytest.mark.parametrize("make, error, match", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(make, error, match):
    x = softmax_inputs(B=2, T=8, H=4, G=2, K=16, dtype=torch.float32)
    with pytest.raises(error, match=match):
        softmax_attention(**make(x))


def test_sliding_window_attention_requires_window_and_matches_softmax_attention():
    x = softmax_inputs(B=2, T=65, H=4, G=2)
    assert max_error(sliding_window_attention(**x, window=9).output, softmax_attention(**x, window=9).output) == 0
    with pytest.raises(TypeError, match=r"^window: expected a positive int"):
        sliding_window_attention(**x, window=None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("form", FORMS)
def test_scores_near_1e4_stay_finite(form, dtype):
    x = softmax_inputs(B=2, T=65, H=4, G=2, K=60, dtype=dtype)
    # Scores ~ scale · |q||k| ~ 1e2 · 60 ~ 1e4, and sinks of the same size.
    out = softmax_attention(**x, scale=1e2, sinks=torch.full((4,), 5e3), form=form, chunk_size=16).output
    assert torch.isfinite(out).all()
    # Every output is a convex combination (sink weight included) of the values it read.
    assert out.float().abs().max() <= x["v"].float().abs().max() + 1e-6


def test_long_sequence_with_window_in_chunk_form():
    window, tail = 128, 64
    x = softmax_inputs(B=1, T=4096, H=2, K=16, dtype=torch.float32)
    result = softmax_attention(**x, window=window, form="chunk", output_final_state=True)
    assert torch.isfinite(result.output).all()
    assert result.final_state.positions.shape[1] == window - 1
    # The last queries see only the last keys: a run on that suffix alone gives them too.
    suffix = {n: t[:, -(tail + window - 1):] for n, t in x.items()}
    alone = softmax_attention(**suffix, window=window, form="parallel").output
    assert max_error(result.output[:, -tail:], alone[:, -tail:]) < 1e-5


@pytest.mark.parametrize("with_sinks", [False, True], ids=["no-sinks", "sinks"])
@pytest.mark.parametrize("form", FORMS)
def test_query_with_no_visible_key_outputs_zero(form, with_sinks):
    # Causal with S < T: the first T - S queries sit before every key.
    x = softmax_inputs(B=2, T=6, S=3, H=2, requires_grad=True)
    sinks = sinks_for(2) if with_sinks else None
    out = softmax_attention(**x, sinks=sinks, form=form, chunk_size=2).output
    assert torch.equal(out[:, :3], torch.zeros_like(out[:, :3]))
    assert out[:, 3:].abs().min() > 0
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in x.values())
    assert torch.equal(x["q"].grad[:, :3], torch.zeros_like(x["q"].grad[:, :3]))


def test_garbage_in_empty_cache_slots_is_ignored():
    x = softmax_inputs(B=2, T=9, H=2)
    clean = prefix_cache((3, 7), G=2, K=16)
    dirty = clean._replace(k=clean.k.masked_fill((clean.positions == -1)[..., None, None], float("nan")),
                           v=clean.v.masked_fill((clean.positions == -1)[..., None, None], float("inf")))
    assert (clean.positions == -1).any()
    for form in FORMS:
        expected = softmax_attention(**x, initial_state=clean, form=form, output_final_state=True)
        result = softmax_attention(**x, initial_state=dirty, form=form, output_final_state=True)
        assert torch.equal(result.output, expected.output)
        assert_states_equal(result.final_state, expected.final_state)
