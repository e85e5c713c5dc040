"""`mlstm`: the matrix-memory LSTM of xLSTM, with the exponential (mLSTMexp) or the
sigmoid (mLSTMsig) input gate, as computed by TFLA (Beck et al., arXiv 2503.14376).

Without an initial state, the same function as mlstm_kernels' parallel PyTorch references:
`mlstm_parallel_fw` (exp gate) and `mlstm_siging_parallel_fw(normalize=True)` (sigmoid
gate). The maths, chunk decomposition and numerics are in README.md.
"""
from __future__ import annotations

import torch

from ...core.dispatch import Family, forms_of
from ...core.memo import remembers_success
from ...core.run import check_common_options, default_options, run_op
from ...core.shapes import (
    Dims, check_same_device, check_same_dtype, check_state, check_tensor,
)
from ...core.states import AttentionOutput, MLSTMState
from . import reference
from .options import check_normaliser_gradient

try:
    from . import triton as kernels
except ImportError:  # Triton is optional: without it only the reference runs.
    kernels = None

INPUT_GATES = ("exp", "sigmoid")

FAMILY = Family(
    name="mlstm",
    reference=forms_of(reference),
    triton={} if kernels is None else {"chunk": kernels.chunk, "recurrent": kernels.recurrent},
    auto_form="chunk",
)


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    *,
    input_gate: str = "exp",
    normaliser_gradient: str = "exact",
    scale: float | None = None,
    initial_state: MLSTMState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
    form: str = "auto",
    impl: str = "auto",
) -> AttentionOutput:
    """The mLSTM cell: a matrix memory with a sigmoid forget gate and an exponential (or
    sigmoid) input gate, read through a normaliser.

    Per head and step, with `lf_t = logsigmoid(f_t)`, `li_t = i_t` (exp gate) or
    `logsigmoid(i_t)` (sigmoid gate) and `q̂_t = scale · q_t`:
    `m_t = max(lf_t + m_{t-1}, li_t)` (0 for the sigmoid gate),
    `C_t = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(li_t - m_t) k_t v_tᵀ`, `n_t` likewise
    with `k_t`, and `h_t = C_tᵀq̂_t / (max(|n_tᵀq̂_t|, exp(-m_t)) + 1e-6)`. Without an
    initial state the recurrence starts from `C = 0, n = 0, m = -inf`.

    Args:
        q: `[B, T, H, K]` queries.
        k: `[B, T, H, K]` keys.
        v: `[B, T, H, V]` values (same dtype as q and k).
        i: `[B, T, H]` input-gate pre-activations (any float dtype).
        f: `[B, T, H]` forget-gate pre-activations (any float dtype).
        input_gate: "exp" (mLSTMexp, max-stabilised) or "sigmoid" (mLSTMsig, no
            stabiliser: m stays 0, so the normaliser floor is 1).
        normaliser_gradient: "exact" (the gradient of the function above) or "held":
            the normaliser's reciprocal `1 / (max(|n_tᵀq̂_t|, exp(-m_t)) + 1e-6)` and
            every m_t are constants for the gradient, the gradient mlstm_kernels' TFLA
            kernels (and so xLSTM's training) compute. Outputs and states are the same
            either way; dv is the same, dq, dk and the gates' gradients are not.
        scale: multiplies q; default `K ** -0.5`.
        initial_state: `MLSTMState(C [B, H, K, V], n [B, H, K], m [B, H])` (`[N, ...]`
            with cu_seqlens), C and n scaled by `exp(-m)`; or None. Either gate reads any
            m that way (so a state of one gate continues under the other); every state
            the sigmoid gate returns has m = 0.
        output_final_state: return the state after the last token.
        cu_seqlens: `[N + 1]` int offsets of N packed sequences (then B == 1).
        chunk_size: tokens per chunk in the chunk form (default: 64 for the reference,
            the kernels' level-1 chunk, 128, for impl='triton'; 16 to 256 there).
        form: "parallel" | "chunk" | "recurrent" | "auto" (see `attnforms.core.dispatch`).
        impl: "reference" | "triton" | "auto". Triton kernels exist for the chunk and
            recurrent forms (float16 / bfloat16 / float32, K, V <= 256, both gates,
            with gradients of every input and of the initial state).

    Returns:
        `AttentionOutput(output [B, T, H, V] in q's dtype, MLSTMState with C
        [B or N, H, K, V], n [B or N, H, K], m [B or N, H], float32 (float64 for float64
        inputs), or None)`.
    """
    offsets = _validate(q, k, v, i, f, input_gate, scale, initial_state, cu_seqlens, chunk_size,
                        normaliser_gradient)
    return run_op(
        FAMILY, form=form, impl=impl, length=q.shape[1], device=q.device,
        per_token=dict(q=q, k=k, v=v, i=i, f=f),
        initial_state=initial_state, output_final_state=output_final_state, offsets=offsets,
        options={"input_gate": input_gate, "normaliser_gradient": normaliser_gradient,
                 **default_options(q.shape[-1], scale, chunk_size),
                 **_chunk_option(chunk_size)},
    )


def _chunk_option(chunk_size):
    """Without an explicit `chunk_size`, each implementation takes its own default (the
    reference 64, the Triton kernels TFLA's larger level-1 chunk): None tells them to."""
    return {"chunk_size": None} if chunk_size is None else {}


@remembers_success(value_args=("cu_seqlens",))
def _validate(q, k, v, i, f, input_gate, scale, initial_state, cu_seqlens, chunk_size, normaliser_gradient):
    """Check every argument; return the packed-sequence offsets (or None). Remembered
    per signature (core/memo.py): a decoding step repeats its first call's."""
    for name, x in dict(q=q, k=k, v=v, i=i, f=f).items():
        check_tensor(name, x)
    dims = Dims()
    dims.bind("q", q, "B T H K")
    dims.bind("k", k, "B T H K")
    dims.bind("v", v, "B T H V")
    dims.bind("i", i, "B T H")
    dims.bind("f", f, "B T H")
    check_same_dtype(q=q, k=k, v=v)
    if dims["T"] == 0:
        raise ValueError("q: expected at least one token (T >= 1), got T = 0")
    check_same_device(q=q, k=k, v=v, i=i, f=f)
    if input_gate not in INPUT_GATES:
        raise ValueError(f"input_gate: expected one of {INPUT_GATES}, got {input_gate!r}")
    check_normaliser_gradient(normaliser_gradient)
    offsets, batch = check_common_options(
        dims, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens, device=q.device
    )
    if initial_state is not None:
        _validate_state(initial_state, dims, batch, q.device)
    return offsets


def _validate_state(state, dims, batch, device):
    """Shapes and device of `initial_state` (batch letter `batch`: "B", or "N" with
    cu_seqlens). Any m is valid for either gate: it is the state's scale (the memory is
    exp(m)·C), so no value check stalls a GPU call on a device sync."""
    check_state(
        state, MLSTMState, dims,
        {"C": f"{batch} H K V", "n": f"{batch} H K", "m": f"{batch} H"}, device,
    )
