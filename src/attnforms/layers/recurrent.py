"""`MLSTMLayer` (xLSTM's matrix memory) and `AarenLayer` (attention as an RNN).

Shape legend: `B` batch, `T` tokens, `D` model width, `H` heads, `K` key dim, `V` value dim.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.aaren import aaren
from ..ops.mlstm import mlstm
from ..ops.mlstm.api import INPUT_GATES
from ..ops.mlstm.options import check_normaliser_gradient
from ..core.shapes import check_positive_int
from .base import Mixer, resolve_head_dim
from .caches import MixerOutput, RecurrentCache
from .conv import DEFAULT_CONV_SIZE, ShortConv
from .gates import OutputGate
from .norms import DEFAULT_EPS, RMSNorm

# Gate initialisation of the xLSTM paper's mLSTM cell (Beck et al. 2024, NX-AI/xlstm,
# `mLSTMCell.reset_parameters`): gate weights zero, input-gate bias ~ N(0, 0.1²) (input
# gates exp(i) ≈ 1), forget-gate biases linspace(3, 6) over heads (forget gates near 1,
# long memory, different horizons per head).
#
# Not xLSTM 7B's input-gate bias of -10: with it every write weighs exp(-10) ≈ 4.5e-5
# while the normaliser's floor exp(-m_t) ≈ exp(10) wins the max(|nᵀq|, exp(-m)), so h is
# about 1e-4 of its scale and mean(h²) sits far below the output RMSNorm's eps (1e-6):
# the norm then scales the read-out down ~20× instead of to unit RMS, and a small model
# barely learns (MQAR T0-a at lr 3e-3: 0.08 after 400 steps, against 0.81 with this
# initialisation; docs/demo.md).
INPUT_GATE_BIAS_STD = 0.1
FORGET_GATE_BIAS_RANGE = (3.0, 6.0)


class MLSTMLayer(Mixer):
    """The mLSTM layer in the form of xLSTM 7B: `q, k, v = W x`, per-head scalar gates
    `i, f = W_i x + b_i, W_f x + b_f`, the `mlstm` cell, then
    `W_o (RMSNorm(h) ⊙ σ(W_og x))` (per-head norm, sigmoid output gate). The gates start
    as in the xLSTM paper's cell (see `INPUT_GATE_BIAS_STD`), not at xLSTM 7B's -10.

    Args:
        d_model: D. n_heads: H. head_dim: K (default D / H); V = K.
        input_gate: "exp" (mLSTMexp) or "sigmoid" (mLSTMsig).
        short_conv: a causal convolution on q, k, v (off by default, as in xLSTM 7B).
        conv_size: its kernel size.
        chunk_size: tokens per chunk of the op's chunk form.
        norm_eps: epsilon of the output norm.
        normaliser_gradient: "exact", or "held" for the gradient mlstm_kernels' TFLA
            kernels compute (see `attnforms.mlstm`).

    The cache is `RecurrentCache(state=MLSTMState(C [B, H, K, V], n [B, H, K], m [B, H]),
    conv [B, W - 1, 3·H·K] or None)`.
    """

    def __init__(self, d_model: int, n_heads: int, *, head_dim: int | None = None,
                 input_gate: str = "exp", short_conv: bool = False, conv_size: int = DEFAULT_CONV_SIZE,
                 chunk_size: int | None = None, norm_eps: float = DEFAULT_EPS, normaliser_gradient: str = "exact"):
        super().__init__()
        if input_gate not in INPUT_GATES:
            raise ValueError(f"input_gate: expected one of {INPUT_GATES}, got {input_gate!r}")
        check_normaliser_gradient(normaliser_gradient)
        self.normaliser_gradient = normaliser_gradient
        check_positive_int("chunk_size", chunk_size)
        self.d_model, self.n_heads, self.input_gate, self.chunk_size = d_model, n_heads, input_gate, chunk_size
        self.head_dim = K = resolve_head_dim(d_model, n_heads, head_dim)
        H = n_heads
        self.qkv_proj = nn.Linear(d_model, 3 * H * K, bias=False)
        self.conv = ShortConv(3 * H * K, conv_size) if short_conv else None
        self.i_proj = nn.Linear(d_model, H)
        self.f_proj = nn.Linear(d_model, H)
        with torch.no_grad():
            self.i_proj.weight.zero_()
            self.f_proj.weight.zero_()
            self.i_proj.bias.normal_(0.0, INPUT_GATE_BIAS_STD)
            bias = self.f_proj.bias
            self.f_proj.bias.copy_(torch.linspace(*FORGET_GATE_BIAS_RANGE, H, dtype=bias.dtype, device=bias.device))
        self.norm = RMSNorm(K, norm_eps)
        self.out_gate = OutputGate(d_model, H * K, "sigmoid")
        self.o_proj = nn.Linear(H * K, d_model, bias=False)

    def forward(self, x: torch.Tensor, cache: RecurrentCache | None = None, *, use_cache: bool = False,
                form: str = "auto") -> MixerOutput:
        """x: `[B, T, D]`, cache: `RecurrentCache` of the tokens before x, or None.

        Returns `MixerOutput(output [B, T, D], RecurrentCache or None)`.
        """
        self.check_input(x)
        self.check_cache(cache, RecurrentCache)
        qkv, conv_cache = self.qkv_proj(x), None
        if self.conv is not None:
            qkv, conv_cache = self.conv(qkv, None if cache is None else cache.conv)
        q, k, v = qkv.unflatten(-1, (3, self.n_heads, self.head_dim)).unbind(dim=2)
        keep = use_cache or cache is not None
        out = mlstm(
            q, k, v, self.i_proj(x), self.f_proj(x), input_gate=self.input_gate,
            initial_state=None if cache is None else cache.state, output_final_state=keep,
            chunk_size=self.chunk_size, normaliser_gradient=self.normaliser_gradient, form=form, impl="auto",
        )
        h = self.norm(out.output) * self.out_gate(x).unflatten(-1, out.output.shape[-2:])
        return self.result(self.o_proj(h.flatten(-2)), RecurrentCache(out.final_state, conv_cache), keep)


class AarenLayer(Mixer):
    """Aaren (Feng et al. 2024, arXiv 2405.13956): each head's query is a learned
    parameter, not a function of the input, and output t is softmax attention of that
    query over the keys of tokens 1..t: `y = W_o aaren(q, W_k x, W_v x)`.

    Stacking these layers, each layer's per-step outputs are the next layer's tokens, as
    in the paper. The paper's multi-head layout is unverified; here each head has its own
    query and scores are scaled by `K^-1/2` (see `attnforms.ops.aaren`).

    Args:
        d_model: D. n_heads: H. head_dim: K (default D / H); V = K.
        chunk_size: tokens per chunk of the op's chunk form.

    The cache is `RecurrentCache(state=AarenState(m [B, H], u [B, H], w [B, H, V]),
    conv=None)`.
    """

    def __init__(self, d_model: int, n_heads: int, *, head_dim: int | None = None,
                 chunk_size: int | None = None):
        super().__init__()
        check_positive_int("chunk_size", chunk_size)
        self.d_model, self.n_heads, self.chunk_size = d_model, n_heads, chunk_size
        self.head_dim = K = resolve_head_dim(d_model, n_heads, head_dim)
        self.query = nn.Parameter(torch.empty(n_heads, K))
        nn.init.normal_(self.query)
        self.k_proj = nn.Linear(d_model, n_heads * K, bias=False)
        self.v_proj = nn.Linear(d_model, n_heads * K, bias=False)
        self.o_proj = nn.Linear(n_heads * K, d_model, bias=False)

    def forward(self, x: torch.Tensor, cache: RecurrentCache | None = None, *, use_cache: bool = False,
                form: str = "auto") -> MixerOutput:
        """x: `[B, T, D]`, cache: `RecurrentCache` of the tokens before x, or None.

        Returns `MixerOutput(output [B, T, D], RecurrentCache or None)`.
        """
        self.check_input(x)
        self.check_cache(cache, RecurrentCache)
        B = x.shape[0]
        k = self.k_proj(x).unflatten(-1, (self.n_heads, self.head_dim))
        v = self.v_proj(x).unflatten(-1, (self.n_heads, self.head_dim))
        keep = use_cache or cache is not None
        out = aaren(
            self.query.to(x.dtype).expand(B, -1, -1), k, v,
            initial_state=None if cache is None else cache.state, output_final_state=keep,
            chunk_size=self.chunk_size, form=form, impl="auto",
        )
        return self.result(self.o_proj(out.output.flatten(-2)), RecurrentCache(out.final_state, None), keep)
