"""The backward's per-row statistic delta = rowsum(dO ⊙ O), one pass over both tensors.

(As torch ops it took 0.55 ms at B 8, T 4096, H 16, D 128 on an H100: two float32 copies
and a reduction, a tenth of the whole backward.)
"""
import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 32


@triton.jit
def _delta_kernel(DO, O, DELTA, rows, H, ntok, DV: tl.constexpr, BDV: tl.constexpr, BLOCK: tl.constexpr):
    """DO, O `[ntok, H, DV]` (rows = ntok·H of them) -> DELTA `[H, ntok]` float32."""
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, BDV)
    m = (r < rows)[:, None] & (d < DV)[None, :]
    off = r.to(tl.int64)[:, None] * DV + d[None, :]
    do = tl.load(DO + off, mask=m, other=0.0).to(tl.float32)
    o = tl.load(O + off, mask=m, other=0.0).to(tl.float32)
    tok = r // H
    h = r % H
    tl.store(DELTA + h.to(tl.int64) * ntok + tok, tl.sum(do * o, axis=1), mask=r < rows)


def row_delta(do: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """do, o `[B, T, H, DV]` -> delta `[H, B*T]` float32."""
    B, T, H, DV = o.shape
    do, o = do.contiguous(), o.contiguous()
    delta = torch.empty(H, B * T, dtype=torch.float32, device=o.device)
    rows = B * T * H
    _delta_kernel[(triton.cdiv(rows, ROWS_PER_PROGRAM),)](
        do, o, delta, rows, H, B * T, DV=DV, BDV=triton.next_power_of_2(DV), BLOCK=ROWS_PER_PROGRAM)
    return delta
