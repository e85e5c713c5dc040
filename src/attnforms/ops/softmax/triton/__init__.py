"""Triton kernels of softmax attention: flash forward and backward with compiled
`score_mod` / `mask_mod` and BlockMask sparsity, and split-KV decoding over a KV cache.

The entry points take the reference forms' signature (plus native `offsets` for packed
sequences and `block_mask`) and return `AttentionOutput`, carrying the log-sum-exp of the
visible keys' scores as `.lse` (see `softmax_attention(return_lse=True)`). They never
import `reference.py`. `parallel` and `chunk` run the same flash kernels (the tile sizes
are the kernel's, `chunk_size` is not used); `recurrent` runs the split-KV decode kernel
forward and the flash backward.
"""
from __future__ import annotations

import torch

from ....core.states import AttentionOutput, KVCache
from ....core.varlen import concat_states, run_per_sequence
from ....kernels.row_dot import row_dot
from . import launch, modc
from .launch import Plan
from .modc import ModError

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
EMPTY = -1


class KernelOutput(AttentionOutput):
    """`AttentionOutput` with the keys' log-sum-exp `lse [B, H, T]` float32 attached (not
    a tuple field, so unpacking still gives two values)."""

    lse: torch.Tensor


def _output(o, state, lse_rows, B, T):
    out = KernelOutput(o, state)
    H = lse_rows.shape[0]
    out.lse = lse_rows.view(H, B, T).permute(1, 0, 2)
    return out


def _check(q, k):
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q: impl='triton' takes float16, bfloat16 or float32 inputs, got {q.dtype}")
    if max(q.shape[-1], k.shape[-1]) > 256:
        raise ValueError(f"q: impl='triton' takes head dims up to 256, got {q.shape[-1]}")


def _graphs(score_mod, mask_mod):
    score_graph = None if score_mod is None else modc.trace(score_mod, "score")
    mask_graph = None if mask_mod is None else modc.trace(mask_mod, "mask")
    return score_graph, mask_graph


class _Attention(torch.autograd.Function):
    """Autograd boundary. Inputs: q, k, v, cache k, cache v (None without a cache),
    sinks, then the score_mod's captured tensors."""

    @staticmethod
    def forward(ctx, q, k, v, ck, cv, sinks, plan: Plan, cache: dict, use_decode: bool, *captures):
        if use_decode:
            o, lse = launch.decode(q, k, v, ck, cv, cache["cpos"], cache["qoff"], plan,
                                   splits=cache.get("splits"))
        else:
            ka, va, plan = _with_cache(k, v, ck, cv, cache, plan)
            o, lse = launch.forward(q, ka, va, plan)
        ctx.save_for_backward(q, k, v, ck, cv, sinks, o, lse, *captures)
        ctx.plan, ctx.cache = plan, cache
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, ck, cv, sinks, o, lse, *captures = ctx.saved_tensors
        plan, cache = ctx.plan, ctx.cache
        ka, va, plan = _with_cache(k, v, ck, cv, cache, plan)
        if sinks is not None:
            lse_all = torch.logaddexp(lse, sinks.float()[:, None])
        else:
            lse_all = lse
        lse_all = torch.where(torch.isinf(lse_all), 0.0, lse_all).contiguous()
        do = do.contiguous()
        delta = row_dot(do, o, heads_first=True)
        grads = {i: torch.zeros(t.shape, dtype=torch.float32, device=t.device)
                 for i, t in enumerate(captures) if ctx.needs_input_grad[9 + i]}
        dq, dka, dva = launch.backward(q, ka, va, do, lse_all, delta, plan, grads)
        L = 0 if ck is None else ck.shape[1]
        dck = dcv = None
        if ck is not None:
            dck, dcv = dka[:, :L], dva[:, :L]
        dk, dv = dka[:, L:], dva[:, L:]
        dsinks = None
        if sinks is not None and ctx.needs_input_grad[5]:
            # d sink_h = -Σ_rows e^{sink_h - lse_all} (do · o)
            p_sink = torch.exp(sinks.float()[:, None] - lse_all)
            dsinks = -(p_sink * delta).sum(1).to(sinks.dtype)
        cap_grads = [grads[i].to(t.dtype) if i in grads else None for i, t in enumerate(captures)]
        return (dq, dk, dv, dck, dcv, dsinks, None, None, None, *cap_grads)


def _with_cache(k, v, ck, cv, cache, plan: Plan):
    """Keys of the flash kernels: the cache (empty slots zeroed) before the new keys,
    with their positions."""
    if ck is None:
        return k, v, plan
    filled = (cache["cpos"] != EMPTY)[..., None, None]
    ka = torch.cat([torch.where(filled, ck, 0.0).to(k.dtype), k], 1).contiguous()
    va = torch.cat([torch.where(filled, cv, 0.0).to(v.dtype), v], 1).contiguous()
    S = k.shape[1]
    start = cache["next"] - S
    new_pos = start[:, None] + torch.arange(S, device=k.device)
    kvpos = torch.cat([cache["cpos"], new_pos], 1).to(torch.int32).contiguous()
    plan = Plan(**{**plan.__dict__, "kvpos": kvpos, "qoff": cache["qoff"]})
    return ka, va, plan


def _final_cache(ck, cv, cpos, k, v, next_position, window):
    """The cache after this call in the canonical layout: filled slots left-aligned in
    position order (with a window only positions > next - window), padded with empty
    slots (position -1, zero k and v) up to the fullest row."""
    B, S = k.shape[:2]
    new_pos = (next_position - S)[:, None] + torch.arange(S, device=k.device)
    pos = new_pos if cpos is None else torch.cat([cpos, new_pos], 1)
    keys = k if ck is None else torch.cat([ck, k], 1)
    values = v if cv is None else torch.cat([cv, v], 1)
    keep = pos != EMPTY
    if window is not None:
        keep = keep & (pos > next_position[:, None] - window)
    sort_key = torch.where(keep, pos, torch.iinfo(torch.int64).max)
    slots = int(keep.sum(1).max())
    order = sort_key.argsort(dim=1, stable=True)[:, :slots]
    kept = keep.gather(1, order)

    def pick(x):
        index = order[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.where(kept[:, :, None, None], x.gather(1, index), 0.0).to(x.dtype)

    return KVCache(pick(keys), pick(values), torch.where(kept, pos.gather(1, order), EMPTY), next_position)


def _run(q, k, v, *, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
         output_final_state, offsets, batch_offset, block_mask, use_decode, splits=None):
    _check(q, k)
    if offsets is not None and initial_state is not None:
        # A cache per packed sequence: one launch per sequence (b = its index).
        def one(n, **tensors):
            return _run(**tensors, causal=causal, window=window, score_mod=score_mod,
                        mask_mod=mask_mod, sinks=sinks, scale=scale, offsets=None,
                        batch_offset=n, block_mask=block_mask, use_decode=use_decode)
        results = []

        def collect(n, **tensors):
            results.append(one(n, **tensors))
            return results[-1]
        out = run_per_sequence(collect, offsets, per_token=dict(q=q, k=k, v=v),
                               initial_state=initial_state, output_final_state=output_final_state)
        lse = torch.cat([r.lse for r in results], dim=2)
        wrapped = KernelOutput(*out)
        wrapped.lse = lse
        return wrapped
    if block_mask is not None and initial_state is not None:
        raise ValueError("block_mask: impl='triton' takes a block mask over the new keys only; "
                         "pass no block_mask with a KV cache (the mask_mod alone still applies)")
    score_graph, mask_graph = _graphs(score_mod, mask_mod)
    for name, graph in (("score_mod", score_graph), ("mask_mod", mask_graph)):
        for t in graph.captures if graph is not None else ():
            if t.device != q.device:
                raise ValueError(f"{name}: captures a tensor on {t.device}, but the kernel runs on "
                                 f"{q.device}; build the mod's tensors on the device of the call")
    B, T, H, _ = q.shape
    S = k.shape[1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    plan = Plan(causal=causal, window=window, scale=float(scale), score_graph=score_graph,
                mask_graph=mask_graph, sinks=None if sinks is None else sinks.contiguous(),
                qoff=S - T, block_mask=block_mask, batch_offset=batch_offset)
    cache = {}
    ck = cv = None
    if offsets is not None:
        plan.cu = torch.tensor(offsets, dtype=torch.int32, device=q.device)
        plan.max_len = max(e - s for s, e in zip(offsets, offsets[1:]))
        plan.qoff = 0
        B = 1
    if initial_state is not None or use_decode:
        if initial_state is None:
            ck = k.new_zeros(B, 0, *k.shape[2:])
            cv = v.new_zeros(B, 0, *v.shape[2:])
            cpos = torch.zeros(B, 0, dtype=torch.int64, device=q.device)
            start = torch.zeros(B, dtype=torch.int64, device=q.device)
        else:
            ck, cv = initial_state.k.contiguous(), initial_state.v.contiguous()
            cpos, start = initial_state.positions.contiguous(), initial_state.next_position
        cache = dict(cpos=cpos, next=start + S,
                     qoff=(start + S - T).to(torch.int32).contiguous(), splits=splits)
    captures = tuple(score_graph.captures) if score_graph is not None else ()
    o, lse = _Attention.apply(q, k, v, ck, cv, sinks, plan, cache, use_decode, *captures)
    state = None
    if output_final_state and offsets is not None:
        state = concat_states([
            _final_cache(None, None, None, k[:, s:e], v[:, s:e],
                         torch.full((1,), e - s, device=q.device, dtype=torch.int64), window)
            for s, e in zip(offsets, offsets[1:])])
    elif output_final_state:
        state = _final_cache(ck, cv, None if ck is None else cache["cpos"], k, v,
                             cache["next"] if cache else torch.full((B,), S, device=q.device, dtype=torch.int64),
                             window)
    return _output(o, state, lse, B, T)


def backward_refusal(inputs) -> str | None:
    return None


def parallel(q, k, v, *, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
             output_final_state, chunk_size, batch_offset=0, offsets=None, block_mask=None):
    """Flash attention forward and backward; arguments as in the reference forms."""
    return _run(q, k, v, causal=causal, window=window, score_mod=score_mod, mask_mod=mask_mod,
                sinks=sinks, scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, offsets=offsets,
                batch_offset=batch_offset, block_mask=block_mask, use_decode=False)


def chunk(q, k, v, **kwargs):
    """The same flash kernels (their tiles are the chunks); arguments as in `parallel`."""
    return parallel(q, k, v, **kwargs)


def recurrent(q, k, v, *, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
              output_final_state, chunk_size, batch_offset=0, offsets=None, block_mask=None,
              splits=None):
    """Decoding: the split-KV kernel reads the cache and the new keys; gradients through
    the flash backward. splits: force the number of key splits (tests)."""
    if block_mask is not None:
        raise ValueError("block_mask: the recurrent form reads a KV cache; pass no block_mask "
                         "(the mask_mod alone applies)")
    if offsets is not None and initial_state is None:
        return parallel(q, k, v, causal=causal, window=window, score_mod=score_mod,
                        mask_mod=mask_mod, sinks=sinks, scale=scale, initial_state=None,
                        output_final_state=output_final_state, chunk_size=chunk_size,
                        offsets=offsets, batch_offset=batch_offset)
    return _run(q, k, v, causal=causal, window=window, score_mod=score_mod, mask_mod=mask_mod,
                sinks=sinks, scale=scale, initial_state=initial_state,
                output_final_state=output_final_state, offsets=offsets,
                batch_offset=batch_offset, block_mask=None, use_decode=True, splits=splits)


for _entry in (parallel, chunk, recurrent):
    _entry.native_varlen = True
