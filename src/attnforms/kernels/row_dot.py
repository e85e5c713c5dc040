"""rowsum(a ⊙ b) over the last dim, one pass over both tensors: the backward's per-row
statistic delta = rowsum(dO ⊙ O) of the softmax and mLSTM kernels.

(As torch ops, `(do.float() * o).sum(-1)`, it took 0.55 ms at B 8, T 4096, H 16, D 128
on an H100: a float32 copy, a product and a reduction, a tenth of the softmax backward.)
"""
import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 32


@triton.jit
def _row_dot_kernel(A, B, OUT, rows, H, ntok, D: tl.constexpr, BD: tl.constexpr, BLOCK: tl.constexpr,
                    HEADS_FIRST: tl.constexpr):
    """A, B `[ntok, H, D]` (rows = ntok·H of them) -> OUT float32, `[H, ntok]` with
    HEADS_FIRST, else `[ntok, H]`."""
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, BD)
    m = (r < rows)[:, None] & (d < D)[None, :]
    off = r.to(tl.int64)[:, None] * D + d[None, :]
    a = tl.load(A + off, mask=m, other=0.0).to(tl.float32)
    b = tl.load(B + off, mask=m, other=0.0).to(tl.float32)
    if HEADS_FIRST:
        place = (r % H).to(tl.int64) * ntok + r // H
    else:
        place = r.to(tl.int64)
    tl.store(OUT + place, tl.sum(a * b, axis=1), mask=r < rows)


def row_dot(a: torch.Tensor, b: torch.Tensor, heads_first: bool) -> torch.Tensor:
    """a, b `[..., H, D]` (any dtypes, same shape) -> float32 rowsum(a ⊙ b): `[H, ntok]`
    with `heads_first`, else `[ntok, H]`, ntok = the product of the leading dims."""
    if a.shape != b.shape:
        raise ValueError(f"row_dot: shapes differ, {tuple(a.shape)} and {tuple(b.shape)}")
    H, D = a.shape[-2:]
    ntok = a.numel() // (H * D)
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty((H, ntok) if heads_first else (ntok, H), dtype=torch.float32, device=a.device)
    rows = ntok * H
    _row_dot_kernel[(triton.cdiv(rows, ROWS_PER_PROGRAM),)](
        a, b, out, rows, H, ntok, D=D, BD=triton.next_power_of_2(D), BLOCK=ROWS_PER_PROGRAM,
        HEADS_FIRST=heads_first)
    return out
