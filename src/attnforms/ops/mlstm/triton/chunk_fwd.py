"""Triton kernels of the chunked mLSTM, forward (TFLA: two levels of tiling).

Level 1 cuts each sequence into chunks of BT tokens (BT = the launcher's chunk size,
64 to 256); level 2 cuts each chunk into tiles of BS tokens, so a chunk's `[BT, BT]`
gate matrix is never formed whole and the chunk can be large (few stored states).
Three launches (see ../README.md, "Kernels"):

1. `_gate_kernel`    per (chunk, head): lf = logsigmoid(f), li = i or logsigmoid(i),
                     b = in-chunk inclusive cumsum of lf; b and li stored in float32.
2. `_state_kernel`   per (value tile, sequence·head), walking the chunks in order: stores
                     each entering state (C, n) and the chunk's (m_in, m_out), then
                     C ← e^{g+m_in−m_out} C + Σ_s e^{a_s−m_out} k_s v_sᵀ, tile by tile.
3. `_output_kernel`  per (value tile, chunk·query tile, head): loops over the key tiles of
                     the chunk up to the diagonal with FlashAttention-style rescaling of
                     the running max, adds the entering state's read, normalises; stores
                     the outputs and, per row, the stabiliser m and the denominator.

Sequences are addressed through `cu_seqlens` (a plain batch is B sequences of length T)
and `chunk_indices` maps a global chunk to (sequence, chunk in sequence): T is never a
compile-time constant. STABILISE: exp input gate (running max) or sigmoid (m = 0).
"""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_bounds as _chunk_bounds, sequence_head_program


@triton.jit
def _logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _normaliser(den, m, EPS: tl.constexpr):
    """1 / (max(|den|, e^{-m}) + EPS) as min(1/(|den|+EPS), sigmoid(m + log EPS)/EPS):
    finite for every m (see ../README.md, "Numerics")."""
    from_floor = tl.sigmoid(m + tl.log(EPS)) / EPS
    return tl.minimum(1.0 / (tl.abs(den) + EPS), from_floor)


@triton.jit
def _gate_kernel(i, f, b, li, chunk_indices, cu_seqlens, H: tl.constexpr,
                 STABILISE: tl.constexpr, BT: tl.constexpr):
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    p_t = (start + o_t) * H + i_h
    b_lf = tl.where(m_t, _logsigmoid(tl.load(f + p_t, mask=m_t, other=0.0).to(tl.float32)), 0.0)
    b_i = tl.load(i + p_t, mask=m_t, other=0.0).to(tl.float32)
    if not STABILISE:
        b_i = _logsigmoid(b_i)
    tl.store(b + p_t, tl.cumsum(b_lf, axis=0), mask=m_t)
    tl.store(li + p_t, b_i, mask=m_t)


@triton.jit
def _write_weights(b, li, start, valid, s0, g, m_out, i_h, H: tl.constexpr, BS: tl.constexpr):
    """Log weights a_s − m_out = g − b_s + li_s − m_out of tile s0.. of the chunk's writes
    as they reach the chunk end (−inf on rows past the chunk), and the row mask."""
    o_s = s0 + tl.arange(0, BS)
    m_s = o_s < valid
    p_s = (start + o_s) * H + i_h
    b_a = g - tl.load(b + p_s, mask=m_s, other=0.0) + tl.load(li + p_s, mask=m_s, other=0.0)
    return tl.where(m_s, b_a - m_out, float("-inf")), o_s, m_s


@triton.jit
def _exit_max(b, li, start, valid, g, b_m, i_h, H: tl.constexpr, STABILISE: tl.constexpr, BT: tl.constexpr,
              BS: tl.constexpr):
    """The chunk's exit stabiliser m_out = max(g + m_in, max_s a_s) from its gates, BS
    writes at a time (0 without STABILISE: the sigmoid gate)."""
    m_out = tl.full([], 0.0, tl.float32)
    if STABILISE:
        m_w = tl.full([], float("-inf"), tl.float32)
        for s0 in range(0, BT, BS):
            b_a, _, _ = _write_weights(b, li, start, valid, s0, g, 0.0, i_h, H, BS)
            m_w = tl.maximum(m_w, tl.max(b_a, axis=0))
        m_out = tl.maximum(g + b_m, m_w)
    return m_out


@triton.jit
def _state_kernel(k, v, b, li, states, states_n, chunk_m, initial_C, initial_n, initial_m,
                  final_C, final_n, final_m, chunk_base, cu_seqlens,
                  H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, STABILISE: tl.constexpr,
                  USE_INITIAL: tl.constexpr, STORE_FINAL: tl.constexpr, SPLIT16: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, STATE_PRECISION: tl.constexpr, BT: tl.constexpr,
                  BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_kv = m_k[:, None] & (o_v < V)[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    b_C = tl.zeros([BK, BV], dtype=tl.float32)
    b_n = tl.zeros([BK], dtype=tl.float32)
    b_m = tl.full([], float("-inf") if STABILISE else 0.0, tl.float32)
    if USE_INITIAL:
        b_C += tl.load(initial_C + i_nh * K * V + p_kv, mask=m_kv, other=0.0)
        b_n += tl.load(initial_n + i_nh * K + o_k, mask=m_k, other=0.0)
        b_m = tl.load(initial_m + i_nh)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    for i_t in range(tl.cdiv(eos - bos, BT)):
        i_c = first_chunk + i_t
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT)
        tl.store(states + (i_c * H + i_h) * K * V + p_kv, b_C, mask=m_kv)
        g = tl.load(b + (start + valid - 1) * H + i_h)
        m_out = _exit_max(b, li, start, valid, g, b_m, i_h, H, STABILISE, BT, BS)
        if i_v == 0:
            tl.store(states_n + (i_c * H + i_h) * K + o_k, b_n, mask=m_k)
            tl.store(chunk_m + (i_c * H + i_h) * 2, b_m)
            tl.store(chunk_m + (i_c * H + i_h) * 2 + 1, m_out)
        b_decay = tl.exp(g + b_m - m_out)
        b_C *= b_decay
        b_n *= b_decay
        for s0 in range(0, BT, BS):
            b_a, o_s, m_s = _write_weights(b, li, start, valid, s0, g, m_out, i_h, H, BS)
            p_s = (start + o_s) * H + i_h
            b_k = tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_s[:, None] & m_k[None, :], other=0.0).to(tl.float32)
            b_v = tl.load(v + p_s[:, None] * V + o_v[None, :], mask=m_s[:, None] & (o_v < V)[None, :], other=0.0)
            b_kw = b_k * tl.exp(b_a)[:, None]
            if SPLIT16:
                # V is exact in its 16-bit dtype, the weighted keys are not: two halves,
                # two 16-bit products (about 16 bits of the weights' mantissa).
                kw_hi = b_kw.to(b_v.dtype)
                kw_lo = (b_kw - kw_hi.to(tl.float32)).to(b_v.dtype)
                b_C += (tl.dot(tl.trans(kw_hi), b_v, input_precision=DOT_PRECISION)
                        + tl.dot(tl.trans(kw_lo), b_v, input_precision=DOT_PRECISION))
            else:
                # [BK, BS] @ [BS, BV] -> [BK, BV] in STATE_PRECISION (launch.py: tf32x3 for
                # 16-bit inputs, ieee for float32 ones).
                b_C += tl.dot(tl.trans(b_kw), b_v.to(tl.float32), input_precision=STATE_PRECISION)
            b_n += tl.sum(b_kw, axis=0)
        b_m = m_out
    if STORE_FINAL:
        tl.store(final_C + i_nh * K * V + p_kv, b_C, mask=m_kv)
        if i_v == 0:
            tl.store(final_n + i_nh * K + o_k, b_n, mask=m_k)
            tl.store(final_m + i_nh, b_m)


@triton.jit
def _operand(x, NATIVE: tl.constexpr):
    """A block as a `tl.dot` operand: its own dtype on the GPU (bf16 / fp16 tensor cores,
    float32 accumulation), float32 under the interpreter, whose half-precision dot is
    wrong."""
    if NATIVE:
        return x
    else:
        return x.to(tl.float32)


@triton.jit
def _mixed_dot(a, b, HALF_P: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`a @ b` for a computed float32 `a` (gate-weighted scores) and an input block `b`:
    HALF_P rounds `a` to b's dtype (FlashAttention's choice, bf16 tensor cores); otherwise
    `b` is widened and the product runs in DOT_PRECISION (kernels/precision.py): for
    16-bit inputs tf32 on the GPU, 8x finer than bf16 rounding of `a`, which the noise
    rule needs (see ../README.md, "Triton kernels"); for float32 inputs ieee."""
    if HALF_P:
        return tl.dot(a.to(b.dtype), b, input_precision=DOT_PRECISION)
    else:
        return tl.dot(a, b.to(tl.float32), input_precision=DOT_PRECISION)


@triton.jit
def _output_kernel(q, k, v, b, li, states, states_n, chunk_m, o, m_row, den_row, chunk_indices,
                   cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                   STABILISE: tl.constexpr, NATIVE: tl.constexpr, HALF_P: tl.constexpr,
                   DOT_PRECISION: tl.constexpr, EPS: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr):
    i_v, i_cq, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    NQ: tl.constexpr = BT // BS
    i_c, i_q = i_cq // NQ, i_cq % NQ
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if i_q * BS >= valid:
        return
    o_r = i_q * BS + tl.arange(0, BS)
    m_r = o_r < valid
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    p_r = (start + o_r) * H + i_h
    b_q = _operand(tl.load(q + p_r[:, None] * K + o_k[None, :], mask=m_r[:, None] & m_k[None, :], other=0.0), NATIVE)
    b_br = tl.load(b + p_r, mask=m_r, other=0.0)
    # Start from the entering state, read with log weight b_r + m_in: with the running
    # max started there its weight is 1 (0 when nothing was written yet, m_in = −inf).
    b_m_in = tl.load(chunk_m + (i_c * H + i_h) * 2)
    if STABILISE:
        b_m = b_br + b_m_in
        b_qw = b_q.to(tl.float32) * tl.where(b_m_in > float("-inf"), scale, 0.0)
    else:
        b_m = tl.zeros([BS], dtype=tl.float32)
        b_qw = b_q.to(tl.float32) * (scale * tl.exp(b_br + b_m_in))[:, None]
    b_C = tl.load(states + (i_c * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
    b_n = tl.load(states_n + (i_c * H + i_h) * K + o_k, mask=m_k, other=0.0)
    # [BS, BK] @ [BK, BV] -> [BS, BV]
    b_acc = tl.dot(b_qw, b_C, input_precision=DOT_PRECISION)
    b_den = tl.sum(b_qw * b_n[None, :], axis=1)
    for j in range(0, i_q + 1):
        o_s = j * BS + tl.arange(0, BS)
        m_s = o_s < valid
        p_s = (start + o_s) * H + i_h
        b_k = _operand(tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_s[:, None] & m_k[None, :], other=0.0), NATIVE)
        b_v = _operand(tl.load(v + p_s[:, None] * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0.0), NATIVE)
        b_bs = tl.load(b + p_s, mask=m_s, other=0.0)
        b_li = tl.load(li + p_s, mask=m_s, other=0.0)
        causal = (o_s[None, :] <= o_r[:, None]) & m_s[None, :]
        # (b_r − b_s) + li_s: exactly li_r on the diagonal, which is how the backward
        # recognises the tokens where the stabiliser restarts (m_r == li_r).
        b_D = tl.where(causal, (b_br[:, None] - b_bs[None, :]) + b_li[None, :], float("-inf"))
        # [BS, BK] @ [BK, BS] -> [BS, BS]
        b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * scale
        if STABILISE:
            b_m_new = tl.maximum(b_m, tl.max(b_D, axis=1))
            b_alpha = tl.exp(b_m - b_m_new)
            b_P = b_s * tl.exp(b_D - b_m_new[:, None])
            b_acc *= b_alpha[:, None]
            b_den *= b_alpha
            b_m = b_m_new
        else:
            b_P = b_s * tl.exp(b_D)
        # [BS, BS] @ [BS, BV] -> [BS, BV]
        b_acc += _mixed_dot(b_P, b_v, HALF_P, DOT_PRECISION)
        b_den += tl.sum(b_P, axis=1)
    b_o = b_acc * _normaliser(b_den, b_m, EPS)[:, None]
    tl.store(o + p_r[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_r[:, None] & m_v[None, :])
    if i_v == 0:
        tl.store(m_row + p_r, b_m, mask=m_r)
        tl.store(den_row + p_r, b_den, mask=m_r)
