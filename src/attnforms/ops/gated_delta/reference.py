"""The gated delta rule in pure PyTorch: the correctness oracle, in three exact forms.

Per head, with state `S [K, V]` and per step t (see README.md for the derivations):
    S ← Diag(exp(g_t)) S                              decay (skipped when g is None)
    S ← S + β_t k_t (v_t − Sᵀ k_t)ᵀ    with beta      delta-rule write
    S ← S + k_t v_tᵀ                   without beta   plain write
    o_t = Sᵀ (scale · q_t)

All three forms take the same arguments:
    q, k: `[B, T, H, K]`, v: `[B, T, H, V]`, g: None, `[B, T, H]` or `[B, T, H, K]`
    (log-decay), beta: None or `[B, T, H]`, scale: float, initial_state: LinearState
    with `S [B, H, K, V]` or None, output_final_state: bool, chunk_size: int.
They compute in float32 (float64 for float64 inputs) and return
`AttentionOutput(output [B, T, H, V] in the input dtype, LinearState or None)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.shapes import check_log_gate, compute_dtype
from ...core.states import AttentionOutput, LinearState


def recurrent(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size):
    """One token at a time: the recurrence exactly as written above."""
    dtype = v.dtype
    q, k, v, g, beta, S = _prepare(q, k, v, g, beta, scale, initial_state)
    outputs = []
    for t in range(q.shape[2]):
        if g is not None:
            # [B, H, K, 1]: a scalar gate has K = 1 and broadcasts over the key channels.
            S = S * torch.exp(g[:, :, t]).unsqueeze(-1)
        k_t = k[:, :, t]
        if beta is None:
            write = v[:, :, t]
        else:
            # [B, H, V]: the error the delta rule corrects, scaled by the learning rate β.
            write = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhkv,bhk->bhv", S, k_t))
        S = S + k_t.unsqueeze(-1) * write.unsqueeze(-2)
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, :, t]))
    return _finish(torch.stack(outputs, dim=2), S, output_final_state, dtype)


def chunk(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size):
    """Chunks of `chunk_size` tokens: parallel inside a chunk, the state passed between."""
    dtype = v.dtype
    q, k, v, g, beta, S = _prepare(q, k, v, g, beta, scale, initial_state)
    outputs = []
    for start in range(0, q.shape[2], chunk_size):
        part = slice(start, start + chunk_size)
        o, S = _chunk_step(
            q[:, :, part], k[:, :, part], v[:, :, part],
            None if g is None else g[:, :, part],
            None if beta is None else beta[:, :, part],
            S,
        )
        outputs.append(o)
    return _finish(torch.cat(outputs, dim=2), S, output_final_state, dtype)


def parallel(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size):
    """The whole sequence as one chunk: materialises the `T x T` decay-weighted score
    matrix (and, with beta, solves one `T x T` triangular system). O(T²) time and memory,
    O(T²K) memory with a per-channel gate."""
    dtype = v.dtype
    q, k, v, g, beta, S = _prepare(q, k, v, g, beta, scale, initial_state)
    o, S = _chunk_step(q, k, v, g, beta, S)
    return _finish(o, S, output_final_state, dtype)


def _prepare(q, k, v, g, beta, scale, initial_state):
    """Upcast to the compute dtype and move heads before time: `[B, H, T, D]`.

    A scalar gate becomes `[B, H, T, 1]`, so it broadcasts like a per-channel one. The
    log-gate's sign is checked here for CUDA tensors (the API checks CPU ones), so only
    the reference pays that device sync.
    """
    if g is not None and g.device.type == "cuda":
        check_log_gate("g", g)
    dtype = compute_dtype(q.dtype)
    head_major = lambda x: x.to(dtype).transpose(1, 2)
    B, _, H, K = q.shape
    V = v.shape[-1]
    if g is not None:
        g = head_major(g if g.ndim == 4 else g.unsqueeze(-1))
    if beta is not None:
        beta = beta.to(dtype).transpose(1, 2)
    if initial_state is None:
        S = q.new_zeros(B, H, K, V, dtype=dtype)
    else:
        S = initial_state.S.to(dtype)
    return head_major(q) * scale, head_major(k), head_major(v), g, beta, S


def _finish(o, S, output_final_state, dtype):
    """`o [B, H, T, V]` back to `[B, T, H, V]` in the input `dtype`; the state only when
    asked for."""
    return AttentionOutput(
        o.transpose(1, 2).to(dtype), LinearState(S) if output_final_state else None
    )


def _chunk_step(q, k, v, g, beta, S):
    """One chunk of C tokens entering with state S.

    q, k: `[B, H, C, K]`, v: `[B, H, C, V]`, g: None or `[B, H, C, K or 1]`,
    beta: None or `[B, H, C]`, S: `[B, H, K, V]`.
    Returns the outputs `[B, H, C, V]` and the state after the chunk `[B, H, K, V]`.
    """
    # G_r: cumulative log-decay from the chunk start to token r, inclusive.
    G = None if g is None else torch.cumsum(g, dim=2)
    decayed = lambda x: x if G is None else x * torch.exp(G)
    if beta is None:
        scores = _decay_weighted_scores(q, k, G)
        new_values = v
    else:
        # Queries and keys against the keys in one pass: the decay factors are shared.
        scores, A = _decay_weighted_scores(torch.stack([q, k]), k, G).unbind(0)
        # Pseudo-values Ũ: the writes β_r (v_r − S_{r-1}ᵀ k_r) of every token at once, from
        # (I + Diag(β) StrictTril(A)) Ũ = Diag(β) (V − (γ ⊙ K) S), the UT transform of the
        # WY representation. [B, H, C, C] unit-lower-triangular system, [B, H, C, V] sides.
        system = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device) + beta.unsqueeze(-1) * A.tril(-1)
        rhs = beta.unsqueeze(-1) * (v - decayed(k) @ S)
        new_values = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    # [B, H, C, K] @ [B, H, K, V] + [B, H, C, C] @ [B, H, C, V] -> [B, H, C, V]
    o = decayed(q) @ S + scores @ new_values
    if G is not None:
        # Decay of the entering state over the chunk, and of each write to the chunk end;
        # both exponents are <= 0, so nothing here can overflow.
        G_last = G[:, :, -1:]
        S = S * torch.exp(G_last).transpose(-1, -2)
        k = k * torch.exp(G_last - G)
    # [B, H, K, C] @ [B, H, C, V] -> [B, H, K, V]
    S = S + k.transpose(-1, -2) @ new_values
    return o, S


def _causal_mask(C: int, device) -> torch.Tensor:
    """`[C, C]` bool, True where `s <= r`."""
    steps = torch.arange(C, device=device)
    return steps[:, None] >= steps[None, :]


def _decay_weighted_scores(a, b, G):
    """`Σ_c a_rc b_sc exp(G_rc − G_sc)` for `s <= r`, else 0.

    a: `[..., C, K]`, b and G: `[B, H, C, K]` (G: None, or `[B, H, C, 1]` for a scalar
    gate), broadcasting against a's leading dims. Returns `[..., C, C]`.
    Only differences `G_r − G_s` with `s <= r` are used (they are <= 0), see
    `_masked_decay`.
    """
    keep = _causal_mask(a.shape[-2], a.device)
    if G is None:
        return (a @ b.transpose(-1, -2)).masked_fill(~keep, 0.0)
    if G.shape[-1] == 1:
        # [B, H, C, 1] - [B, H, 1, C] -> [B, H, C, C]
        return (a @ b.transpose(-1, -2)) * _masked_decay(G - G.transpose(-1, -2), keep)
    return _channel_decay_weighted_scores(a, b, G)


def _masked_decay(log_decay, keep):
    """`exp(log_decay)` where `keep`, 0 elsewhere, for log-decays that are <= 0 where kept.

    The dropped entries may be large and positive (a later step's decay seen from an
    earlier one); clamping at 0 keeps their exponential finite, so neither the value nor
    the gradient (multiplied by the zero mask) can become inf or NaN. Clamping rather
    than filling with -inf also keeps CPU exponentials on their fast path.
    """
    return torch.exp(log_decay.clamp(max=0.0)) * keep


def _channel_decay_weighted_scores(a, b, G):
    """The per-channel case of `_decay_weighted_scores`, by halving.

    The chunk (padded to a power of two) is cut in halves, and each half again, down to
    single tokens. For a query r in a later half and a key s in the earlier half before
    it, the decay factors through the earlier half's last step e:
    `exp(G_r − G_s) = exp(G_r − G_e) · exp(G_e − G_s)`, both exponents <= 0, so each
    factor is in (0, 1], a factor can only underflow where the true product is smaller
    still, and all the pairs of two halves are one matrix product. A token's own pair
    has decay exp(0) = 1. So no `[C, C, K]` decay tensor is ever formed: each of the
    log2(C) levels exponentiates `C·K` differences, and memory is `O(C·K·log C + C²)`.

    a: `[..., C, K]`, b, G: `[B, H, C, K]`. Returns `[..., C, C]`.
    """
    C, K = G.shape[-2:]
    size = 1 << (C - 1).bit_length()  # the power of two >= C
    if size > C:
        # Zero rows contribute nothing; repeating the last G keeps every exponent <= 0.
        pad = size - C
        a, b = (F.pad(x, (0, 0, 0, pad)) for x in (a, b))
        G = torch.cat([G, G[..., -1:, :].expand(*G.shape[:-2], pad, K)], dim=-2)
    # Blocks of one token: [..., size, 1, 1], each token's score with itself.
    scores = (a * b).sum(-1, keepdim=True).unsqueeze(-1)
    width = 1
    while width < size:
        # Pair the blocks of `width` tokens: [..., pairs, 2 (earlier, later), width, K].
        pairs = size // (2 * width)
        a2, b2, G2 = (x.unflatten(-2, (pairs, 2, width)) for x in (a, b, G))
        G_end = G2[..., 0, -1:, :]  # [B, H, pairs, 1, K]: the earlier block's last step
        a_later = a2[..., 1, :, :] * torch.exp(G2[..., 1, :, :] - G_end)
        b_earlier = b2[..., 0, :, :] * torch.exp(G_end - G2[..., 0, :, :])
        # [..., pairs, width, K] @ [..., pairs, K, width] -> [..., pairs, width, width]
        across = a_later @ b_earlier.transpose(-1, -2)
        # [[earlier, 0], [across, later]]: [..., pairs, 2·width, 2·width]
        blocks = scores.unflatten(-3, (pairs, 2))
        top = torch.cat([blocks[..., 0, :, :], torch.zeros_like(across)], dim=-1)
        bottom = torch.cat([across, blocks[..., 1, :, :]], dim=-1)
        scores = torch.cat([top, bottom], dim=-2)
        width *= 2
    return scores[..., 0, :C, :C]
