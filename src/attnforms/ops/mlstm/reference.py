"""The mLSTM in pure PyTorch: the correctness oracle, in three exact forms.

Per head, with state `(C [K, V], n [K], m)` kept scaled by `exp(-m)` and per step t
(see README.md for the derivations):
    lf_t = logsigmoid(f_t);  li_t = i_t (exp gate) or logsigmoid(i_t) (sigmoid gate)
    m_t  = max(lf_t + m_{t-1}, li_t)       (exp gate; m_t = 0 for the sigmoid gate)
    C_t  = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(li_t - m_t) k_t v_tᵀ
    n_t  = exp(lf_t + m_{t-1} - m_t) n_{t-1} + exp(li_t - m_t) k_t
    h_t  = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, exp(-m_t)) + MLSTM_EPS),   q̂_t = scale · q_t

All three forms take the same arguments:
    q, k: `[B, T, H, K]`, v: `[B, T, H, V]`, i, f: `[B, T, H]` gate pre-activations,
    input_gate: "exp" | "sigmoid", scale: float, initial_state: MLSTMState with
    `C [B, H, K, V]`, `n [B, H, K]`, `m [B, H]` or None, output_final_state: bool,
    chunk_size: int, normaliser_gradient: "exact" | "held" (held: the normaliser's
    factor `1 / (max(|n_tᵀq̂_t|, exp(-m_t)) + MLSTM_EPS)` and every m_t are constants
    for the gradient, as TFLA's backward computes it; the values are the same).
They compute in float32 (float64 for float64 inputs) and return
`AttentionOutput(output [B, T, H, V] in the input dtype, MLSTMState or None)`.
Internally tensors are head-major: `[B, H, T, D]`, gates `[B, H, T]`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...core.constants import DEFAULT_CHUNK_SIZE, MLSTM_EPS
from ...core.shapes import compute_dtype
from ...core.states import AttentionOutput, MLSTMState
from .options import held_gradient


def recurrent(q, k, v, i, f, *, input_gate, scale, initial_state, output_final_state, chunk_size,
              normaliser_gradient="exact"):
    """One token at a time: the recurrence exactly as written above."""
    dtype = v.dtype
    held = held_gradient(normaliser_gradient)
    q, k, v, lf, li, (C, n, m), stabilise = _prepare(q, k, v, i, f, input_gate, scale, initial_state)
    outputs = []
    for t in range(q.shape[2]):
        carried = lf[:, :, t] + m  # [B, H]: log weight of the previous state after this step
        m_new = _stabiliser(carried, li[:, :, t], stabilise, held)
        decay = torch.exp(carried - m_new)[..., None]  # [B, H, 1]
        write = torch.exp(li[:, :, t] - m_new)[..., None] * k[:, :, t]  # [B, H, K]
        C = decay[..., None] * C + write[..., None] * v[:, :, t, None, :]
        n = decay * n + write
        m = m_new
        num = torch.einsum("bhkv,bhk->bhv", C, q[:, :, t])
        den = torch.einsum("bhk,bhk->bh", n, q[:, :, t])
        outputs.append(_normalise(num, den, m, held))
    return _finish(torch.stack(outputs, dim=2), MLSTMState(C, n, m), output_final_state, dtype)


def chunk(q, k, v, i, f, *, input_gate, scale, initial_state, output_final_state, chunk_size,
          normaliser_gradient="exact"):
    """Chunks of `chunk_size` tokens: parallel inside a chunk, the state `(C, n, m)`
    passed between chunks (`chunk_size` None: DEFAULT_CHUNK_SIZE)."""
    chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
    held = held_gradient(normaliser_gradient)
    dtype = v.dtype
    q, k, v, lf, li, state, stabilise = _prepare(q, k, v, i, f, input_gate, scale, initial_state)
    outputs = []
    for start in range(0, q.shape[2], chunk_size):
        part = slice(start, start + chunk_size)
        o, state = _chunk_step(
            q[:, :, part], k[:, :, part], v[:, :, part], lf[:, :, part], li[:, :, part],
            state, stabilise, held,
        )
        outputs.append(o)
    return _finish(torch.cat(outputs, dim=2), state, output_final_state, dtype)


def parallel(q, k, v, i, f, *, input_gate, scale, initial_state, output_final_state, chunk_size,
             normaliser_gradient="exact"):
    """The whole sequence as one chunk: materialises the `T x T` log-gate matrix, plus
    one column for the initial state. O(T²) time and memory."""
    dtype = v.dtype
    q, k, v, lf, li, state, stabilise = _prepare(q, k, v, i, f, input_gate, scale, initial_state)
    o, state = _chunk_step(q, k, v, lf, li, state, stabilise, held_gradient(normaliser_gradient))
    return _finish(o, state, output_final_state, dtype)


def _prepare(q, k, v, i, f, input_gate, scale, initial_state):
    """Upcast to the compute dtype, move heads before time, take the gates to log space.

    Returns q̂ (scaled), k: `[B, H, T, K]`, v: `[B, H, T, V]`, lf, li: `[B, H, T]`, the
    entering state `(C [B, H, K, V], n [B, H, K], m [B, H])`, and whether m is a running
    max (exp gate) or pinned at 0 (sigmoid gate).
    """
    dtype = compute_dtype(q.dtype)
    head_major = lambda x: x.to(dtype).transpose(1, 2)
    B, _, H, K = q.shape
    V = v.shape[-1]
    stabilise = input_gate == "exp"
    lf = F.logsigmoid(head_major(f))
    li = head_major(i) if stabilise else F.logsigmoid(head_major(i))
    if initial_state is None:
        # Nothing written yet: m_0 = -inf, so the first step sets m_1 = li_1 and the
        # zero state enters with weight exp(-inf) = 0 (never 0 * inf). The sigmoid gate
        # keeps m at 0.
        m = q.new_full((B, H), float("-inf") if stabilise else 0.0, dtype=dtype)
        state = (q.new_zeros(B, H, K, V, dtype=dtype), q.new_zeros(B, H, K, dtype=dtype), m)
    else:
        state = tuple(x.to(dtype) for x in initial_state)
    return head_major(q) * scale, head_major(k), head_major(v), lf, li, state, stabilise


def _finish(o, state, output_final_state, dtype):
    """`o [B, H, T, V]` back to `[B, T, H, V]` in the input `dtype`; the state only when
    asked for."""
    return AttentionOutput(
        o.transpose(1, 2).to(dtype), MLSTMState(*state) if output_final_state else None
    )


def _chunk_step(q, k, v, lf, li, state, stabilise, held=False):
    """One chunk of L tokens entering with state `(C, n, m)`.

    q, k: `[B, H, L, K]` (q already scaled), v: `[B, H, L, V]`, lf, li: `[B, H, L]`,
    state: C `[B, H, K, V]`, n `[B, H, K]`, m `[B, H]`.
    Returns the outputs `[B, H, L, V]` and the state after the chunk. held: see
    normaliser_gradient in the module docstring.
    Every exponent below is <= 0: each is a log weight minus the max it was taken in.
    """
    C, n, m_in = state
    L = q.shape[2]
    b = torch.cumsum(lf, dim=-1)  # [B, H, L]: log forget from the chunk start, inclusive
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    # [B, H, L, L]: log weight of token s's write when token r reads it, s <= r. The
    # masked pairs become -inf before any exponential: exact zeros, no NaN gradient.
    log_gates = (b[..., :, None] - b[..., None, :] + li[..., None, :]).masked_fill(~causal, float("-inf"))
    from_state = b + m_in[..., None]  # [B, H, L]: log weight of the entering state at r
    m = _stabiliser(from_state, log_gates.amax(dim=-1), stabilise, held)
    # Intra-chunk part: a causal attention with weights exp(log_gates - m).
    scores = (q @ k.transpose(-1, -2)) * torch.exp(log_gates - m[..., None])  # [B, H, L, L]
    # Inter-chunk part: the entering state read by every query of the chunk.
    state_weight = torch.exp(from_state - m)  # [B, H, L]
    num = state_weight[..., None] * (q @ C) + scores @ v  # [B, H, L, V]
    den = state_weight * (q @ n[..., None]).squeeze(-1) + scores.sum(dim=-1)  # [B, H, L]
    o = _normalise(num, den, m, held)

    # The state at the chunk end: the entering state decayed over the whole chunk, plus
    # every write decayed from its step to the end.
    total = b[..., -1]  # [B, H]
    to_end = total[..., None] - b + li  # [B, H, L]
    m_out = _stabiliser(total + m_in, to_end.amax(dim=-1), stabilise, held)
    decay = torch.exp(total + m_in - m_out)  # [B, H]
    weighted_k = k * torch.exp(to_end - m_out[..., None])[..., None]  # [B, H, L, K]
    C = decay[..., None, None] * C + weighted_k.transpose(-1, -2) @ v
    n = decay[..., None] * n + weighted_k.sum(dim=-2)
    return o, (C, n, m_out)


def _stabiliser(carried, written, stabilise, held=False):
    """The max state: the larger of the carried state's log weight and the largest write's
    (`[B, H, ...]` each) for the exp gate; 0 for the sigmoid gate, whose weights are all
    <= 1 already. held: a constant for the gradient."""
    m = torch.maximum(carried, written) if stabilise else torch.zeros_like(carried)
    return m.detach() if held else m


def _normalise(num, den, m, held=False):
    """`num / (max(|den|, exp(-m)) + eps)` without forming `exp(-m)`.

    num: `[..., V]`, den and m: `[...]`. Returns `[..., V]`.
    `exp(-m)` overflows for very negative m (input gates around -1e4), and its gradient
    would then be 0 * inf = NaN. Since `x -> 1 / (x + eps)` is decreasing, the reciprocal of
    the normaliser is `min(1 / (|den| + eps), 1 / (exp(-m) + eps))`, and the second term
    equals `sigmoid(m + log eps) / eps`, which is finite with finite gradients for every m.
    held: the reciprocal is a constant for the gradient.
    """
    from_den = 1.0 / (den.abs() + MLSTM_EPS)
    from_floor = torch.sigmoid(m + math.log(MLSTM_EPS)) / MLSTM_EPS
    factor = torch.minimum(from_den, from_floor)
    return num * (factor.detach() if held else factor)[..., None]
