"""gated_delta_rule on Triton kernels, run on the CPU through Triton's interpreter (the
conftest sets TRITON_INTERPRET=1 where there is no GPU) at small shapes: forward outputs
and final states, and the chunk form's gradients of every input and the initial state,
against the float64 reference, for every switch combination, varlen and state hand-off,
and the dispatch rules around the kernels.

The interpreter computes in the inputs' precision on the CPU, so float32 inputs are
compared with the float64 reference at float32 noise; bf16 accuracy on the GPU is
checked by the benchmark's correctness gate.
"""
import pytest
import torch

import attnforms as af
from attnforms.testing import gated_delta_inputs, max_error

SWITCHES = [
    pytest.param(gate, beta, id=f"g_{gate}-{'beta' if beta else 'nobeta'}")
    for gate in ("none", "scalar", "channel")
    for beta in (False, True)
]
FLOAT32_NOISE = 2e-5


def _reference(inputs, initial_state, **kwargs):
    doubled = {n: None if x is None else x.double() for n, x in inputs.items()}
    state = None if initial_state is None else af.LinearState(initial_state.S.double())
    return af.gated_delta_rule(**doubled, initial_state=state, output_final_state=True,
                               impl="reference", form="chunk", **kwargs)


def _state(N, H, K, V, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return af.LinearState(torch.randn(N, H, K, V, generator=generator) * 0.5)


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("form,chunk_size", [("chunk", 16), ("chunk", 32), ("chunk", 64), ("recurrent", None)])
@pytest.mark.parametrize("T,K,V", [(1, 16, 16), (63, 60, 20), (65, 16, 100)], ids=lambda x: str(x))
def test_forward_matches_reference(gate, beta, form, chunk_size, T, K, V):
    inputs = gated_delta_inputs(2, T, 2, K, V, gate=gate, beta=beta, dtype=torch.float32)
    state = _state(2, 2, K, V)
    golden = _reference(inputs, state)
    result = af.gated_delta_rule(**inputs, initial_state=state, output_final_state=True,
                                 impl="triton", form=form, chunk_size=chunk_size)
    assert result.output.dtype == torch.float32 and result.final_state.S.dtype == torch.float32
    assert max_error(result.output, golden.output) < FLOAT32_NOISE
    assert max_error(result.final_state.S, golden.final_state.S) < FLOAT32_NOISE


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_varlen_is_native_and_matches_reference(gate, beta, form):
    offsets = torch.tensor([0, 7, 40, 41, 90])
    inputs = gated_delta_inputs(1, 90, 2, 16, 16, gate=gate, beta=beta, dtype=torch.float32)
    state = _state(4, 2, 16, 16)
    golden = _reference(inputs, state, cu_seqlens=offsets)
    result = af.gated_delta_rule(**inputs, initial_state=state, output_final_state=True,
                                 impl="triton", form=form, chunk_size=16, cu_seqlens=offsets)
    assert max_error(result.output, golden.output) < FLOAT32_NOISE
    assert max_error(result.final_state.S, golden.final_state.S) < FLOAT32_NOISE


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("save", [False, True], ids=["no_grad", "grad"])
def test_split_forward_matches_reference(gate, beta, save, monkeypatch):
    """The split forward (a state-only sequential pass, then the output in parallel over
    chunks), which a GPU takes for few sequences·heads, on packed sequences of odd
    lengths, with and without a backward's intermediates."""
    from attnforms.ops.gated_delta.triton import launch
    monkeypatch.setattr(launch, "FORWARD_SPLIT", "always")
    offsets = torch.tensor([0, 7, 40, 41, 90])
    inputs = gated_delta_inputs(1, 90, 2, 60, 20, gate=gate, beta=beta, dtype=torch.float32)
    state = _state(4, 2, 60, 20)
    golden = _reference(inputs, state, cu_seqlens=offsets, chunk_size=32)
    with torch.set_grad_enabled(save):
        inputs["q"].requires_grad_(save)
        result = af.gated_delta_rule(**inputs, initial_state=state, output_final_state=True,
                                     impl="triton", form="chunk", chunk_size=32, cu_seqlens=offsets)
    assert max_error(result.output, golden.output) < FLOAT32_NOISE
    assert max_error(result.final_state.S, golden.final_state.S) < FLOAT32_NOISE


def test_state_hand_off_from_chunk_kernel_to_recurrent_kernel():
    inputs = gated_delta_inputs(1, 50, 2, 16, 16, gate="channel", beta=True, dtype=torch.float32)
    whole = _reference(inputs, None)
    first = af.gated_delta_rule(**{n: x[:, :33] for n, x in inputs.items()}, output_final_state=True,
                                impl="triton", form="chunk", chunk_size=16)
    rest = af.gated_delta_rule(**{n: x[:, 33:] for n, x in inputs.items()}, output_final_state=True,
                               initial_state=first.final_state, impl="triton", form="recurrent")
    assert max_error(torch.cat([first.output, rest.output], dim=1), whole.output) < FLOAT32_NOISE
    assert max_error(rest.final_state.S, whole.final_state.S) < FLOAT32_NOISE


# In-chunk cumulative log-decays reach |G| ~ 400 with -20 per step; float32 resolves
# differences of such numbers to about ulp(400) = 3e-5, which every chunked float32
# computation (the reference's too) inherits.
CUMSUM_FLOOR = 5e-5


def test_extreme_gates_stay_finite_and_right():
    inputs = gated_delta_inputs(1, 64, 2, 16, 16, gate="channel", beta=True, dtype=torch.float32)
    inputs["g"] = torch.where(torch.rand_like(inputs["g"]) < 0.3, -20.0, -1e-3)
    golden = _reference(inputs, None)
    for form in ("chunk", "recurrent"):
        eager = af.gated_delta_rule(**inputs, impl="reference", form=form, chunk_size=64)
        result = af.gated_delta_rule(**inputs, impl="triton", form=form, chunk_size=64)
        assert torch.isfinite(result.output).all()
        bound = 2 * max_error(eager.output, golden.output) + CUMSUM_FLOOR
        assert max_error(result.output, golden.output) < bound



def _decay_spans(g: torch.Tensor, spans: str) -> torch.Tensor:
    """Per-channel log-gates `[B, T, H, K]` whose span over a chunk of up to 64 steps
    is "strong" (30% of steps at -20: every key slice takes the tree), "mild" (about
    -0.57 per step: spans just under ONE_ANCHOR_SPAN = 40 at chunk 64, the one-anchor
    path with factors up to e^19), "medium" (about -2.4 per step: blocks of 16 steps
    within the limit, the tree's levels above them) or "mixed" (strong on the first 20
    steps only: some chunks take each path)."""
    strong = torch.where(torch.rand_like(g) < 0.3, torch.full_like(g, -20.0), g)
    mild = -0.6 * (0.9 + 0.1 * torch.rand_like(g))
    if spans == "strong":
        return strong
    if spans == "mild":
        return mild
    if spans == "medium":
        return 4 * mild
    return torch.cat([strong[:, :20], mild[:, 20:]], dim=1)


CHANNEL_PATHS = [(leaf, "strong", None) for leaf in (1, 4, 16)] + [
    (4, "mild", 40.0), (4, "mild", None), (4, "medium", 40.0), (1, "medium", 40.0), (4, "mixed", 40.0),
    (4, "strong", 40.0)]


@pytest.mark.parametrize("leaf,spans,one_anchor", CHANNEL_PATHS, ids=lambda x: str(x))
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_channel_preparation_against_float64_pairs(leaf, spans, one_anchor, chunk_size, monkeypatch):
    """The per-channel preparation's intermediates against float64 computed pair by pair
    from its own G: the scores (through the binary tree, every pair factorised with leaf
    1, leaves formed pairwise up to 16 steps; or through one anchor where the decay's
    span allows, ONE_ANCHOR_SPAN) and M (W, U: the forward tests), on a partial last
    chunk, K not a power of two, and log-gates of -20 per step (no factor may overflow)."""
    from attnforms.ops.gated_delta.triton import launch
    monkeypatch.setattr(launch, "CHANNEL_LEAF", leaf)
    monkeypatch.setattr(launch, "ONE_ANCHOR_SPAN", one_anchor)
    T, H, K, V, scale = 50, 2, 60, 20, 0.25
    inputs = gated_delta_inputs(1, T, H, K, V, gate="channel", beta=True, dtype=torch.float32)
    inputs["g"] = _decay_spans(inputs["g"], spans)
    q, k, v, beta = (inputs[n] for n in ("q", "k", "v", "beta"))
    _, _, saved = launch.chunk_forward(q, k, v, inputs["g"], beta, scale, None, False, None, chunk_size)
    q, k, v, beta, G = (x[0].double() for x in (q, k, v, beta, saved.G.view(1, T, H, K)))
    for c0 in range(0, T, chunk_size):
        n = min(chunk_size, T - c0)
        rows = slice(c0, c0 + n)
        for h in range(H):
            Gc = G[rows, h]
            decay = torch.exp((Gc[:, None, :] - Gc[None, :, :]).clamp(max=0))  # [r, s, K]
            qk = torch.einsum("rc,sc,rsc->rs", q[rows, h], k[rows, h], decay)
            kk = torch.einsum("rc,sc,rsc->rs", k[rows, h], k[rows, h], decay)
            Aqk = scale * torch.tril(qk)
            Akk = torch.tril(kk, -1)
            Mref = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + beta[rows, h, None] * Akk)
            got = lambda x: x[rows, h, :n].double()  # noqa: E731
            assert max_error(got(saved.Aqk), Aqk) < FLOAT32_NOISE * (Aqk.abs().max() + 1)
            assert max_error(got(saved.Akk), Akk) < FLOAT32_NOISE * (Akk.abs().max() + 1)
            assert max_error(got(saved.M), Mref) < FLOAT32_NOISE * (Mref.abs().max() + 1)
            assert (saved.Aqk[rows, h, n:] == 0).all() and (saved.M[rows, h, n:] == 0).all()


def _gradients(inputs, state, impl, **kwargs):
    """Gradients of every input and the initial state under fixed random upstream
    gradients of the output and the final state."""
    generator = torch.Generator().manual_seed(5)
    names = [n for n, x in inputs.items() if x is not None]
    result = af.gated_delta_rule(**inputs, initial_state=af.LinearState(state), output_final_state=True,
                                 impl=impl, form="chunk", **kwargs)
    d_out = torch.randn(result.output.shape, generator=generator)
    d_state = torch.randn(result.final_state.S.shape, generator=generator)
    loss = (result.output * d_out).sum() + (result.final_state.S * d_state).sum()
    return dict(zip(names + ["initial_state"], torch.autograd.grad(loss, [inputs[n] for n in names] + [state])))


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("T,K,V", [(1, 16, 16), (63, 60, 20), (65, 16, 100)], ids=lambda x: str(x))
def test_backward_matches_reference(gate, beta, chunk_size, T, K, V):
    inputs = gated_delta_inputs(2, T, 2, K, V, gate=gate, beta=beta, dtype=torch.float32, requires_grad=True)
    state = _state(2, 2, K, V).S.requires_grad_()
    expected = _gradients({n: None if x is None else x.double() for n, x in inputs.items()}, state.double(), "reference")
    actual = _gradients(inputs, state, "triton", chunk_size=chunk_size)
    for name, grad in actual.items():
        scale = expected[name].abs().max().item() + 1
        assert max_error(grad, expected[name]) < FLOAT32_NOISE * scale, name


def _check_channel_backward(beta, chunk_size, monkeypatch, spans="mixed", **settings):
    """The per-channel backward under the launch settings given, on packed sequences of
    odd lengths against float64: with spans "mixed", log-gates down to -20 per step on
    the first 8 of 40 channels (the first key slice takes the tree, the second one
    anchor), with "mild" or "medium" every slice as _decay_spans draws them."""
    from attnforms.ops.gated_delta.triton import launch
    for name, value in settings.items():
        monkeypatch.setattr(launch, name, value)
    offsets = torch.tensor([0, 7, 70, 71, 130])
    inputs = gated_delta_inputs(1, 130, 2, 40, 16, gate="channel", beta=beta, dtype=torch.float32)
    with torch.no_grad():
        if spans in ("mild", "medium"):
            inputs["g"] = _decay_spans(inputs["g"], spans)
        else:
            inputs["g"][..., :8] = -20 * torch.rand_like(inputs["g"][..., :8])
    for x in inputs.values():
        if x is not None:
            x.requires_grad_()
    state = _state(4, 2, 40, 16).S.requires_grad_()
    expected = _gradients({n: None if x is None else x.double() for n, x in inputs.items()}, state.double(),
                          "reference", cu_seqlens=offsets)
    actual = _gradients(inputs, state, "triton", chunk_size=chunk_size, cu_seqlens=offsets)
    for name, grad in actual.items():
        assert max_error(grad, expected[name]) < FLOAT32_NOISE * (expected[name].abs().max().item() + 1), name


@pytest.mark.parametrize("beta", [False, True], ids=["nobeta", "beta"])
@pytest.mark.parametrize("leaf", [1, 4, 16])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_channel_tree_backward_matches_reference(beta, leaf, chunk_size, monkeypatch):
    """The whole-chunk (tree) per-channel backward, the default, at every leaf size
    (1: no leaf steps; the chunk: no tree levels), its own and the preparation's, the
    tree taken on every key slice (ONE_ANCHOR_SPAN None)."""
    _check_channel_backward(beta, chunk_size, monkeypatch, CHANNEL_BACKWARD="tree", CHANNEL_LEAF=leaf,
                            CHANNEL_BWD_TREE_LEAF=leaf, ONE_ANCHOR_SPAN=None)


@pytest.mark.parametrize("beta", [False, True], ids=["nobeta", "beta"])
@pytest.mark.parametrize("spans", ["mild", "medium", "mixed"])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_channel_one_anchor_backward_matches_reference(beta, spans, chunk_size, monkeypatch):
    """The per-channel backward's in-chunk products through block anchors (the default
    ONE_ANCHOR_SPAN): one for the whole chunk on every key slice ("mild": spans up to
    38, factors up to e^19), one per 16 steps below the tree's top levels ("medium"),
    or beside the whole tree ("mixed")."""
    _check_channel_backward(beta, chunk_size, monkeypatch, spans=spans, CHANNEL_BACKWARD="tree")


@pytest.mark.parametrize("adjacent", [False, True], ids=["slices_apart", "slices_adjacent"])
@pytest.mark.parametrize("beta", [False, True], ids=["nobeta", "beta"])
def test_channel_tree_backward_in_either_slice_layout(beta, adjacent, monkeypatch):
    """CHANNEL_BWD_TREE_SLICES_ADJACENT: the tree kernel on grid (chunks·slices, H) or
    (chunks, H, slices), here K 40 in two key slices of 32, the second partial."""
    _check_channel_backward(beta, 16, monkeypatch, CHANNEL_BACKWARD="tree",
                            CHANNEL_BWD_TREE_SLICES_ADJACENT=adjacent)


@pytest.mark.parametrize("beta", [False, True], ids=["nobeta", "beta"])
def test_channel_block_backward_matches_reference(beta, monkeypatch):
    """The 16-step block per-channel backward (CHANNEL_BACKWARD="blocks"), kept as the
    alternative to the tree kernel."""
    _check_channel_backward(beta, 64, monkeypatch, CHANNEL_BACKWARD="blocks")


@pytest.mark.parametrize("gate,beta", SWITCHES)
def test_backward_varlen_matches_reference(gate, beta):
    offsets = torch.tensor([0, 7, 40, 41, 90])
    inputs = gated_delta_inputs(1, 90, 2, 16, 16, gate=gate, beta=beta, dtype=torch.float32, requires_grad=True)
    state = _state(4, 2, 16, 16).S.requires_grad_()
    expected = _gradients(inputs, state, "reference", cu_seqlens=offsets)
    actual = _gradients(inputs, state, "triton", chunk_size=16, cu_seqlens=offsets)
    for name, grad in actual.items():
        assert max_error(grad, expected[name]) < FLOAT32_NOISE * (expected[name].abs().max().item() + 1), name


@pytest.mark.parametrize("gate,beta", SWITCHES)
def test_recurrent_form_backward_matches_reference(gate, beta):
    inputs = gated_delta_inputs(2, 37, 2, 16, 20, gate=gate, beta=beta, dtype=torch.float32, requires_grad=True)
    state = _state(2, 2, 16, 20).S.requires_grad_()
    names = [n for n, x in inputs.items() if x is not None]

    def gradients(impl):
        result = af.gated_delta_rule(**inputs, initial_state=af.LinearState(state), output_final_state=True,
                                     impl=impl, form="recurrent")
        generator = torch.Generator().manual_seed(5)
        loss = (result.output * torch.randn(result.output.shape, generator=generator)).sum()
        loss = loss + (result.final_state.S * torch.randn(result.final_state.S.shape, generator=generator)).sum()
        return torch.autograd.grad(loss, [inputs[n] for n in names] + [state])

    for name, actual, expected in zip(names + ["initial_state"], gradients("triton"), gradients("reference")):
        assert max_error(actual, expected) < FLOAT32_NOISE * (expected.abs().max().item() + 1), name


@pytest.mark.parametrize("bad,message", [
    (dict(chunk_size=48), "chunk_size: impl='triton' takes one of"),
    (dict(dtype=torch.float64), "q: impl='triton' takes float16, bfloat16 or float32"),
])
def test_kernel_limits_are_clear_errors(bad, message):
    inputs = gated_delta_inputs(1, 8, 2, 16, 16, dtype=bad.pop("dtype", torch.float32))
    with pytest.raises((TypeError, ValueError), match=message):
        af.gated_delta_rule(**inputs, impl="triton", form="chunk", **bad)


@pytest.mark.parametrize("gate,beta", SWITCHES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_within_reference_noise(gate, beta, dtype):
    from attnforms.testing import noise_relative_check

    inputs = gated_delta_inputs(2, 65, 2, 32, 32, gate=gate, beta=beta, dtype=torch.float32)
    golden = _reference(inputs, None)
    low = {n: None if x is None else x.to(dtype) for n, x in inputs.items()}
    eager = af.gated_delta_rule(**low, impl="reference", form="chunk")
    for form in ("chunk", "recurrent"):
        result = af.gated_delta_rule(**low, impl="triton", form=form)
        assert result.output.dtype == dtype
        # Both round float32 values to `dtype` at the end: one ulp per element on top.
        check = noise_relative_check(result.output, golden.output, eager.output, atol=1e-5, rounding=dtype)
        assert check.passed, (form, check)


def test_in_place_decoding_updates_the_callers_state():
    from attnforms.ops.gated_delta import gated_delta_rule_update_

    inputs = gated_delta_inputs(2, 5, 2, 16, 16, gate="channel", beta=True, dtype=torch.float32)
    state = _state(2, 2, 16, 16)
    cache = af.LinearState(state.S.clone())
    storage = cache.S.data_ptr()
    expected = _reference(inputs, state)
    outputs = [gated_delta_rule_update_(*(inputs[n][:, t : t + 1] for n in "qkv"), cache,
                                        g=inputs["g"][:, t : t + 1], beta=inputs["beta"][:, t : t + 1])
               for t in range(5)]
    assert cache.S.data_ptr() == storage
    assert max_error(torch.cat(outputs, dim=1), expected.output) < FLOAT32_NOISE
    assert max_error(cache.S, expected.final_state.S) < FLOAT32_NOISE
    with pytest.raises(TypeError, match="state.S: expected a contiguous float32"):
        gated_delta_rule_update_(inputs["q"], inputs["k"], inputs["v"], af.LinearState(state.S.double()),
                                 g=inputs["g"], beta=inputs["beta"])


@pytest.mark.parametrize("gate", ["scalar", "channel"])
def test_recurrent_kernel_turns_a_positive_gate_into_nan(gate):
    """On CUDA the decode path leaves the log-gate check to the kernel (no device sync): a
    positive gate of one head poisons that head's output from that step on and its
    state; the other head is computed as usual."""
    from attnforms.ops.gated_delta.triton.launch import recurrent_forward

    inputs = gated_delta_inputs(1, 4, 2, 16, 16, gate=gate, beta=True, dtype=torch.float32)
    g = inputs["g"].clone()
    g[0, 2, 1] = 0.5  # head 1, step 2 (every channel with a per-channel gate)
    o, final = recurrent_forward(inputs["q"], inputs["k"], inputs["v"], g, inputs["beta"], 0.25,
                                 None, True, None)
    assert torch.isnan(o[0, 2:, 1]).all() and torch.isnan(final[0, 1]).all()
    assert torch.isfinite(o[0, :2]).all() and torch.isfinite(o[0, :, 0]).all()
    expected = af.gated_delta_rule(**{**inputs, "q": inputs["q"][:, :, :1], "k": inputs["k"][:, :, :1],
                                      "v": inputs["v"][:, :, :1], "g": g[:, :, :1], "beta": inputs["beta"][:, :, :1]},
                                   scale=0.25, form="recurrent", impl="reference")
    assert max_error(o[:, :, :1], expected.output) < FLOAT32_NOISE


@pytest.mark.parametrize("gate", ["scalar", "channel"])
def test_chunk_kernels_turn_a_positive_gate_into_nan(gate):
    """CUDA inputs skip the host's log-gate check (a device sync per call); the chunk
    kernels poison that head from the chunk holding a positive gate on with NaN (in-chunk
    products mix its rows), and leave the chunks before it and the other heads exact."""
    from attnforms.ops.gated_delta.triton.launch import chunk_forward

    inputs = gated_delta_inputs(1, 40, 2, 16, 16, gate=gate, beta=True, dtype=torch.float32)
    g = inputs["g"].clone()
    g[0, 20, 1] = 0.5  # head 1, step 20
    o, final, _ = chunk_forward(inputs["q"], inputs["k"], inputs["v"], g, inputs["beta"], 0.25,
                                None, True, None, 16, save=False)
    assert torch.isnan(o[0, 20:, 1]).all() and torch.isnan(final[0, 1]).all()
    assert torch.isfinite(o[0, :16]).all() and torch.isfinite(o[0, :, 0]).all()
    expected = af.gated_delta_rule(**inputs, scale=0.25, form="recurrent", impl="reference")
    assert max_error(o[0, :16], expected.output[0, :16]) < FLOAT32_NOISE
    assert max_error(o[0, :, 0], expected.output[0, :, 0]) < FLOAT32_NOISE
