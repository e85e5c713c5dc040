"""Aaren (attention as an RNN) in pure PyTorch: the correctness oracle, in three exact forms.

One query per head attends causally over the keys; per head and step t:
    s_t = scale · q·k_t
    o_t = Σ_{j≤t} softmax(s_1..s_t)_j v_j = w_t / u_t
with the running max `m_t = max_{j≤t} s_j`, the denominator `u_t = Σ_{j≤t} exp(s_j − m_t)`
and the numerator `w_t = Σ_{j≤t} exp(s_j − m_t) v_j`.
Every form builds these triples from the leaves `(s_t, 1, v_t)` with one associative
operator, `combine`, starting from the initial state (or the identity `(-inf, 0, 0)`).
See README.md for the derivations.

All three forms take the same arguments:
    q: `[B, H, K]`, k: `[B, T, H, K]`, v: `[B, T, H, V]`, scale: float,
    initial_state: AarenState with m, u `[B, H]` and w `[B, H, V]`, or None,
    output_final_state: bool, chunk_size: int (read by `chunk` only).
They compute in float32 (float64 for float64 inputs) and return
`AttentionOutput(output [B, T, H, V] in the input dtype, AarenState or None)`.
"""
from __future__ import annotations

import torch

from ...core.shapes import compute_dtype
from ...core.states import AarenState, AttentionOutput

# A triple `(m, u, w)`: m and u of one shape `[...]`, w of shape `[..., V]`.
Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def combine(a: Triple, b: Triple) -> Triple:
    """`a ⊕ b`: the triple of the tokens of `a` followed by the tokens of `b`.

    a, b: triples whose m, u have broadcastable shapes `[...]` and w `[..., V]`.
    Returns `(m, u_a e^{m_a−m} + u_b e^{m_b−m}, w_a e^{m_a−m} + w_b e^{m_b−m})` with
    `m = max(m_a, m_b)`, so every exponent is <= 0. The identity is `(-inf, 0, 0)`.
    """
    m_a, u_a, w_a = a
    m_b, u_b, w_b = b
    m = torch.maximum(m_a, m_b)
    # Where both sides are empty (m = -inf), shifting by 0 instead of m turns the
    # exp(-inf - -inf) = NaN factors into exp(-inf) = 0 and returns the identity; the
    # `where` also keeps that NaN out of the gradient.
    shift = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    factor_a = torch.exp(m_a - shift)
    factor_b = torch.exp(m_b - shift)
    u = u_a * factor_a + u_b * factor_b
    w = w_a * factor_a.unsqueeze(-1) + w_b * factor_b.unsqueeze(-1)
    return m, u, w


def recurrent(q, k, v, *, scale, initial_state, output_final_state, chunk_size):
    """One token at a time: the stable cell `state ← state ⊕ (s_t, 1, v_t)`."""
    dtype = v.dtype
    s, v, state = _prepare(q, k, v, scale, initial_state)
    one = torch.ones_like(s[:, :, 0])
    steps = []
    for t in range(s.shape[2]):
        state = combine(state, (s[:, :, t], one, v[:, :, t]))
        steps.append(state)
    return _finish(_stack_time(steps, torch.stack), output_final_state, dtype)


def chunk(q, k, v, *, scale, initial_state, output_final_state, chunk_size):
    """Chunks of `chunk_size` tokens: local triples in closed form inside a chunk, then
    `carried ⊕ local`, carrying the triple of the chunk's last token on."""
    dtype = v.dtype
    s, v, state = _prepare(q, k, v, scale, initial_state)
    carried = _along_time(state)
    pieces = []
    for start in range(0, s.shape[2], chunk_size):
        part = slice(start, start + chunk_size)
        triples = combine(carried, _chunk_triples(s[:, :, part], v[:, :, part]))
        pieces.append(triples)
        carried = tuple(x[:, :, -1:] for x in triples)
    return _finish(_stack_time(pieces, torch.cat), output_final_state, dtype)


def parallel(q, k, v, *, scale, initial_state, output_final_state, chunk_size):
    """A Hillis–Steele inclusive prefix scan of the leaves `(s_t, 1, v_t)` with `combine`:
    ceil(log2 T) vectorised steps, O(T log T) work; then `initial_state ⊕ prefix_t`."""
    dtype = v.dtype
    s, v, state = _prepare(q, k, v, scale, initial_state)
    prefixes = _prefix_scan((s, torch.ones_like(s), v))
    return _finish(combine(_along_time(state), prefixes), output_final_state, dtype)


def _prepare(q, k, v, scale, initial_state):
    """Upcast to the compute dtype, form the scores and move heads before time.

    Returns the scores s `[B, H, T]`, the values `[B, H, T, V]` and the entering triple
    (m, u `[B, H]`, w `[B, H, V]`), the identity `(-inf, 0, 0)` without an initial state.
    """
    dtype = compute_dtype(q.dtype)
    # [B, H, K] x [B, T, H, K] -> [B, H, T]
    s = torch.einsum("bhk,bthk->bht", q.to(dtype) * scale, k.to(dtype))
    v = v.to(dtype).transpose(1, 2)
    if initial_state is None:
        B, H, _ = s.shape
        state = (
            s.new_full((B, H), float("-inf")), s.new_zeros(B, H), s.new_zeros(B, H, v.shape[-1]),
        )
    else:
        state = tuple(x.to(dtype) for x in initial_state)
    return s, v, state


def _along_time(state: Triple) -> Triple:
    """A triple `(m, u [B, H], w [B, H, V])` as one time step: `[B, H, 1]`, `[B, H, 1, V]`."""
    m, u, w = state
    return m.unsqueeze(2), u.unsqueeze(2), w.unsqueeze(2)


def _stack_time(triples: list[Triple], join) -> Triple:
    """Join per-step or per-chunk triples along time (dim 2) with `torch.stack` / `cat`."""
    return tuple(join(parts, dim=2) for parts in zip(*triples))


def _chunk_triples(s, v) -> Triple:
    """The inclusive prefix triples of one chunk of C tokens, without any carried state.

    s: `[B, H, C]`, v: `[B, H, C, V]`. Returns m, u `[B, H, C]` and w `[B, H, C, V]`.
    With the prefix max `m_r = max_{j≤r} s_j` and `W_rs = exp(s_s − m_r)` for `s <= r`
    (0 above the diagonal): `u_r = Σ_s W_rs`, `w_r = Σ_s W_rs v_s`. Every kept exponent
    is <= 0, so nothing overflows and no row underflows to zero (its max has weight 1).
    """
    steps = torch.arange(s.shape[-1], device=s.device)
    causal = steps.unsqueeze(-1) >= steps  # [C, C]: True where s <= r
    m = torch.cummax(s, dim=-1).values
    # [B, H, 1, C] - [B, H, C, 1] -> [B, H, C, C]. Pairs above the diagonal may be
    # positive; they are set to -inf before the exponential so they give exact zeros and
    # no inf (nor 0 · inf = NaN in the gradient).
    exponent = (s.unsqueeze(-2) - m.unsqueeze(-1)).masked_fill(~causal, float("-inf"))
    weights = torch.exp(exponent)
    # [B, H, C, C] @ [B, H, C, V] -> [B, H, C, V]
    return m, weights.sum(-1), weights @ v


def _prefix_scan(leaves: Triple) -> Triple:
    """Inclusive scan of `combine` along time (dim 2), Hillis–Steele.

    leaves: m, u `[B, H, T]`, w `[B, H, T, V]`. At step d every position t >= 2^d takes
    `x[t − 2^d] ⊕ x[t]`; after the step, x[t] covers the 2^(d+1) tokens ending at t (or
    all tokens from the first). Returns the triples of every prefix, same shapes.
    """
    triples = leaves
    T = leaves[0].shape[2]
    offset = 1
    while offset < T:
        head = tuple(x[:, :, :offset] for x in triples)
        earlier = tuple(x[:, :, :-offset] for x in triples)
        later = tuple(x[:, :, offset:] for x in triples)
        tail = combine(earlier, later)
        triples = tuple(torch.cat([h, t], dim=2) for h, t in zip(head, tail))
        offset *= 2
    return triples


def _finish(triples: Triple, output_final_state: bool, dtype) -> AttentionOutput:
    """Read `o_t = w_t / u_t` from the prefix triples (m, u `[B, H, T]`, w `[B, H, T, V]`)
    as `[B, T, H, V]` in the input `dtype`; the last triple is the final state (copied,
    so a state kept while streaming does not hold on to the whole sequence's triples)."""
    m, u, w = triples
    o = (w / u.unsqueeze(-1)).transpose(1, 2).to(dtype)
    final = None
    if output_final_state:
        final = AarenState(*(x[:, :, -1].contiguous() for x in (m, u, w)))
    return AttentionOutput(o, final)
