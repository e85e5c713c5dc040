"""How many programs fill the GPU: the sequential passes of the chunked kernels (one
program per sequence·head and value tile, walking the chunks in order) choose their
value tile, and whether to split off the output, by it."""
import functools

import torch
import triton


@functools.lru_cache(maxsize=8)
def multiprocessors(device: torch.device) -> int:
    """The GPU's streaming multiprocessors (1 off CUDA: the CPU interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def too_few_to_fill(sequences_heads: int, per_multiprocessor: int, device: torch.device) -> bool:
    """Whether there are fewer than one sequence·head per `per_multiprocessor`
    multiprocessors: then a sequential pass's chain of chunk steps is the critical path,
    and a forward writes its output in a parallel pass of its own (the split rule of
    the gated delta rule's and the mLSTM's launchers)."""
    return sequences_heads * per_multiprocessor < multiprocessors(device)


def narrowed_value_tile(BV: int, V: int, sequences_heads: int, device: torch.device, fill: float = 1.0) -> int:
    """BV halved (down to 16) while a sequential pass over V value columns would run
    fewer programs, `sequences_heads · cdiv(V, BV)`, than `fill` times the GPU's
    multiprocessors: one long sequence is bound by the latency of its chunk steps, so
    narrower slices in more programs finish sooner (where each step's products are
    short enough: a pass may ask for less than one program per multiprocessor)."""
    while BV > 16 and sequences_heads * triton.cdiv(V, BV) < fill * multiprocessors(device):
        BV //= 2
    return BV
