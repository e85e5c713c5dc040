"""attnforms: every attention formulation behind one API.

Every op takes time-major tensors and returns `AttentionOutput(output, final_state)`.
Shape legend: `B` batch, `T` query length, `S` key length, `H` query heads, `G` key/value
heads (`H % G == 0`), `K` key dim, `V` value dim, `N` packed sequences (`cu_seqlens`).
Layout `[B, T, H, D]` everywhere. Every op runs in three exact forms
(`form="parallel" | "chunk" | "recurrent"`) and picks an implementation with
`impl="reference" | "triton" | "auto"`; see `attnforms.core.dispatch` for the rule.
`attnforms.mods` holds the score / mask modifications of `softmax_attention` and the
block map (`BlockMask`) of a mask.
"""
from . import mods
from .core.dispatch import ImplUnavailableError
from .core.states import AarenState, AttentionOutput, KVCache, LinearState, MLSTMState
from .ops import (
    FAMILIES, aaren, delta_rule, gated_delta_rule, gated_delta_rule_update_, gated_deltanet, gla,
    kda, linear_attention, mlstm, simple_gla, sliding_window_attention, softmax_attention,
)

__version__ = "0.1.0"

__all__ = [
    "AarenState",
    "AttentionOutput",
    "FAMILIES",
    "ImplUnavailableError",
    "KVCache",
    "LinearState",
    "MLSTMState",
    "aaren",
    "delta_rule",
    "gated_delta_rule",
    "gated_delta_rule_update_",
    "gated_deltanet",
    "gla",
    "kda",
    "linear_attention",
    "mlstm",
    "mods",
    "simple_gla",
    "sliding_window_attention",
    "softmax_attention",
]
