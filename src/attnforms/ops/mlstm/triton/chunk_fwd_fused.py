"""Triton kernels of the chunked mLSTM forward, restructured (`launch.EXP_FORWARD`,
`launch.SIGMOID_FORWARD`): the same mathematics, stabiliser and outputs as chunk_fwd.py
(../README.md), organised as the gated delta rule's simple-GLA forward. The sigmoid
gate (STABILISE off) keeps every m after the entering state's at 0; it runs split only
with `launch.SIGMOID_SPLIT`.

1. `_gate_kernel` (chunk_fwd.py): b = in-chunk cumsum of logsigmoid(f), li = i.
2. `_state_output_kernel` per (value tile, sequence·head), walking the chunks in order
   with the `[K, BV]` float32 slice of C, and n, m in registers. With WRITE_O (whole-chunk
   tiles, BT == BS) it forms each chunk's output from the registers' entering state
   before the update: the row max from the gates alone (no rescaling), then
   num = w ⊙ (q̂ C_in) + P V and den = w ⊙ (q̂·n_in) + P 1 with w_r = e^{b_r + m_in − m_r},
   the scores, gates and P in `[BT, BC]` tiles, BC keys at a time (registers: see the
   README's restructured-forward section), q̂·n_in and the n update as float32 sums.
   The entering states, (m_in, m_out) and per row m, den are stored only for a backward
   (SAVE) or for the output pass below (not WRITE_O). The chunk's m_out comes from the
   same loaded gates (no second walk when the chunk is one tile).
3. `_output_kernel` (only without WRITE_O: few sequences·heads, or chunks longer than a
   tile) per (value tile of up to 128, chunk·query tile, head), the value tile covering
   V <= 128 whole, so each `[BS, BS]` gate-weighted score tile is built once: the row max
   from the gates first, then the entering state's read, then the key tiles up to the
   diagonal without rescaling.

Products (`tl.dot`), for bf16 inputs on the GPU (SPLIT16): q kᵀ in bf16 (exact inputs);
the float32 state C, the gate-weighted scores P and the weighted keys k ⊙ e^{a − m_out}
each enter as two bf16 halves (x_hi = bf16(x), x_lo = bf16(x − x_hi): about 16 bits of
mantissa, finer than the tf32 they replace) against the exact bf16 q, v; HALF_P drops
P's low half (FlashAttention's rounding). Otherwise (fp16, whose range the halves of C
could leave, and float32) the computed operand is float32 in DOT_PRECISION (tf32 for
16-bit inputs, ieee for float32). Under the interpreter every operand is float32.
"""
import triton
import triton.language as tl

from ....kernels.sequences import chunk_bounds as _chunk_bounds, sequence_head_program

from .chunk_fwd import _exit_max, _normaliser, _operand, _write_weights


@triton.jit
def _times_input(a, b, SPLIT16: tl.constexpr, HALF: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`a @ b` for a computed float32 `a` and an input block `b` (16-bit on the GPU):
    SPLIT16 as two 16-bit products of a's halves, HALF as one of a rounded to b's dtype,
    else b widened and the product in DOT_PRECISION."""
    if HALF:
        r = tl.dot(a.to(b.dtype), b, input_precision=DOT_PRECISION)
    elif SPLIT16:
        a_hi = a.to(b.dtype)
        a_lo = (a - a_hi.to(tl.float32)).to(b.dtype)
        r = tl.dot(a_hi, b, input_precision=DOT_PRECISION) + tl.dot(a_lo, b, input_precision=DOT_PRECISION)
    else:
        r = tl.dot(a, b.to(tl.float32), input_precision=DOT_PRECISION)
    return r


@triton.jit
def _acc_times_input(acc, a, b, SPLIT16: tl.constexpr, HALF: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`acc + a @ b` as `_times_input`, each product accumulating into `acc` (one chain of
    products: the compiler keeps it in one register layout, no conversions between)."""
    if HALF:
        r = tl.dot(a.to(b.dtype), b, acc, input_precision=DOT_PRECISION)
    elif SPLIT16:
        a_hi = a.to(b.dtype)
        a_lo = (a - a_hi.to(tl.float32)).to(b.dtype)
        r = tl.dot(a_lo, b, tl.dot(a_hi, b, acc, input_precision=DOT_PRECISION), input_precision=DOT_PRECISION)
    else:
        r = tl.dot(a, b.to(tl.float32), acc, input_precision=DOT_PRECISION)
    return r


@triton.jit
def _input_times(a, b, SPLIT16: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`a @ b` for an input block `a` (16-bit on the GPU) and a computed float32 `b` (the
    state): SPLIT16 as two 16-bit products of b's halves, else in DOT_PRECISION."""
    if SPLIT16:
        b_hi = b.to(a.dtype)
        b_lo = (b - b_hi.to(tl.float32)).to(a.dtype)
        r = tl.dot(a, b_hi, input_precision=DOT_PRECISION) + tl.dot(a, b_lo, input_precision=DOT_PRECISION)
    else:
        r = tl.dot(a.to(tl.float32), b, input_precision=DOT_PRECISION)
    return r


@triton.jit
def _state_read(q, C, SPLIT16: tl.constexpr, ROUND_C: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`q @ C` `[BT, BV]` for the input queries `q` and the float32 state `C`: ROUND_C
    with C rounded to q's 16-bit dtype (one product; the simple-GLA forward's choice),
    else as `_input_times` (two 16-bit halves with SPLIT16)."""
    if ROUND_C:
        r = tl.dot(q, C.to(q.dtype), input_precision=DOT_PRECISION)
    else:
        r = _input_times(q, C, SPLIT16, DOT_PRECISION)
    return r


@triton.jit
def _matvec(a, x, SPLIT16: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """`a @ x` `[M]` for an input block `a` `[M, N]` and a float32 vector `x` `[N]`. With
    SPLIT16 on the tensor cores (x's two 16-bit halves in column 0 of an `[N, 16]`
    operand), so `a` need not leave shared memory for registers; otherwise an exact
    float32 sum of products."""
    if SPLIT16:
        o_c = tl.arange(0, 16)
        b_x = tl.where(o_c[None, :] == 0, x[:, None], 0.0)
        r = tl.sum(_input_times(a, b_x, True, DOT_PRECISION), axis=1)
    else:
        r = tl.sum(a.to(tl.float32) * x[None, :], axis=1)
    return r


@triton.jit
def _state_update(b_C, b_n, b_k, b_v, b_a, SPLIT16: tl.constexpr, N_SPLIT16: tl.constexpr,
                  STATE_PRECISION: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """C += kᵀ (e^{a} ⊙ v), n += kᵀ e^{a} for one tile of writes (`b_a`: log weights less
    m_out, −inf on rows past the chunk; `b_k`, `b_v` as loaded). The weights go on the
    values' side, the `[BS, BV]` operand, so the keys enter the product as loaded."""
    b_e = tl.exp(b_a)
    b_vw = b_v.to(tl.float32) * b_e[:, None]
    if SPLIT16:
        # [BK, BS] @ [BS, BV] -> [BK, BV], the weighted values as two 16-bit halves.
        b_C += _input_times(tl.trans(b_k), b_vw, True, DOT_PRECISION)
    else:
        # [BK, BS] @ [BS, BV] -> [BK, BV] (tf32x3 for 16-bit inputs, ieee for float32).
        b_C += tl.dot(tl.trans(b_k.to(tl.float32)), b_vw, input_precision=STATE_PRECISION)
    b_n += _matvec(tl.trans(b_k), b_e, N_SPLIT16, DOT_PRECISION)
    return b_C, b_n


@triton.jit
def _mask2(m_r, m_c, EVEN_R: tl.constexpr, EVEN_C: tl.constexpr):
    """The `[M, N]` mask of rows `m_r` and columns `m_c`, leaving out a side that is
    wholly in range (a mask of broadcast vectors costs no registers per element; a
    combined one does)."""
    if EVEN_R and EVEN_C:
        r = None
    elif EVEN_R:
        r = m_c[None, :]
    elif EVEN_C:
        r = m_r[:, None]
    else:
        r = m_r[:, None] & m_c[None, :]
    return r


@triton.jit
def _load2(ptr, m_r, m_c, EVEN_R: tl.constexpr, EVEN_C: tl.constexpr):
    """`tl.load` under `_mask2`, 0 where masked."""
    if EVEN_R and EVEN_C:
        r = tl.load(ptr)
    else:
        r = tl.load(ptr, mask=_mask2(m_r, m_c, EVEN_R, EVEN_C), other=0.0)
    return r


@triton.jit
def _state_output_kernel(q, k, v, b, li, o, m_row, den_row, states, states_n, chunk_m,
                         initial_C, initial_n, initial_m, final_C, final_n, final_m, chunk_base,
                         cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                         STABILISE: tl.constexpr, USE_INITIAL: tl.constexpr, STORE_FINAL: tl.constexpr,
                         SAVE: tl.constexpr, WRITE_O: tl.constexpr, NATIVE: tl.constexpr, SPLIT16: tl.constexpr,
                         STATE_SPLIT16: tl.constexpr, N_SPLIT16: tl.constexpr, HALF_P: tl.constexpr,
                         ROUND_C: tl.constexpr, DOT_PRECISION: tl.constexpr, STATE_PRECISION: tl.constexpr,
                         EPS: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr,
                         BV: tl.constexpr, BC: tl.constexpr):
    """SAVE (or not WRITE_O): store each chunk's entering state, (m_in, m_out) and, with
    WRITE_O, each row's m and den. WRITE_O needs BT == BS; it walks the chunk's keys BC at
    a time. In-tile offsets are int32 against int64 scalar bases, and masks leave out
    the sides wholly in range (EVEN_K, EVEN_V): per-element int64 offsets and combined
    masks, hoisted out of the loop by the compiler, held registers throughout it.
    STABILISE: the exp input gate's running max; without it (the sigmoid gate, li =
    logsigmoid(i) <= 0, so no weight exceeds 1) every m after the entering state's is 0,
    as in chunk_fwd.py."""
    i_v, i_nh, i_n, i_h, bos, eos = sequence_head_program(cu_seqlens, H)
    STORE_STATES: tl.constexpr = SAVE or not WRITE_O
    EVEN_K: tl.constexpr = K == BK
    EVEN_V: tl.constexpr = V % BV == 0
    o_k = tl.arange(0, BK)
    o_v = i_v.to(tl.int32) * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    b_C = tl.zeros([BK, BV], dtype=tl.float32)
    b_n = tl.zeros([BK], dtype=tl.float32)
    b_m = tl.full([], float("-inf") if STABILISE else 0.0, tl.float32)
    if USE_INITIAL:
        b_C += _load2(initial_C + i_nh * K * V + (o_k[:, None] * V + o_v[None, :]), m_k, m_v, EVEN_K, EVEN_V)
        b_n += tl.load(initial_n + i_nh * K + o_k, mask=m_k, other=0.0)
        b_m = tl.load(initial_m + i_nh)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    for i_t in range(tl.cdiv(eos - bos, BT)):
        i_c = first_chunk + i_t
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT).to(tl.int32)
        if STORE_STATES:
            tl.store(states + (i_c * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]), b_C,
                     mask=_mask2(m_k, m_v, EVEN_K, EVEN_V))
            if i_v == 0:
                tl.store(states_n + (i_c * H + i_h) * K + o_k, b_n, mask=m_k)
        g = tl.load(b + (start + valid - 1) * H + i_h)
        if WRITE_O:
            tl.static_assert(BT == BS)
            tl.static_assert(BT % BC == 0)
            o_t = tl.arange(0, BT)
            m_t = o_t < valid
            # Rows past the chunk's end read its last row (no row masks, offsets formed in
            # the loop): their writes' weights and score columns are exact zeros below.
            r_last = tl.minimum(o_t, valid - 1)
            r_t = r_last * H
            row = start * H + i_h
            b_b = tl.load(b + row + r_t)
            # The row max from the gates, BC key columns at a time: the entering state's
            # b_r + m_in or the largest write; (b_r − b_s) + li_s is exactly li_r on the
            # diagonal (the backward's restarts), and s <= r, s < valid is one comparison.
            if STABILISE:
                b_mr = b_b + b_m
                for j in tl.static_range(BT // BC):
                    o_c = j * BC + tl.arange(0, BC)
                    r_c = tl.minimum(o_c, valid - 1) * H
                    b_D = tl.where(o_c[None, :] <= r_last[:, None],
                                   (b_b[:, None] - tl.load(b + row + r_c)[None, :]) + tl.load(li + row + r_c)[None, :],
                                   float("-inf"))
                    b_mr = tl.maximum(b_mr, tl.max(b_D, axis=1))
            else:
                b_mr = tl.zeros([BT], dtype=tl.float32)
            b_w = tl.exp(b_b + b_m - b_mr) * scale  # 0 while nothing was written (m_in = −inf)
            b_qo = _operand(_load2(q + row * K + (r_t[:, None] * K + o_k[None, :]), m_t, m_k, True, EVEN_K), NATIVE)
            # [BT, BK] @ [BK, BV] -> [BT, BV]: the entering state's read.
            b_acc = _state_read(b_qo, b_C, SPLIT16, ROUND_C, DOT_PRECISION) * b_w[:, None]
            b_den = _matvec(b_qo, b_n, False, DOT_PRECISION) * b_w
            # The writes, BC key columns at a time (`[BT, BC]` score and gate tiles keep
            # the registers of the whole `[BT, BT]` ones free).
            for j in tl.static_range(BT // BC):
                o_c = j * BC + tl.arange(0, BC)
                r_c = tl.minimum(o_c, valid - 1) * H
                b_kc = _operand(_load2(k + row * K + (r_c[:, None] * K + o_k[None, :]), m_t, m_k, True, EVEN_K), NATIVE)
                b_vc = _operand(_load2(v + row * V + (r_c[:, None] * V + o_v[None, :]), m_t, m_v, True, EVEN_V), NATIVE)
                b_D = tl.where(o_c[None, :] <= r_last[:, None],
                               (b_b[:, None] - tl.load(b + row + r_c)[None, :]) + tl.load(li + row + r_c)[None, :],
                               float("-inf"))
                # [BT, BK] @ [BK, BC] -> [BT, BC] and [BT, BC] @ [BC, BV] -> [BT, BV]
                b_P = tl.dot(b_qo, tl.trans(b_kc), input_precision=DOT_PRECISION) * scale * tl.exp(b_D - b_mr[:, None])
                b_acc = _acc_times_input(b_acc, b_P, b_vc, SPLIT16, HALF_P, DOT_PRECISION)
                b_den += tl.sum(b_P, axis=1)
            b_o = b_acc * _normaliser(b_den, b_mr, EPS)[:, None]
            tl.store(o + row * V + (r_t[:, None] * V + o_v[None, :]), b_o.to(o.dtype.element_ty),
                     mask=_mask2(m_t, m_v, False, EVEN_V))
            if SAVE and i_v == 0:
                tl.store(m_row + row + r_t, b_mr, mask=m_t)
                tl.store(den_row + row + r_t, b_den, mask=m_t)
            # The writes' log weights at the chunk end, a_s = g − b_s + li_s, and m_out.
            b_a = tl.where(m_t, g - b_b + tl.load(li + row + r_t), float("-inf"))
            m_out = tl.full([], 0.0, tl.float32)
            if STABILISE:
                m_out = tl.maximum(g + b_m, tl.max(b_a, axis=0))
            b_k = _operand(_load2(k + row * K + (r_t[:, None] * K + o_k[None, :]), m_t, m_k, True, EVEN_K), NATIVE)
            b_v = _operand(_load2(v + row * V + (r_t[:, None] * V + o_v[None, :]), m_t, m_v, True, EVEN_V), NATIVE)
            b_decay = tl.exp(g + b_m - m_out)
            b_C *= b_decay
            b_n *= b_decay
            b_C, b_n = _state_update(b_C, b_n, b_k, b_v, b_a - m_out, STATE_SPLIT16, False, STATE_PRECISION,
                                     DOT_PRECISION)
        else:
            # m_out from the chunk's gates, then the writes tile by tile.
            m_out = _exit_max(b, li, start, valid, g, b_m, i_h, H, STABILISE, BT, BS)
            b_decay = tl.exp(g + b_m - m_out)
            b_C *= b_decay
            b_n *= b_decay
            for s0 in range(0, BT, BS):
                b_a, o_s, m_s = _write_weights(b, li, start, valid, s0, g, m_out, i_h, H, BS)
                p_s = (start + o_s) * H + i_h
                b_k = _operand(tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_s[:, None] & m_k[None, :], other=0.0), NATIVE)
                b_v = _operand(tl.load(v + p_s[:, None] * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0.0), NATIVE)
                b_C, b_n = _state_update(b_C, b_n, b_k, b_v, b_a, STATE_SPLIT16, N_SPLIT16,
                                         STATE_PRECISION, DOT_PRECISION)
        if STORE_STATES and i_v == 0:
            tl.store(chunk_m + (i_c * H + i_h) * 2, b_m)
            tl.store(chunk_m + (i_c * H + i_h) * 2 + 1, m_out)
        b_m = m_out
    if STORE_FINAL:
        tl.store(final_C + i_nh * K * V + (o_k[:, None] * V + o_v[None, :]), b_C,
                 mask=_mask2(m_k, m_v, EVEN_K, EVEN_V))
        if i_v == 0:
            tl.store(final_n + i_nh * K + o_k, b_n, mask=m_k)
            tl.store(final_m + i_nh, b_m)


@triton.jit
def _output_kernel(q, k, v, b, li, states, states_n, chunk_m, o, m_row, den_row, chunk_indices,
                   cu_seqlens, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                   STABILISE: tl.constexpr, SAVE: tl.constexpr, NATIVE: tl.constexpr, SPLIT16: tl.constexpr,
                   HALF_P: tl.constexpr, ROUND_C: tl.constexpr, DOT_PRECISION: tl.constexpr, EPS: tl.constexpr,
                   BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BKS: tl.constexpr, BV: tl.constexpr):
    """Outputs of query tile `program_id(1) % (BT // BS)` of a chunk from its stored
    entering state: value columns `program_id(0)`·BV.. (all of them for V <= BV).
    Without STABILISE (the sigmoid gate) every row's m is 0, as in the fused pass."""
    i_v, i_cq, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    NQ: tl.constexpr = BT // BS
    i_c, i_q = i_cq // NQ, i_cq % NQ
    _, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    if i_q * BS >= valid:
        return
    o_r = i_q * BS + tl.arange(0, BS)
    m_r = o_r < valid
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    p_r = (start + o_r) * H + i_h
    b_br = tl.load(b + p_r, mask=m_r, other=0.0)
    b_m_in = tl.load(chunk_m + (i_c * H + i_h) * 2)
    if STABILISE:
        # The row max from the gates alone, over the key tiles up to the diagonal.
        b_mr = b_br + b_m_in
        for j in range(0, i_q + 1):
            o_s = j * BS + tl.arange(0, BS)
            m_s = o_s < valid
            p_s = (start + o_s) * H + i_h
            causal = (o_s[None, :] <= o_r[:, None]) & m_s[None, :]
            b_D = tl.where(causal, (b_br[:, None] - tl.load(b + p_s, mask=m_s, other=0.0)[None, :])
                           + tl.load(li + p_s, mask=m_s, other=0.0)[None, :], float("-inf"))
            b_mr = tl.maximum(b_mr, tl.max(b_D, axis=1))
    else:
        b_mr = tl.zeros([BS], dtype=tl.float32)
    b_w = tl.exp(b_br + b_m_in - b_mr) * scale  # 0 while nothing was written (m_in = −inf)
    # The entering state's read, BKS key columns at a time: [BS, BKS] @ [BKS, BV] -> [BS, BV].
    b_acc = tl.zeros([BS, BV], dtype=tl.float32)
    b_den = tl.zeros([BS], dtype=tl.float32)
    p_C = states + (i_c * H + i_h) * K * V
    for k0 in range(0, BK, BKS):
        o_ks = k0 + tl.arange(0, BKS)
        m_ks = o_ks < K
        b_qs = tl.load(q + p_r[:, None] * K + o_ks[None, :], mask=m_r[:, None] & m_ks[None, :], other=0.0)
        b_C = tl.load(p_C + o_ks[:, None] * V + o_v[None, :], mask=m_ks[:, None] & m_v[None, :], other=0.0)
        b_acc += _state_read(_operand(b_qs, NATIVE), b_C, SPLIT16, ROUND_C, DOT_PRECISION)
        b_ns = tl.load(states_n + (i_c * H + i_h) * K + o_ks, mask=m_ks, other=0.0)
        b_den += tl.sum(b_qs.to(tl.float32) * b_ns[None, :], axis=1)
    b_acc *= b_w[:, None]
    b_den *= b_w
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    b_q = _operand(tl.load(q + p_r[:, None] * K + o_k[None, :], mask=m_r[:, None] & m_k[None, :], other=0.0), NATIVE)
    for j in range(0, i_q + 1):
        o_s = j * BS + tl.arange(0, BS)
        m_s = o_s < valid
        p_s = (start + o_s) * H + i_h
        b_k = _operand(tl.load(k + p_s[:, None] * K + o_k[None, :], mask=m_s[:, None] & m_k[None, :], other=0.0), NATIVE)
        b_v = _operand(tl.load(v + p_s[:, None] * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0.0), NATIVE)
        causal = (o_s[None, :] <= o_r[:, None]) & m_s[None, :]
        b_D = tl.where(causal, (b_br[:, None] - tl.load(b + p_s, mask=m_s, other=0.0)[None, :])
                       + tl.load(li + p_s, mask=m_s, other=0.0)[None, :], float("-inf"))
        # [BS, BK] @ [BK, BS] -> [BS, BS]
        b_P = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION) * scale * tl.exp(b_D - b_mr[:, None])
        # [BS, BS] @ [BS, BV] -> [BS, BV]
        b_acc += _times_input(b_P, b_v, SPLIT16, HALF_P, DOT_PRECISION)
        b_den += tl.sum(b_P, axis=1)
    b_o = b_acc * _normaliser(b_den, b_mr, EPS)[:, None]
    tl.store(o + p_r[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_r[:, None] & m_v[None, :])
    if SAVE and i_v == 0:
        tl.store(m_row + p_r, b_mr, mask=m_r)
        tl.store(den_row + p_r, b_den, mask=m_r)
