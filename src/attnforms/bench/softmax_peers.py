"""Peers of the softmax ops, all from torch itself: `scaled_dot_product_attention` with
one backend forced (`torch.nn.attention.sdpa_kernel`) or left to its default choice, and
FlexAttention compiled with `torch.compile(flex_attention, dynamic=False)`.

Conventions (torch 2.11-2.13): both take head-major `[B, H, T, D]` tensors and scale
scores by `D ** -0.5`; SDPA's `is_causal=True` aligns the causal mask top-left, which for
T == S is attnforms' causal mask. Flex takes a `BlockMask` from `create_block_mask(
mask_mod, B, H, T, S)` (None for B and H: the mask does not depend on them) and a
`score_mod(score, b, h, q_idx, kv_idx)`: the very `attnforms.mods` functions serve as
both (they are written with Flex's signature). Decoding passes SDPA the cache and the
new token as one concatenated key sequence, built outside the timed region (`prepare`),
and no causal flag (one query at the last position sees every key).

A peer that cannot run here is a Runner with `unavailable` set, or raises
`ImplUnavailableError` at its first call (SDPA finds no kernel for a backend only when
called), so its rows say why instead of disappearing.
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import mods
from ..core.dispatch import ImplUnavailableError
from .peers import Runner

SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}
FLEX_LABEL = "flex (compiled)"
# Dynamo keeps this many compiled variants of one function before giving up on it; the
# run compiles Flex per op, shape and grad mode (about 15), above the default 8.
FLEX_RECOMPILE_LIMIT = 64


def sdpa_label(backend: str | None) -> str:
    return f"sdpa {backend}" if backend else "sdpa (default)"


def _unavailable(label: str, why: str, **flags) -> Runner:
    return Runner(label, None, unavailable=f"unavailable: {why}", **flags)


def _backend_problem(backend: str | None, device: torch.device) -> str | None:
    """Why SDPA's `backend` cannot run on `device` (None: it may; the call decides)."""
    if backend is None:
        return None
    if device.type != "cuda":
        return f"SDPA's {backend} backend runs on CUDA only (device {device})"
    if backend == "cudnn" and not torch.backends.cudnn.is_available():
        return "cuDNN is not available to this torch"
    return None


def _sdpa_call(backend: str | None, **fixed) -> Callable:
    """`F.scaled_dot_product_attention(q, k, v, **fixed)` under `backend` (None: torch's
    own choice); a backend that finds no kernel for the call raises ImplUnavailableError."""
    from torch.nn.functional import scaled_dot_product_attention

    if backend is None:
        return lambda q, k, v: scaled_dot_product_attention(q, k, v, **fixed)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, SDPA_BACKENDS[backend])

    def run(q, k, v):
        try:
            with sdpa_kernel(chosen):
                return scaled_dot_product_attention(q, k, v, **fixed)
        except RuntimeError as exc:
            if "No available kernel" in str(exc) or "No viable backend" in str(exc):
                raise ImplUnavailableError(f"SDPA's {backend} backend has no kernel for this call: {exc}") from exc
            raise
    return run


def sdpa(backend: str | None, device: torch.device) -> Runner:
    """Causal self-attention through SDPA."""
    label = sdpa_label(backend)
    problem = _backend_problem(backend, device)
    if problem:
        return _unavailable(label, problem, head_major=True)
    return Runner(label, _sdpa_call(backend, is_causal=True), head_major=True)


def _concatenated_cache(inputs: dict) -> dict:
    """Decode inputs (attnforms layout: q, k, v `[B, 1, H, D]`, cache_k / cache_v
    `[B, L, H, D]`, every slot filled) -> SDPA's q `[B, H, 1, D]` and keys / values
    `[B, H, L + 1, D]`, contiguous."""
    keys = torch.cat([inputs["cache_k"], inputs["k"]], dim=1)
    values = torch.cat([inputs["cache_v"], inputs["v"]], dim=1)
    return dict(q=inputs["q"].transpose(1, 2), k=keys.transpose(1, 2).contiguous(),
                v=values.transpose(1, 2).contiguous())


def sdpa_decode(backend: str | None, device: torch.device) -> Runner:
    """One new token against a KV cache through SDPA."""
    label = sdpa_label(backend)
    problem = _backend_problem(backend, device)
    if problem:
        return _unavailable(label, problem, head_major=True)
    return Runner(label, _sdpa_call(backend), head_major=True, prepare=_concatenated_cache)


def _raise_recompile_limit() -> None:
    """Room for every Flex variant of a run, and an error (not a silent fall-back to
    eager Flex, which materialises the scores) if even that is exceeded."""
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), FLEX_RECOMPILE_LIMIT))
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


def flex(device: torch.device, *, window: int | None, score_mod: Callable[[int, torch.device], Callable] | None,
         compiled: bool = True) -> Runner:
    """Causal FlexAttention (with a sliding window of `window` keys) and the score_mod
    `score_mod(H, device)` returns, if any. The block mask of each (T, S) is built on the
    first call at that length (outside the timed repetitions) and kept.
    compiled=False runs Flex eagerly (materialised scores): only for checking the
    conventions on a CPU; the benchmark always compiles, on CUDA only."""
    if compiled and device.type != "cuda":
        return _unavailable(FLEX_LABEL, "compiled FlexAttention is timed on CUDA only (on a CPU, inductor "
                            "would compile C++ for minutes to time a peer of no GPU kernel)", head_major=True)
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as exc:  # an older torch, or a broken install
        return _unavailable(FLEX_LABEL, f"FlexAttention is not importable: {type(exc).__name__}: {exc}",
                            head_major=True)
    if compiled:
        _raise_recompile_limit()
        attend = torch.compile(flex_attention, dynamic=False)
    else:
        attend = flex_attention
    mask_mod = mods.causal() if window is None else mods.sliding_window(window)
    block_masks: dict = {}

    def run(q, k, v):  # [B, H, T, D]
        H, T, S = q.shape[1], q.shape[2], k.shape[2]
        if (T, S, q.device) not in block_masks:
            block_masks[T, S, q.device] = create_block_mask(mask_mod, None, None, T, S, device=q.device)
        modify = None if score_mod is None else score_mod(H, q.device)
        return attend(q, k, v, score_mod=modify, block_mask=block_masks[T, S, q.device])

    return Runner(FLEX_LABEL, run, head_major=True, compiles_per_shape=compiled)
