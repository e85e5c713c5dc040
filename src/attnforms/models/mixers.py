"""The mixer names of a layer pattern, and how each is built from a `ModelConfig`."""
from __future__ import annotations

from typing import Callable

from ..layers import (
    AarenLayer, Attention, DeltaNet, GatedDeltaNet, GatedLinearAttention, KimiDeltaAttention,
    LinearAttention, Mixer, MLSTMLayer, MultiHeadLatentAttention,
)
from .config import MIXER_NAMES, ModelConfig


def _attention(config: ModelConfig, window: int | None) -> Attention:
    return Attention(
        config.d_model, config.n_heads, n_query_heads=config.n_query_heads,
        n_kv_heads=config.n_kv_heads, head_dim=config.head_dim, rotary=config.rotary,
        rope_base=config.rope_base, qk_norm=config.qk_norm, output_gate=config.attn_output_gate,
        sinks=config.sinks, window=window, chunk_size=config.chunk_size, norm_eps=config.norm_eps,
    )


def _mla(config: ModelConfig) -> MultiHeadLatentAttention:
    head_dim = config.resolved_head_dim
    rope_dim = config.mla_rope_dim
    if rope_dim is None:
        rope_dim = head_dim // 2 if config.rotary else 0
    return MultiHeadLatentAttention(
        config.d_model, config.n_heads, kv_rank=config.mla_kv_rank or 4 * head_dim,
        q_rank=config.mla_q_rank, head_dim=config.head_dim, rope_dim=rope_dim,
        rope_base=config.rope_base, chunk_size=config.chunk_size, norm_eps=config.norm_eps,
    )


def _linear_family(layer_type, short_conv_default: bool, with_gate_rank: bool = False):
    def build(config: ModelConfig):
        extra = dict(gate_rank=config.gate_rank) if with_gate_rank else {}
        return layer_type(
            config.d_model, config.n_heads, head_dim=config.head_dim, expand_v=config.expand_v,
            short_conv=short_conv_default if config.short_conv is None else config.short_conv,
            conv_size=config.conv_size, chunk_size=config.chunk_size, norm_eps=config.norm_eps, **extra,
        )
    return build


def _mlstm(config: ModelConfig) -> MLSTMLayer:
    return MLSTMLayer(
        config.d_model, config.n_heads, head_dim=config.head_dim, input_gate=config.mlstm_input_gate,
        short_conv=bool(config.short_conv), conv_size=config.conv_size, chunk_size=config.chunk_size,
        norm_eps=config.norm_eps,
    )


def _aaren(config: ModelConfig) -> AarenLayer:
    return AarenLayer(config.d_model, config.n_heads, head_dim=config.head_dim, chunk_size=config.chunk_size)


# Mixer name -> builder. The short-convolution defaults follow each paper: on for the
# delta-rule layers, off for linear attention, GLA and xLSTM 7B's mLSTM.
MIXER_BUILDERS: dict[str, Callable[[ModelConfig], Mixer]] = {
    "attn": lambda config: _attention(config, window=None),
    "swa": lambda config: _attention(config, window=config.window),
    "mla": _mla,
    "linear": _linear_family(LinearAttention, short_conv_default=False),
    "gla": _linear_family(GatedLinearAttention, short_conv_default=False, with_gate_rank=True),
    "deltanet": _linear_family(DeltaNet, short_conv_default=True),
    "gdn": _linear_family(GatedDeltaNet, short_conv_default=True),
    "kda": _linear_family(KimiDeltaAttention, short_conv_default=True, with_gate_rank=True),
    "mlstm": _mlstm,
    "aaren": _aaren,
}
assert tuple(MIXER_BUILDERS) == MIXER_NAMES


def build_mixer(name: str, config: ModelConfig) -> Mixer:
    """The mixer called `name` (one of `MIXER_NAMES`) with `config`'s settings."""
    if name not in MIXER_BUILDERS:
        raise ValueError(f"name: unknown mixer {name!r}; known: {', '.join(MIXER_NAMES)}")
    return MIXER_BUILDERS[name](config)
