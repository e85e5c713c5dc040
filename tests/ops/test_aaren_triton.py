"""aaren on Triton kernels, run on the CPU through Triton's interpreter (the conftest sets
TRITON_INTERPRET=1 where there is no GPU) at small shapes: outputs, final triples and the
gradients of q, k, v and of the initial triple against the float64 reference, varlen,
state hand-off, extreme scores and the kernels' limits.

Float32 inputs are compared with the float64 reference at float32 noise, relative to
the size of what is compared; bf16 at real sizes is checked on the GPU by
scripts/device_mlstm_check.py.
"""
import pytest
import torch

import attnforms as af
from attnforms.ops.aaren.triton import launch
from attnforms.testing import aaren_inputs, max_error, noise_relative_check

FLOAT32_NOISE = 2e-5
SHAPES = [(1, 16, 16), (63, 60, 20), (65, 16, 100), (200, 32, 8)]


@pytest.fixture(autouse=True)
def small_scan_blocks(monkeypatch):
    """Two chunk triples per step of the scans over chunks: several steps, so the carry
    between them is tested, at the few chunks these lengths have (and the interpreter's
    scan, element by element in Python, stays fast). `test_default_scan_block` runs the
    GPU's block."""
    monkeypatch.setattr(launch, "SCAN_BC", 2)


def _close(actual, expected):
    return max_error(actual, expected) < FLOAT32_NOISE * (expected.abs().max().item() + 1)


def _state(N, H, V, seed=3, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    parts = (torch.randn(N, H, generator=generator), torch.rand(N, H, generator=generator) + 1,
             torch.randn(N, H, V, generator=generator))
    return af.AarenState(*(x.requires_grad_(requires_grad) for x in parts))


def _double(inputs, state):
    return ({n: x.double() for n, x in inputs.items()},
            None if state is None else af.AarenState(*(x.double() for x in state)))


def _run(inputs, state, impl, **kwargs):
    return af.aaren(**inputs, initial_state=state, output_final_state=True, impl=impl, **kwargs)


def _assert_forward(result, golden):
    assert _close(result.output, golden.output)
    for name, actual, expected in zip("muw", result.final_state, golden.final_state):
        assert actual.dtype == torch.float32, name
        assert _close(actual, expected), name


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("initial", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("T,K,V", SHAPES, ids=lambda x: str(x))
def test_forward_matches_reference(form, initial, T, K, V):
    inputs = aaren_inputs(2, T, 2, K, V, dtype=torch.float32)
    state = _state(2, 2, V) if initial else None
    golden = _run(*_double(inputs, state), "reference", form="chunk")
    result = _run(inputs, state, "triton", form=form)
    assert result.output.dtype == torch.float32
    _assert_forward(result, golden)


def _gradients(inputs, state, impl, **kwargs):
    """Gradients of q, k, v and the initial triple under fixed random upstream gradients
    of the output and of every part of the final triple."""
    generator = torch.Generator().manual_seed(5)
    result = _run(inputs, state, impl, **kwargs)
    loss = 0
    for x in (result.output, *result.final_state):
        loss = loss + (x * torch.randn(x.shape, generator=generator).to(x.dtype)).sum()
    tensors = [*inputs.values(), *(state or ())]
    names = list(inputs) + (["m", "u", "w"] if state is not None else [])
    return dict(zip(names, torch.autograd.grad(loss, tensors)))


def _assert_gradients(inputs, state, **kwargs):
    shared = {n: x for n, x in kwargs.items() if n == "cu_seqlens"}
    expected = _gradients(*_double(inputs, state), "reference", form="chunk", **shared)
    actual = _gradients(inputs, state, "triton", **kwargs)
    for name, grad in actual.items():
        assert _close(grad, expected[name]), (name, max_error(grad, expected[name]))


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("initial", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("T,K,V", SHAPES, ids=lambda x: str(x))
def test_backward_matches_reference(form, initial, T, K, V):
    inputs = aaren_inputs(2, T, 2, K, V, dtype=torch.float32, requires_grad=True)
    state = _state(2, 2, V, requires_grad=True) if initial else None
    _assert_gradients(inputs, state, form=form)


def test_max_held_by_the_initial_state_gets_its_gradient():
    inputs = aaren_inputs(1, 40, 2, 16, 8, dtype=torch.float32, requires_grad=True)
    state = _state(1, 2, 8)
    state = af.AarenState(*(x.detach().clone() for x in state))
    state.m.fill_(50.0)
    _assert_gradients(inputs, af.AarenState(*(x.requires_grad_() for x in state)), form="chunk")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_varlen_matches_reference(form):
    offsets = torch.tensor([0, 7, 70, 71, 150])
    inputs = aaren_inputs(1, 150, 2, 16, 16, dtype=torch.float32, requires_grad=True)
    inputs["q"] = aaren_inputs(4, 1, 2, 16, 16, dtype=torch.float32, seed=1, requires_grad=True)["q"]
    state = _state(4, 2, 16, requires_grad=True)
    golden = _run(*_double(inputs, state), "reference", form="chunk", cu_seqlens=offsets)
    _assert_forward(_run(inputs, state, "triton", form=form, cu_seqlens=offsets), golden)
    _assert_gradients(inputs, state, form=form, cu_seqlens=offsets)


def test_state_hand_off_from_chunk_kernel_to_recurrent_kernel():
    inputs = aaren_inputs(1, 90, 2, 16, 16, dtype=torch.float32)
    whole = _run(*_double(inputs, None), "reference", form="chunk")
    head = dict(q=inputs["q"], k=inputs["k"][:, :70], v=inputs["v"][:, :70])
    tail = dict(q=inputs["q"], k=inputs["k"][:, 70:], v=inputs["v"][:, 70:])
    first = _run(head, None, "triton", form="chunk")
    rest = _run(tail, first.final_state, "triton", form="recurrent")
    assert _close(torch.cat([first.output, rest.output], dim=1), whole.output)
    for actual, expected in zip(rest.final_state, whole.final_state):
        assert _close(actual, expected)


def test_extreme_scores_stay_finite_and_right():
    inputs = aaren_inputs(1, 100, 2, 16, 16, dtype=torch.float32)
    inputs["k"] = inputs["k"] * torch.linspace(-300, 300, 100)[None, :, None, None]
    golden = _run(*_double(inputs, None), "reference", form="chunk")
    for form in ("chunk", "recurrent"):
        result = _run(inputs, None, "triton", form=form)
        assert torch.isfinite(result.output).all()
        # Scores of a few hundred: float32 resolves their differences to ~ulp(300).
        assert max_error(result.output, golden.output) < 1e-3 * (golden.output.abs().max().item() + 1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_within_reference_noise(dtype):
    inputs = aaren_inputs(2, 130, 2, 32, 32, dtype=torch.float32)
    golden = _run(*_double(inputs, None), "reference", form="chunk")
    low = {n: x.to(dtype) for n, x in inputs.items()}
    eager = _run(low, None, "reference", form="chunk")
    for form in ("chunk", "recurrent"):
        result = _run(low, None, "triton", form=form)
        assert result.output.dtype == dtype
        check = noise_relative_check(result.output, golden.output, eager.output, atol=1e-5, rounding=dtype)
        assert check.passed, (form, check)


@pytest.mark.parametrize("bad,message", [
    (dict(dtype=torch.float64), "q: impl='triton' takes float16, bfloat16 or float32"),
    (dict(K=300), "head dims K, V <= 256"),
])
def test_kernel_limits_are_clear_errors(bad, message):
    inputs = aaren_inputs(1, 8, 2, bad.pop("K", 16), 16, dtype=bad.pop("dtype", torch.float32))
    with pytest.raises((TypeError, ValueError), match=message):
        af.aaren(**inputs, impl="triton", form="chunk")


# The scan over chunks: its carries between chunks and between steps of the scans
# (two chunks a step here), in both directions.

def test_varlen_of_several_chunks_each():
    # Lengths 1, 63, 65, 200, 130, 64: one-token, partial, several-chunk sequences side by
    # side, none a multiple of the chunk but one; the initial triple's gradient included.
    offsets = torch.tensor([0, 1, 64, 129, 329, 459, 523])
    N = len(offsets) - 1
    inputs = aaren_inputs(1, 523, 2, 16, 24, dtype=torch.float32, requires_grad=True)
    inputs["q"] = aaren_inputs(N, 1, 2, 16, 24, dtype=torch.float32, seed=1, requires_grad=True)["q"]
    state = _state(N, 2, 24, requires_grad=True)
    golden = _run(*_double(inputs, state), "reference", form="chunk", cu_seqlens=offsets)
    _assert_forward(_run(inputs, state, "triton", form="chunk", cu_seqlens=offsets), golden)
    _assert_gradients(inputs, state, form="chunk", cu_seqlens=offsets)


def test_default_scan_block_over_more_chunks_than_it_holds(monkeypatch):
    # The GPU's block of chunk triples per scan step, with 66 chunks: two steps.
    monkeypatch.setattr(launch, "SCAN_BC", 64)
    inputs = aaren_inputs(1, 64 * 65 + 3, 1, 16, 16, dtype=torch.float32, requires_grad=True)
    state = _state(1, 1, 16, requires_grad=True)
    golden = _run(*_double(inputs, state), "reference", form="chunk")
    _assert_forward(_run(inputs, state, "triton", form="chunk"), golden)
    _assert_gradients(inputs, state, form="chunk")


def test_empty_initial_state_equals_none_over_chunks():
    inputs = aaren_inputs(2, 200, 2, 16, 16, dtype=torch.float32, requires_grad=True)
    empty = af.AarenState(torch.full((2, 2), float("-inf")), torch.zeros(2, 2), torch.zeros(2, 2, 16))
    without = _gradients(inputs, None, "triton", form="chunk")
    grads = _gradients(inputs, af.AarenState(*(x.requires_grad_() for x in empty)), "triton", form="chunk")
    for name in "qkv":
        assert torch.equal(grads[name], without[name]), name
    # Nothing of the sequence flows back through an empty state's sums (e^{-inf} = 0).
    assert torch.equal(grads["w"], torch.zeros_like(empty.w))
    assert torch.isfinite(grads["u"]).all()


def _scores_shaped(inputs, ramp, offset):
    """k moved so that every score s_t = scale·q·k_t is ramp[t]·(its own value) + offset:
    scores spread over thousands and far from 0, across chunks."""
    q, k = inputs["q"].detach(), inputs["k"].detach()
    scale = q.shape[-1] ** -0.5
    along_q = (offset / (scale * (q * q).sum(-1)))[:, None, :, None] * q[:, None]
    return dict(inputs, k=(k * ramp[None, :, None, None] + along_q).requires_grad_())


@pytest.mark.parametrize("ramp,offset", [
    ("up", 0.0), ("down", 0.0), ("flat", -1e4), ("up", 1e4),
])
def test_extreme_score_ranges_over_chunks(ramp, offset):
    # Growing scores make every chunk's max overtake the carried one (the carried triple
    # underflows to 0); falling scores make the later chunks underflow against it; an
    # offset of ±1e4 on every score overflows any unshifted exponential.
    T = 260
    ramps = dict(up=torch.linspace(-40, 40, T), down=torch.linspace(40, -40, T), flat=torch.ones(T))
    inputs = _scores_shaped(aaren_inputs(2, T, 2, 16, 16, dtype=torch.float32, requires_grad=True),
                            ramps[ramp], offset)
    state = _state(2, 2, 16, requires_grad=True)
    state.m.data += offset
    expected = _gradients(*_double(inputs, state), "reference", form="chunk")
    actual = _gradients(inputs, state, "triton", form="chunk")
    golden = _run(*_double(inputs, state), "reference", form="chunk")
    result = _run(inputs, state, "triton", form="chunk")
    # Scores of size |s|: float32 resolves them to ~|s|·6e-8, which moves the weights.
    tolerance = 1e-6 * (abs(offset) + 300)
    for actual_x, expected_x in [(result.output, golden.output), *zip(result.final_state, golden.final_state),
                                 *((actual[n], expected[n]) for n in actual)]:
        assert torch.isfinite(actual_x).all()
        assert max_error(actual_x, expected_x) < tolerance * (expected_x.abs().max().item() + 1)
