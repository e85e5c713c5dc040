"""Kernel template of softmax attention. NOT imported as is: `modc.kernels_for` reads this
text, writes the mod helpers between the `<mods>` markers, replaces the placeholder
parameters of the score_mod's and mask_mod's captured tensors (SCAPS, MCAPS, each
prefixed and suffixed by two underscores) with their parameters (pointer, gradient
buffer, sizes, strides) and the DNS placeholder with their names in
`do_not_specialize`, and imports the result from a cache file (one module per mod
structure).

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


@triton.jit
def _bwd_tile_scores(a, b, qpos, kpos, rows_ok, cols_ok, bmod, h, W, scale, lse,
                     CAUSAL: tl.constexpr, WINDOW: tl.constexpr, KVPOS_ON: tl.constexpr,
                     BOUNDS: tl.constexpr, MASK: tl.constexpr, SCORE: tl.constexpr,
                     PREC: tl.constexpr, __SCAPS__, __MCAPS__):
    """Recompute a tile's raw scores a @ b, visibility and probabilities. Either
    orientation: queries down the rows (a = Q, b = Kᵀ, qpos / rows_ok `[BM, 1]`, kpos /
    cols_ok `[1, BN]`, lse `[BM, 1]`) or keys down the rows (a = K, b = Qᵀ, all
    transposed), since every mod and mask is elementwise in the broadcast positions."""
    if BOUNDS or MASK:
        keep = _keep(qpos, kpos, rows_ok, cols_ok, bmod, h, W, CAUSAL, WINDOW, KVPOS_ON, MASK,
                     __MCAPS__)
    else:
        keep = rows_ok & cols_ok
    if SCORE:
        s = tl.dot(a, b, input_precision=PREC) * scale
        p = tl.exp2((tl.where(keep, _score_mod(s, bmod, h, qpos, kpos, __SCAPS__), NEG_INF) - lse) * LOG2E)
    else:
        # Without a score mod the exponent is one fused multiply-add per element, the
        # scale and log2 e folded into one constant and the row's lse into log2 units
        # (s itself is then only the mods' input, which nothing reads).
        s = tl.dot(a, b, input_precision=PREC)
        p = tl.where(keep, tl.exp2(s * (scale * LOG2E) - lse * LOG2E), 0.0)
    return s, keep, p


@triton.jit
def _dkdv_tile(dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols,
               cols_ok, kpos, qoff, Tn, b, h, H, W, scale, ntok,
               DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
               BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
               KVPOS_ON: tl.constexpr, BOUNDS: tl.constexpr, MASK: tl.constexpr,
               SCORE: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr, __SCAPS__, __MCAPS__):
    """One query tile's contribution to a key tile's dk, dv `[BLOCK_N, BDK / BDV]`.
    Transposed tiles, keys down the rows (k, v `[BLOCK_N, BD]`, kpos `[BLOCK_N, 1]`):
    every product then has the key tile as its M dimension, so Pᵀ and dSᵀ enter the
    tensor cores straight from registers, with no transpose of a register tile.
    TMA: q and dO tiles come through tensor descriptors (QDESC, DODESC over `[rows, H·D]`),
    which hold no per-element addresses or masks in registers; rows past this sequence
    (the next one's, or zeros past the end) are kept out by the visibility mask."""
    local = tl.arange(0, BLOCK_M)
    rows = m0 + local
    rows_ok = (rows < Tn)[None, :]
    d_k = tl.arange(0, BDK)
    d_v = tl.arange(0, BDV)
    # 64-bit scalar bases and 32-bit offsets inside the tile: 64-bit per-element
    # addresses held in registers cost the backward its spills.
    tok0 = (q_tok0 + m0).to(tl.int64)
    if TMA:
        qT = tl.trans(QDESC.load([(q_tok0 + m0).to(tl.int32), (h * DK).to(tl.int32)]))
        do = DODESC.load([(q_tok0 + m0).to(tl.int32), (h * DV).to(tl.int32)])
    else:
        qT = tl.load(Q + (tok0 * H + h) * DK + (local[None, :] * (H * DK) + d_k[:, None]),
                     mask=rows_ok & (d_k[:, None] < DK), other=0.0)
        do = tl.load(DO + (tok0 * H + h) * DV + (local[:, None] * (H * DV) + d_v[None, :]),
                     mask=(rows < Tn)[:, None] & (d_v[None, :] < DV), other=0.0)
    lse = tl.load(LSE + h.to(tl.int64) * ntok + tok0 + local, mask=rows < Tn, other=0.0)
    delta = tl.load(DELTA + h.to(tl.int64) * ntok + tok0 + local, mask=rows < Tn, other=0.0)
    qpos = (qoff + rows)[None, :]
    # [BN, BDK] @ [BDK, BM] -> Sᵀ [BN, BM]
    sT, keep, pT = _bwd_tile_scores(k, qT, qpos, kpos, rows_ok, cols_ok[:, None], b, h, W, scale, lse[None, :],
                                    CAUSAL, WINDOW, KVPOS_ON, BOUNDS, MASK, SCORE, PREC, __SCAPS__, __MCAPS__)
    dv_acc = tl.dot(pT.to(do.dtype), do, dv_acc, input_precision=PREC)
    # [BN, BDV] @ [BDV, BM] -> dPᵀ
    dpT = tl.dot(v, tl.trans(do), input_precision=PREC)
    dsT = pT * (dpT - delta[None, :])
    if SCORE:
        dsT = _score_mod_bwd(sT, b, h, qpos, kpos, dsT, keep, True, 0, 1, __SCAPS__)
    dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=PREC)
    return dk, dv_acc


@triton.jit(do_not_specialize=["T", "S", "W", "Q_OFF", "TB", "SB", __DNS__])
def _dkdv_kernel(Q, K, V, DO, QDESC, DODESC, LSE, DELTA, DK_OUT, DV_OUT, QOFF, KVPOS, CU,
                 QN, QI, FQN, FQI,
                 T, S, H, G, W, Q_OFF, TB, SB, scale, BOFF, __SCAPS__, __MCAPS__,
                 DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SCORE: tl.constexpr,
                 MASK: tl.constexpr, VARLEN: tl.constexpr, CACHE: tl.constexpr,
                 SPARSE: tl.constexpr, SUB_Q: tl.constexpr, SUB_KV: tl.constexpr,
                 PREC: tl.constexpr, TMA: tl.constexpr):
    """One program per (key tile, batch row · key head): dk and dv summed over the query
    heads of the group; the captured tensors' gradients by atomics."""
    pid_n = tl.program_id(0)
    pid_bg = tl.program_id(1)
    b = pid_bg // G
    g = pid_bg % G
    R = H // G
    bmod = b + BOFF  # the batch index the mods see
    q_tok0, Tn, kv_tok0, Sn, qoff, ntok = _sequence(CU, QOFF, b, T, S, Q_OFF, G, VARLEN, CACHE)
    n0 = pid_n * BLOCK_N
    if n0 >= Sn:
        return
    cols = n0 + tl.arange(0, BLOCK_N)
    cols_ok = cols < Sn
    d_k = tl.arange(0, BDK)
    d_v = tl.arange(0, BDV)
    tok = (kv_tok0 + cols).to(tl.int64)
    k = tl.load(K + (tok[:, None] * G + g) * DK + d_k[None, :], mask=cols_ok[:, None] & (d_k[None, :] < DK), other=0.0)
    v = tl.load(V + (tok[:, None] * G + g) * DV + d_v[None, :], mask=cols_ok[:, None] & (d_v[None, :] < DV), other=0.0)
    if CACHE:
        kpos = tl.load(KVPOS + tok, mask=cols_ok, other=-1)[:, None]
    else:
        kpos = cols[:, None]
    dk = tl.zeros([BLOCK_N, BDK], dtype=tl.float32)
    dv_acc = tl.zeros([BLOCK_N, BDV], dtype=tl.float32)
    # The query rows the bounds allow: causal rows at positions >= n0, window rows at
    # positions < n0 + BN - 1 + W.
    lo = 0
    hi = Tn
    if not CACHE:
        if CAUSAL:
            lo = tl.maximum(0, n0 - qoff)
            lo = (lo // BLOCK_M) * BLOCK_M
        if WINDOW:
            hi = tl.minimum(Tn, n0 + BLOCK_N - 1 + W - qoff)
    if not CACHE:
        full_lo, full_hi = _full_query_tiles(lo, hi, n0, qoff, Sn, W, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
    for hr in range(R):
        h = g * R + hr
        if SPARSE:
            kb = n0 // (BLOCK_N * SUB_KV)
            row = (b * H + h) * SB + kb
            n_partial = tl.load(QN + row) * SUB_Q
            for j in range(n_partial):
                blk = tl.load(QI + row.to(tl.int64) * TB + j // SUB_Q)
                m0 = (blk * SUB_Q + j % SUB_Q) * BLOCK_M
                dk, dv_acc = _dkdv_tile(
                    dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols, cols_ok, kpos,
                    qoff, Tn, bmod, h, H, W, scale, ntok, DK, DV, BDK, BDV, BLOCK_M, CAUSAL, WINDOW, CACHE,
                    True, True, SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
            n_full = tl.load(FQN + row) * SUB_Q
            for j in range(n_full):
                blk = tl.load(FQI + row.to(tl.int64) * TB + j // SUB_Q)
                m0 = (blk * SUB_Q + j % SUB_Q) * BLOCK_M
                dk, dv_acc = _dkdv_tile(
                    dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols, cols_ok, kpos,
                    qoff, Tn, bmod, h, H, W, scale, ntok, DK, DV, BDK, BDV, BLOCK_M, CAUSAL, WINDOW, CACHE,
                    True, False, SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
        elif CACHE:
            for m0 in range(0, Tn, BLOCK_M):
                dk, dv_acc = _dkdv_tile(
                    dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols, cols_ok, kpos,
                    qoff, Tn, bmod, h, H, W, scale, ntok, DK, DV, BDK, BDV, BLOCK_M, CAUSAL, WINDOW, CACHE,
                    True, MASK, SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
        else:
            for m0 in range(lo, full_lo, BLOCK_M):
                dk, dv_acc = _dkdv_tile(
                    dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols, cols_ok, kpos,
                    qoff, Tn, bmod, h, H, W, scale, ntok, DK, DV, BDK, BDV, BLOCK_M, CAUSAL, WINDOW, CACHE,
                    True, MASK, SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
            for m0 in range(full_lo, full_hi, BLOCK_M):
                dk, dv_acc = _dkdv_tile(
                    dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols, cols_ok, kpos,
                    qoff, Tn, bmod, h, H, W, scale, ntok, DK, DV, BDK, BDV, BLOCK_M, CAUSAL, WINDOW, CACHE,
                    False, MASK, SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
            for m0 in range(full_hi, hi, BLOCK_M):
                dk, dv_acc = _dkdv_tile(
                    dk, dv_acc, k, v, Q, DO, QDESC, DODESC, LSE, DELTA, KVPOS, q_tok0, kv_tok0, m0, cols, cols_ok, kpos,
                    qoff, Tn, bmod, h, H, W, scale, ntok, DK, DV, BDK, BDV, BLOCK_M, CAUSAL, WINDOW, CACHE,
                    True, MASK, SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
    dk = dk * scale
    tl.store(DK_OUT + (tok[:, None] * G + g) * DK + d_k[None, :], dk.to(DK_OUT.dtype.element_ty),
             mask=cols_ok[:, None] & (d_k[None, :] < DK))
    tl.store(DV_OUT + (tok[:, None] * G + g) * DV + d_v[None, :], dv_acc.to(DV_OUT.dtype.element_ty),
             mask=cols_ok[:, None] & (d_v[None, :] < DV))


@triton.jit
def _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, b, h,
             Sn, W, scale, DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
             BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
             KVPOS_ON: tl.constexpr, BOUNDS: tl.constexpr, MASK: tl.constexpr,
             SCORE: tl.constexpr, PREC: tl.constexpr, TMA: tl.constexpr, __SCAPS__, __MCAPS__):
    """One key tile's contribution to a query tile's dq `[BLOCK_M, BDK]` (TMA: as in
    _fwd_tile)."""
    local = tl.arange(0, BLOCK_N)
    cols = n0 + local
    cols_ok = cols < Sn
    d_k = tl.arange(0, BDK)
    d_v = tl.arange(0, BDV)
    tok0 = (kv_tok0 + n0).to(tl.int64)  # scalar base, 32-bit offsets (as in _fwd_tile)
    if TMA:
        kT = tl.trans(KDESC.load([(kv_tok0 + n0).to(tl.int32), (g * DK).to(tl.int32)]))
        vT = tl.trans(VDESC.load([(kv_tok0 + n0).to(tl.int32), (g * DV).to(tl.int32)]))
    else:
        kT = tl.load(K + (tok0 * G + g) * DK + (local[None, :] * (G * DK) + d_k[:, None]),
                     mask=cols_ok[None, :] & (d_k[:, None] < DK), other=0.0)
        vT = tl.load(V + (tok0 * G + g) * DV + (local[None, :] * (G * DV) + d_v[:, None]),
                     mask=cols_ok[None, :] & (d_v[:, None] < DV), other=0.0)
    if KVPOS_ON:
        kpos = tl.load(KVPOS + tok0 + local, mask=cols_ok, other=-1)[None, :]
    else:
        kpos = cols[None, :]
    s, keep, p = _bwd_tile_scores(q, kT, qpos, kpos, rows_ok, cols_ok[None, :], b, h, W, scale, lse[:, None],
                                  CAUSAL, WINDOW, KVPOS_ON, BOUNDS, MASK, SCORE, PREC,
                                  __SCAPS__, __MCAPS__)
    dp = tl.dot(do, vT, input_precision=PREC)
    ds = p * (dp - delta[:, None])
    if SCORE:
        ds = _score_mod_bwd(s, b, h, qpos, kpos, ds, keep, False, 1, 0, __SCAPS__)
    dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=PREC)
    return dq


@triton.jit(do_not_specialize=["T", "S", "W", "Q_OFF", "TB", "SB", __DNS__])
def _dq_kernel(Q, K, V, DO, KDESC, VDESC, LSE, DELTA, DQ_OUT, QOFF, KVPOS, CU,
               KVN, KVI, FKVN, FKVI,
               T, S, H, G, W, Q_OFF, TB, SB, scale, BOFF, __SCAPS__, __MCAPS__,
               DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SCORE: tl.constexpr,
               MASK: tl.constexpr, VARLEN: tl.constexpr, CACHE: tl.constexpr,
               SPARSE: tl.constexpr, SUB_Q: tl.constexpr, SUB_KV: tl.constexpr,
               PREC: tl.constexpr, TMA: tl.constexpr):
    """One program per (query tile, batch row · head): dq over the visible key tiles,
    the last query tiles first."""
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
    d_k = tl.arange(0, BDK)
    d_v = tl.arange(0, BDV)
    qtok = (q_tok0 + rows).to(tl.int64)
    q = tl.load(Q + (qtok[:, None] * H + h) * DK + d_k[None, :], mask=rows_ok & (d_k[None, :] < DK), other=0.0)
    do = tl.load(DO + (qtok[:, None] * H + h) * DV + d_v[None, :], mask=rows_ok & (d_v[None, :] < DV), other=0.0)
    lse = tl.load(LSE + h.to(tl.int64) * ntok + qtok, mask=rows < Tn, other=0.0)
    delta = tl.load(DELTA + h.to(tl.int64) * ntok + qtok, mask=rows < Tn, other=0.0)
    dq = tl.zeros([BLOCK_M, BDK], dtype=tl.float32)
    lo = 0
    hi = Sn
    if not CACHE:
        if CAUSAL:
            hi = tl.minimum(Sn, qoff + m0 + BLOCK_M)
        if WINDOW:
            lo = tl.maximum(0, qoff + m0 - W + 1)
            lo = (lo // BLOCK_N) * BLOCK_N
    if SPARSE:
        qb = m0 // (BLOCK_M * SUB_Q)
        row = (b * H + h) * TB + qb
        n_partial = tl.load(KVN + row) * SUB_KV
        for j in range(n_partial):
            blk = tl.load(KVI + row.to(tl.int64) * SB + j // SUB_KV)
            n0 = (blk * SUB_KV + j % SUB_KV) * BLOCK_N
            dq = _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h,
                          Sn, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, True,
                          SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
        n_full = tl.load(FKVN + row) * SUB_KV
        for j in range(n_full):
            blk = tl.load(FKVI + row.to(tl.int64) * SB + j // SUB_KV)
            n0 = (blk * SUB_KV + j % SUB_KV) * BLOCK_N
            dq = _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h,
                          Sn, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, False,
                          SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
    elif CACHE:
        for n0 in range(0, Sn, BLOCK_N):
            dq = _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h,
                          Sn, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, MASK,
                          SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
    else:
        full_lo, full_hi = _full_tiles(lo, hi, m0, qoff, Sn, W, BLOCK_M, BLOCK_N, CAUSAL, WINDOW)
        for n0 in range(lo, full_lo, BLOCK_N):
            dq = _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h,
                          Sn, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, MASK,
                          SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
        for n0 in range(full_lo, full_hi, BLOCK_N):
            dq = _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h,
                          Sn, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, False, MASK,
                          SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
        for n0 in range(full_hi, hi, BLOCK_N):
            dq = _dq_tile(dq, q, do, lse, delta, K, V, KDESC, VDESC, KVPOS, kv_tok0, g, G, n0, qpos, rows_ok, bmod, h,
                          Sn, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, CACHE, True, MASK,
                          SCORE, PREC, TMA, __SCAPS__, __MCAPS__)
    dq = dq * scale
    tl.store(DQ_OUT + (qtok[:, None] * H + h) * DK + d_k[None, :], dq.to(DQ_OUT.dtype.element_ty),
             mask=rows_ok & (d_k[None, :] < DK))


@triton.jit
def _decode_tile(acc, m_i, l_i, q, KP, VP, CPOS, tok0, n0, end, start, g, G, qpos, rows_ok, b, h2,
                 W, scale, DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr,
                 BDV: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                 WINDOW: tl.constexpr, SCORE: tl.constexpr, MASK: tl.constexpr,
                 PREC: tl.constexpr, CACHED: tl.constexpr, __SCAPS__, __MCAPS__):
    """Fold keys [n0, n0 + BN) (< end) of one source into the running softmax (log2
    units): the cache (positions read from CPOS, -1 empty) or the new keys (positions
    start + j)."""
    j = n0 + tl.arange(0, BLOCK_N)
    ok = j < end
    tok = tok0 + j
    d_k = tl.arange(0, BDK)
    d_v = tl.arange(0, BDV)
    if BDK == DK:
        k_mask = ok[None, :]
    else:
        k_mask = ok[None, :] & (d_k[:, None] < DK)
    if BDV == DV:
        v_mask = ok[:, None]
    else:
        v_mask = ok[:, None] & (d_v[None, :] < DV)
    kT = tl.load(KP + (tok[None, :] * G + g) * DK + d_k[:, None], mask=k_mask, other=0.0)
    vt = tl.load(VP + (tok[:, None] * G + g) * DV + d_v[None, :], mask=v_mask, other=0.0)
    if CACHED:
        kpos1 = tl.load(CPOS + tok, mask=ok, other=-1).to(tl.int32)
        # Empty slots may hold anything (NaN included): zero their values.
        vt = tl.where((kpos1 >= 0)[:, None], vt, 0.0)
    else:
        kpos1 = tl.where(ok, start + j, -1)
    kpos = kpos1[None, :]
    if SCORE:
        s = tl.dot(q, kT, input_precision=PREC) * scale
        s = _score_mod(s, b, h2, qpos, kpos, __SCAPS__) * LOG2E
    else:
        s = tl.dot(q, kT, input_precision=PREC) * (scale * LOG2E)
    keep = _keep(qpos, kpos, rows_ok[:, None], ok[None, :], b, h2, W, CAUSAL, WINDOW, True,
                 MASK, __MCAPS__)
    s = tl.where(keep, s, NEG_INF)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == NEG_INF, 0.0, m_new)
    alpha = tl.exp2(m_i - m_use)
    p = tl.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    # Accumulate inside the product (the tensor cores add into acc).
    acc = tl.dot(p.to(vt.dtype), vt, acc * alpha[:, None], input_precision=PREC)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["T", "S", "L", "W", "CHUNK", __DNS__])
def _decode_kernel(Q, K, V, CK, CV, CPOS, QOFF, OPART, LPART,
                   T, S, L, H, G, W, CHUNK, scale, BOFF, __SCAPS__, __MCAPS__,
                   DK: tl.constexpr, DV: tl.constexpr, BDK: tl.constexpr, BDV: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SCORE: tl.constexpr,
                   MASK: tl.constexpr, PREC: tl.constexpr):
    """Split-KV read of a cache (L slots, positions CPOS) followed by S new keys, for the
    T·R query rows of one key head (R = H / G query heads share it: GQA rows stack).
    Program (split, batch row · key head, row tile) folds keys [split·CHUNK, +CHUNK) of
    the L + S and writes its partial output (normalised) and log-sum-exp."""
    pid_s = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_r = tl.program_id(2)
    b = pid_bg // G
    g = pid_bg % G
    R = H // G
    bmod = b + BOFF  # the batch index the mods see
    r = pid_r * BLOCK_M + tl.arange(0, BLOCK_M)
    t = r // R
    h_row = g * R + r % R
    rows_ok = t < T
    qoff = tl.load(QOFF + b).to(tl.int32)
    start = qoff - S + T  # position of the first new key
    qpos = (qoff + t)[:, None]
    h2 = h_row[:, None]
    d_k = tl.arange(0, BDK)
    d_v = tl.arange(0, BDV)
    qtok = (b * T + t).to(tl.int64)
    q = tl.load(Q + (qtok[:, None] * H + h2) * DK + d_k[None, :], mask=rows_ok[:, None] & (d_k[None, :] < DK), other=0.0)
    acc = tl.zeros([BLOCK_M, BDV], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    j0 = pid_s * CHUNK
    j1 = tl.minimum(j0 + CHUNK, L + S)
    # This split's keys: first its part of the cache, then its part of the new keys.
    c_end = tl.minimum(j1, L)
    for n0 in range(j0, c_end, BLOCK_N):
        acc, m_i, l_i = _decode_tile(
            acc, m_i, l_i, q, CK, CV, CPOS, b.to(tl.int64) * L, n0, c_end, start, g, G, qpos,
            rows_ok, bmod, h2, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, SCORE, MASK,
            PREC, True, __SCAPS__, __MCAPS__)
    n_end = j1 - L
    for n0 in range(tl.maximum(j0, L) - L, n_end, BLOCK_N):
        acc, m_i, l_i = _decode_tile(
            acc, m_i, l_i, q, K, V, CPOS, b.to(tl.int64) * S, n0, n_end, start, g, G, qpos,
            rows_ok, bmod, h2, W, scale, DK, DV, BDK, BDV, BLOCK_N, CAUSAL, WINDOW, SCORE, MASK,
            PREC, False, __SCAPS__, __MCAPS__)
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    lse = tl.where(l_i > 0.0, (m_i + tl.log2(tl.where(l_i > 0.0, l_i, 1.0))) / LOG2E, NEG_INF)
    part = (pid_s.to(tl.int64) * tl.num_programs(1) + pid_bg) * (tl.num_programs(2) * BLOCK_M) + r
    tl.store(OPART + part[:, None] * BDV + d_v[None, :], o)
    tl.store(LPART + part, lse)


@triton.jit(do_not_specialize=["NSPLIT", "T", "NROWS"])
def _combine_kernel(OPART, LPART, O, LSE, SINKS, NSPLIT, T, H, G, NROWS,
                    DV: tl.constexpr, BDV: tl.constexpr, BLOCK_M: tl.constexpr, SINK: tl.constexpr):
    """Merge the splits of the decode kernel: o = Σ e^{lse_i} o_i / (e^{sink} + Σ e^{lse_i})."""
    pid_bg = tl.program_id(0)
    pid_r = tl.program_id(1)
    b = pid_bg // G
    g = pid_bg % G
    R = H // G
    r = pid_r * BLOCK_M + tl.arange(0, BLOCK_M)
    t = r // R
    h = g * R + r % R
    rows_ok = t < T
    d_v = tl.arange(0, BDV)
    m = tl.full([BLOCK_M], NEG_INF, dtype=tl.float32)
    den = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BDV], dtype=tl.float32)
    nprog = tl.num_programs(0)
    for i in range(NSPLIT):
        part = (i * nprog + pid_bg).to(tl.int64) * NROWS + r
        lse = tl.load(LPART + part)
        o = tl.load(OPART + part[:, None] * BDV + d_v[None, :])
        m_new = tl.maximum(m, lse)
        m_use = tl.where(m_new == NEG_INF, 0.0, m_new)
        alpha = tl.exp2((m - m_use) * LOG2E)
        w = tl.exp2((lse - m_use) * LOG2E)
        den = den * alpha + w
        acc = acc * alpha[:, None] + w[:, None] * o
        m = m_new
    lse_keys = tl.where(den > 0.0, m + tl.log(tl.where(den > 0.0, den, 1.0)), NEG_INF)
    if SINK:
        sink = tl.load(SINKS + h, mask=rows_ok, other=0.0).to(tl.float32)
        m_all = tl.maximum(m, sink)
        shrink = tl.exp2((m - m_all) * LOG2E)
        o = acc * (shrink / (den * shrink + tl.exp2((sink - m_all) * LOG2E)))[:, None]
    else:
        o = acc / tl.where(den == 0.0, 1.0, den)[:, None]
    qtok = (b * T + t).to(tl.int64)
    tl.store(O + (qtok[:, None] * H + h[:, None]) * DV + d_v[None, :], o.to(O.dtype.element_ty),
             mask=rows_ok[:, None] & (d_v[None, :] < DV))
    ntok = (nprog // G) * T
    tl.store(LSE + h.to(tl.int64) * ntok + qtok, lse_keys, mask=rows_ok)
