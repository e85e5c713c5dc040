"""The gated delta rule's pipelined passes (launch.PIPELINE_FORWARD, PIPELINE_BACKWARD):
every sequence cut into segments of chunks; forward, each segment prepared, then walked
by the state pass from the state the previous segment left; backward, the reverse pass
walks the segments from the last, handing the state's gradient back, and each
segment's chunk gradients follow its reverse pass. Off the GPU the launches run in
order on one stream, so the segmentation alone is under test: the same kernels on the
same rows, the state and its gradient handed over in float32 as they would stay in
registers. The outputs, final states and gradients must therefore equal the
unsegmented passes' bit for bit, and the float64 reference within float32 noise."""
import pytest
import torch

import attnforms as af
from attnforms.ops.gated_delta.triton import launch
from attnforms.testing import gated_delta_inputs, max_error

FLOAT32_NOISE = 2e-5
OFFSETS = torch.tensor([0, 7, 60, 61, 110])  # longest 49 rows: 4 chunks of 16


def _run(inputs, initial, pipeline: str, split: str, monkeypatch, grad: bool):
    """Output, final state and (grad) every gradient, with the forward's and the
    backward's pipelines set to `pipeline`; the loss reads the final state too where
    there is an initial state (a final state's gradient enters the reverse pass)."""
    monkeypatch.setattr(launch, "PIPELINE_FORWARD", pipeline)
    monkeypatch.setattr(launch, "PIPELINE_BACKWARD", pipeline)
    monkeypatch.setattr(launch, "FORWARD_SPLIT", split)
    leaves = {n: None if x is None else x.clone().requires_grad_(grad) for n, x in inputs.items()}
    state = None if initial is None else af.LinearState(initial.clone().requires_grad_(grad))
    result = af.gated_delta_rule(**leaves, initial_state=state, output_final_state=True, impl="triton",
                                 form="chunk", chunk_size=16, cu_seqlens=OFFSETS)
    out = {"o": result.output.detach(), "final": result.final_state.S.detach()}
    if grad:
        generator = torch.Generator().manual_seed(1)
        loss = (result.output * torch.randn(result.output.shape, generator=generator)).sum()
        if state is not None:
            loss = loss + (result.final_state.S * torch.randn(result.final_state.S.shape, generator=generator)).sum()
        loss.backward()
        out.update({f"d{n}": x.grad for n, x in leaves.items() if x is not None})
        if state is not None:
            out["dinitial"] = state.S.grad
    return out


# (gate, beta, split forward, gradients, initial state): every switch combination with
# gradients; the split forward and the forward alone where they differ most.
CASES = [(gate, beta, "never", True, True) for gate in ("none", "scalar", "channel") for beta in (False, True)]
CASES += [(gate, beta, "always", True, True) for gate, beta in (("scalar", True), ("channel", False), ("channel", True))]
CASES += [(gate, True, split, False, True) for gate in ("scalar", "channel") for split in ("never", "always")]
CASES += [("scalar", True, "never", True, False), ("channel", True, "always", True, False)]


@pytest.mark.parametrize("gate,beta,split,grad,with_initial", CASES, ids=lambda x: str(x))
def test_pipelined_passes_equal_the_unsegmented_ones(gate, beta, split, grad, with_initial, monkeypatch):
    monkeypatch.setattr(launch, "PIPELINE_SEGMENTS", 4)  # one chunk each: both hand-off buffers reused
    monkeypatch.setattr(launch, "PIPELINE_MIN_CHUNKS", 1)
    inputs = gated_delta_inputs(1, 110, 2, 16, 20, gate=gate, beta=beta, dtype=torch.float32)
    initial = torch.randn(4, 2, 16, 20, generator=torch.Generator().manual_seed(3)) * 0.5 if with_initial else None
    whole = _run(inputs, initial, "never", split, monkeypatch, grad)
    piped = _run(inputs, initial, "always", split, monkeypatch, grad)
    assert whole.keys() == piped.keys()
    for key in whole:
        assert torch.equal(piped[key], whole[key]), key
    doubled = {n: None if x is None else x.double() for n, x in inputs.items()}
    state = None if initial is None else af.LinearState(initial.double())
    golden = af.gated_delta_rule(**doubled, initial_state=state, output_final_state=True,
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
        segments = launch._pipeline_segments(setting, offsets, 64, 2, cpu)
        assert (None if segments is None else len(segments)) == expected, setting
    monkeypatch.setattr(launch, "PIPELINE_MIN_CHUNKS", 10)
    assert launch._pipeline_segments("always", offsets, 64, 2, cpu) is None
    with pytest.raises(ValueError, match="pipeline setting"):
        launch._pipeline_segments("yes", offsets, 64, 2, cpu)
