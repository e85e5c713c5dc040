"""The backward kernels (dk/dv, dq) of the softmax attention kernel template. NOT imported as is:
`modc.kernels_for` appends this text to template.py's (in TEMPLATE_PARTS order) and fills
the mod placeholders in the whole; the mod helpers, `_keep`, `_sequence`, `_full_tiles`, `_full_query_tiles` and LOG2E come from template.py.
"""
import triton
import triton.language as tl


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
