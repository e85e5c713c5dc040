"""Launchers of the Aaren kernels: allocate, pick tiles, build grids, call.

k, v are time-major (`[B, T, H, D]`, or `[1, T, H, D]` packed with `offsets`); q and the
triples have one row per sequence: q `[N, H, K]`, m, u `[N, H]`, w `[N, H, V]` float32.
"""
from __future__ import annotations

import functools

import torch
import triton

from ....kernels.sequences import sequence_offsets
from .recurrent import _recurrent_kernel
from .scan import _scan_bwd_kernel, _scan_fwd_kernel, _score_bwd_kernel, _score_kernel

# Tokens per step of the sequential scans (the `[BT, BT]` in-chunk matrix) and per
# program of the score kernels.
CHUNK = 64
# Value tile of the scans: more tiles, more programs walking each sequence in parallel.
SCAN_BV = 64
SCAN_WARPS = 8


@functools.lru_cache(maxsize=64)
def _tables(offsets: tuple[int, ...], device: torch.device):
    """cu_seqlens `[N + 1]` int64, chunk_indices `[chunks, 2]` int32 (sequence, chunk in
    sequence) and each row's sequence `[rows]` int64."""
    counts = [triton.cdiv(end - start, CHUNK) for start, end in zip(offsets, offsets[1:])]
    indices = torch.tensor([[n, t] for n, c in enumerate(counts) for t in range(c)],
                           dtype=torch.int32, device=device).reshape(-1, 2)
    lengths = [end - start for start, end in zip(offsets, offsets[1:])]
    row_seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(device)
    return torch.tensor(offsets, dtype=torch.int64, device=device), indices, row_seq


def _dims(q, k, v, offsets):
    B, T, H, K = k.shape
    offsets = sequence_offsets(B, T, offsets)
    return B, T, H, K, v.shape[-1], offsets, len(offsets) - 1


def scores(q, k, scale, offsets):
    """s `[rows, H]` float32."""
    B, T, H, K, _, offsets, _ = _dims(q, k, k, offsets)
    cu_seqlens, chunk_indices, _ = _tables(offsets, k.device)
    s = torch.empty(B * T, H, dtype=torch.float32, device=k.device)
    _score_kernel[(len(chunk_indices), H)](q.contiguous(), k.contiguous(), s, chunk_indices, cu_seqlens, scale,
                                           H=H, K=K, BT=CHUNK, BK=max(16, triton.next_power_of_2(K)))
    return s


def forward(q, k, v, scale, initial, store_final, offsets, out_dtype=None):
    """Returns the output `[B, T, H, V]`, the final (m, u, w) or None, and (s, L) for the
    backward (scores and prefix log-sum-exps, `[rows, H]` float32)."""
    B, T, H, K, V, offsets, N = _dims(q, k, v, offsets)
    device = k.device
    cu_seqlens, _, _ = _tables(offsets, device)
    s = scores(q, k, scale, offsets)
    f32 = dict(dtype=torch.float32, device=device)
    L = torch.empty(B * T, H, **f32)
    o = torch.empty(B, T, H, V, dtype=out_dtype or v.dtype, device=device)
    final = (torch.empty(N, H, **f32), torch.empty(N, H, **f32), torch.empty(N, H, V, **f32)) if store_final else (None,) * 3
    BV = min(SCAN_BV, max(16, triton.next_power_of_2(V)))
    _scan_fwd_kernel[(triton.cdiv(V, BV), N * H)](
        s, v.contiguous(), o, L, *(initial or (None,) * 3), *final, cu_seqlens, H=H, V=V,
        USE_INITIAL=initial is not None, STORE_FINAL=store_final, BT=CHUNK, BV=BV,
        num_warps=SCAN_WARPS,
    )
    return o, (final if store_final else None), (s, L)


def backward(q, k, v, scale, initial, saved, final, o32, do, dfinal, offsets):
    """Gradients of q, k, v and the initial (m, u, w) (None without one).
    dfinal: the final triple's gradients (dm, du, dw), each possibly None."""
    B, T, H, K, V, offsets, N = _dims(q, k, v, offsets)
    device = k.device
    cu_seqlens, chunk_indices, row_seq = _tables(offsets, device)
    s, L = saved
    m_f, u_f, w_f = final
    dm_f, du_f, dw_f = dfinal
    f32 = dict(dtype=torch.float32, device=device)
    do = do.contiguous()
    delta = (do.float() * o32).sum(-1).reshape(B * T, H)
    # The final triple's gradient, at the reference log-sum-exp L_T = m_T + log u_T.
    G = torch.zeros(N, H, V, **f32) if dw_f is None else u_f[..., None] * dw_f.float()
    Gamma = torch.zeros(N, H, **f32) if du_f is None else -u_f * du_f.float()
    BV = min(SCAN_BV, max(16, triton.next_power_of_2(V)))
    NV = triton.cdiv(V, BV)
    dv = torch.empty_like(v)
    ds_part = torch.empty(B * T, H, NV, **f32)
    du0 = torch.empty(N, H, **f32) if initial is not None else None
    dw0 = torch.empty(N, H, V, **f32) if initial is not None else None
    _scan_bwd_kernel[(NV, N * H)](
        s, v.contiguous(), do, L, delta, G.contiguous(), Gamma.contiguous(),
        None if initial is None else initial[0], dv, ds_part, du0, dw0, cu_seqlens, H=H, V=V, NV=NV,
        USE_INITIAL=initial is not None, BT=CHUNK, BV=BV, num_warps=SCAN_WARPS,
    )
    ds = ds_part.sum(-1)
    # The final max m_T: its own gradient less the rescaling of u and w it implies, to the
    # score (or the initial max) that attains it.
    mu = torch.zeros(N, H, **f32)
    if dm_f is not None:
        mu += dm_f.float()
    if du_f is not None:
        mu -= u_f * du_f.float()
    if dw_f is not None:
        mu -= (w_f * dw_f.float()).sum(-1)
    at_max = s == m_f[row_seq]
    from_initial = torch.zeros(N, H, dtype=torch.bool, device=device)
    if initial is not None:
        from_initial = initial[0] == m_f
    at_max &= ~from_initial[row_seq]
    count = torch.zeros(N, H, **f32).index_add_(0, row_seq, at_max.float()).clamp(min=1)
    ds += torch.where(at_max, (mu / count)[row_seq], 0.0)
    dk = torch.empty_like(k)
    dq_part = torch.empty(len(chunk_indices), H, K, **f32)
    _score_bwd_kernel[(len(chunk_indices), H)](
        q.contiguous(), k.contiguous(), ds, dk, dq_part, chunk_indices, cu_seqlens, scale, H=H, K=K,
        BT=CHUNK, BK=max(16, triton.next_power_of_2(K)),
    )
    dq = torch.zeros(N, H, K, **f32).index_add_(0, chunk_indices[:, 0].long(), dq_part).to(q.dtype)
    dm0 = None
    if initial is not None:
        m0, u0, w0 = initial
        dm0 = (w0 * dw0).sum(-1) + u0 * du0 + torch.where(from_initial, mu, 0.0)
    return dq, dk, dv, dm0, du0, dw0


def recurrent_forward(q, k, v, scale, initial, store_final, offsets):
    """Token by token in one launch; returns the output and the final (m, u, w) or None."""
    B, T, H, K, V, offsets, N = _dims(q, k, v, offsets)
    device = k.device
    cu_seqlens, _, _ = _tables(offsets, device)
    f32 = dict(dtype=torch.float32, device=device)
    final = (torch.empty(N, H, **f32), torch.empty(N, H, **f32), torch.empty(N, H, V, **f32)) if store_final else (None,) * 3
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=device)
    BV = min(SCAN_BV, max(16, triton.next_power_of_2(V)))
    _recurrent_kernel[(triton.cdiv(V, BV), N * H)](
        q.contiguous(), k.contiguous(), v.contiguous(), o, *(initial or (None,) * 3), *final, cu_seqlens,
        scale, H=H, K=K, V=V, USE_INITIAL=initial is not None, STORE_FINAL=store_final,
        BK=max(16, triton.next_power_of_2(K)), BV=BV,
    )
    return o, (final if store_final else None)
