"""aaren: the three forms, equality with causal softmax attention, the combine operator,
state hand-off, varlen, gradients, bad input and extreme input."""
import pytest
import torch
import torch.nn.functional as F

from attnforms.core.dispatch import ImplUnavailableError
from attnforms.core.states import AarenState
from attnforms.ops.aaren import aaren
from attnforms.ops.aaren.reference import combine
from attnforms.testing import aaren_inputs, max_error, noise_relative_check

FORMS = ["parallel", "chunk", "recurrent"]
SIZES = [
    pytest.param(T, K, id=f"T{T}-K{K}") for T, K in [(1, 16), (63, 60), (65, 16), (200, 60)]
]
WITH_STATE = pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "initial_state"])
TIGHT = 1e-11


def run(inputs, **kwargs):
    return aaren(**inputs, output_final_state=True, **kwargs)


def random_state(B, H, V, seed=1):
    """A valid triple per row (u >= 1: the max token has weight 1), with row (0, 0) the
    empty identity (-inf, 0, 0), so every test with a state also covers a mixed batch."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)
    m, u, w = 2 * draw(B, H), 1 + draw(B, H).abs(), draw(B, H, V)
    m[0, 0], u[0, 0], w[0, 0] = float("-inf"), 0.0, 0.0
    return AarenState(m, u, w)


def assert_states_close(actual, expected):
    # assert_close, unlike a difference, accepts the -inf max of an empty row.
    for field in AarenState._fields:
        torch.testing.assert_close(
            getattr(actual, field), getattr(expected, field), rtol=0, atol=TIGHT
        )


def repeated_query_sdpa(q, k, v, scale=None):
    """Causal softmax attention with q `[B, H, K]` repeated at every one of the T steps."""
    B, T, H, K = k.shape
    queries = q.unsqueeze(2).expand(B, H, T, K)
    out = F.scaled_dot_product_attention(
        queries, k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale,
    )
    return out.transpose(1, 2)


@pytest.mark.parametrize("T,K", SIZES)
@WITH_STATE
def test_forms_agree_in_float64(T, K, with_state):
    inputs = aaren_inputs(2, T, 2, K, 12)
    state = random_state(2, 2, 12) if with_state else None
    golden = run(inputs, form="recurrent", initial_state=state)
    for form, chunk_size in [("parallel", None)] + [("chunk", c) for c in (1, 16, 64, 100)]:
        result = run(inputs, form=form, chunk_size=chunk_size, initial_state=state)
        assert max_error(result.output, golden.output) < TIGHT, (form, chunk_size)
        assert_states_close(result.final_state, golden.final_state)


@pytest.mark.parametrize("form", FORMS)
def test_an_identity_state_is_no_state(form):
    inputs = aaren_inputs(2, 40, 2, 16, 8)
    identity = AarenState(
        torch.full((2, 2), float("-inf"), dtype=torch.float64),
        torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 2, 8, dtype=torch.float64),
    )
    with_identity = run(inputs, form=form, chunk_size=16, initial_state=identity)
    without = run(inputs, form=form, chunk_size=16)
    assert torch.equal(with_identity.output, without.output)
    assert torch.isfinite(without.output).all() and torch.isfinite(without.final_state.m).all()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scale", [None, 0.3], ids=["default_scale", "scale0.3"])
@pytest.mark.parametrize("T,K", SIZES)
def test_equals_causal_sdpa_with_repeated_query(form, scale, T, K):
    inputs = aaren_inputs(2, T, 3, K, 8)
    expected = repeated_query_sdpa(inputs["q"], inputs["k"], inputs["v"], scale=scale)
    result = aaren(**inputs, scale=scale, form=form, chunk_size=16)
    assert max_error(result.output, expected) < TIGHT


@pytest.mark.parametrize("form", FORMS)
def test_equals_softmax_attention_with_repeated_query(form):
    from attnforms.ops.softmax import softmax_attention

    inputs = aaren_inputs(2, 65, 3, 60, 8)
    q_repeated = inputs["q"].unsqueeze(1).expand(-1, 65, -1, -1)
    expected = softmax_attention(q_repeated, inputs["k"], inputs["v"], causal=True).output
    result = aaren(**inputs, form=form, chunk_size=16)
    assert max_error(result.output, expected) < TIGHT


def random_triples(count, shape=(6, 5), V=3, seed=2):
    """`count` random triples (m, u, w) of `shape` / `shape + [V]`, about a third of the
    entries the identity (-inf, 0, 0)."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *s: torch.randn(*s, generator=generator, dtype=torch.float64)
    triples = []
    for _ in range(count):
        m, u, w = 3 * draw(*shape), 1 + draw(*shape).abs(), draw(*shape, V)
        empty = torch.rand(shape, generator=generator) < 0.35
        triples.append(
            (m.masked_fill(empty, float("-inf")), u.masked_fill(empty, 0.0), w * ~empty[..., None])
        )
    return triples


def assert_triples_close(actual, expected):
    assert torch.equal(actual[0], expected[0])
    assert max_error(actual[1], expected[1]) < 1e-13
    assert max_error(actual[2], expected[2]) < 1e-13
    assert all(not torch.isnan(x).any() for x in actual)


def test_combine_is_associative_with_identity_and_nan_free():
    a, b, c = random_triples(3)
    assert_triples_close(combine(combine(a, b), c), combine(a, combine(b, c)))
    assert_triples_close(combine(a, b), combine(b, a))
    identity = (torch.full((6, 5), float("-inf"), dtype=torch.float64),
                torch.zeros(6, 5, dtype=torch.float64), torch.zeros(6, 5, 3, dtype=torch.float64))
    for x in (a, identity):
        for result in (combine(identity, x), combine(x, identity)):
            assert all(torch.equal(r, e) for r, e in zip(result, x))


def test_combine_of_leaves_is_the_softmax_triple():
    generator = torch.Generator().manual_seed(3)
    s = 50 * torch.randn(7, generator=generator, dtype=torch.float64)
    v = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    scalar = lambda x: torch.tensor(x, dtype=torch.float64)
    triple = (scalar(float("-inf")), scalar(0.0), torch.zeros(4, dtype=torch.float64))
    for t in range(7):
        triple = combine(triple, (s[t], scalar(1.0), v[t]))
    weights = torch.exp(s - s.max())
    assert_triples_close(triple, (s.max(), weights.sum(), weights @ v))


@pytest.mark.parametrize("first_form", FORMS)
@pytest.mark.parametrize("second_form", FORMS)
def test_state_hand_off_equals_one_run(first_form, second_form):
    inputs = aaren_inputs(2, 65, 2, 16, 8)
    state = random_state(2, 2, 8)
    whole = run(inputs, form="chunk", chunk_size=16, initial_state=state)
    cut = 37
    head = dict(inputs, k=inputs["k"][:, :cut], v=inputs["v"][:, :cut])
    tail = dict(inputs, k=inputs["k"][:, cut:], v=inputs["v"][:, cut:])
    first = run(head, form=first_form, chunk_size=16, initial_state=state)
    rest = run(tail, form=second_form, chunk_size=16, initial_state=first.final_state)
    assert max_error(torch.cat([first.output, rest.output], dim=1), whole.output) < TIGHT
    assert_states_close(rest.final_state, whole.final_state)


@pytest.mark.parametrize("form", FORMS)
@WITH_STATE
def test_varlen_equals_loop_over_sequences(form, with_state):
    offsets = torch.tensor([0, 5, 69, 70, 100])
    inputs = aaren_inputs(1, 100, 2, 16, 8)
    inputs["q"] = aaren_inputs(4, 1, 2, 16, 8, seed=5)["q"]
    states = random_state(4, 2, 8) if with_state else None
    packed = run(inputs, form=form, chunk_size=16, cu_seqlens=offsets, initial_state=states)
    for n, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        row = lambda state: AarenState(*(x[n : n + 1] for x in state))
        one = dict(q=inputs["q"][n : n + 1], **{x: inputs[x][:, start:end] for x in "kv"})
        single = run(one, form="recurrent", initial_state=None if states is None else row(states))
        assert max_error(packed.output[:, start:end], single.output) < TIGHT
        assert_states_close(row(packed.final_state), single.final_state)


def test_varlen_of_equal_lengths_equals_the_batch():
    inputs = aaren_inputs(3, 40, 2, 16, 8)
    batched = run(inputs, form="chunk", chunk_size=16)
    # Sequences end to end along time: [3, 40, ...] -> [1, 120, ...].
    end_to_end = dict(q=inputs["q"], **{x: inputs[x].flatten(0, 1).unsqueeze(0) for x in "kv"})
    offsets = torch.tensor([0, 40, 80, 120])
    packed = run(end_to_end, form="chunk", chunk_size=16, cu_seqlens=offsets)
    assert max_error(packed.output.reshape(3, 40, 2, 8), batched.output) < TIGHT
    assert_states_close(packed.final_state, batched.final_state)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_every_input_and_state_field(form):
    inputs = aaren_inputs(2, 6, 2, 3, 2, requires_grad=True)
    state = [x.requires_grad_() for x in random_state(2, 2, 2)]

    def fn(q, k, v, m, u, w):
        result = aaren(
            q, k, v, initial_state=AarenState(m, u, w), output_final_state=True,
            form=form, chunk_size=4,
        )
        return (result.output, *result.final_state)

    assert torch.autograd.gradcheck(fn, [inputs["q"], inputs["k"], inputs["v"], *state])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("form", FORMS)
def test_low_precision_inputs_stay_within_eager_noise(dtype, form):
    low = {n: x.to(dtype) for n, x in aaren_inputs(2, 65, 2, 16, 16).items()}
    golden = repeated_query_sdpa(*(low[n].double() for n in "qkv"))
    result = run(low, form=form, chunk_size=16)
    assert result.output.dtype == dtype
    assert all(x.dtype == torch.float32 for x in result.final_state)
    eager = repeated_query_sdpa(*(low[n] for n in "qkv"))
    check = noise_relative_check(result.output, golden, eager)
    assert check.passed, check


def extreme_inputs(T, dtype):
    """Scores in [-1e4, 1e4] (scale = 1): head 0 jumps at random, head 1 climbs a ramp,
    so the running max changes at almost every step."""
    generator = torch.Generator().manual_seed(4)
    direction = F.normalize(torch.randn(1, 2, 16, generator=generator, dtype=torch.float64), dim=-1)
    jumps = (2 * torch.rand(T, generator=generator, dtype=torch.float64) - 1) * 1e4
    ramp = torch.linspace(-1e4, 1e4, T, dtype=torch.float64)
    scores = torch.stack([jumps, ramp], dim=-1)  # [T, H]
    k = scores[None, :, :, None] * direction[:, None]
    v = torch.randn(1, T, 2, 8, generator=generator, dtype=torch.float64)
    return dict(q=direction.to(dtype), k=k.to(dtype), v=v.to(dtype), scale=1.0)


@pytest.mark.parametrize("form", FORMS)
def test_scores_near_1e4_over_4096_tokens_stay_finite(form):
    inputs = extreme_inputs(4096, torch.float32)
    result = run(inputs, form=form)
    assert torch.isfinite(result.output).all()
    assert all(torch.isfinite(x).all() for x in result.final_state)
    # Each output is a convex combination of the values seen so far.
    v = inputs["v"]
    assert (result.output >= torch.cummin(v, dim=1).values - 1e-5).all()
    assert (result.output <= torch.cummax(v, dim=1).values + 1e-5).all()


@pytest.mark.parametrize("form", FORMS)
def test_scores_near_1e4_match_softmax_in_float64(form):
    inputs = extreme_inputs(1024, torch.float64)
    expected = repeated_query_sdpa(inputs["q"], inputs["k"], inputs["v"], scale=1.0)
    result = run(inputs, form=form)
    assert max_error(result.output, expected) < 1e-9


def _bad(**changes):
    inputs = aaren_inputs(2, 10, 2, 16, 8, dtype=torch.float32)
    inputs.update(changes)
    return inputs


def _packed(**changes):
    inputs = aaren_inputs(1, 10, 2, 16, 8, dtype=torch.float32)
    inputs["q"] = torch.zeros(2, 2, 16)
    inputs.update(changes)
    return inputs


def _state(B=2, H=2, V=8, **changes):
    fields = dict(m=torch.zeros(B, H), u=torch.ones(B, H), w=torch.zeros(B, H, V))
    fields.update(changes)
    return AarenState(**fields)


HALVES = torch.tensor([0, 4, 10])
BAD_INPUTS = [
    pytest.param(_bad(q=[[1.0]]), {}, TypeError, "q: expected a torch.Tensor", id="q-not-tensor"),
    pytest.param(_bad(k=torch.zeros(2, 10, 2, 16, dtype=torch.int64)), {}, TypeError, "k: expected a floating", id="k-int"),
    pytest.param(_bad(v=torch.zeros(2, 10, 2, 8, dtype=torch.float64)), {}, TypeError, "v: expected dtype torch.float32", id="v-dtype"),
    pytest.param(_bad(q=torch.zeros(2, 10, 2, 16)), {}, ValueError, r"q: expected 3 dimensions \[B, H, K\]", id="q-rank"),
    pytest.param(_bad(k=torch.zeros(2, 10, 32)), {}, ValueError, r"k: expected 4 dimensions", id="k-rank"),
    pytest.param(_bad(v=torch.zeros(2, 10, 2, 8, 1)), {}, ValueError, r"v: expected 4 dimensions", id="v-rank"),
    pytest.param(_bad(q=torch.zeros(3, 2, 16)), {}, ValueError, r"q: expected shape \[B, H, K\] with B=2", id="q-B"),
    pytest.param(_bad(q=torch.zeros(2, 3, 16)), {}, ValueError, r"q: .*H=2", id="q-H"),
    pytest.param(_bad(q=torch.zeros(2, 2, 8)), {}, ValueError, r"q: .*K=16", id="q-K"),
    pytest.param(_bad(v=torch.zeros(2, 11, 2, 8)), {}, ValueError, r"v: .*T=10", id="v-T"),
    pytest.param(_bad(v=torch.zeros(1, 10, 2, 8)), {}, ValueError, r"v: .*B=2", id="v-B"),
    pytest.param(_bad(k=torch.zeros(2, 10, 2, 16, device="meta")), {}, ValueError, "k: expected a tensor on cpu", id="k-device"),
    pytest.param(_bad(k=torch.zeros(2, 0, 2, 16), v=torch.zeros(2, 0, 2, 8)), {}, ValueError, "k: expected at least one token", id="empty"),
    pytest.param(_bad(), dict(scale="big"), TypeError, "scale: expected a float", id="scale-type"),
    pytest.param(_bad(), dict(chunk_size=0), ValueError, "chunk_size: expected a positive int", id="chunk-zero"),
    pytest.param(_bad(), dict(chunk_size=16.0), TypeError, "chunk_size: expected a positive int", id="chunk-float"),
    pytest.param(_bad(), dict(form="fast"), ValueError, "form: expected one of", id="form-unknown"),
    pytest.param(_bad(), dict(impl="cuda"), ValueError, "impl: expected one of", id="impl-unknown"),
    pytest.param(_bad(), dict(initial_state=(torch.zeros(2, 2),) * 3), TypeError, "initial_state: expected a AarenState", id="state-type"),
    pytest.param(_bad(), dict(initial_state=_state(m=torch.zeros(2, 3))), ValueError, r"initial_state.m: .*H=2", id="state-m-shape"),
    pytest.param(_bad(), dict(initial_state=_state(u=torch.ones(2, 2, 1))), ValueError, r"initial_state.u: expected 2 dimensions", id="state-u-rank"),
    pytest.param(_bad(), dict(initial_state=_state(w=torch.zeros(2, 2, 4))), ValueError, r"initial_state.w: .*V=8", id="state-w-shape"),
    pytest.param(_bad(), dict(initial_state=_state(w=torch.zeros(2, 2, 8, dtype=torch.int32))), TypeError, "initial_state.w: expected a floating", id="state-w-int"),
    pytest.param(_bad(), dict(initial_state=_state(u=torch.ones(2, 2, device="meta"))), ValueError, "initial_state.u: expected a tensor on cpu", id="state-device"),
    pytest.param(_bad(), dict(cu_seqlens=torch.tensor([0, 10])), ValueError, "cu_seqlens: expects a packed batch with B == 1", id="cu-batch"),
    pytest.param(_packed(), dict(cu_seqlens=torch.tensor([0, 6, 4, 10])), ValueError, "cu_seqlens: expected strictly increasing", id="cu-decreasing"),
    pytest.param(_packed(), dict(cu_seqlens=torch.tensor([0, 4, 9])), ValueError, "cu_seqlens: expected to end at the total length T = 10", id="cu-end"),
    pytest.param(_packed(), dict(cu_seqlens=torch.tensor([0.0, 10.0])), TypeError, "cu_seqlens: expected an int64", id="cu-float"),
    pytest.param(_packed(q=torch.zeros(1, 2, 16)), dict(cu_seqlens=HALVES), ValueError, r"q: expected shape \[N, H, K\] with N=2 \(from cu_seqlens\)", id="cu-q-rows"),
    pytest.param(_packed(), dict(cu_seqlens=HALVES, initial_state=_state(B=1)), ValueError, r"initial_state.m: expected shape \[N, H\] with N=2", id="cu-state-rows"),
]


@pytest.mark.parametrize("inputs,options,error,message", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(inputs, options, error, message):
    with pytest.raises(error, match=message):
        aaren(**inputs, **options)


def test_explicit_triton_request_never_falls_back(monkeypatch):
    # CPU tensors without the interpreter: Triton cannot run, and an explicit request says so.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ImplUnavailableError, match="impl='triton'"):
        aaren(**_bad(), impl="triton")
