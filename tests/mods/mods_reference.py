"""Independent references for the mods tests: attention from an explicit boolean mask and
additive bias (torch SDPA) or an explicit score function, and the mods' coordinates."""
from __future__ import annotations

import torch
import torch.nn.functional as F

FORMS = ("parallel", "chunk", "recurrent")


def positions(T: int, S: int) -> list[int]:
    """Absolute query positions of a call without a cache (bottom-right aligned)."""
    return [S - T + i for i in range(T)]


def loop_mask(predicate, B: int, H: int, T: int, S: int) -> torch.Tensor:
    """bool `[B, H, T, S]` from a plain-Python predicate(b, h, q_pos, kv_pos)."""
    q_pos = positions(T, S)
    return torch.tensor([[[[bool(predicate(b, h, q_pos[i], j)) for j in range(S)] for i in range(T)]
                          for h in range(H)] for b in range(B)])


def loop_bias(function, B: int, H: int, T: int, S: int) -> torch.Tensor:
    """float64 `[B, H, T, S]` from a plain-Python function(b, h, q_pos, kv_pos)."""
    q_pos = positions(T, S)
    return torch.tensor([[[[float(function(b, h, q_pos[i], j)) for j in range(S)] for i in range(T)]
                          for h in range(H)] for b in range(B)], dtype=torch.float64)


def coordinates(B: int, H: int, T: int, S: int):
    """The broadcasting arguments the reference passes a mod (no cache)."""
    b = torch.arange(B).view(-1, 1, 1, 1)
    h = torch.arange(H).view(1, -1, 1, 1)
    q_idx = torch.tensor(positions(T, S)).view(1, 1, -1, 1).expand(B, 1, T, 1)
    kv_idx = torch.arange(S).view(1, 1, 1, -1).expand(B, 1, 1, S)
    return b, h, q_idx, kv_idx


def sdpa(q, k, v, *, keep=None, bias=None, scale=None) -> torch.Tensor:
    """`[B, T, H, V]` softmax attention by torch SDPA with an explicit mask `[B, H, T, S]`
    (True keeps) and additive bias; rows that see nothing are 0 (as in attnforms)."""
    B, T, H, K = q.shape
    S, G = k.shape[1], k.shape[2]
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(H // G, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(H // G, dim=1)
    mask = torch.zeros(B, H, T, S, dtype=q.dtype)
    if bias is not None:
        mask = mask + bias.to(q.dtype)
    if keep is not None:
        mask = mask.masked_fill(~keep, float("-inf"))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
    if keep is not None:
        out = torch.where(keep.any(dim=-1, keepdim=True), out, 0.0)
    return out.transpose(1, 2)


def explicit(q, k, v, modify, *, keep=None, scale=None) -> torch.Tensor:
    """`[B, T, H, V]` attention with scores `modify(scores [B, H, T, S])` written out."""
    B, T, H, K = q.shape
    G = k.shape[2]
    scale = K ** -0.5 if scale is None else scale
    kh = k.transpose(1, 2).repeat_interleave(H // G, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(H // G, dim=1)
    scores = modify(scale * q.transpose(1, 2) @ kh.transpose(-1, -2))
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2)
