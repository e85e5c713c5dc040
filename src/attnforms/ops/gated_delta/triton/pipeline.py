"""The gated delta rule's pipelined passes (launch.PIPELINE_FORWARD, PIPELINE_BACKWARD):
the segment walks, given the launches as callbacks. Every sequence is cut into segments
of chunks (`kernels.sequences.segment_tables`); the sequential pass walks them on a
high-priority stream, handing its state (or the state's gradient) from segment to
segment through float32 buffers, while the chunked kernels of other segments run on
the current stream (`kernels.pipeline.PipelineStreams`). The launches and their rows
are the unsegmented passes', so the results are bit for bit the same.
"""
import torch

from ....kernels.pipeline import PipelineStreams


def pipelined_forward(segments, prepare, state_pass, output_pass, initial, final, state_shape, device):
    """The forward segment by segment: every segment's preparation in order on the
    current stream; the state pass of segment s, once its preparation is done, on a
    high-priority stream (the chain of chunk steps is the critical path; the
    preparation fills the multiprocessors it leaves idle); the split output pass of
    segment s after its state pass, back on the current stream. The state crosses from
    segment to segment in float32 (two buffers in turn), as it would stay in registers.
    Off the GPU the same launches run in that order on one stream.

    segments: `kernels.sequences.Segment`s in order; prepare(chunk_indices),
    state_pass(bounds, chunk_base, entering, leaving, stride) and output_pass(chunk_indices)
    (None: not split) launch the kernels; initial / final: the states `[N, H, K, V]`
    entering the first segment and leaving the last (None: zeros / not stored);
    state_shape: (N, H, K, V)."""
    last = len(segments) - 1
    handoff = [torch.empty(state_shape, dtype=torch.float32, device=device) for _ in range(min(2, last))]
    streams = PipelineStreams(device)
    for segment in segments:
        prepare(segment.chunk_indices)
        streams.prepared()
    entering = initial
    with streams.state_stream():
        for s, segment in enumerate(segments):
            streams.wait_prepared(s)
            leaving = final if s == last else handoff[s % 2]
            state_pass(segment.bounds, segment.chunk_base, entering, leaving, 2)
            streams.passed()
            entering = leaving
    if output_pass is not None:
        for s, segment in enumerate(segments):
            streams.wait_passed(s)
            output_pass(segment.chunk_indices)
    streams.join()


def pipelined_backward(segments, reverse_pass, chunk_grads, dfinal, dinitial, state_shape, device):
    """The backward segment by segment, the last first: the reverse pass of each
    segment on a high-priority stream, handing the state's gradient to the segment
    before it in float32 (two buffers in turn, as `pipelined_forward` hands the state); each
    segment's chunk gradients on the current stream once its reverse pass is done, so
    they run beside the reverse pass of the segments before it.

    reverse_pass(bounds, chunk_base, leaving, entering, stride) and
    chunk_grads(chunk_indices) launch the kernels; dfinal / dinitial: the gradients
    `[N, H, K, V]` of the final state (None: zeros) and of the initial state (None: not
    stored); the rest as `pipelined_forward`."""
    last = len(segments) - 1
    handoff = [torch.empty(state_shape, dtype=torch.float32, device=device) for _ in range(min(2, last))]
    streams = PipelineStreams(device)
    leaving = dfinal
    with streams.state_stream():
        for s in range(last, -1, -1):
            entering = dinitial if s == 0 else handoff[(s - 1) % 2]
            reverse_pass(segments[s].bounds, segments[s].chunk_base, leaving, entering, 2)
            streams.passed()
            leaving = entering
    for done, s in enumerate(range(last, -1, -1)):
        streams.wait_passed(done)
        chunk_grads(segments[s].chunk_indices)
    streams.join()
