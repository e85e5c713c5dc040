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


def narrowed_value_tile(BV: int, V: int, sequences_heads: int, device: torch.device) -> int:
    """BV halved (down to 16) while a sequential pass over V value columns would run
    fewer programs, `sequences_heads · cdiv(V, BV)`, than the GPU has multiprocessors:
    one long sequence is bound by the latency of its chunk steps, so narrower slices
    in more programs finish sooner."""
    while BV > 16 and sequences_heads * triton.cdiv(V, BV) < multiprocessors(device):
        BV //= 2
    return BV
