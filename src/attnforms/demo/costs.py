"""Decoding cost of a trained model: time per generated token and cache memory, at
several context lengths.

The prompt (random tokens, one sequence) is prefilled in the chunk form, then
`new_tokens` tokens are decoded one at a time in the recurrent form (`model.step`), as
`attnforms.models.generate` does; the time per token is the median step time, and the
memory is the bytes of every layer's cache after the prefill (`cache_nbytes`).
"""
from __future__ import annotations

import statistics
import time

import torch

from ..layers import cache_nbytes
from ..models import CausalLM


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def decode_cost(model: CausalLM, context: int, new_tokens: int = 16, seed: int = 0) -> dict:
    """`{"context", "ms_per_token", "cache_bytes"}` for one sequence after `context`
    prompt tokens: the median wall time of one decoding step, and the cache bytes."""
    if isinstance(context, bool) or not isinstance(context, int) or context <= 0:
        raise ValueError(f"context: expected a positive int, got {context!r}")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens <= 0:
        raise ValueError(f"new_tokens: expected a positive int, got {new_tokens!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(model.config.vocab_size, (1, context), generator=generator).to(device)
    out = model(prompt, use_cache=True, form="chunk")
    cache_bytes = cache_nbytes(out.caches)
    caches, times = out.caches, []
    next_ids = out.logits[:, -1].argmax(-1)
    for _ in range(new_tokens + 1):  # the first step warms up and is not timed
        _sync(device)
        start = time.perf_counter()
        step = model.step(next_ids, caches)
        _sync(device)
        times.append(time.perf_counter() - start)
        caches, next_ids = step.caches, step.logits.argmax(-1)
    model.train(was_training)
    return {"context": context, "ms_per_token": 1000 * statistics.median(times[1:]), "cache_bytes": cache_bytes}
