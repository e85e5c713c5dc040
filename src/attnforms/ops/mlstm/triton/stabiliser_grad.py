"""The gradient that flows through the max stabiliser m of the exp input gate (PyTorch,
O(T) per head, no kernel needed).

The kernels differentiate with every stabiliser held fixed. The output depends on the
row stabiliser m_t only through the normaliser's floor (∂h_t/∂m_t = −ε ρ_t h_t), and the
returned final state through its own m; chunk-boundary stabilisers cancel. Unrolled,
m_t = (Σ_{s*<j<=t} lf_j) + li_{s*} for the token s* <= t whose write is the largest at t
(or Σ_{j<=t} lf_j + m_0 when the initial state's is), and s*(t) is the last "reset"
before t, a token where m_s = li_s. So a gradient dm_t adds dm_t to dli_{s*} (or to
dm_0) and to dlf_j for s* < j <= t (a range: a difference array and one cumsum).
"""
from __future__ import annotations

import torch


def add_stabiliser_grad(dm_row, m_row, li, offsets, dlf, dli, use_initial):
    """Route per-row stabiliser gradients to the gates, in place.

    dm_row, m_row, li, dlf, dli: `[rows, H]` float32 (rows = all packed tokens);
    offsets: `[N + 1]` int64 tensor of sequence starts on the device.
    Returns the gradient reaching each sequence's initial m, `[N, H]` (zeros when
    `use_initial` is False: without an initial state the first token always resets).
    """
    rows, H = m_row.shape
    device = m_row.device
    N = offsets.numel() - 1
    lengths = offsets[1:] - offsets[:-1]
    row = torch.arange(rows, device=device)
    seq = torch.repeat_interleave(torch.arange(N, device=device), lengths, output_size=rows)
    bos = offsets[:-1][seq]  # [rows]
    # Heads first, `[H, rows]`: the scans below run along the contiguous last dimension.
    # (Along dim 0 of `[rows, H]`, with only H columns, torch's scans took 6 ms each at
    # 32k rows on an H100: the whole rest of the backward took 8.)
    dm = dm_row.t().double()
    reset = (m_row == li).t()
    # Odd codes mark a reset at row t (2t + 1), even ones "no reset yet in this sequence"
    # (2·bos): a running max gives, per row, the latest reset of its own sequence.
    code = torch.where(reset, 2 * row + 1, 2 * bos)
    code = torch.cummax(code, dim=1).values
    from_reset = code % 2 == 1
    s_star = torch.where(from_reset, (code - 1) // 2, bos - 1)
    dli.add_(torch.zeros(H, rows, dtype=torch.float64, device=device)
             .scatter_add_(1, s_star.clamp(min=0), torch.where(from_reset, dm, 0.0)).t().float())
    # dlf_j += dm_t for s* < j <= t: +dm_t at s* + 1, −dm_t at t + 1, then a cumsum.
    ranges = torch.zeros(H, rows + 1, dtype=torch.float64, device=device)
    ranges.scatter_add_(1, s_star + 1, dm)
    ranges.scatter_add_(1, (row + 1).expand(H, rows), -dm)
    dlf.add_(torch.cumsum(ranges[:, :-1], dim=1).t().float())
    dm_initial = torch.zeros(H, N, dtype=torch.float64, device=device)
    if use_initial:
        dm_initial.index_add_(1, seq, torch.where(from_reset, 0.0, dm))
    return dm_initial.t().float()
