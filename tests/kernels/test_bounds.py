"""Every Triton kernel of every family stays inside the tensors it is given: forward and
backward, chunk and recurrent forms, ragged lengths and packed sequences, run by the
interpreter under `interpreter_bounds_checked` (which turns a stray load or store into
an error naming the kernel: on the GPU it is an illegal memory access)."""
import os

import pytest
import torch
import triton
import triton.language as tl

import attnforms as af
from attnforms.ops.mlstm.triton import launch as mlstm_launch
from attnforms.testing import aaren_inputs, gated_delta_inputs, mlstm_inputs, softmax_inputs
from attnforms.testing.bounds import interpreter_bounds_checked

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                reason="runs the Triton kernels")
interpreted = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                 reason="the bounds check watches the interpreter's loads and stores")


@triton.jit
def _copy(x, y, n, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(y + o, tl.load(x + o, mask=o < n), mask=o < n)


@interpreted
def test_the_check_passes_in_bounds_and_names_a_stray_load():
    x, y = torch.randn(100), torch.empty(100)
    with interpreter_bounds_checked():
        _copy[(1,)](x, y, 100, BLOCK=128)
        with pytest.raises(Exception, match="_copy: load of 28 element"):
            _copy[(1,)](x, y, 128, BLOCK=128)
    assert torch.equal(x, y)


def _forward_backward(fn, inputs):
    with interpreter_bounds_checked():
        out = fn(**inputs)
        out.output.float().square().mean().backward()


@interpreted
@pytest.mark.parametrize("split, chunk_size", [("always", 64), ("always", 128), ("never", 64), ("current", 128)])
@pytest.mark.parametrize("gate", ["exp", "sigmoid"])
def test_mlstm_kernels_stay_in_bounds(monkeypatch, split, chunk_size, gate):
    monkeypatch.setattr(mlstm_launch, "EXP_FORWARD", "restructured")
    monkeypatch.setattr(mlstm_launch, "EXP_SPLIT", split)
    inputs = mlstm_inputs(2, 150, 2, 128, 64, dtype=torch.float32, requires_grad=True)
    _forward_backward(lambda **x: af.mlstm(**x, input_gate=gate, chunk_size=chunk_size, impl="triton",
                                           form="chunk", output_final_state=True), inputs)
    packed = {name: x.detach().reshape(1, -1, *x.shape[2:]).requires_grad_() for name, x in inputs.items()}
    _forward_backward(lambda **x: af.mlstm(**x, input_gate=gate, chunk_size=chunk_size, impl="triton",
                                           form="chunk", cu_seqlens=torch.tensor([0, 1, 130, 300])), packed)
    _forward_backward(lambda **x: af.mlstm(**x, input_gate=gate, impl="triton", form="recurrent"),
                      mlstm_inputs(2, 5, 2, 128, 64, dtype=torch.float32, requires_grad=True))


@interpreted
@pytest.mark.parametrize("gate, beta", [("scalar", True), ("channel", True), ("channel", False), ("none", True)])
def test_gated_delta_kernels_stay_in_bounds(gate, beta):
    inputs = gated_delta_inputs(2, 100, 2, 64, 32, gate=gate, beta=beta, dtype=torch.float32, requires_grad=True)
    inputs = {name: x for name, x in inputs.items() if x is not None}
    _forward_backward(lambda **x: af.gated_delta_rule(**x, impl="triton", form="chunk", output_final_state=True),
                      inputs)
    _forward_backward(lambda **x: af.gated_delta_rule(**x, impl="triton", form="recurrent"),
                      {name: x.detach()[:, :3].requires_grad_() for name, x in inputs.items()})


@interpreted
@pytest.mark.parametrize("options", [dict(causal=True), dict(causal=True, window=20), dict(causal=False)])
def test_softmax_kernels_stay_in_bounds(options):
    inputs = softmax_inputs(2, 77, 4, 64, 64, G=2, dtype=torch.float32, requires_grad=True)
    _forward_backward(lambda **x: af.softmax_attention(**x, impl="triton", **options), inputs)
    packed = {name: x.detach().reshape(1, -1, *x.shape[2:]).requires_grad_() for name, x in inputs.items()}
    _forward_backward(lambda **x: af.softmax_attention(**x, impl="triton", cu_seqlens=torch.tensor([0, 5, 90, 154]),
                                                       **options), packed)


@interpreted
def test_softmax_decode_stays_in_bounds():
    prefix = softmax_inputs(2, 40, 4, 64, 64, G=2, dtype=torch.float32)
    state = af.softmax_attention(**prefix, causal=True, impl="triton", output_final_state=True).final_state
    step = softmax_inputs(2, 1, 4, 64, 64, G=2, dtype=torch.float32, seed=1)
    with interpreter_bounds_checked():
        af.softmax_attention(**step, causal=True, impl="triton", initial_state=state, form="recurrent")


@interpreted
def test_aaren_kernels_stay_in_bounds():
    inputs = aaren_inputs(2, 150, 2, 64, 32, dtype=torch.float32, requires_grad=True)
    _forward_backward(lambda **x: af.aaren(**x, impl="triton", form="chunk"), inputs)
    _forward_backward(lambda **x: af.aaren(**x, impl="triton", form="recurrent"),
                      aaren_inputs(2, 4, 2, 64, 32, dtype=torch.float32, requires_grad=True))
