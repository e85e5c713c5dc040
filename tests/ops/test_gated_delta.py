"""gated_delta_rule: the three forms, state hand-off, varlen, gradients, named wrappers,
bad input and extreme input."""
import pytest
import torch

import attnforms.ops.gated_delta as gd
from attnforms.core.states import LinearState
from attnforms.testing import gated_delta_inputs, max_error

SWITCHES = [
    pytest.param(gate, beta, id=f"g_{gate}-{'beta' if beta else 'nobeta'}")
    for gate in ("none", "scalar", "channel")
    for beta in (False, True)
]
SIZES = [
    pytest.param(T, K, id=f"T{T}-K{K}") for T, K in [(1, 16), (63, 16), (65, 60), (200, 16)]
]
TIGHT = 1e-11


def run(inputs, **kwargs):
    return gd.gated_delta_rule(**inputs, output_final_state=True, **kwargs)


def random_state(B, H, K, V, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return LinearState(torch.randn(B, H, K, V, generator=generator, dtype=torch.float64) * 0.5)


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("T,K", SIZES)
def test_forms_agree_in_float64(gate, beta, T, K):
    inputs = gated_delta_inputs(2, T, 2, K, 12, gate=gate, beta=beta)
    state = random_state(2, 2, K, 12)
    golden = run(inputs, form="recurrent", initial_state=state)
    for form, chunk_size in [("parallel", None), ("chunk", 16), ("chunk", 64), ("chunk", 100)]:
        result = run(inputs, form=form, chunk_size=chunk_size, initial_state=state)
        assert max_error(result.output, golden.output) < TIGHT, (form, chunk_size)
        assert max_error(result.final_state.S, golden.final_state.S) < TIGHT, (form, chunk_size)


def test_linear_attention_equals_masked_quadratic_form():
    inputs = gated_delta_inputs(2, 65, 3, 16, 8, gate="none", beta=False)
    q, k, v = (inputs[name].transpose(1, 2) for name in "qkv")
    scores = (q * 16 ** -0.5) @ k.transpose(-1, -2)
    expected = (scores * torch.ones(65, 65, dtype=torch.bool).tril()) @ v
    for form in ("parallel", "chunk", "recurrent"):
        result = gd.linear_attention(inputs["q"], inputs["k"], inputs["v"], form=form)
        assert max_error(result.output, expected.transpose(1, 2)) < TIGHT


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("first_form", ["chunk", "parallel", "recurrent"])
def test_state_hand_off_equals_one_run(gate, beta, first_form):
    inputs = gated_delta_inputs(2, 65, 2, 16, 8, gate=gate, beta=beta)
    whole = run(inputs, form="chunk", chunk_size=16)
    cut = 37
    first = run({n: None if x is None else x[:, :cut] for n, x in inputs.items()}, form=first_form, chunk_size=16)
    rest = run(
        {n: None if x is None else x[:, cut:] for n, x in inputs.items()},
        form="recurrent", initial_state=first.final_state,
    )
    assert max_error(torch.cat([first.output, rest.output], dim=1), whole.output) < TIGHT
    assert max_error(rest.final_state.S, whole.final_state.S) < TIGHT


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "initial_state"])
def test_varlen_equals_loop_over_sequences(gate, beta, with_state):
    lengths = [5, 64, 1, 30]
    offsets = torch.tensor([0, 5, 69, 70, 100])
    inputs = gated_delta_inputs(1, sum(lengths), 2, 16, 8, gate=gate, beta=beta)
    states = random_state(len(lengths), 2, 16, 8) if with_state else None
    packed = run(inputs, form="chunk", chunk_size=16, cu_seqlens=offsets, initial_state=states)
    for n, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        one = {name: None if x is None else x[:, start:end] for name, x in inputs.items()}
        state = None if states is None else LinearState(states.S[n : n + 1])
        single = run(one, form="recurrent", initial_state=state)
        assert max_error(packed.output[:, start:end], single.output) < TIGHT
        assert max_error(packed.final_state.S[n], single.final_state.S[0]) < TIGHT


def test_batch_entries_are_independent():
    inputs = gated_delta_inputs(3, 40, 2, 16, 8, gate="channel", beta=True)
    batched = run(inputs, form="chunk", chunk_size=16)
    for b in range(3):
        single = run({n: x[b : b + 1] for n, x in inputs.items()}, form="chunk", chunk_size=16)
        assert max_error(batched.output[b : b + 1], single.output) < TIGHT


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("form", ["parallel", "chunk", "recurrent"])
def test_gradcheck_every_input(gate, beta, form):
    inputs = gated_delta_inputs(1, 6, 2, 3, 2, gate=gate, beta=beta, requires_grad=True)
    state = LinearState(random_state(1, 2, 3, 2).S.requires_grad_())
    names = [name for name, x in inputs.items() if x is not None]

    def fn(*tensors):
        args = dict(zip(names, tensors[:-1]))
        result = gd.gated_delta_rule(
            **args, initial_state=LinearState(tensors[-1]), output_final_state=True,
            form=form, chunk_size=4,
        )
        return result.output, result.final_state.S

    assert torch.autograd.gradcheck(fn, [inputs[n] for n in names] + [state.S])


def test_named_wrappers_are_their_configurations():
    inputs = gated_delta_inputs(1, 20, 2, 16, 8, gate="channel", beta=True)
    q, k, v, g, beta = (inputs[n] for n in ("q", "k", "v", "g", "beta"))
    g_scalar = g[..., 0]
    pairs = [
        (gd.kda(q, k, v, g, beta), gd.gated_delta_rule(q, k, v, g=g, beta=beta)),
        (gd.gla(q, k, v, g), gd.gated_delta_rule(q, k, v, g=g)),
        (gd.gated_deltanet(q, k, v, g_scalar, beta), gd.gated_delta_rule(q, k, v, g=g_scalar, beta=beta)),
        (gd.simple_gla(q, k, v, g_scalar), gd.gated_delta_rule(q, k, v, g=g_scalar)),
        (gd.delta_rule(q, k, v, beta), gd.gated_delta_rule(q, k, v, beta=beta)),
    ]
    for wrapped, direct in pairs:
        assert torch.equal(wrapped.output, direct.output)
    # A per-channel gate equal across channels is the scalar gate.
    per_channel = gd.gated_deltanet(q, k, v, g_scalar, beta).output
    broadcast = gd.kda(q, k, v, g_scalar.unsqueeze(-1).expand_as(g).contiguous(), beta).output
    assert max_error(per_channel, broadcast) < TIGHT


def test_wrappers_reject_the_wrong_gate_layout():
    inputs = gated_delta_inputs(1, 8, 2, 16, 8, gate="channel", beta=True)
    q, k, v, g, beta = (inputs[n] for n in ("q", "k", "v", "g", "beta"))
    with pytest.raises(ValueError, match="gla: g"):
        gd.gla(q, k, v, g[..., 0])
    with pytest.raises(ValueError, match="gated_deltanet: g"):
        gd.gated_deltanet(q, k, v, g, beta)
    with pytest.raises(TypeError, match="kda: beta"):
        gd.kda(q, k, v, g, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_stay_within_eager_noise(dtype):
    inputs = gated_delta_inputs(2, 65, 2, 16, 16, gate="channel", beta=True)
    golden = run(inputs, form="recurrent")
    low = {n: x.to(dtype) for n, x in inputs.items()}
    result = run(low, form="chunk")
    assert result.output.dtype == dtype
    assert result.final_state.S.dtype == torch.float32
    # Both forms compute in float32; the only difference from golden is input rounding.
    eager = run(low, form="recurrent")
    assert max_error(result.output, golden.output) <= 2 * max_error(eager.output, golden.output) + 1e-5


@pytest.mark.parametrize("gate", ["scalar", "channel"])
@pytest.mark.parametrize("form", ["chunk", "recurrent", "parallel"])
def test_extreme_gates_stay_finite(gate, form):
    inputs = gated_delta_inputs(1, 130, 2, 16, 8, gate=gate, beta=True, dtype=torch.float32)
    inputs["g"] = torch.where(torch.rand_like(inputs["g"]) < 0.5, -1e4, -1e-6)
    result = run(inputs, form=form)
    assert torch.isfinite(result.output).all() and torch.isfinite(result.final_state.S).all()
    # A gate of -1e4 erases the state: right after such a step the output only sees
    # what was written since.
    golden = run({n: x.double() for n, x in inputs.items()}, form="recurrent")
    assert max_error(result.output, golden.output) < 1e-4


@pytest.mark.parametrize("C", [1, 5, 32, 37])
def test_channel_scores_equal_the_pairwise_definition(C):
    """The reference's per-channel scores (halving, factors through block ends) equal
    `Σ_k a_rk b_sk exp(G_rk − G_sk)` for s <= r, 0 above, formed pairwise: for chunks of
    any length (padded to a power of two inside), with a stacked leading dim on `a` as
    the delta rule passes it, and with gates strong enough that exp(−G) would overflow."""
    from attnforms.ops.gated_delta.reference import _channel_decay_weighted_scores

    generator = torch.Generator().manual_seed(C)
    a = torch.randn(2, 3, 2, C, 8, generator=generator, dtype=torch.float64)
    b = torch.randn(3, 2, C, 8, generator=generator, dtype=torch.float64)
    g = torch.nn.functional.logsigmoid(4 * torch.randn(3, 2, C, 8, generator=generator, dtype=torch.float64)) * 50
    G = g.cumsum(dim=2)
    # [B, H, C, C, K]; the clamp only touches pairs s > r, which the mask drops.
    decay = torch.exp((G[..., :, None, :] - G[..., None, :, :]).clamp(max=0))
    expected = torch.einsum("...rk,...sk,...rsk->...rs", a, b, decay) * torch.ones(C, C, dtype=torch.bool).tril()
    # exp(-G) overflows float64 here: only differences may be exponentiated.
    assert C == 1 or G.min() < -800
    scores = _channel_decay_weighted_scores(a, b, G)
    assert scores.shape == (2, 3, 2, C, C)
    assert torch.isfinite(scores).all() and max_error(scores, expected) < 1e-12


def test_long_sequence_stays_finite():
    inputs = gated_delta_inputs(1, 4096, 2, 32, 32, gate="channel", beta=True, dtype=torch.float32)
    result = run(inputs, form="chunk")
    assert torch.isfinite(result.output).all() and torch.isfinite(result.final_state.S).all()


def _bad(**changes):
    inputs = gated_delta_inputs(2, 10, 2, 16, 8, gate="scalar", beta=True, dtype=torch.float32)
    inputs.update(changes)
    return inputs


BAD_INPUTS = [
    pytest.param(_bad(q=[[1.0]]), {}, TypeError, "q: expected a torch.Tensor", id="q-not-tensor"),
    pytest.param(_bad(q=torch.zeros(2, 10, 2, 16, dtype=torch.int64)), {}, TypeError, "q: expected a floating", id="q-int"),
    pytest.param(_bad(q=torch.zeros(2, 10, 32)), {}, ValueError, r"q: expected 4 dimensions", id="q-rank"),
    pytest.param(_bad(k=torch.zeros(2, 10, 2, 8)), {}, ValueError, r"k: expected shape \[B, T, H, K\] with K=16", id="k-K"),
    pytest.param(_bad(v=torch.zeros(2, 11, 2, 8)), {}, ValueError, r"v: .*T=10", id="v-T"),
    pytest.param(_bad(k=torch.zeros(2, 10, 2, 16, dtype=torch.float64)), {}, TypeError, "k: expected dtype torch.float32", id="k-dtype"),
    pytest.param(_bad(k=torch.zeros(2, 10, 2, 16, device="meta")), {}, ValueError, "k: expected a tensor on cpu", id="k-device"),
    pytest.param(_bad(g=torch.zeros(2, 10, 3)), {}, ValueError, r"g: .*H=2", id="g-heads"),
    pytest.param(_bad(g=torch.full((2, 10, 2), 0.5)), {}, ValueError, "g: expected log-decay values <= 0", id="g-positive"),
    pytest.param(_bad(g=torch.full((2, 10, 2), float("nan"))), {}, ValueError, "g: expected log-decay", id="g-nan"),
    pytest.param(_bad(beta=torch.zeros(2, 10, 2, 1)), {}, ValueError, r"beta: expected 3 dimensions", id="beta-rank"),
    pytest.param(_bad(beta=torch.zeros(2, 10, 2, dtype=torch.int32)), {}, TypeError, "beta: expected a floating", id="beta-int"),
    pytest.param(_bad(), dict(scale="big"), TypeError, "scale: expected a float", id="scale-type"),
    pytest.param(_bad(), dict(chunk_size=0), ValueError, "chunk_size: expected a positive int", id="chunk-zero"),
    pytest.param(_bad(), dict(form="fast"), ValueError, "form: expected one of", id="form-unknown"),
    pytest.param(_bad(), dict(impl="cuda"), ValueError, "impl: expected one of", id="impl-unknown"),
    pytest.param(_bad(), dict(initial_state=torch.zeros(2, 2, 16, 8)), TypeError, "initial_state: expected a LinearState", id="state-type"),
    pytest.param(_bad(), dict(initial_state=LinearState(torch.zeros(2, 2, 8, 8))), ValueError, r"initial_state.S: expected shape \[B, H, K, V\] with K=16", id="state-shape"),
    pytest.param(_bad(), dict(cu_seqlens=torch.tensor([0, 10])), ValueError, "cu_seqlens: expects a packed batch with B == 1", id="cu-batch"),
    pytest.param({n: None if x is None else x[:1] for n, x in _bad().items()}, dict(cu_seqlens=torch.tensor([0, 6, 4, 10])), ValueError, "cu_seqlens: expected strictly increasing", id="cu-decreasing"),
    pytest.param({n: None if x is None else x[:1] for n, x in _bad().items()}, dict(cu_seqlens=torch.tensor([0, 4, 9])), ValueError, "cu_seqlens: expected to end at the total length T = 10", id="cu-end"),
    pytest.param({n: None if x is None else x[:1] for n, x in _bad().items()}, dict(cu_seqlens=torch.tensor([0.0, 10.0])), TypeError, "cu_seqlens: expected an int64", id="cu-float"),
    pytest.param(_bad(q=torch.zeros(2, 0, 2, 16), k=torch.zeros(2, 0, 2, 16), v=torch.zeros(2, 0, 2, 8), g=None, beta=None), {}, ValueError, "q: expected at least one token", id="empty"),
]


@pytest.mark.parametrize("inputs,options,error,message", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(inputs, options, error, message):
    with pytest.raises(error, match=message):
        gd.gated_delta_rule(**inputs, **options)


def test_explicit_triton_request_never_falls_back(monkeypatch):
    from attnforms.core.dispatch import ImplUnavailableError

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ImplUnavailableError, match="impl='triton' for gated_delta_rule: Triton kernels run on CUDA"):
        gd.gated_delta_rule(**_bad(), impl="triton")
