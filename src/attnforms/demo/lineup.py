"""The formulations the demo compares, sized to one parameter count.

Every model: 2 blocks (mixer + SwiGLU MLP), 1 head (T0-a) or 8 (T0-b), and the same short
convolution for every mixer: `block_conv=True` (a depthwise causal convolution of 4 on
each mixer's input) with the mixers' own convolutions off (`short_conv=False`), so no
formulation gets a local-mixing advantage another lacks (quality-anchors §6.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import models
from ..layers import cache_nbytes

# (preset of attnforms.models, label in the report, extra config fields)
FORMULATIONS: tuple[tuple[str, str, dict], ...] = (
    ("transformer", "softmax transformer", {}),
    ("swa-transformer", "sliding window (W 8)", {"window": 8}),
    ("linear", "linear attention", {}),
    ("gla", "GLA", {}),
    ("deltanet", "DeltaNet", {}),
    ("gdn", "Gated DeltaNet", {}),
    ("kda", "KDA", {}),
    ("mlstm", "mLSTM", {}),
    ("aaren", "Aaren", {}),
)
PRESET_NAMES = tuple(name for name, _, _ in FORMULATIONS)
LABELS = {name: label for name, label, _ in FORMULATIONS}
SHORT_CONV_NOTE = ("every mixer gets the same short convolution: a depthwise causal conv of 4 on its input "
                   "(ModelConfig.block_conv), with the mixers' own convolutions off")
REFERENCE_PRESET = "transformer"
REFERENCE_WIDTH = 64


@dataclass(frozen=True)
class Entry:
    """One formulation of the lineup: its preset, label, config and parameter count."""

    preset: str
    label: str
    config: models.ModelConfig
    parameters: int


def lineup(vocab_size: int, n_heads: int = 1, n_layers: int = 2, presets=PRESET_NAMES,
           chunk_size: int | None = None) -> list[Entry]:
    """Every formulation in `presets` at the width whose parameter count is closest to the
    softmax transformer's at width 64 (`match_parameters`). chunk_size: the mixers' chunk
    length (None: the ops' default); it changes speed only, not what a model computes."""
    unknown = [name for name in presets if name not in LABELS]
    if unknown:
        raise ValueError(f"presets: unknown {unknown}; the demo knows {', '.join(PRESET_NAMES)}")
    common = dict(n_layers=n_layers, n_heads=n_heads, vocab_size=vocab_size, block_conv=True, short_conv=False,
                  chunk_size=chunk_size)
    target = models.count_parameters(models.preset_config(REFERENCE_PRESET, d_model=REFERENCE_WIDTH, **common))
    entries = []
    for name, label, extra in FORMULATIONS:
        if name not in presets:
            continue
        # Widths in steps of 8 per head keep rotary's even head dim and tidy shapes.
        config = models.match_parameters(name, target, multiple_of=8 * n_heads, **common, **extra)
        entries.append(Entry(name, label, config, models.count_parameters(config)))
    return entries


@torch.no_grad()
def state_bytes_per_layer(config: models.ModelConfig, context: int) -> float:
    """Decoding memory per layer per sequence after `context` tokens, in bytes, counted
    the same way for every mixer: the bytes of the caches the model itself returns
    (KV cache for softmax, fixed state for the others, plus the short convolution's
    window), for one sequence, divided by the number of layers."""
    model = models.build_model(config).eval()
    out = model(torch.zeros(1, context, dtype=torch.long), use_cache=True)
    return cache_nbytes(out.caches) / config.n_layers
