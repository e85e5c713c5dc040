"""Layers: `torch.nn.Module` sequence mixers that call the ops.

Every layer maps `x [B, T, D]` to `MixerOutput(output [B, T, D], cache)` with
`forward(x, cache=None, *, use_cache=False, form="auto")` for training and prefill, and
`step(x_t [B, D], cache) -> (y_t [B, D], cache)` for decoding. Ops are called with
`impl="auto"`, so Triton kernels run on a GPU where they exist.

| layer | op | cache |
|---|---|---|
| `Attention` (MHA / GQA / MQA / SQA, RoPE, QK-norm, gate, sinks, window, mods) | `softmax_attention` | `KVCache` (bounded with a window) |
| `MultiHeadLatentAttention` | `softmax_attention` | `LatentCache` |
| `LinearAttention`, `GatedLinearAttention`, `DeltaNet`, `GatedDeltaNet`, `KimiDeltaAttention` | `gated_delta_rule` | `RecurrentCache(LinearState, conv)` |
| `MLSTMLayer` | `mlstm` | `RecurrentCache(MLSTMState, conv)` |
| `AarenLayer` | `aaren` | `RecurrentCache(AarenState, None)` |
"""
from .attention import Attention
from .base import Mixer
from .caches import KVCache, LatentCache, MixerOutput, RecurrentCache, cache_nbytes
from .conv import ShortConv
from .gates import LogSigmoidDecay, LowRankDecay, MambaDecay, OutputGate
from .linear import DeltaNet, GatedDeltaNet, GatedLinearAttention, KimiDeltaAttention, LinearAttention
from .linear_base import DeltaFamilyLayer
from .mla import MultiHeadLatentAttention
from .norms import RMSNorm, l2_normalize
from .recurrent import AarenLayer, MLSTMLayer
from .rotary import Rotary

__all__ = [
    "AarenLayer", "Attention", "DeltaFamilyLayer", "DeltaNet", "GatedDeltaNet",
    "GatedLinearAttention", "KVCache", "KimiDeltaAttention", "LatentCache", "LinearAttention",
    "LogSigmoidDecay", "LowRankDecay", "MLSTMLayer", "MambaDecay", "Mixer", "MixerOutput",
    "MultiHeadLatentAttention", "OutputGate", "RMSNorm", "RecurrentCache", "Rotary", "ShortConv",
    "cache_nbytes", "l2_normalize",
]
