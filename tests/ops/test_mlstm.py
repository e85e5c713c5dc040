"""mlstm: the three forms, the closed-form parallel formula, state hand-off, varlen,
gradients, bad input, low precision and extreme gates."""
import pytest
import torch
import torch.nn.functional as F

from attnforms.core.dispatch import ImplUnavailableError
from attnforms.core.states import MLSTMState
from attnforms.ops.mlstm import mlstm
from attnforms.testing import max_error, mlstm_inputs, noise_relative_check

GATES = [pytest.param(gate, id=f"{gate}_gate") for gate in ("exp", "sigmoid")]
STATES = [pytest.param(False, id="zero_state"), pytest.param(True, id="initial_state")]
SIZES = [
    pytest.param(T, K, id=f"T{T}-K{K}") for T, K in [(1, 16), (63, 60), (65, 16), (200, 60)]
]
FORMS = ["parallel", "chunk", "recurrent"]
TIGHT = 1e-11


def run(inputs, **kwargs):
    return mlstm(**inputs, output_final_state=True, **kwargs)


def close(actual, expected, tol=TIGHT):
    """Agreement to rounding, relative to the size of the expected values."""
    return max_error(actual, expected) <= tol * (1.0 + expected.abs().max().item())


def states_close(actual, expected):
    return all(close(a, e) for a, e in zip(actual, expected))


def random_state(B, H, K, V, input_gate, seed=1):
    """A state with every field nonzero, for either gate (the sigmoid gate reads m as
    the entering state's scale, exp(m), and returns states with m = 0)."""
    generator = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)
    return MLSTMState(randn(B, H, K, V) * 0.5, randn(B, H, K) * 0.5, randn(B, H))


def time_slice(inputs, start, end):
    return {name: x[:, start:end] for name, x in inputs.items()}


def direct_parallel(q, k, v, i, f, input_gate, held=False):
    """Research notes §4(b), written out as a T x T computation with no state:
    D̃_ts = b_t − b_s + ĩ_s (s <= t), m_t = max_s D̃_ts, C̃ = (QKᵀ/√K) ⊙ exp(D̃ − m),
    n_t = max(|Σ_s C̃_ts|, exp(−m_t)), H = (C̃ / (n + 1e-6)) V. The sigmoid gate uses
    logsigmoid(ĩ) and m = 0. held: n and m detached (normaliser_gradient="held").
    Inputs time-major as the op takes them; returns `[B, T, H, V]` and m `[B, H, T]`."""
    q, k, v, i, f = (x.transpose(1, 2) for x in (q, k, v, i, f))
    T, K = q.shape[2], q.shape[3]
    b = F.logsigmoid(f).cumsum(-1)
    log_input = i if input_gate == "exp" else F.logsigmoid(i)
    log_d = b[..., :, None] - b[..., None, :] + log_input[..., None, :]
    log_d = torch.where(torch.ones(T, T, dtype=torch.bool).tril(), log_d, float("-inf"))
    if input_gate == "exp":
        m = log_d.max(dim=-1, keepdim=True).values
    else:
        m = torch.zeros_like(log_d[..., :1])
    if held:
        m = m.detach()
    c_tilde = (q @ k.transpose(-1, -2)) * K ** -0.5 * torch.exp(log_d - m)
    n = torch.maximum(c_tilde.sum(dim=-1, keepdim=True).abs(), torch.exp(-m))
    if held:
        n = n.detach()
    return ((c_tilde / (n + 1e-6)) @ v).transpose(1, 2), m.squeeze(-1)


@pytest.mark.parametrize("with_state", STATES)
@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("T,K", SIZES)
def test_forms_agree_in_float64(T, K, input_gate, with_state):
    inputs = mlstm_inputs(2, T, 2, K, 12)
    state = random_state(2, 2, K, 12, input_gate) if with_state else None
    golden = run(inputs, form="recurrent", input_gate=input_gate, initial_state=state)
    for form, chunk_size in [("parallel", None), ("chunk", 16), ("chunk", 64), ("chunk", 100)]:
        result = run(
            inputs, form=form, chunk_size=chunk_size, input_gate=input_gate, initial_state=state
        )
        assert close(result.output, golden.output), (form, chunk_size)
        assert states_close(result.final_state, golden.final_state), (form, chunk_size)


@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("T,K", SIZES)
def test_parallel_form_equals_direct_formula(T, K, input_gate):
    inputs = mlstm_inputs(2, T, 3, K, 8)
    expected, m = direct_parallel(**inputs, input_gate=input_gate)
    result = run(inputs, form="parallel", input_gate=input_gate)
    assert close(result.output, expected)
    # The final stabiliser is the last row max of the log-gate matrix (0 for sigmoid).
    assert close(result.final_state.m, m[..., -1])


@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("cut", [1, 37, 64])
@pytest.mark.parametrize(
    "first_form,second_form",
    [("chunk", "chunk"), ("chunk", "recurrent"), ("recurrent", "parallel"), ("parallel", "chunk")],
    ids=lambda form: form,
)
def test_state_hand_off_equals_one_run(first_form, second_form, cut, input_gate):
    inputs = mlstm_inputs(2, 65, 2, 16, 8)
    whole = run(inputs, form="chunk", chunk_size=16, input_gate=input_gate)
    first = run(time_slice(inputs, 0, cut), form=first_form, chunk_size=16, input_gate=input_gate)
    rest = run(
        time_slice(inputs, cut, 65), form=second_form, chunk_size=16, input_gate=input_gate,
        initial_state=first.final_state,
    )
    assert close(torch.cat([first.output, rest.output], dim=1), whole.output)
    assert states_close(rest.final_state, whole.final_state)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_state", STATES)
@pytest.mark.parametrize("input_gate", GATES)
def test_varlen_equals_loop_over_sequences(input_gate, with_state, form):
    lengths = [5, 64, 1, 30]
    offsets = torch.tensor([0, 5, 69, 70, 100])
    inputs = mlstm_inputs(1, sum(lengths), 2, 16, 8)
    states = random_state(len(lengths), 2, 16, 8, input_gate) if with_state else None
    packed = run(
        inputs, form=form, chunk_size=16, cu_seqlens=offsets, initial_state=states,
        input_gate=input_gate,
    )
    for n, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        state = None if states is None else MLSTMState(*(x[n : n + 1] for x in states))
        single = run(
            time_slice(inputs, start, end), form="recurrent", initial_state=state,
            input_gate=input_gate,
        )
        assert close(packed.output[:, start:end], single.output)
        assert states_close(tuple(x[n : n + 1] for x in packed.final_state), single.final_state)


def test_batch_entries_are_independent():
    inputs = mlstm_inputs(3, 40, 2, 16, 8)
    batched = run(inputs, form="chunk", chunk_size=16)
    for b in range(3):
        single = run({n: x[b : b + 1] for n, x in inputs.items()}, form="chunk", chunk_size=16)
        assert close(batched.output[b : b + 1], single.output)


def test_defaults_are_scale_inverse_sqrt_k_and_chunk_form():
    inputs = mlstm_inputs(2, 70, 2, 16, 8)
    explicit = mlstm(**inputs, scale=16 ** -0.5, form="chunk", chunk_size=64).output
    assert torch.equal(mlstm(**inputs).output, explicit)


@pytest.mark.parametrize("with_state", STATES)
@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_every_input(form, input_gate, with_state):
    inputs = mlstm_inputs(1, 5, 1, 3, 2, requires_grad=True)
    state = random_state(1, 1, 3, 2, input_gate)
    names = list(inputs)
    tensors = [inputs[name] for name in names]
    if with_state:
        # The sigmoid gate requires m = 0 (the op checks it), so m is no free input there.
        fields = ["C", "n", "m"] if input_gate == "exp" else ["C", "n"]
        tensors += [getattr(state, name).clone().requires_grad_() for name in fields]

    def fn(*args):
        initial_state = None
        if with_state:
            given = dict(zip(fields, args[len(names):]))
            initial_state = MLSTMState(given["C"], given["n"], given.get("m", state.m))
        result = mlstm(
            *args[: len(names)], input_gate=input_gate, initial_state=initial_state,
            output_final_state=True, form=form, chunk_size=2,
        )
        final = result.final_state
        # The sigmoid gate's m is a constant 0, with nothing to differentiate.
        return (result.output, final.C, final.n) + ((final.m,) if input_gate == "exp" else ())

    assert torch.autograd.gradcheck(fn, tensors)


def _bad_inputs():
    """(id, change to the valid call, exception, message pattern)."""
    inputs = mlstm_inputs(2, 8, 2, 4, 3)
    q, i, f = inputs["q"], inputs["i"], inputs["f"]
    exp_state = random_state(2, 2, 4, 3, "exp")
    cases = [
        ("q_not_tensor", dict(q=q.tolist()), TypeError, "q: expected a torch.Tensor"),
        ("i_int_dtype", dict(i=i.long()), TypeError, "i: expected a floating dtype"),
        ("k_dtype_mismatch", dict(k=inputs["k"].float()), TypeError, "k: expected dtype"),
        ("q_rank", dict(q=q[0]), ValueError, r"q: expected 4 dimensions"),
        ("v_batch", dict(v=inputs["v"][:1]), ValueError, r"v: expected shape \[B, T, H, V\]"),
        ("k_head_dim", dict(k=inputs["k"][..., :3]), ValueError, r"k: expected shape .*K=4"),
        ("i_rank", dict(i=i[..., 0]), ValueError, r"i: expected 3 dimensions"),
        ("f_heads", dict(f=f[..., :1]), ValueError, r"f: expected shape .*H=2"),
        ("empty_sequence", {n: x[:, :0] for n, x in inputs.items()}, ValueError, "T = 0"),
        ("f_device", dict(f=f.to("meta")), ValueError, "f: expected a tensor on cpu"),
        ("input_gate", dict(input_gate="tanh"), ValueError, "input_gate: expected one of"),
        ("scale", dict(scale="big"), TypeError, "scale: expected"),
        ("chunk_size_zero", dict(chunk_size=0), ValueError, "chunk_size: expected a positive int"),
        ("chunk_size_float", dict(chunk_size=2.5), TypeError, "chunk_size: expected a positive int"),
        ("state_type", dict(initial_state=tuple(exp_state)), TypeError, "initial_state: expected a MLSTMState"),
        ("state_C", dict(initial_state=exp_state._replace(C=exp_state.C[..., :2])), ValueError, r"initial_state\.C"),
        ("state_n", dict(initial_state=exp_state._replace(n=exp_state.n[:1])), ValueError, r"initial_state\.n"),
        ("state_m", dict(initial_state=exp_state._replace(m=exp_state.m[..., None])), ValueError, r"initial_state\.m"),
        ("state_device", dict(initial_state=exp_state._replace(n=exp_state.n.to("meta"))), ValueError, r"initial_state\.n: expected a tensor on cpu"),
        ("cu_seqlens_batch", dict(cu_seqlens=torch.tensor([0, 8])), ValueError, "cu_seqlens: expects a packed batch"),
        ("form", dict(form="fast"), ValueError, "form: expected one of"),
        ("impl_triton_float64", dict(impl="triton"), TypeError, "q: impl='triton' takes float16, bfloat16 or float32"),
    ]
    return [pytest.param(inputs, change, error, pattern, id=name) for name, change, error, pattern in cases]


@pytest.mark.parametrize("inputs,change,error,pattern", _bad_inputs())
def test_bad_input_names_the_argument(inputs, change, error, pattern):
    with pytest.raises(error, match=pattern):
        mlstm(**{**inputs, **change})


def test_explicit_triton_request_never_falls_back(monkeypatch):
    # CPU tensors without the interpreter: Triton cannot run, and an explicit request says so.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ImplUnavailableError, match="impl='triton'"):
        mlstm(**mlstm_inputs(1, 8, 2, 4, 3, dtype=torch.float32), impl="triton")


def test_packed_input_needs_cu_seqlens_ending_at_t():
    inputs = mlstm_inputs(1, 8, 2, 4, 3)
    with pytest.raises(ValueError, match="cu_seqlens: expected to end at the total length"):
        mlstm(**inputs, cu_seqlens=torch.tensor([0, 3, 7]))
    with pytest.raises(ValueError, match=r"initial_state\.C: expected shape .*N=2"):
        mlstm(**inputs, cu_seqlens=torch.tensor([0, 3, 8]), initial_state=random_state(1, 2, 4, 3, "exp"))


@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_stay_within_eager_noise(dtype, input_gate):
    inputs = mlstm_inputs(2, 200, 2, 16, 16)
    golden = run(inputs, form="recurrent", input_gate=input_gate)
    low = {n: x.to(dtype) for n, x in inputs.items()}
    result = run(low, form="chunk", input_gate=input_gate)
    assert result.output.dtype == dtype
    assert all(x.dtype == torch.float32 for x in result.final_state)
    # The parallel form in the same dtype is the eager baseline; both compute in float32.
    eager = run(low, form="parallel", input_gate=input_gate)
    check = noise_relative_check(result.output, golden.output, eager.output, atol=1e-5)
    assert check.passed, check


def _extreme_gates(regime, B, T, H, seed=0):
    """Gate pre-activations `[B, T, H]` far outside what training produces."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda: torch.randn(B, T, H, generator=generator)
    scale = 1e4
    return {
        "i_huge_positive": (scale * draw().abs(), draw()),
        "i_huge_negative": (-scale * draw().abs(), draw()),
        "i_huge_f_very_negative": (scale * draw(), -scale * draw().abs()),
        "f_very_positive": (scale * draw(), scale * draw().abs()),
    }[regime]


REGIMES = ["i_huge_positive", "i_huge_negative", "i_huge_f_very_negative", "f_very_positive"]


@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("regime", REGIMES)
def test_extreme_gates_long_sequence_stay_finite(regime, input_gate):
    inputs = mlstm_inputs(1, 4096, 2, 16, 16, dtype=torch.float32)
    inputs["i"], inputs["f"] = _extreme_gates(regime, 1, 4096, 2)
    result = run(inputs, form="chunk", input_gate=input_gate)
    assert torch.isfinite(result.output).all()
    assert all(torch.isfinite(x).all() for x in result.final_state)


@pytest.mark.parametrize("input_gate", GATES)
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("form", FORMS)
def test_extreme_gates_give_finite_gradients(form, regime, input_gate):
    inputs = mlstm_inputs(1, 200, 2, 16, 8, dtype=torch.float32)
    inputs["i"], inputs["f"] = _extreme_gates(regime, 1, 200, 2)
    for x in inputs.values():
        x.requires_grad_()
    state = random_state(1, 2, 16, 8, input_gate)
    state = MLSTMState(*(x.float().requires_grad_() for x in state))
    result = run(inputs, form=form, chunk_size=32, input_gate=input_gate, initial_state=state)
    assert torch.isfinite(result.output).all()
    loss = result.output.sum() + sum(x.sum() for x in result.final_state)
    loss.backward()
    for name, x in list(inputs.items()) + list(state._asdict().items()):
        assert torch.isfinite(x.grad).all(), name


def _value_and_grads(fn, inputs, state=None, seed=5):
    """fn's output and the gradients of every input (and of the state's fields) for one
    seeded upstream gradient on the output and, with a state, on the final state."""
    leaves = {n: x.clone().requires_grad_() for n, x in inputs.items()}
    state = None if state is None else MLSTMState(*(x.clone().requires_grad_() for x in state))
    result = fn(leaves, state)
    out, final = (result, ()) if isinstance(result, torch.Tensor) else (result.output, result.final_state)
    generator = torch.Generator().manual_seed(seed)
    loss = sum((y * torch.randn(y.shape, generator=generator, dtype=y.dtype)).sum() for y in (out, *final))
    wrt = [*leaves.values(), *(state or ())]
    return out.detach(), torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("with_state", STATES)
@pytest.mark.parametrize("input_gate", GATES)
def test_held_normaliser_gradient_same_value_forms_agree(input_gate, with_state):
    # normaliser_gradient="held": the output and final state are the exact ones; the
    # three forms give one gradient; without a state it is the direct formula's with n
    # and m detached; dv is the exact one, dq is not.
    inputs = mlstm_inputs(2, 65, 2, 16, 12)
    state = random_state(2, 2, 16, 12, input_gate) if with_state else None

    def form_fn(form, gradient):
        return lambda x, s: run(x, input_gate=input_gate, initial_state=s, form=form, chunk_size=16,
                                normaliser_gradient=gradient)

    exact_value, exact = _value_and_grads(form_fn("chunk", "exact"), inputs, state)
    results = {form: _value_and_grads(form_fn(form, "held"), inputs, state) for form in FORMS}
    for form, (value, grads) in results.items():
        assert close(value, exact_value), form
        for got, want in zip(grads, results["chunk"][1]):
            assert close(got, want, 1e-9), form
    held = results["chunk"][1]
    assert close(held[2], exact[2], 1e-9)  # dv
    assert max_error(held[0], exact[0]) > 1e-3 * exact[0].abs().max()  # dq differs
    if not with_state:
        _, direct = _value_and_grads(lambda x, s: direct_parallel(**x, input_gate=input_gate, held=True)[0], inputs)
        no_state = _value_and_grads(lambda x, s: mlstm(**x, input_gate=input_gate, normaliser_gradient="held",
                                                       chunk_size=16).output, inputs)[1]
        for got, want in zip(no_state, direct):
            assert close(got, want, 1e-9)


def test_bad_normaliser_gradient_is_a_clear_error():
    with pytest.raises(ValueError, match="normaliser_gradient"):
        mlstm(**mlstm_inputs(1, 4, 1, 8, 8), normaliser_gradient="detached")
