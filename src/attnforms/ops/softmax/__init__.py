"""Softmax attention: causal, bidirectional, windowed, with sinks, mods and a KV cache."""
from .api import FAMILY, sliding_window_attention, softmax_attention
