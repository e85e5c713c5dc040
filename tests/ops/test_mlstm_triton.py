"""mlstm on Triton kernels, run on the CPU through Triton's interpreter (the conftest sets
TRITON_INTERPRET=1 where there is no GPU) at small shapes: outputs, final states and the
gradients of every input and of the initial state against the float64 reference, for
both input gates, several level-1 chunks (so the level-2 tiles inside a chunk are
exercised), varlen, state hand-off and the kernels' limits.

The interpreter computes in the inputs' precision on the CPU, so float32 inputs are
compared with the float64 reference at float32 noise, relative to the size of what is
compared; bf16 accuracy at real sizes is checked on the GPU by
scripts/device_mlstm_check.py.
"""
import pytest
import torch

import attnforms as af
from attnforms.kernels import occupancy
from attnforms.ops.mlstm.triton import launch
from attnforms.testing import max_error, mlstm_inputs, noise_relative_check

FLOAT32_NOISE = 2e-5
SHAPES = [(1, 16, 16), (63, 60, 20), (65, 16, 100)]


# The forward (launch.EXP_FORWARD, launch.SIGMOID_FORWARD): the current kernels, and the
# restructured ones fused (outputs from the sequential pass; chunks up to one token tile)
# and split (state pass, then the tiled output pass; the sigmoid gate with SIGMOID_SPLIT).
# The tests over both gates run each gate under each (GATE_FORWARDS); the others under
# the current kernels.
EXP_FORWARDS = {"current": ("current", "auto"), "fused": ("restructured", "never"),
                "split": ("restructured", "always")}
GATE_FORWARDS = [(gate, name) for gate in ("exp", "sigmoid") for name in EXP_FORWARDS]


@pytest.fixture(autouse=True)
def exp_forward(request, monkeypatch):
    name = getattr(request, "param", "current")
    forward, split = EXP_FORWARDS[name]
    monkeypatch.setattr(launch, "EXP_FORWARD", forward)
    monkeypatch.setattr(launch, "SIGMOID_FORWARD", forward)
    monkeypatch.setattr(launch, "SIGMOID_SPLIT", name == "split")
    monkeypatch.setattr(launch, "EXP_SPLIT", split)
    return name


def gates_and_forwards():
    """Parametrize a test over (gate, exp forward)."""
    return pytest.mark.parametrize("gate,exp_forward", GATE_FORWARDS, indirect=["exp_forward"])


def _close(actual, expected):
    return max_error(actual, expected) < FLOAT32_NOISE * (expected.abs().max().item() + 1)


def _state(N, H, K, V, gate, seed=3, requires_grad=False):
    """An entering state with m nonzero for either gate (the sigmoid gate folds exp(m)
    into its first step, as the reference does)."""
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(N, H, generator=generator)
    parts = (torch.randn(N, H, K, V, generator=generator) * 0.3, torch.randn(N, H, K, generator=generator) * 0.3, m)
    return af.MLSTMState(*(x.requires_grad_(requires_grad) for x in parts))


def _double(inputs, state):
    return ({n: x.double() for n, x in inputs.items()},
            None if state is None else af.MLSTMState(*(x.double() for x in state)))


def _run(inputs, state, impl, gate, **kwargs):
    return af.mlstm(**inputs, input_gate=gate, initial_state=state, output_final_state=True,
                    impl=impl, **kwargs)


def _assert_forward(result, golden):
    assert _close(result.output, golden.output)
    for name, actual, expected in zip("Cnm", result.final_state, golden.final_state):
        assert actual.dtype == torch.float32, name
        assert _close(actual, expected), name


@gates_and_forwards()
@pytest.mark.parametrize("form,chunk_size", [("chunk", 16), ("chunk", 32), ("chunk", 128), ("recurrent", None)])
@pytest.mark.parametrize("T,K,V", SHAPES, ids=lambda x: str(x))
def test_forward_matches_reference(gate, form, chunk_size, T, K, V):
    inputs = mlstm_inputs(2, T, 2, K, V, dtype=torch.float32)
    state = _state(2, 2, K, V, gate)
    golden = _run(*_double(inputs, state), "reference", gate, form="chunk")
    result = _run(inputs, state, "triton", gate, form=form, chunk_size=chunk_size)
    assert result.output.dtype == torch.float32
    _assert_forward(result, golden)


@gates_and_forwards()
def test_forward_without_initial_state_and_default_chunk(gate):
    inputs = mlstm_inputs(1, 200, 2, 32, 32, dtype=torch.float32)
    golden = _run(*_double(inputs, None), "reference", gate, form="chunk")
    _assert_forward(_run(inputs, None, "triton", gate, form="chunk"), golden)


def _gradients(inputs, state, impl, gate, **kwargs):
    """Gradients of every input and the initial state under fixed random upstream
    gradients of the output and of every part of the final state."""
    generator = torch.Generator().manual_seed(5)
    result = _run(inputs, state, impl, gate, **kwargs)
    loss = 0
    for x in (result.output, *result.final_state):
        loss = loss + (x * torch.randn(x.shape, generator=generator).to(x.dtype)).sum()
    names = list(inputs) + ["C", "n", "m"]
    return dict(zip(names, torch.autograd.grad(loss, [*inputs.values(), *state])))


def _assert_gradients(inputs, state, gate, **kwargs):
    shared = {n: x for n, x in kwargs.items() if n == "cu_seqlens"}
    expected = _gradients(*_double(inputs, state), "reference", gate, form="chunk", **shared)
    actual = _gradients(inputs, state, "triton", gate, **kwargs)
    for name, grad in actual.items():
        assert grad.dtype == torch.float32, name
        assert _close(grad, expected[name]), (name, max_error(grad, expected[name]))


@gates_and_forwards()
@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("T,K,V", SHAPES, ids=lambda x: str(x))
def test_backward_matches_reference(gate, chunk_size, T, K, V):
    inputs = mlstm_inputs(2, T, 2, K, V, dtype=torch.float32, requires_grad=True)
    _assert_gradients(inputs, _state(2, 2, K, V, gate, requires_grad=True), gate, form="chunk",
                      chunk_size=chunk_size)


@pytest.mark.parametrize("gate", ["exp", "sigmoid"])
def test_backward_with_the_reverse_pass_value_tile_narrowed(monkeypatch, gate):
    """STATE_BWD_FILL: on a GPU of many multiprocessors the reverse pass runs `[K, 16]`
    slices (V 40: three of them, the last partial) and still gives every gradient."""
    monkeypatch.setattr(launch, "STATE_BWD_FILL", 1.0)
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 1000)
    backward_widths = []
    real = launch.narrowed_value_tile

    def spy(*args):
        width = real(*args)
        if len(args) == 5:  # the reverse pass's call passes its fill
            backward_widths.append(width)
        return width

    monkeypatch.setattr(launch, "narrowed_value_tile", spy)
    inputs = mlstm_inputs(2, 50, 2, 16, 40, dtype=torch.float32, requires_grad=True)
    _assert_gradients(inputs, _state(2, 2, 16, 40, gate, requires_grad=True), gate, form="chunk", chunk_size=16)
    assert backward_widths == [16]


@gates_and_forwards()
def test_recurrent_form_backward_matches_reference(gate):
    inputs = mlstm_inputs(2, 37, 2, 16, 20, dtype=torch.float32, requires_grad=True)
    _assert_gradients(inputs, _state(2, 2, 16, 20, gate, requires_grad=True), gate, form="recurrent")


@pytest.mark.parametrize("exp_forward", list(EXP_FORWARDS), indirect=True)
def test_backward_through_the_stabiliser_without_initial_state(exp_forward):
    # Large input gates make m large, so the floor's ε·e^m term (the only way the output
    # depends on m) carries a visible gradient through the max to i and f.
    inputs = mlstm_inputs(1, 70, 2, 16, 16, dtype=torch.float32)
    inputs["i"] = inputs["i"] * 4 + 6
    inputs = {n: x.requires_grad_() for n, x in inputs.items()}
    generator = torch.Generator().manual_seed(5)
    upstream = torch.randn(1, 70, 2, 16, generator=generator)

    def grads(x, impl):
        out = af.mlstm(**x, impl=impl, form="chunk", chunk_size=32 if impl == "triton" else 64).output
        return torch.autograd.grad((out * upstream.to(out.dtype)).sum(), [x["i"], x["f"]])

    reference = grads({n: x.double() for n, x in inputs.items()}, "reference")
    for actual, wanted in zip(grads(inputs, "triton"), reference):
        assert _close(actual, wanted)


@gates_and_forwards()
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_varlen_matches_reference(gate, form):
    offsets = torch.tensor([0, 7, 40, 41, 90])
    inputs = mlstm_inputs(1, 90, 2, 16, 16, dtype=torch.float32, requires_grad=True)
    state = _state(4, 2, 16, 16, gate, requires_grad=True)
    golden = _run(*_double(inputs, state), "reference", gate, form="chunk", cu_seqlens=offsets)
    _assert_forward(_run(inputs, state, "triton", gate, form=form, chunk_size=16, cu_seqlens=offsets), golden)
    if form == "chunk":
        _assert_gradients(inputs, state, gate, form="chunk", chunk_size=32, cu_seqlens=offsets)


@gates_and_forwards()
def test_state_hand_off_from_chunk_kernel_to_recurrent_kernel(gate):
    inputs = mlstm_inputs(1, 50, 2, 16, 16, dtype=torch.float32)
    whole = _run(*_double(inputs, None), "reference", gate, form="chunk")
    first = _run({n: x[:, :33] for n, x in inputs.items()}, None, "triton", gate, form="chunk", chunk_size=16)
    rest = _run({n: x[:, 33:] for n, x in inputs.items()}, first.final_state, "triton", gate, form="recurrent")
    assert _close(torch.cat([first.output, rest.output], dim=1), whole.output)
    for actual, expected in zip(rest.final_state, whole.final_state):
        assert _close(actual, expected)


@gates_and_forwards()
def test_extreme_gates_stay_finite_and_right(gate):
    inputs = mlstm_inputs(1, 64, 2, 16, 16, dtype=torch.float32)
    draw = torch.rand(inputs["i"].shape, generator=torch.Generator().manual_seed(1))
    inputs["i"] = torch.where(draw < 0.3, -1e4, torch.where(draw > 0.8, 30.0, inputs["i"]))
    inputs["f"] = torch.where(draw < 0.5, -30.0, 30.0)
    golden = _run(*_double(inputs, None), "reference", gate, form="chunk")
    for form in ("chunk", "recurrent"):
        result = _run(inputs, None, "triton", gate, form=form, chunk_size=32)
        assert torch.isfinite(result.output).all()
        _assert_forward(result, golden)


@gates_and_forwards()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_within_reference_noise(gate, dtype):
    inputs = mlstm_inputs(2, 65, 2, 32, 32, dtype=torch.float32)
    golden = _run(*_double(inputs, None), "reference", gate, form="chunk")
    low = {n: x.to(dtype) for n, x in inputs.items()}
    eager = _run(low, None, "reference", gate, form="chunk")
    for form in ("chunk", "recurrent"):
        result = _run(low, None, "triton", gate, form=form)
        assert result.output.dtype == dtype
        check = noise_relative_check(result.output, golden.output, eager.output, atol=1e-5, rounding=dtype)
        assert check.passed, (form, check)


@pytest.mark.parametrize("gate", ["exp", "sigmoid"])
@pytest.mark.parametrize("split", ["never", "always"])
@pytest.mark.parametrize("chunk_size", [16, 64, 128])
def test_restructured_forward_keeps_what_the_backward_reads(monkeypatch, gate, split, chunk_size):
    # Many chunks, packed sequences of odd lengths (one of a single token), an initial
    # state, extreme gates: the restructured forward's output, final state and every
    # saved intermediate match the current kernels' (the row stabilisers bit for bit:
    # the backward finds the stabiliser's restarts by m_r == li_r), with and without
    # `save`.
    offsets = (0, 5, 70, 71, 200)
    inputs = mlstm_inputs(1, 200, 2, 16, 20, dtype=torch.float32)
    draw = torch.rand(inputs["i"].shape, generator=torch.Generator().manual_seed(2))
    inputs["i"] = torch.where(draw < 0.1, -1e4, torch.where(draw > 0.9, 30.0, inputs["i"]))
    inputs["f"] = torch.where(draw < 0.2, -30.0, torch.where(draw > 0.8, 30.0, inputs["f"]))
    state = tuple(_state(4, 2, 16, 20, gate))
    args = (*inputs.values(), 16 ** -0.5, gate == "exp", state, True, offsets, chunk_size)
    o, final, saved = launch.chunk_forward(*args, out_dtype=torch.float32)
    monkeypatch.setattr(launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(launch, "SIGMOID_FORWARD", "restructured")
    monkeypatch.setattr(launch, "SIGMOID_SPLIT", True)
    monkeypatch.setattr(launch, "EXP_SPLIT", split)
    o_new, final_new, saved_new = launch.chunk_forward(*args, out_dtype=torch.float32)
    o_lean, final_lean, _ = launch.chunk_forward(*args, out_dtype=torch.float32, save=False)
    for actual in (o_new, o_lean):
        assert torch.isfinite(actual).all() and _close(actual, o)
    for new, lean, old in zip(final_new, final_lean, final):
        assert _close(new, old) and _close(lean, old)
    assert torch.equal(saved_new.m_row, saved.m_row)
    assert torch.equal(saved_new.chunk_m, saved.chunk_m)
    for name in ("b", "li"):
        assert torch.equal(getattr(saved_new, name), getattr(saved, name)), name
    for name in ("den_row", "states", "states_n"):
        assert _close(getattr(saved_new, name), getattr(saved, name)), name


@pytest.mark.parametrize("columns", [16, 64])
def test_fused_exp_forward_key_blocks(monkeypatch, columns):
    # The fused pass walks a chunk's keys FUSED_SCORE_COLUMNS at a time (the default 32
    # runs above): several blocks and one, with head dims the tiles cover exactly (no
    # column masks) and packed sequences whose chunks end early (clamped rows).
    offsets = (0, 37, 64, 150)
    inputs = mlstm_inputs(1, 150, 2, 32, 32, dtype=torch.float32)
    state = tuple(_state(3, 2, 32, 32, "exp"))
    args = (*inputs.values(), 32 ** -0.5, True, state, True, offsets, 64)
    o, final, saved = launch.chunk_forward(*args, out_dtype=torch.float32)
    monkeypatch.setattr(launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(launch, "EXP_SPLIT", "never")
    monkeypatch.setattr(launch, "FUSED_SCORE_COLUMNS", columns)
    o_new, final_new, saved_new = launch.chunk_forward(*args, out_dtype=torch.float32)
    assert torch.isfinite(o_new).all() and _close(o_new, o)
    for new, old in zip(final_new, final):
        assert _close(new, old)
    assert torch.equal(saved_new.m_row, saved.m_row)
    for name in ("den_row", "states", "states_n"):
        assert _close(getattr(saved_new, name), getattr(saved, name)), name


@pytest.mark.parametrize("bad,message", [
    (dict(chunk_size=48), "chunk_size: impl='triton' takes one of"),
    (dict(dtype=torch.float64), "q: impl='triton' takes float16, bfloat16 or float32"),
    (dict(K=300), "head dims K, V <= 256"),
])
def test_kernel_limits_are_clear_errors(bad, message):
    inputs = mlstm_inputs(1, 8, 2, bad.pop("K", 16), 16, dtype=bad.pop("dtype", torch.float32))
    with pytest.raises((TypeError, ValueError), match=message):
        af.mlstm(**inputs, impl="triton", form="chunk", **bad)


def test_default_chunk_is_the_launchers():
    assert launch.CHUNK in launch.CHUNK_SIZES
    tiles = launch.tiles(128, 128, launch.CHUNK)
    assert tiles.BT == launch.CHUNK and tiles.BT % tiles.BS == 0


def test_no_kernel_takes_the_sequence_length():
    # Sequences are addressed through cu_seqlens, so a new length never compiles anew:
    # no kernel argument is a length (the GPU check counts compiled variants too).
    import importlib

    names = ["mlstm.triton.chunk_fwd", "mlstm.triton.chunk_fwd_fused", "mlstm.triton.chunk_bwd",
             "mlstm.triton.recurrent_fwd",
             "aaren.triton.scan", "aaren.triton.scan_bwd", "aaren.triton.recurrent"]
    modules = [importlib.import_module(f"attnforms.ops.{name}") for name in names]
    kernels = [getattr(m, n) for m in modules for n in dir(m) if n.endswith("_kernel")]
    assert len(kernels) == 17
    for kernel in kernels:
        assert not {"T", "rows", "length", "seq_len"} & set(kernel.arg_names), kernel


@pytest.fixture
def sigmoid_via_gla(monkeypatch):
    """The sigmoid gate's chunk form on the gated delta rule's scalar-gate kernels."""
    monkeypatch.setattr(launch, "SIGMOID_VIA_GLA", True)


def _sigmoid_state(N, H, K, V):
    """An entering state with gradients, m nonzero (it scales the state by exp(m))."""
    return _state(N, H, K, V, "sigmoid", seed=4, requires_grad=True)


@pytest.mark.parametrize("T,K,V", SHAPES, ids=lambda x: str(x))
def test_sigmoid_via_gla_matches_reference(sigmoid_via_gla, T, K, V):
    inputs = mlstm_inputs(2, T, 2, K, V, dtype=torch.float32, requires_grad=True)
    state = _sigmoid_state(2, 2, K, V)
    golden = _run(*_double(inputs, state), "reference", "sigmoid", form="chunk")
    _assert_forward(_run(inputs, state, "triton", "sigmoid", form="chunk"), golden)
    _assert_gradients(inputs, state, "sigmoid", form="chunk")


def test_sigmoid_via_gla_varlen_and_extreme_gates(sigmoid_via_gla):
    offsets = torch.tensor([0, 7, 70, 71, 130])
    inputs = mlstm_inputs(1, 130, 2, 16, 16, dtype=torch.float32)
    draw = torch.rand(inputs["i"].shape, generator=torch.Generator().manual_seed(1))
    inputs["i"] = torch.where(draw < 0.3, -1e4, torch.where(draw > 0.8, 30.0, inputs["i"]))
    inputs["f"] = torch.where(draw < 0.5, -30.0, 30.0)
    inputs = {n: x.requires_grad_() for n, x in inputs.items()}
    state = _sigmoid_state(4, 2, 16, 16)
    golden = _run(*_double(inputs, state), "reference", "sigmoid", form="chunk", cu_seqlens=offsets)
    _assert_forward(_run(inputs, state, "triton", "sigmoid", form="chunk", cu_seqlens=offsets), golden)
    _assert_gradients(inputs, state, "sigmoid", form="chunk", cu_seqlens=offsets)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sigmoid_via_gla_half_precision_within_reference_noise(sigmoid_via_gla, dtype):
    inputs = mlstm_inputs(2, 65, 2, 32, 32, dtype=torch.float32)
    golden = _run(*_double(inputs, None), "reference", "sigmoid", form="chunk")
    low = {n: x.to(dtype) for n, x in inputs.items()}
    eager = _run(low, None, "reference", "sigmoid", form="chunk")
    result = _run(low, None, "triton", "sigmoid", form="chunk")
    assert result.output.dtype == dtype
    check = noise_relative_check(result.output, golden.output, eager.output, atol=1e-5, rounding=dtype)
    assert check.passed, check


@pytest.mark.parametrize("B, H, chunk_size, restructured", [
    (8, 16, 64, True),     # S1: 128 sequences·heads fill 132 multiprocessors: fused
    (1, 16, 64, False),    # S2: 16 would split: the current kernels instead
    (8, 16, 128, False),   # a chunk longer than one token tile would split
])
def test_split_current_runs_the_current_kernels_where_the_split_form_would(monkeypatch, B, H, chunk_size,
                                                                                restructured):
    monkeypatch.setattr(launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(launch, "EXP_SPLIT", "current")
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 132)
    q, v = torch.empty(B, 4, H, 128), torch.empty(B, 4, H, 128)
    split = launch._restructured_split(q, v, None, chunk_size, True)  # None: the current kernels
    assert (split is not None) is restructured
    assert split is (False if restructured else None)  # "current" never runs the split form
    monkeypatch.setattr(launch, "EXP_SPLIT", "auto")
    # "auto" always restructures, and splits exactly where "current" kept the old kernels
    assert launch._restructured_split(q, v, None, chunk_size, True) is (not restructured)


@pytest.mark.parametrize("B, chunk_size, fused", [(8, 64, True), (1, 64, False), (8, 128, False)])
def test_sigmoid_gate_splits_only_with_sigmoid_split(monkeypatch, B, chunk_size, fused):
    # Where the exp gate would split (few sequences·heads, chunks longer than a tile), the
    # sigmoid gate keeps the current kernels unless SIGMOID_SPLIT, and then splits
    # where the exp gate does (at these sizes the two gates' rules agree).
    monkeypatch.setattr(launch, "SIGMOID_FORWARD", "restructured")
    monkeypatch.setattr(launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 132)
    q = torch.empty(B, 4, 16, 128)
    for exp_split in ("auto", "always", "current"):
        monkeypatch.setattr(launch, "EXP_SPLIT", exp_split)
        monkeypatch.setattr(launch, "SIGMOID_SPLIT", False)
        expected = (False if fused and exp_split != "always" else None)
        assert launch._restructured_split(q, q, None, chunk_size, False) is expected
        monkeypatch.setattr(launch, "SIGMOID_SPLIT", True)
        assert launch._restructured_split(q, q, None, chunk_size, False) is launch._restructured_split(
            q, q, None, chunk_size, True)
    assert launch.default_chunk(False) == launch.CHUNK_EXP
    monkeypatch.setattr(launch, "SIGMOID_FORWARD", "current")
    assert launch._restructured_split(q, q, None, chunk_size, False) is None
    assert launch.default_chunk(False) == launch.CHUNK


@pytest.mark.parametrize("B, exp_splits, sigmoid_splits", [(1, True, True), (2, True, False), (8, False, False)])
def test_split_rule_per_gate(monkeypatch, B, exp_splits, sigmoid_splits):
    # "auto" on 132 multiprocessors, 16 heads: S2 (16 sequences·heads) splits for both
    # gates, S3 (32) for the exp gate only, S1 (128) for neither (SPLIT_PER_MULTIPROCESSOR).
    monkeypatch.setattr(launch, "SIGMOID_FORWARD", "restructured")
    monkeypatch.setattr(launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(launch, "EXP_SPLIT", "auto")
    monkeypatch.setattr(launch, "SIGMOID_SPLIT", True)
    monkeypatch.setattr(launch, "SPLIT_PER_MULTIPROCESSOR", {"exp": 4, "sigmoid": 6})
    monkeypatch.setattr(occupancy, "multiprocessors", lambda device: 132)
    q = torch.empty(B, 4, 16, 128)
    assert launch._restructured_split(q, q, None, 64, True) is exp_splits
    assert launch._restructured_split(q, q, None, 64, False) is sigmoid_splits


def test_bad_exp_forward_settings_are_clear_errors(monkeypatch):
    q = torch.empty(1, 4, 2, 32)
    monkeypatch.setattr(launch, "EXP_SPLIT", "sometimes")
    with pytest.raises(ValueError, match="EXP_SPLIT"):
        launch._restructured_split(q, q, None, 64, True)
    monkeypatch.setattr(launch, "EXP_FORWARD", "fastest")
    with pytest.raises(ValueError, match="EXP_FORWARD"):
        launch._restructured_split(q, q, None, 64, True)
    monkeypatch.setattr(launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(launch, "EXP_SPLIT", "never")
    monkeypatch.setattr(launch, "OUTPUT_PRODUCTS", "fp8")
    with pytest.raises(ValueError, match="OUTPUT_PRODUCTS"):
        af.mlstm(**mlstm_inputs(1, 8, 2, 16, 16, dtype=torch.float32), impl="triton", form="chunk")



@pytest.mark.xfail(strict=True, reason=(
    "known defect, why SIGMOID_VIA_GLA stays off: the scalar-gate kernels take σ(i) ⊙ k as a "
    "bf16 input, a rounding the reference does not make; the final state's error is 1.3e-2 "
    "against a bound of 8e-5 (the mLSTM kernels: 3e-6); bench/NOTES-mlstm.md, session 11"))
def test_sigmoid_via_gla_final_state_within_reference_noise_in_bf16(sigmoid_via_gla):
    # The GPU check's rule (scripts/device_mlstm_check.py): golden is the float64 reference
    # on the same bf16 inputs, so only the computation's own error counts.
    low = {n: x.to(torch.bfloat16) for n, x in mlstm_inputs(2, 65, 2, 32, 32, dtype=torch.float32).items()}
    golden = _run(*_double(low, None), "reference", "sigmoid", form="chunk")
    eager = _run(low, None, "reference", "sigmoid", form="chunk")
    result = _run(low, None, "triton", "sigmoid", form="chunk")
    C = golden.final_state.C
    check = noise_relative_check(result.final_state.C, C, eager.final_state.C, atol=1e-5 * C.abs().max().item())
    assert check.passed, check


@pytest.mark.parametrize("grad_mode, expect_training, gradient", [(False, False, "exact"), (True, True, "exact"),
                                                                   (True, True, "held")])
def test_forward_keeps_intermediates_only_when_a_backward_can_run(monkeypatch, grad_mode, expect_training,
                                                                  gradient):
    # Inputs that require a gradient, called under torch.no_grad(): no backward can run,
    # so the forward must not pay for one (float32 output, saved intermediates). Inside
    # an autograd Function's forward, ctx.needs_input_grad cannot tell (it is True here).
    # The held gradient's backward reads no float32 output.
    seen = []
    real = launch.chunk_forward

    def spy(*args, **kwargs):
        seen.append((kwargs["save"], kwargs["out_dtype"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(launch, "chunk_forward", spy)
    x = mlstm_inputs(1, 16, 1, 16, 16, dtype=torch.float32, requires_grad=True)
    with torch.set_grad_enabled(grad_mode):
        out = af.mlstm(**x, input_gate="exp", impl="triton", form="chunk", normaliser_gradient=gradient).output
    assert seen == [(expect_training, torch.float32 if expect_training and gradient == "exact" else None)]
    assert out.requires_grad is grad_mode
    expected = af.mlstm(**{n: t.detach().double() for n, t in x.items()}, input_gate="exp",
                        impl="reference", form="chunk").output
    assert _close(out.detach().double(), expected)


@gates_and_forwards()
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_held_normaliser_gradient_matches_reference(gate, form):
    # normaliser_gradient="held" (TFLA's gradient): the kernels' gradients of every
    # input and of the initial state against the reference's, and not the exact ones.
    inputs = mlstm_inputs(2, 70, 2, 16, 20, dtype=torch.float32, requires_grad=True)
    state = _state(2, 2, 16, 20, gate, requires_grad=True)
    expected = _gradients(*_double(inputs, state), "reference", gate, form="chunk", normaliser_gradient="held")
    actual = _gradients(inputs, state, "triton", gate, form=form, normaliser_gradient="held")
    for name, grad in actual.items():
        assert _close(grad, expected[name]), (name, max_error(grad, expected[name]))
    exact = _gradients(inputs, state, "triton", gate, form=form)
    assert not _close(actual["q"], exact["q"])
