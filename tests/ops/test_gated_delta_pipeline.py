"""The gated delta rule's pipelined forward (launch.PIPELINE_FORWARD): every sequence cut
into segments of chunks, each segment prepared, then walked by the state pass from the
state the previous segment left. Off the GPU the launches run in order on one stream,
so the segmentation alone is under test: the same kernels on the same rows, the state
handed over in float32 as it would stay in registers. The outputs, final states and
gradients must therefore equal the unsegmented forward's bit for bit, and the float64
reference within float32 noise."""
import pytest
import torch

import attnforms as af
from attnforms.ops.gated_delta.triton import launch
from attnforms.testing import gated_delta_inputs, max_error

FLOAT32_NOISE = 2e-5
OFFSETS = torch.tensor([0, 7, 60, 61, 110])  # longest 49 rows: 4 chunks of 16


def _run(inputs, initial, pipeline: str, split: str, monkeypatch, grad: bool):
    monkeypatch.setattr(launch, "PIPELINE_FORWARD", pipeline)
    monkeypatch.setattr(launch, "FORWARD_SPLIT", split)
    leaves = {n: None if x is None else x.clone().requires_grad_(grad) for n, x in inputs.items()}
    state = None if initial is None else af.LinearState(initial.clone().requires_grad_(grad))
    result = af.gated_delta_rule(**leaves, initial_state=state, output_final_state=True, impl="triton",
                                 form="chunk", chunk_size=16, cu_seqlens=OFFSETS)
    out = {"o": result.output.detach(), "final": result.final_state.S.detach()}
    if grad:
        torch.manual_seed(1)
        (result.output * torch.randn_like(result.output)).sum().backward()
        out.update({f"d{n}": x.grad for n, x in leaves.items() if x is not None})
        if state is not None:
            out["dinitial"] = state.S.grad
    return out


@pytest.mark.parametrize("gate,beta", [(gate, beta) for gate in ("none", "scalar", "channel") for beta in (False, True)],
                         ids=lambda x: str(x))
@pytest.mark.parametrize("split", ["never", "always"])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_pipelined_forward_equals_the_unsegmented_one(gate, beta, split, grad, monkeypatch):
    monkeypatch.setattr(launch, "PIPELINE_SEGMENTS", 3)
    monkeypatch.setattr(launch, "PIPELINE_MIN_CHUNKS", 1)
    inputs = gated_delta_inputs(1, 110, 2, 16, 20, gate=gate, beta=beta, dtype=torch.float32)
    initial = torch.randn(4, 2, 16, 20, generator=torch.Generator().manual_seed(3)) * 0.5
    whole = _run(inputs, initial, "never", split, monkeypatch, grad)
    piped = _run(inputs, initial, "always", split, monkeypatch, grad)
    assert whole.keys() == piped.keys()
    for key in whole:
        assert torch.equal(piped[key], whole[key]), key
    doubled = {n: None if x is None else x.double() for n, x in inputs.items()}
    golden = af.gated_delta_rule(**doubled, initial_state=af.LinearState(initial.double()), output_final_state=True,
                                 impl="reference", form="chunk", chunk_size=16, cu_seqlens=OFFSETS)
    assert max_error(piped["o"], golden.output) < FLOAT32_NOISE
    assert max_error(piped["final"], golden.final_state.S) < FLOAT32_NOISE


def test_segments_follow_the_settings(monkeypatch):
    """Segments of at least PIPELINE_MIN_CHUNKS chunks, about PIPELINE_SEGMENTS of them;
    none where one segment would hold every chunk, where the setting is off, or (auto)
    off the GPU."""
    cpu = torch.device("cpu")
    offsets = (0, 640, 650)  # 10 and 1 chunks of 64
    monkeypatch.setattr(launch, "PIPELINE_SEGMENTS", 4)
    monkeypatch.setattr(launch, "PIPELINE_MIN_CHUNKS", 2)
    for setting, expected in [("always", 4), ("never", None), ("auto", None)]:
        monkeypatch.setattr(launch, "PIPELINE_FORWARD", setting)
        segments = launch._pipeline_segments(offsets, 64, 2, cpu)
        assert (None if segments is None else len(segments)) == expected, setting
    monkeypatch.setattr(launch, "PIPELINE_FORWARD", "always")
    monkeypatch.setattr(launch, "PIPELINE_MIN_CHUNKS", 10)
    assert launch._pipeline_segments(offsets, 64, 2, cpu) is None
