"""Triton kernels of the chunked gated delta rule, forward: the sequential pass and the
split path's output pass.

`_state_output_kernel` walks the chunks of one sequence in order, one program per
(value tile, sequence·head), with the `[K, BV]` float32 state slice S in registers.
Per chunk (the parallel parts before it are in chunk_prepare_dense.py and
chunk_prepare_channel.py):

    Ũ = U − W S                      (with beta; without, Ũ = V)
    O = scale·(Q ⊙ γ) S + A_qk Ũ      A_qk formed here from Q Kᵀ ⊙ Γ (no decay or one per
                                     head) or read (per-channel decay)
    S ← Diag(γ_C) S + (K ⊙ exp(G_C − G))ᵀ Ũ

so neither the entering states nor Ũ leave the chip unless a backward will read them
(SAVE). For few sequences·heads the launcher splits the pass: the sequential kernel only
carries and stores the state (WRITE_O off), and `_output_kernel` forms O for every chunk
in parallel. LOW: 16-bit inputs, products on the tensor cores in the inputs' dtype with the
float32 state and Ũ rounded to it as operands (float32 accumulation; within the noise
rule, see bench/NOTES-gated-delta.md); otherwise float32 operands (the interpreter, the
CPU test path, multiplies bf16 blocks wrongly). DOT_PRECISION: every product's
`input_precision`, "ieee" for float32 inputs (the GPU's default for float32 operands is
TF32), "tf32" for 16-bit ones (kernels/precision.py).
Gate layout switch GATE: 0 none, 1 one per head, 2 one per key channel.
"""
import triton
import triton.language as tl

from ....kernels.sequences import global_chunk_id

from .common import _chunk_bounds, _chunk_end_decay, _decay_exp
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


@triton.jit
def _gate_tile(G, start, valid, i_h, H: tl.constexpr, GATE: tl.constexpr, BT: tl.constexpr):
    """A chunk's cumulative log-decay `[BT]` with one per head (zeros otherwise, never
    read: a per-channel decay reaches these kernels inside the decayed q and k)."""
    o_t = tl.arange(0, BT)
    if GATE == 1:
        b_G = tl.load(G + (start + o_t) * H + i_h, mask=o_t < valid, other=0.0)
    else:
        b_G = tl.zeros([BT], dtype=tl.float32)
    return b_G


@triton.jit
def _chunk_output(b_q, b_k, b_S_op, b_u_op, b_G, Aqk, start, valid, i_h, scale, H: tl.constexpr,
                  GATE: tl.constexpr, LOW: tl.constexpr, DOT_PRECISION: tl.constexpr, BT: tl.constexpr,
                  like):
    """O = scale·(Q ⊙ γ) S + A_qk Ũ for one chunk: `[BT, BV]` float32 from the loaded q, k
    `[BT, BK]`, the entering state S `[BK, BV]` and Ũ `[BT, BV]` as operands and the
    `_gate_tile` b_G. A_qk is formed from Q Kᵀ ⊙ Γ (no decay or one per head: the decay
    scales rows of Q S, so q enters as loaded) or read (per channel: q is then the
    preparation's scale·Q ⊙ γ)."""
    o_t = tl.arange(0, BT)
    m_t = o_t < valid
    if GATE == 2:
        b_A = tl.load(Aqk + ((start + o_t[:, None]) * H + i_h) * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
        # [BT, BK] @ [BK, BV] -> [BT, BV]
        b_o = tl.dot(_operand(b_q, LOW, like), b_S_op, input_precision=DOT_PRECISION)
    else:
        # [BT, BK] @ [BK, BT] -> [BT, BT]
        b_A = tl.dot(_operand(b_q, LOW, like), tl.trans(_operand(b_k, LOW, like)), input_precision=DOT_PRECISION)
        # [BT, BK] @ [BK, BV] -> [BT, BV]
        b_o = tl.dot(_operand(b_q, LOW, like), b_S_op, input_precision=DOT_PRECISION)
        if GATE == 1:
            b_A *= _decay_exp(b_G[:, None] - b_G[None, :])
            b_o *= (tl.exp(b_G) * scale)[:, None]
        else:
            b_o *= scale
        b_A = tl.where(o_t[:, None] >= o_t[None, :], b_A * scale, 0.0)
    # [BT, BT] @ [BT, BV] -> [BT, BV]
    return b_o + tl.dot(_operand(b_A, LOW, like), b_u_op, input_precision=DOT_PRECISION)


@triton.jit(do_not_specialize=["T"])
def _output_kernel(q, k, v_new, G, Aqk, states, o, chunk_indices, chunk_base, cu_seqlens, scale, T,
                   H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, GATE: tl.constexpr,
                   LOW: tl.constexpr, DOT_PRECISION: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                   BV: tl.constexpr):
    """O of chunk `program_id(1)`, head `program_id(2)`, value columns `program_id(0)`·BV..
    from the states and Ũ the sequential pass stored (`[chunks, H, K, V]`, `[rows, H, V]`;
    with a per-channel decay `q` is the preparation's scale·Q ⊙ γ):
    the split forward for few sequences·heads, where the sequential pass alone is the
    critical path and the output need not sit on it. `chunk_indices` may name any subset
    of the packing's chunks (one segment of the pipelined forward): a chunk's state is
    found by its global id, `chunk_base` (`[N]`, each sequence's first) + its index."""
    i_v, i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_n, start, valid = _chunk_bounds(chunk_indices, cu_seqlens, i_c, BT)
    i_g = global_chunk_id(chunk_indices, chunk_base, i_c, i_n)
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_t = o_t < valid
    m_k = o_k < K
    m_v = o_v < V
    p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
    p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
    b_q = tl.load(q + p_tk, mask=m_t[:, None] & m_k[None, :], other=0.0)
    b_k = tl.load(k + p_tk, mask=m_t[:, None] & m_k[None, :], other=0.0)
    b_S = tl.load(states + (i_g * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]),
                  mask=m_k[:, None] & m_v[None, :], other=0.0)
    b_u = tl.load(v_new + p_tv, mask=m_t[:, None] & m_v[None, :], other=0.0)
    b_G = _gate_tile(G, start, valid, i_h, H, GATE, BT)
    b_o = _chunk_output(b_q, b_k, _operand(b_S, LOW, q), _operand(b_u, LOW, q), b_G, Aqk, start, valid, i_h,
                        scale, H, GATE, LOW, DOT_PRECISION, BT, q)
    tl.store(o + p_tv, b_o.to(o.dtype.element_ty), mask=m_t[:, None] & m_v[None, :])


@triton.jit(do_not_specialize=["T"])
def _state_output_kernel(q, k, v, w, G, Aqk, o, states, v_new, initial, final, chunk_base,
                         cu_seqlens, scale, T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                         GATE: tl.constexpr, USE_BETA: tl.constexpr, USE_INITIAL: tl.constexpr,
                         STORE_FINAL: tl.constexpr, SAVE: tl.constexpr, WRITE_O: tl.constexpr,
                         LOW: tl.constexpr, DOT_PRECISION: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                         BV: tl.constexpr, SEQ_STRIDE: tl.constexpr = 1):
    """With beta, `v` and `w` are the chunks' U and W (`[rows, H, V]`, `[rows, H, K]`);
    with a per-channel decay, `q` and `k` are the preparation's decayed scale·Q ⊙ γ and
    K ⊙ exp(G_C − G) (chunk_prepare_channel.py).
    Writes o `[rows, H, V]` (WRITE_O); with SAVE, or without WRITE_O (then `_output_kernel`
    forms o in parallel over the chunks), the entering states `[chunks, H, K, V]` and
    (with beta) Ũ `[rows, H, V]`, in their buffers' dtypes. SEQ_STRIDE 2: `cu_seqlens`
    and `chunk_base` name one segment of every sequence (the pipelined forward; initial
    and final are then the states entering and leaving the segment)."""
    i_n, i_h, bos, eos, o_k, o_v, m_k, m_v, m_kv, p_state, b_S = state_slice(
        initial, cu_seqlens, H, K, V, USE_INITIAL, BK, BV, SEQ_STRIDE)
    first_chunk = tl.load(chunk_base + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    for i_t in range(tl.cdiv(eos - bos, BT)):
        start = bos + i_t * BT
        valid = tl.minimum(eos - start, BT)
        m_t = o_t < valid
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        p_tk = ((start + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        p_tv = ((start + o_t[:, None]) * H + i_h) * V + o_v[None, :]
        if SAVE or not WRITE_O:
            tl.store(states + ((first_chunk + i_t) * H + i_h) * K * V + (o_k[:, None] * V + o_v[None, :]),
                     b_S.to(states.dtype.element_ty), mask=m_kv)
        b_k = tl.load(k + p_tk, mask=m_tk, other=0.0)
        b_S_op = _operand(b_S, LOW, q)
        # Ũ = U − W S: [BT, BK] @ [BK, BV] -> [BT, BV] (W, U: see chunk_prepare_dense.py)
        b_u = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        if USE_BETA:
            b_w = _operand(tl.load(w + p_tk, mask=m_tk, other=0.0), LOW, q)
            b_u -= tl.dot(b_w, b_S_op, input_precision=DOT_PRECISION)
            if SAVE or not WRITE_O:
                tl.store(v_new + p_tv, b_u.to(v_new.dtype.element_ty), mask=m_tv)
        b_G = _gate_tile(G, start, valid, i_h, H, GATE, BT)
        if WRITE_O:
            b_q = tl.load(q + p_tk, mask=m_tk, other=0.0)
            b_o = _chunk_output(b_q, b_k, b_S_op, _operand(b_u, LOW, q), b_G, Aqk, start, valid, i_h, scale,
                                H, GATE, LOW, DOT_PRECISION, BT, q)
            tl.store(o + p_tv, b_o.to(o.dtype.element_ty), mask=m_tv)
        # S ← Diag(γ_C) S + (K ⊙ exp(G_C − G))ᵀ Ũ; a decay per head scales the rows of Ũ,
        # so the `[BT, BK]` key tile enters the product as loaded; a per-channel one is
        # inside k already (the preparation's K ⊙ exp(G_C − G)).
        b_u_end = b_u
        b_k_in = b_k
        if GATE == 1:
            b_G_last = tl.load(G + (start + valid - 1) * H + i_h)
            b_u_end = b_u * _decay_exp(b_G_last - b_G)[:, None]
            b_S *= tl.exp(b_G_last)
        elif GATE == 2:
            b_G_last = _chunk_end_decay(G, start, valid, i_h, o_k, H, K)
            b_S *= tl.exp(b_G_last)[:, None]
        # [BK, BT] @ [BT, BV] -> [BK, BV]
        b_S += tl.dot(tl.trans(_operand(b_k_in, LOW, q)), _operand(b_u_end, LOW, q),
                      input_precision=DOT_PRECISION)
    if STORE_FINAL:
        tl.store(final + p_state, b_S, mask=m_kv)
