"""`aaren`: attention as an RNN (Feng et al., arXiv 2405.13956).

One query per head (Aaren's learned query, the RNN's initial hidden state) attends
causally over the keys, so output t is softmax attention of that query over tokens 1..t.
It is computed as a prefix scan of the running softmax triple (max, denominator,
numerator), which makes decoding constant-time and constant-memory per token.
"""
from __future__ import annotations

import torch

from ...core.dispatch import Family, forms_of
from ...core.memo import remembers_success
from ...core.run import check_common_options, default_options, run_op
from ...core.shapes import (
    Dims, check_same_device, check_same_dtype, check_state, check_tensor,
)
from ...core.states import AarenState, AttentionOutput
from . import reference

try:
    from . import triton as kernels
except ImportError:  # Triton is optional: without it only the reference runs.
    kernels = None

FAMILY = Family(
    name="aaren",
    reference=forms_of(reference),
    triton={} if kernels is None else {"chunk": kernels.chunk, "recurrent": kernels.recurrent},
    auto_form="chunk",
)


def aaren(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: AarenState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
    form: str = "auto",
    impl: str = "auto",
) -> AttentionOutput:
    """Causal softmax attention of one query per head over a sequence, as a prefix scan.

    Per head: `s_t = scale · q·k_t` and `o_t = Σ_{j≤t} softmax(s_1..s_t)_j v_j`, i.e. causal
    softmax attention with the same query at every position. Carried as the triple
    `m = max_j s_j`, `u = Σ_j exp(s_j − m)`, `w = Σ_j exp(s_j − m) v_j`, read as `w / u`.
    The forms: `parallel` (log-depth prefix scan), `chunk` (closed form inside chunks,
    triples carried between), `recurrent` (token by token).

    Unverified details of the paper: whether it scales scores by `1/sqrt(K)` and how it
    lays out several heads. Here, as for every family, `scale` defaults to `K ** -0.5`,
    and each head has its own query.

    Args:
        q: `[B, H, K]` one query per batch entry and head; with cu_seqlens `[N, H, K]`, one
            per packed sequence.
        k: `[B, T, H, K]` keys.
        v: `[B, T, H, V]` values.
        scale: multiplies q; default `K ** -0.5`.
        initial_state: `AarenState(m [B, H], u [B, H], w [B, H, V])` (`[N, ...]` with
            cu_seqlens), the triple of the tokens seen before, or None for none
            (`m = -inf, u = 0, w = 0`).
        output_final_state: return the state after the last token.
        cu_seqlens: `[N + 1]` int offsets of N packed sequences (then B == 1 for k and v).
        chunk_size: tokens per chunk in the reference chunk form (default 64); the Triton
            kernels use their own (the function is the same).
        form: "parallel" | "chunk" | "recurrent" | "auto" (see `attnforms.core.dispatch`).
        impl: "reference" | "triton" | "auto". Triton kernels exist for the chunk and
            recurrent forms (float16 / bfloat16 / float32, K, V <= 256, with gradients).

    Returns:
        `AttentionOutput(output [B, T, H, V] in q's dtype, AarenState with m, u
        [B or N, H] and w [B or N, H, V] in float32 (float64 for float64 inputs), or None)`.
    """
    offsets = _validate(q, k, v, scale, initial_state, cu_seqlens, chunk_size)
    return run_op(
        FAMILY, form=form, impl=impl, length=k.shape[1], device=q.device,
        per_token=dict(k=k, v=v), per_sequence=dict(q=q),
        initial_state=initial_state, output_final_state=output_final_state, offsets=offsets,
        options=default_options(q.shape[-1], scale, chunk_size),
    )


@remembers_success(value_args=("cu_seqlens",))
def _validate(q, k, v, scale, initial_state, cu_seqlens, chunk_size):
    """Check every argument; return the packed-sequence offsets (or None). Remembered
    per signature (core/memo.py): a decoding step repeats its first call's."""
    for name, x in dict(q=q, k=k, v=v).items():
        check_tensor(name, x)
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v)
    dims = Dims()
    dims.bind("k", k, "B T H K")
    dims.bind("v", v, "B T H V")
    if dims["T"] == 0:
        raise ValueError("k: expected at least one token (T >= 1), got T = 0")
    # One query per row: per batch entry, or per packed sequence with cu_seqlens.
    offsets, rows = check_common_options(
        dims, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens, device=q.device
    )
    dims.bind("q", q, f"{rows} H K")
    if initial_state is not None:
        specs = {"m": f"{rows} H", "u": f"{rows} H", "w": f"{rows} H V"}
        check_state(initial_state, AarenState, dims, specs, q.device)
    return offsets
