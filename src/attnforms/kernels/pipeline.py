"""Streams of a pipelined pass, shared by the chunked kernel families.

A pipelined pass cuts every sequence into segments of chunks (`segment_tables` in
sequences.py) and walks them with a sequential pass on a high-priority stream (the
forward's state pass, or the backward's reverse pass), while chunked work before it
(a preparation of segment s + 1) or after it (the output, or the chunk gradients, of a
finished segment) runs on the current stream. The work on either side orders itself
through events: `prepared` / `wait_prepared` (current stream -> state stream) and
`passed` / `wait_passed` (state stream -> current stream), one event per segment in
order. Off CUDA (the Triton interpreter) every call here is a no-op and the launches
run in the order they are made.
"""
from __future__ import annotations

import contextlib
import functools

import torch


class PipelineStreams:
    """The current stream, the high-priority state stream and the events between them.
    The state stream first waits for everything already on the current stream (the
    inputs, and whatever ran before the pipeline); `join` makes the current stream wait
    for the state stream, so what follows sees every segment's results."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events = {"prepared": [], "passed": []}
        if self.cuda:
            self.main = torch.cuda.current_stream(device)
            self.state = high_priority_stream(device)
            self.state.wait_stream(self.main)

    def _record(self, kind: str, stream) -> None:
        if self.cuda:
            event = torch.cuda.Event()
            event.record(stream)
            self.events[kind].append(event)

    def prepared(self) -> None:
        """The next segment's work on the current stream is queued."""
        self._record("prepared", self.main if self.cuda else None)

    def passed(self) -> None:
        """The next segment's state pass is queued on the state stream."""
        self._record("passed", self.state if self.cuda else None)

    def wait_prepared(self, s: int) -> None:
        """The state stream waits for segment s's preparation."""
        if self.cuda:
            self.state.wait_event(self.events["prepared"][s])

    def wait_passed(self, s: int) -> None:
        """The current stream waits for segment s's state pass."""
        if self.cuda:
            self.main.wait_event(self.events["passed"][s])

    def state_stream(self):
        """A context in which launches go to the state stream (nothing off CUDA)."""
        return torch.cuda.stream(self.state) if self.cuda else contextlib.nullcontext()

    def join(self) -> None:
        """The current stream waits for everything queued on the state stream."""
        if self.cuda:
            self.main.wait_stream(self.state)


@functools.lru_cache(maxsize=8)
def high_priority_stream(device: torch.device) -> "torch.cuda.Stream":
    """One stream per device for a pipelined forward's state passes, at a high priority
    (a lower number: the default stream's is 0), so the block scheduler places their
    programs before the waiting ones of the chunked kernels beside them."""
    return torch.cuda.Stream(device, priority=-1)
