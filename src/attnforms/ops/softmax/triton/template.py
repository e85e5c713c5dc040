"""Kernel template of softmax attention: the shared helpers and the forward kernel (the
backward and decode kernels: template_backward.py, template_decode.py). NOT imported as
is: `modc.kernels_for` reads this text and the other parts', writes the mod helpers
between the `<mods>` markers, replaces the placeholder parameters of the score_mod's and
mask_mod's captured tensors (SCAPS, MCAPS, each prefixed and suffixed by two
underscores) with their parameters (pointer, gradient buffer, sizes, strides) and the
DNS placeholder with their names in `do_not_specialize`, and imports the result from a
cache file (one module per mod structure).

Layouts (all contiguous): q `[B, T, H, DK]`, k `[B, S, G, DK]`, v `[B, S, G, DV]`,
o `[B, T, H, DV]`; packed sequences (VARLEN) are B = 1 with `cu` offsets. Per-row
statistics (lse, delta) are `[H, B*T]` float32. Scores are in natural units; the kernels
exponentiate with exp2 of `x * LOG2E`.

Visibility of a pair (row i, key j), the reference's rule:
  q position p = qoff + i (qoff = S - T, or per batch row with a cache, 0 with VARLEN),
  key position = j, or KVPOS[b, j] with a cache (-1: empty slot);
  causal: pos <= p; window W: pos > p - W; mask_mod(b, h, p, pos).
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
NEG_INF = tl.constexpr(float("-inf"))


# <mods>
@triton.jit
def _score_mod(score, b, h, q_idx, kv_idx, __SCAPS__):
    return score


@triton.jit
def _score_mod_bwd(score, b, h, q_idx, kv_idx, grad, keep, ACCUMULATE: tl.constexpr, KEYS_AXIS: tl.constexpr,
                   QUERY_AXIS: tl.constexpr, __SCAPS__):
    return grad


@triton.jit
def _mask_mod(b, h, q_idx, kv_idx, __MCAPS__):
    return q_idx >= -2147483647
# </mods>


@triton.jit
def _wrap_index(i, n):
    """Python's negative indices of a captured tensor."""
    return tl.where(i < 0, i + n, i)


@triton.jit
def _floordiv(a, b):
    """Python's floor division of integers, whatever `//` does on negatives here."""
    q = a // b
    r = a - q * b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), q - 1, q)


@triton.jit
def _keep(qpos, kpos, rows_ok, cols_ok, b, h, W, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
          KVPOS: tl.constexpr, MASK: tl.constexpr, __MCAPS__):
    """[BM, BN] visibility of a tile (qpos [BM, 1], kpos [1, BN])."""
    keep = rows_ok & cols_ok
    if KVPOS:
        keep = keep & (kpos >= 0)
    if CAUSAL:
        keep = keep & (kpos <= qpos)
    if WINDOW:
        keep = keep & (kpos > qpos - W)
    if MASK:
        keep = keep & _mask_mod(b, h, qpos, kpos, __MCAPS__)
    return keep


@triton.jit
def _full_tiles(lo, hi, m0, qoff, Sn, W, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                CAUSAL: tl.constexpr, WINDOW: tl.constexpr):
    """[full_lo, full_hi): the key tiles (multiples of BLOCK_N in [lo, hi)) whose every
    pair with the query tile [m0, m0 + BM) is inside the keys and the causal / window
    bounds (query rows past the end need no mask: they are never stored)."""
    full_hi = (Sn // BLOCK_N) * BLOCK_N
    if CAUSAL:  # n0 + BN - 1 <= qoff + m0
        full_hi = tl.minimum(full_hi, (tl.maximum(qoff + m0 + 1, 0) // BLOCK_N) * BLOCK_N)
    full_lo = lo
    if WINDOW:  # n0 > qoff + m0 + BM - 1 - W
        full_lo = tl.maximum(lo, ((tl.maximum(qoff + m0 + BLOCK_M - W, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N)
    full_lo = tl.minimum(full_lo, hi)
    full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)
    return full_lo, full_hi


@triton.jit
def _full_query_tiles(lo, hi, n0, qoff, Sn, W, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      CAUSAL: tl.constexpr, WINDOW: tl.constexpr):
    """[full_lo, full_hi): the query tiles (multiples of BLOCK_M in [lo, hi)) whose every
    pair with the key tile [n0, n0 + BN) is inside the keys and the bounds."""
    full_lo = lo
    if CAUSAL:  # m0 >= n0 + BN - 1 - qoff
        full_lo = tl.maximum(lo, ((tl.maximum(n0 + BLOCK_N - 1 - qoff, 0) + BLOCK_M - 1) // BLOCK_M) * BLOCK_M)
    full_hi = hi
    if WINDOW:  # m0 <= n0 - qoff - BM + W
        last = n0 - qoff - BLOCK_M + W
        full_hi = tl.where(last >= 0, (tl.maximum(last, 0) // BLOCK_M) * BLOCK_M + BLOCK_M, 0)
        full_hi = tl.minimum(full_hi, hi)
    full_hi = tl.where(n0 + BLOCK_N <= Sn, full_hi, 0)  # a ragged key tile: all masked
    full_lo = tl.minimum(full_lo, hi)
    full_hi = tl.maximum(full_hi, full_lo)
    return full_lo, full_hi


@triton.jit
def _sequence(CU, QOFF, b, T, S, Q_OFF, programs_per_row,
              VARLEN: tl.constexpr, CACHE: tl.constexpr):
    """Batch row b's sequence: (q_tok0, Tn, kv_tok0, Sn, qoff, ntok) = the token index of
    its first query and first key in the flattened [tokens, heads, D] tensors, its query
    and key counts, the position of its first query among its keys, and the number of
    query tokens of the whole launch (the LSE's row count). Varlen rows are packed one
    after another at CU[b], self-attending; otherwise rows are T queries and S keys each,
    the queries at Q_OFF (or QOFF[b] with a cache). programs_per_row: the grid's axis-1
    programs per batch row (heads or key heads)."""
    if VARLEN:
        q_tok0 = tl.load(CU + b).to(tl.int32)
        Tn = tl.load(CU + b + 1).to(tl.int32) - q_tok0
        Sn = Tn
        kv_tok0 = q_tok0
        qoff = 0
        ntok = T
    else:
        q_tok0 = b * T
        Tn = T
        Sn = S
        kv_tok0 = b * S
        ntok = (tl.num_programs(1) // programs_per_row) * T
        if CACHE:
            qoff = tl.load(QOFF + b).to(tl.int32)
        else:
            qoff = Q_OFF
    return q_tok0, Tn, kv_tok0, Sn, qoff, ntok


@triton.jit
def _fwd_tile(acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, b, h, Sn,
              W, scale, DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
              BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
              KVPOS_ON: tl.constexpr, BOUNDS: tl.constexpr, MASK: tl.constexpr,
              SCORE: tl.constexpr, RAW_MAX: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr,
              __SCAPS__, __MCAPS__):
    """Fold one key tile into the running (acc, m, l) of a query tile. TMA: k and v
    tiles through tensor descriptors over `[rows, G·D]`; keys past this sequence's end
    are kept out by the visibility mask (edge tiles) or never read (full tiles).
    RAW_MAX (no score mod, scale > 0): the row max is taken of the raw products and
    scaled once per row, so each exponent is one multiply-add instead of a multiply and a
    subtraction (max(c·s) = c·max(s) for c > 0)."""
    local = tl.arange(0, BLOCK_N)
    cols = n0 + local
    cols_ok = cols < Sn
    dk = tl.arange(0, BDK)
    dv = tl.arange(0, BDV)
    # A 64-bit scalar base and 32-bit offsets inside the tile (fewer registers than
    # 64-bit per-element addresses).
    tok0 = (kv_tok0 + n0).to(tl.int64)
    if TMA:
        kT = tl.trans(KDESC.load([(kv_tok0 + n0).to(tl.int32), (g * DK).to(tl.int32)]))
        vt = VDESC.load([(kv_tok0 + n0).to(tl.int32), (g * DV).to(tl.int32)])
    else:
        kT = tl.load(K + (tok0 * G + g) * DK + (local[None, :] * (G * DK) + dk[:, None]),
                     mask=cols_ok[None, :] & (dk[:, None] < DK), other=0.0)
        vt = tl.load(V + (tok0 * G + g) * DV + (local[:, None] * (G * DV) + dv[None, :]),
                     mask=cols_ok[:, None] & (dv[None, :] < DV), other=0.0)
    if KVPOS_ON:
        kpos = tl.load(KVPOS + tok0 + local, mask=cols_ok, other=-1)[None, :]
    else:
        kpos = cols[None, :]
    # Scores in log2 units (s · log2 e), so each exponential is one exp2.
    if SCORE:
        s = tl.dot(q, kT, input_precision=PREC) * scale
        s = _score_mod(s, b, h, qpos, kpos, __SCAPS__) * LOG2E
    elif RAW_MAX:
        s = tl.dot(q, kT, input_precision=PREC)
    else:
        s = tl.dot(q, kT, input_precision=PREC) * (scale * LOG2E)
    if BOUNDS or MASK:
        keep = _keep(qpos, kpos, rows_ok, cols_ok[None, :], b, h, W, CAUSAL, WINDOW, KVPOS_ON,
                     MASK, __MCAPS__)
        s = tl.where(keep, s, NEG_INF)
    if RAW_MAX:
        m_new = tl.maximum(m_i, tl.max(s, 1) * (scale * LOG2E))
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == NEG_INF, 0.0, m_new)
    alpha = tl.exp2(m_i - m_use)
    if RAW_MAX:
        p = tl.exp2(s * (scale * LOG2E) - m_use[:, None])
    else:
        p = tl.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    # Accumulate inside the product (the tensor cores add into acc).
    acc = tl.dot(p.to(vt.dtype), vt, acc * alpha[:, None], input_precision=PREC)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["T", "S", "W", "Q_OFF", "TB", "SB", __DNS__])
def _fwd_kernel(Q, K, V, KDESC, VDESC, O, LSE, SINKS, QOFF, KVPOS, CU,
                KVN, KVI, FKVN, FKVI,
                T, S, H, G, W, Q_OFF, TB, SB, scale, BOFF, __SCAPS__, __MCAPS__,
                DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SINK: tl.constexpr,
                SCORE: tl.constexpr, MASK: tl.constexpr, VARLEN: tl.constexpr,
                CACHE: tl.constexpr, SPARSE: tl.constexpr, SUB_Q: tl.constexpr,
                SUB_KV: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr, RAW_MAX: tl.constexpr):
    """One program per (query tile, batch row · head): the whole online softmax. The
    last query tiles (the most keys under a causal mask) start first."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    g = h // (H // G)
    bmod = b + BOFF  # the batch index the mods see
    q_tok0, Tn, kv_tok0, Sn, qoff, ntok = _sequence(CU, QOFF, b, T, S, Q_OFF, H, VARLEN, CACHE)
    m0 = pid_m * BLOCK_M
    if m0 >= Tn:
        return
    rows = m0 + tl.arange(0, BLOCK_M)
    rows_ok = (rows < Tn)[:, None]
    qpos = (qoff + rows)[:, None]
    dk = tl.arange(0, BDK)
    qtok = (q_tok0 + rows).to(tl.int64)
    q = tl.load(Q + (qtok[:, None] * H + h) * DK + dk[None, :], mask=rows_ok & (dk[None, :] < DK), other=0.0)
    acc = tl.zeros([BLOCK_M, BDV], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # The key range the bounds allow (arithmetic positions only; a cache reads all).
    lo = 0
    hi = Sn
    if not CACHE:
        if CAUSAL:
            hi = tl.minimum(Sn, qoff + m0 + BLOCK_M)
        if WINDOW:
            lo = tl.maximum(0, qoff + m0 - W + 1)
            lo = (lo // BLOCK_N) * BLOCK_N
    # Every loop body is straight-line (no branch around the loads), so Triton's
    # pipeliner can prefetch the next key tiles.
    if SPARSE:
        # The listed partial blocks (mask_mod evaluated), then the full ones; each block
        # is SUB_KV kernel tiles. Bounds stay on: the map describes the mask_mod alone.
        qb = m0 // (BLOCK_M * SUB_Q)
        row = (b * H + h) * TB + qb
        n_partial = tl.load(KVN + row) * SUB_KV
        for j in range(n_partial):
            blk = tl.load(KVI + row.to(tl.int64) * SB + j // SUB_KV)
            n0 = (blk * SUB_KV + j % SUB_KV) * BLOCK_N
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h, Sn, W, scale,
                DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, True, SCORE, RAW_MAX, PREC,
                TMA, __SCAPS__, __MCAPS__)
        n_full = tl.load(FKVN + row) * SUB_KV
        for j in range(n_full):
            blk = tl.load(FKVI + row.to(tl.int64) * SB + j // SUB_KV)
            n0 = (blk * SUB_KV + j % SUB_KV) * BLOCK_N
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h, Sn, W, scale,
                DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, False, SCORE, RAW_MAX, PREC,
                TMA, __SCAPS__, __MCAPS__)
    elif CACHE:
        for n0 in range(0, Sn, BLOCK_N):
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h, Sn, W, scale,
                DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, MASK, SCORE, RAW_MAX, PREC,
                TMA, __SCAPS__, __MCAPS__)
    else:
        # Tiles wholly inside the causal / window bounds and the keys, [full_lo,
        # full_hi), skip the bounds test; the edge tiles before and after apply it.
        full_lo, full_hi = _full_tiles(lo, hi, m0, qoff, Sn, W, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
        for n0 in range(lo, full_lo, BLOCK_N):
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h, Sn, W, scale,
                DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, MASK, SCORE, RAW_MAX, PREC,
                TMA, __SCAPS__, __MCAPS__)
        for n0 in range(full_lo, full_hi, BLOCK_N):
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h, Sn, W, scale,
                DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, False, MASK, SCORE, RAW_MAX, PREC,
                TMA, __SCAPS__, __MCAPS__)
        for n0 in range(full_hi, hi, BLOCK_N):
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h, Sn, W, scale,
                DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, MASK, SCORE, RAW_MAX, PREC,
                TMA, __SCAPS__, __MCAPS__)
    _finish_rows(acc, m_i, l_i, O, LSE, SINKS, qtok, rows, Tn, h, H, ntok, DV, BDV, SINK)


@triton.jit
def _finish_rows(acc, m_i, l_i, O, LSE, SINKS, qtok, rows, Tn, h, H, ntok,
                 DV: tl.constexpr, BDV: tl.constexpr, SINK: tl.constexpr):
    """Normalise (sink in the denominator), store the output and the keys' log-sum-exp
    (m_i is in log2 units)."""
    if SINK:
        sink = tl.load(SINKS + h).to(tl.float32) * LOG2E
        m_all = tl.maximum(m_i, sink)
        shrink = tl.exp2(m_i - m_all)
        denom = l_i * shrink + tl.exp2(sink - m_all)
        o = acc * (shrink / denom)[:, None]
    else:
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    lse = tl.where(l_i > 0.0, (m_i + tl.log2(tl.where(l_i > 0.0, l_i, 1.0))) / LOG2E, NEG_INF)
    dv = tl.arange(0, BDV)
    rows_ok = rows < Tn
    tl.store(O + (qtok[:, None] * H + h) * DV + dv[None, :], o.to(O.dtype.element_ty),
             mask=rows_ok[:, None] & (dv[None, :] < DV))
    tl.store(LSE + h.to(tl.int64) * ntok + qtok, lse, mask=rows_ok)
