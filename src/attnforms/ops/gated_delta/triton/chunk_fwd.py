"""Triton kernel of the chunked gated delta rule, forward: the sequential pass.

`_state_output_kernel` walks the chunks of one sequence in order, one program per
(value tile, sequence·head), with the `[K, BV]` float32 state slice S in registers.
Per chunk (the parallel parts before it are in chunk_prepare.py):

    Ũ = U − W S                      (with beta; without, Ũ = V)
    O = scale·(Q ⊙ γ) S + A_qk Ũ      A_qk formed here from Q Kᵀ ⊙ Γ (no decay or one per
                                     head) or read (per-channel decay)
    S ← Diag(γ_C) S + (K ⊙ exp(G_C − G))ᵀ Ũ

so neither the entering states nor Ũ leave the chip unless a backward will read them
(SAVE). LOW: 16-bit inputs, products on the tensor cores in the inputs' dtype with the
float32 state and Ũ rounded to it as operands (float32 accumulation; within the noise
rule, see bench/NOTES-gated-delta.md); otherwise float32 operands (the interpreter, the
CPU test path, multiplies bf16 blocks wrongly).
Gate layout switch GATE: 0 none, 1 one per head, 2 one per key channel.
"""
import triton
import triton.language as tl

from .common import _decay_exp
from .state_slice import state_slice


@triton.jit
def _operand(x, LOW: tl.constexpr, like):
    """A `tl.dot` operand: in the dtype of pointer `like` (the inputs' 16-bit type) when
    LOW, else float32."""
    if LOW:
        y = x.to(like.dtype.element_ty)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit(do_not_specialize=["T"])
def _state_output_kernel(q, k, v, w, G, Aqk, o, states, v_new, initial, final, chunk_base,
                         cu_seqlens, scale, T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                         GATE: tl.constexpr, USE_BETA: tl.constexpr, USE_INITIAL: tl.constexpr,
                         STORE_FINAL: tl.constexpr, SAVE: tl.constexpr, LOW: tl.constexpr,
                         BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """With beta, `v` and `w` are the chunks' U and W (`[rows, H, V]`, `[rows, H, K]`).
    Writes o `[rows, H, V]`; with SAVE the entering states `[chunks, H, K, V]` and (with
    beta) Ũ `[rows, H, V]`, float32."""
    i_n, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_S = state_slice(
        initial, cu_seqlens, H, K, V, USE_INITIAL, BK, BV)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    m_causal = o_t[:, None] >= o_t[None, :]
    for i_t in range(tl.cdiv(eos - bos, BT)):
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT)
        m_t = o_t < valid
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        if SAVE:
            tl.store(states + ((first_chunk + i_t) * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]), b_S, mask=m_kv)
        b_q = tl.load(q + p_tk, mask=m_tk, other=0.0)
        b_k = tl.load(k + p_tk, mask=m_tk, other=0.0)
        b_S_op = _operand(b_S, LOW, q)
        # Ũ = U − W S: [BT, BK] @ [BK, BV] -> [BT, BV] (W, U: see chunk_prepare.py)
        b_u = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        if USE_BETA:
            b_w = _operand(tl.load(w + p_tk, mask=m_tk, other=0.0), LOW, q)
            b_u -= tl.dot(b_w, b_S_op)
            if SAVE:
                tl.store(v_new + p_tv, b_u, mask=m_tv)
        b_u_op = _operand(b_u, LOW, q)
        # The in-chunk scores A_qk `[BT, BT]`.
        if GATE == 2:
            b_A = tl.load(Aqk + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
        else:
            # [BT, BK] @ [BK, BT] -> [BT, BT]
            b_A = tl.dot(_operand(b_q, LOW, q), tl.trans(_operand(b_k, LOW, q)))
            if GATE == 1:
                b_G = tl.load(G + (start + o_t) * H + i_h, mask=m_t, other=0.0)
                b_A *= _decay_exp(b_G[:, None] - b_G[None, :])
            b_A = tl.where(m_causal, b_A * scale, 0.0)
        # O = scale (Q ⊙ γ) S + A_qk Ũ and S ← Diag(γ_C) S + (K ⊙ exp(G_C − G))ᵀ Ũ. A decay
        # per head scales rows: of the product Q S, and of Ũ, so the `[BT, BK]` tiles
        # enter the products as loaded. Per channel, the tiles themselves are decayed.
        b_u_end = b_u
        if GATE == 2:
            b_G = tl.load(G + p_tk, mask=m_tk, other=0.0)
            b_G_last = tl.load(G + ((start + valid - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0)
            b_q_in = b_q.to(tl.float32) * tl.exp(b_G) * scale
            b_k_in = b_k.to(tl.float32) * _decay_exp(b_G_last[None, :] - b_G)
        else:
            b_q_in = b_q
            b_k_in = b_k
        # [BT, BK] @ [BK, BV] -> [BT, BV]
        b_o = tl.dot(_operand(b_q_in, LOW, q), b_S_op)
        if GATE == 1:
            b_G_last = tl.load(G + (start + valid - 1) * H + i_h)
            b_o *= (tl.exp(b_G) * scale)[:, None]
            b_u_end = b_u * _decay_exp(b_G_last - b_G)[:, None]
        elif GATE == 0:
            b_o *= scale
        # [BT, BT] @ [BT, BV] -> [BT, BV]
        b_o += tl.dot(_operand(b_A, LOW, q), b_u_op)
        tl.store(o + p_tv, b_o.to(o.dtype.element_ty), mask=m_tv)
        if GATE == 1:
            b_S *= tl.exp(b_G_last)
        elif GATE == 2:
            b_S *= tl.exp(b_G_last)[:, None]
        # [BK, BT] @ [BT, BV] -> [BK, BV]
        b_S += tl.dot(tl.trans(_operand(b_k_in, LOW, q)), _operand(b_u_end, LOW, q))
    if STORE_FINAL:
        tl.store(final + p_state, b_S, mask=m_kv)
