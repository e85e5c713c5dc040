"""Autoregressive generation: prefill the prompt in the chunk form, then decode one token
at a time in the recurrent form, carrying each layer's cache.

Shape legend: `B` batch, `T` prompt length, `N` new tokens, `V` vocabulary size.
"""
from __future__ import annotations

import torch

from .lm import CausalLM


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token of every row from logits `[B, V]`; returns `[B]` int64.

    temperature 0 takes the argmax (greedy; top_k / top_p do not matter then). Otherwise
    the logits are divided by the temperature, cut to the `top_k` largest, then to the
    smallest set whose probability reaches `top_p` (nucleus), and sampled with
    `generator`.
    """
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked before it already reach top_p; the first
        # token is always kept.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: CausalLM, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue `prompt_ids` by `max_new_tokens` tokens.

    The prompt runs once in the chunk form (`model(prompt, use_cache=True,
    form="chunk")`), then each new token runs alone in the recurrent form
    (`model.step`), reading and extending the caches: KV caches grow by one slot per
    token (bounded by a window), recurrent layers keep a fixed-size state.

    Args:
        model: a `CausalLM`.
        prompt_ids: `[B, T]` int64, T >= 1.
        max_new_tokens: N >= 0.
        temperature: 0 for greedy decoding, else the softmax temperature.
        top_k: None or keep only the k most likely tokens.
        top_p: None or keep the smallest set of tokens with probability >= top_p.
        generator: the random generator for sampling (on the model's device).

    Returns:
        `[B, T + N]` int64: the prompt followed by the new tokens.
    """
    if not isinstance(model, CausalLM):
        raise TypeError(f"model: expected a CausalLM, got {type(model).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    _check_sampling(temperature, top_k, top_p)
    if max_new_tokens == 0:
        return prompt_ids.clone()
    out = model(prompt_ids, use_cache=True, form="chunk")
    tokens = [prompt_ids]
    for i in range(max_new_tokens):
        next_ids = sample_next(out.logits[:, -1] if out.logits.ndim == 3 else out.logits,
                               temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        tokens.append(next_ids[:, None])
        if i + 1 < max_new_tokens:
            out = model.step(next_ids, out.caches)
    return torch.cat(tokens, dim=1)


def _check_sampling(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature: expected a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k: expected None or a positive int, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p: expected None or a number in (0, 1], got {top_p!r}")
