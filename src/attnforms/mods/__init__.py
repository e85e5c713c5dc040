"""Score and mask modifications for `softmax_attention`, and the block map of a mask.

Every factory returns a plain function with FlexAttention's scalar signature,
`score_mod(score, b, h, q_idx, kv_idx) -> score` or `mask_mod(b, h, q_idx, kv_idx) ->
bool` (True keeps the pair), written within the mod contract of README.md so that the
same function runs vectorised in the PyTorch reference and compiles into the Triton
kernel. Pass them as `softmax_attention(..., score_mod=..., mask_mod=...)`.
"""
from .alibi import alibi, alibi_slopes
from .block_mask import BlockMask, create_block_mask
from .box_rpb import box_rpb, box_rpb_tables
from .causal import causal
from .combinators import and_masks, compose_scores, or_masks
from .document import document
from .forgetting import cumulative_log_forget, forgetting
from .neighbourhood import neighbourhood_2d
from .prefix_lm import prefix_lm
from .sink_tokens import sink_tokens
from .sliding_window import sliding_window
from .softcap import tanh_softcap
from .t5 import t5_bucket, t5_relative_bias

MASK_MODS = ("causal", "sliding_window", "prefix_lm", "document", "sink_tokens", "neighbourhood_2d")
SCORE_MODS = ("alibi", "tanh_softcap", "t5_relative_bias", "forgetting", "box_rpb")

__all__ = [
    "BlockMask",
    "alibi",
    "alibi_slopes",
    "and_masks",
    "box_rpb",
    "box_rpb_tables",
    "causal",
    "compose_scores",
    "create_block_mask",
    "cumulative_log_forget",
    "document",
    "forgetting",
    "neighbourhood_2d",
    "or_masks",
    "prefix_lm",
    "sink_tokens",
    "sliding_window",
    "t5_bucket",
    "t5_relative_bias",
    "tanh_softcap",
]
