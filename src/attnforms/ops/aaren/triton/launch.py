"""Launchers of the Aaren kernels: allocate, pick tiles, build grids, call.

k, v are time-major (`[B, T, H, D]`, or `[1, T, H, D]` packed with `offsets`); q and the
triples have one row per sequence: q `[N, H, K]`, m, u `[N, H]`, w `[N, H, V]` float32.
"""
from __future__ import annotations

import functools

import torch
import triton

from ....kernels import host
from ....kernels.precision import dot_precision
from ....kernels.sequences import chunk_tables, cu_seqlens_tensor, sequence_offsets
from .recurrent import _recurrent_kernel
from .scan import _fwd_output_kernel, _fwd_prefix_kernel, _fwd_summary_kernel
from .scan_bwd import _bwd_output_kernel, _bwd_suffix_kernel, _bwd_summary_kernel

# Tokens per chunk: the `[BT, BT]` in-chunk matrix of the per-chunk kernels (phases 1
# and 3, grid (chunks, H), every value tile in one program so the matrix is made once).
CHUNK = 64
CHUNK_BK = 128
CHUNK_BV = 64
CHUNK_WARPS = 4
# Software-pipeline stages of their loops over value tiles (Triton's default on NVIDIA).
CHUNK_STAGES = 3
# The scans over chunk triples (phase 2, grid (value tiles, N·H)): BC chunks per step of
# the associative scan, value tile SCAN_BV (more tiles, more programs on few sequences).
SCAN_BC = 64
SCAN_BV = 32
SCAN_WARPS = 4
# Value tile of the recurrent step (decoding): one program per tile and sequence·head.
RECURRENT_BV = 64
# The in-chunk weights enter their products (P V, Pᵀ dO) rounded to the inputs' 16-bit
# dtype, one 16-bit product each, where False keeps them float32 (TF32 products).
# Never under the interpreter, which multiplies 16-bit blocks wrongly. H100, session 14,
# S1, every bf16 check against float64 passing: forward + backward 0.95 ms against 1.03
# (scripts/device_aaren_variants.py; bench/results/dev/2026-12-07-h100-s14-aaren-*).
HALF_P = True
# Compile the GPU path (HALF_P's 16-bit products) for CPU tensors too: set by
# scripts/compile_sm90.py, which compiles for sm_90 without a GPU.
NATIVE_ON_CPU = False


def _half_p(v: torch.Tensor) -> bool:
    """Whether the in-chunk weights enter 16-bit products for values `v`."""
    return HALF_P and v.dtype in (torch.bfloat16, torch.float16) and (v.device.type == "cuda" or NATIVE_ON_CPU)


def _chunk_options(v: torch.Tensor) -> dict:
    """The per-chunk kernels' common launch options for values `v`."""
    return dict(BT=CHUNK, HALF_P=_half_p(v), DOT_PRECISION=dot_precision(v), num_warps=CHUNK_WARPS,
                num_stages=CHUNK_STAGES)


@functools.lru_cache(maxsize=64)
def _tables(offsets: tuple[int, ...], device: torch.device):
    """cu_seqlens `[N + 1]` int64, chunk_indices `[chunks, 2]` int32 (sequence, chunk in
    sequence), chunk_base `[N]` int64 (each sequence's first chunk) and each row's
    sequence `[rows]` int64."""
    chunk_indices, chunk_base = chunk_tables(offsets, CHUNK, device)
    lengths = [end - start for start, end in zip(offsets, offsets[1:])]
    row_seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).to(device)
    return cu_seqlens_tensor(offsets, device), chunk_indices, chunk_base, row_seq


def _dims(q, k, v, offsets):
    B, T, H, K = k.shape
    offsets = sequence_offsets(B, T, offsets)
    return B, T, H, K, v.shape[-1], offsets, len(offsets) - 1


def _triple(rows, H, V, device):
    """An uninitialised float32 triple (m, u `[rows, H]`, w `[rows, H, V]`)."""
    f32 = dict(dtype=torch.float32, device=device)
    return torch.empty(rows, H, **f32), torch.empty(rows, H, **f32), torch.empty(rows, H, V, **f32)


def _tiles(K, V):
    """(BK, BV of the per-chunk kernels, BV of the scans)."""
    return (min(CHUNK_BK, max(16, triton.next_power_of_2(K))), min(CHUNK_BV, max(16, triton.next_power_of_2(V))),
            min(SCAN_BV, max(16, triton.next_power_of_2(V))))


def forward(q, k, v, scale, initial, store_final, offsets):
    """Returns the output `[B, T, H, V]` (v's dtype), the final (m, u, w) or None, and what
    the backward needs: the scores s and prefix log-sum-exps L `[rows, H]` and the triple
    entering every chunk (m, u `[chunks, H]`, w `[chunks, H, V]`), all float32."""
    B, T, H, K, V, offsets, N = _dims(q, k, v, offsets)
    device = k.device
    cu_seqlens, chunk_indices, chunk_base, _ = _tables(offsets, device)
    C = len(chunk_indices)
    BK, BV, BV_scan = _tiles(K, V)
    f32 = dict(dtype=torch.float32, device=device)
    s, L = torch.empty(B * T, H, **f32), torch.empty(B * T, H, **f32)
    own, entering = _triple(C, H, V, device), _triple(C, H, V, device)
    final = _triple(N, H, V, device) if store_final else (None,) * 3
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=device)
    k, v = k.contiguous(), v.contiguous()
    _fwd_summary_kernel[(C, H)](q.contiguous(), k, v, s, *own, chunk_indices, cu_seqlens, scale, H=H, K=K, V=V,
                                BT=CHUNK, BK=BK, BV=BV, num_warps=CHUNK_WARPS, num_stages=CHUNK_STAGES)
    _fwd_prefix_kernel[(triton.cdiv(V, BV_scan), N * H)](
        *own, *entering, *(initial or (None,) * 3), *final, cu_seqlens, chunk_base, H=H, V=V,
        USE_INITIAL=initial is not None, STORE_FINAL=store_final, BT=CHUNK, BC=SCAN_BC, BV=BV_scan,
        num_warps=SCAN_WARPS,
    )
    _fwd_output_kernel[(C, H)](s, v, o, L, *entering, chunk_indices, cu_seqlens, H=H, V=V, BV=BV,
                               **_chunk_options(v))
    return o, (final if store_final else None), (s, L, *entering)


def _max_gradient(s, final, dfinal, initial, row_seq):
    """The final max m_T's own gradient, less the rescaling of u and w it implies, goes to
    what attains the max. Returns (the share of each score equal to m_T `[N, H]`, the
    part for dm_0 `[N, H]`: all of it where the initial max attains m_T), or (None, None)
    where the final triple has no gradient."""
    m_f, u_f, w_f = final
    dm_f, du_f, dw_f = dfinal
    if dm_f is None and du_f is None and dw_f is None:
        return None, None
    mu = torch.zeros_like(m_f)
    if dm_f is not None:
        mu += dm_f.float()
    if du_f is not None:
        mu -= u_f * du_f.float()
    if dw_f is not None:
        mu -= (w_f * dw_f.float()).sum(-1)
    from_initial = torch.zeros_like(m_f, dtype=torch.bool) if initial is None else initial[0] == m_f
    at_max = s == m_f[row_seq]
    count = torch.zeros_like(m_f).index_add_(0, row_seq, at_max.float()).clamp(min=1)
    return torch.where(from_initial, 0.0, mu / count), torch.where(from_initial, mu, 0.0)


def backward(q, k, v, scale, initial, saved, final, do, dfinal, offsets):
    """Gradients of q, k, v and the initial (m, u, w) (None without one). saved: what
    `forward` returned for the backward; final: the final triple; dfinal: its gradients
    (dm, du, dw), each possibly None."""
    B, T, H, K, V, offsets, N = _dims(q, k, v, offsets)
    device = k.device
    cu_seqlens, chunk_indices, chunk_base, row_seq = _tables(offsets, device)
    C = len(chunk_indices)
    BK, BV, BV_scan = _tiles(K, V)
    s, L, m_in, u_in, w_in = saved
    _, u_f, _ = final
    _, du_f, dw_f = dfinal
    f32 = dict(dtype=torch.float32, device=device)
    do, k, v = do.contiguous(), k.contiguous(), v.contiguous()
    use_initial = initial is not None
    delta = torch.empty(B * T, H, **f32)
    a, g, gamma = torch.empty(C, H, **f32), torch.empty(C, H, V, **f32), torch.empty(C, H, **f32)
    _bwd_summary_kernel[(C, H)](s, L, v, do, delta, m_in, u_in, w_in, initial[0] if use_initial else None, a, g, gamma,
                                chunk_indices, cu_seqlens, H=H, V=V, USE_INITIAL=use_initial, BV=BV,
                                **_chunk_options(v))
    # The final triple's gradient, referred to its log-sum-exp L_T = m_T + log u_T.
    G = torch.zeros(N, H, V, **f32) if dw_f is None else (u_f[..., None] * dw_f.float()).contiguous()
    Gamma = torch.zeros(N, H, **f32) if du_f is None else (-u_f * du_f.float()).contiguous()
    carry_G, carry_Gamma = torch.empty(C, H, V, **f32), torch.empty(C, H, **f32)
    du0 = torch.empty(N, H, **f32) if use_initial else None
    dw0 = torch.empty(N, H, V, **f32) if use_initial else None
    _bwd_suffix_kernel[(triton.cdiv(V, BV_scan), N * H)](
        a, g, gamma, carry_G, carry_Gamma, G, Gamma, du0, dw0, cu_seqlens, chunk_base, H=H, V=V,
        USE_INITIAL=use_initial, BT=CHUNK, BC=SCAN_BC, BV=BV_scan, num_warps=SCAN_WARPS,
    )
    max_grad, max_grad_initial = _max_gradient(s, final, dfinal, initial, row_seq)
    dq_part = torch.empty(C, H, K, **f32)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    _bwd_output_kernel[(C, H)](
        q.contiguous(), k, s, L, v, do, delta, carry_G, carry_Gamma, final[0], max_grad, dq_part, dk, dv,
        chunk_indices, cu_seqlens, scale, H=H, K=K, V=V, USE_MAX_GRAD=max_grad is not None, BK=BK, BV=BV,
        **_chunk_options(v),
    )
    dq = torch.zeros(N, H, K, **f32).index_add_(0, chunk_indices[:, 0].long(), dq_part).to(q.dtype)
    dm0 = None
    if use_initial:
        m0, u0, w0 = initial
        dm0 = (w0 * dw0).sum(-1) + u0 * du0
        if max_grad_initial is not None:
            dm0 += max_grad_initial
    return dq, dk, dv, dm0, du0, dw0


def recurrent_forward(q, k, v, scale, initial, store_final, offsets):
    """Token by token in one launch; returns the output and the final (m, u, w) or None."""
    B, T, H, K, V, offsets, N = _dims(q, k, v, offsets)
    device = k.device
    cu_seqlens, _, _, _ = _tables(offsets, device)
    final = _triple(N, H, V, device) if store_final else (None,) * 3
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=device)
    BV = min(RECURRENT_BV, max(16, host.next_power_of_2(V)))
    _recurrent_kernel[(host.cdiv(V, BV), N * H)](
        q.contiguous(), k.contiguous(), v.contiguous(), o, *(initial or (None,) * 3), *final, cu_seqlens,
        scale, H=H, K=K, V=V, USE_INITIAL=initial is not None, STORE_FINAL=store_final,
        BK=max(16, host.next_power_of_2(K)), BV=BV,
    )
    return o, (final if store_final else None)
