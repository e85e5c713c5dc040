"""The split-KV decode kernels (partial tiles, combine) of the softmax attention kernel template. NOT imported as is:
`modc.kernels_for` appends this text to template.py's (in TEMPLATE_PARTS order) and fills
the mod placeholders in the whole; the mod helpers, `_keep`, LOG2E and NEG_INF come from template.py.
"""
import triton
import triton.language as tl


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
