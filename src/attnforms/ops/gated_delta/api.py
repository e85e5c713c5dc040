"""`gated_delta_rule` and its named configurations.

One recurrence, two switches: the log-decay `g` (None / per head / per key channel) and
the delta-rule learning rate `beta` (None / given).

| g            | beta  | name                                 |
|--------------|-------|--------------------------------------|
| None         | None  | `linear_attention`                   |
| `[B, T, H]`  | None  | `simple_gla` (RetNet / Mamba2 decay) |
| `[B,T,H,K]`  | None  | `gla`                                |
| None         | given | `delta_rule` (DeltaNet)              |
| `[B, T, H]`  | given | `gated_deltanet`                     |
| `[B,T,H,K]`  | given | `kda` (Kimi Delta Attention)         |
"""
from __future__ import annotations

import torch

from ...core.dispatch import Family, ImplUnavailableError, forms_of, triton_unavailable_reason
from ...core.memo import remembers_success
from ...core.run import check_common_options, default_options, run_op
from ...core.shapes import (
    Dims, check_log_gate, check_same_device, check_same_dtype, check_state, check_tensor,
)
from ...core.states import AttentionOutput, LinearState
from . import reference

try:
    from . import triton as kernels
except ImportError:  # Triton is optional: without it only the reference runs.
    kernels = None

FAMILY = Family(
    name="gated_delta_rule",
    reference=forms_of(reference),
    triton={} if kernels is None else {"chunk": kernels.chunk, "recurrent": kernels.recurrent},
    auto_form="chunk",
    variants=("linear_attention", "simple_gla", "gla", "delta_rule", "gated_deltanet", "kda"),
)


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    g: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: LinearState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
    form: str = "auto",
    impl: str = "auto",
) -> AttentionOutput:
    """Linear attention with optional decay and delta-rule writes.

    Per head and step: `S ← exp(g_t) ⊙ S` (per head or per key channel), then with beta
    `S ← S + β_t k_t (v_t − Sᵀk_t)ᵀ`, without it `S ← S + k_t v_tᵀ`; `o_t = Sᵀ(scale·q_t)`.
    The convention of flash-linear-attention's `chunk_gated_delta_rule` / `chunk_kda`.

    Args:
        q: `[B, T, H, K]` queries.
        k: `[B, T, H, K]` keys (L2-normalise them for the delta rule to be stable).
        v: `[B, T, H, V]` values.
        g: None, `[B, T, H]` or `[B, T, H, K]` log-decay, every entry <= 0. A positive
           entry raises ValueError, except for CUDA inputs on the Triton kernels: there
           the check would stall every call on a device sync, so the kernels return NaN
           for that head from the chunk holding it on (the step, in the recurrent form).
        beta: None or `[B, T, H]` delta-rule learning rate, usually in (0, 1) (or (0, 2)
            to allow negative eigenvalues).
        scale: multiplies q; default `K ** -0.5`.
        initial_state: `LinearState(S [B, H, K, V])` (`[N, ...]` with cu_seqlens) or None
            for a zero state.
        output_final_state: return the state after the last token.
        cu_seqlens: `[N + 1]` int offsets of N packed sequences (then B == 1).
        chunk_size: tokens per chunk in the chunk form (default 64).
        form: "parallel" | "chunk" | "recurrent" | "auto" (see `attnforms.core.dispatch`).
        impl: "reference" | "triton" | "auto".

    Returns:
        `AttentionOutput(output [B, T, H, V] in q's dtype, LinearState with S
        [B or N, H, K, V] float32 (float64 for float64 inputs) or None)`.
    """
    offsets = _validate(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    return run_op(
        FAMILY, form=form, impl=impl, length=q.shape[1], device=q.device,
        per_token=dict(q=q, k=k, v=v, g=g, beta=beta),
        initial_state=initial_state, output_final_state=output_final_state, offsets=offsets,
        options=default_options(q.shape[-1], scale, chunk_size),
    )


def gated_delta_rule_update_(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: LinearState,
    *,
    g: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode in place: run the recurrent Triton kernel on a few new tokens and write the
    state after them over `state.S`, a caller-owned cache (no new state is allocated).

    Args as in `gated_delta_rule`; state: `LinearState(S [B or N, H, K, V])`, S float32
    and contiguous, on a device where Triton runs. Gradients are not tracked.
    Returns the output `[B, T, H, V]`.

    Every call is validated in full the first time its argument signature is seen and
    remembered after (core/memo.py), so a decode step pays microseconds for it. On a
    CUDA device the log-gates' sign is not checked on the host (that would wait for the
    device): the kernel turns a positive gate's head output and state to NaN (loud,
    never a silently wrong number).
    """
    offsets = _validate(q, k, v, g, beta, scale, state, cu_seqlens, None)
    if kernels is None:
        raise ImplUnavailableError("gated_delta_rule_update_: the triton package is not installed")
    reason = triton_unavailable_reason(q.device)
    if reason is not None:
        raise ImplUnavailableError(f"gated_delta_rule_update_: {reason}")
    if state.S.dtype != torch.float32 or not state.S.is_contiguous():
        raise TypeError(
            f"state.S: expected a contiguous float32 tensor to update in place, got "
            f"{state.S.dtype}{'' if state.S.is_contiguous() else ', not contiguous'}"
        )
    with torch.no_grad():
        return kernels.recurrent_update_(
            q, k, v, g=g, beta=beta, scale=q.shape[-1] ** -0.5 if scale is None else scale,
            state=state, offsets=offsets,
        )


def _validate(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size):
    """Check every argument; return the packed-sequence offsets (or None)."""
    offsets = _validate_layout(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size)
    if g is not None and g.device.type != "cuda":
        # A check of values, so never remembered. On CUDA the host check would stall
        # every call on a device sync; the Triton kernels turn positive gates into NaN
        # instead, and the reference checks (see reference._prepare).
        check_log_gate("g", g)
    return offsets


@remembers_success(value_args=("cu_seqlens",))
def _validate_layout(q, k, v, g, beta, scale, initial_state, cu_seqlens, chunk_size):
    """Every check but the gates' values (`_validate`), remembered per signature
    (core/memo.py): a decoding step repeats its first call's."""
    for name, x in dict(q=q, k=k, v=v).items():
        check_tensor(name, x)
    dims = Dims()
    dims.bind("q", q, "B T H K")
    dims.bind("k", k, "B T H K")
    dims.bind("v", v, "B T H V")
    check_same_dtype(q=q, k=k, v=v)
    if dims["T"] == 0:
        raise ValueError("q: expected at least one token (T >= 1), got T = 0")
    if g is not None:
        check_tensor("g", g)
        dims.bind("g", g, "B T H K" if g.ndim == 4 else "B T H")
    if beta is not None:
        check_tensor("beta", beta)
        dims.bind("beta", beta, "B T H")
    check_same_device(q=q, k=k, v=v, g=g, beta=beta)
    offsets, batch = check_common_options(
        dims, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens, device=q.device
    )
    if initial_state is not None:
        check_state(initial_state, LinearState, dims, {"S": f"{batch} H K V"}, q.device)
    return offsets


def _require(name: str, x, layout: str, op: str) -> None:
    """Named wrappers fix which gate layout they take."""
    if x is None:
        raise TypeError(f"{op}: {name} is required ({layout})")
    check_tensor(name, x)
    expected_ndim = len(layout.strip("[]").split(","))
    if x.ndim != expected_ndim:
        raise ValueError(f"{op}: {name}: expected shape {layout}, got shape {list(x.shape)}")


def linear_attention(q, k, v, **kwargs) -> AttentionOutput:
    """Plain causal linear attention `o_t = Σ_{s<=t} (q_t·k_s) v_s`: `gated_delta_rule`
    with `g=None, beta=None`. Same keywords and shapes as `gated_delta_rule`."""
    return gated_delta_rule(q, k, v, **kwargs)


def simple_gla(q, k, v, g, **kwargs) -> AttentionOutput:
    """Linear attention with a scalar decay per head and step (RetNet, Mamba2 style).

    g: `[B, T, H]` log-decay <= 0. Other arguments as in `gated_delta_rule`."""
    _require("g", g, "[B, T, H]", "simple_gla")
    return gated_delta_rule(q, k, v, g=g, **kwargs)


def gla(q, k, v, g, **kwargs) -> AttentionOutput:
    """Gated linear attention: a decay per key channel.

    g: `[B, T, H, K]` log-decay <= 0. Other arguments as in `gated_delta_rule`."""
    _require("g", g, "[B, T, H, K]", "gla")
    return gated_delta_rule(q, k, v, g=g, **kwargs)


def delta_rule(q, k, v, beta, **kwargs) -> AttentionOutput:
    """DeltaNet: delta-rule writes, no decay.

    beta: `[B, T, H]`. Other arguments as in `gated_delta_rule`."""
    _require("beta", beta, "[B, T, H]", "delta_rule")
    return gated_delta_rule(q, k, v, beta=beta, **kwargs)


def gated_deltanet(q, k, v, g, beta, **kwargs) -> AttentionOutput:
    """Gated DeltaNet: a scalar decay per head and step, then a delta-rule write.

    g: `[B, T, H]` log-decay <= 0; beta: `[B, T, H]`. Other arguments as in
    `gated_delta_rule`."""
    _require("g", g, "[B, T, H]", "gated_deltanet")
    _require("beta", beta, "[B, T, H]", "gated_deltanet")
    return gated_delta_rule(q, k, v, g=g, beta=beta, **kwargs)


def kda(q, k, v, g, beta, **kwargs) -> AttentionOutput:
    """Kimi Delta Attention: a decay per key channel, then a delta-rule write.

    g: `[B, T, H, K]` log-decay <= 0; beta: `[B, T, H]`. Other arguments as in
    `gated_delta_rule`."""
    _require("g", g, "[B, T, H, K]", "kda")
    _require("beta", beta, "[B, T, H]", "kda")
    return gated_delta_rule(q, k, v, g=g, beta=beta, **kwargs)
