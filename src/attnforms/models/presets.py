"""Named model presets, and helpers that resize them for fair comparisons.

`PRESETS` maps a name to a small `ModelConfig` (D = 128, 4 heads, byte vocabulary).
`preset_config(name, d_model=..., n_layers=..., vocab_size=...)` resizes one;
`match_parameters(name, target)` picks the width whose parameter count is closest to a
target, so that every preset can be trained at an equal parameter count.
"""
from __future__ import annotations

import dataclasses

from .build import count_parameters
from .config import ModelConfig

_BASE = dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4)

PRESETS: dict[str, ModelConfig] = {
    "transformer": ModelConfig(**_BASE, layers="attn"),
    "swa-transformer": ModelConfig(**_BASE, layers="swa", window=64),
    "linear": ModelConfig(**_BASE, layers="linear"),
    "gla": ModelConfig(**_BASE, layers="gla"),
    "deltanet": ModelConfig(**_BASE, layers="deltanet"),
    "gdn": ModelConfig(**_BASE, layers="gdn"),
    "kda": ModelConfig(**_BASE, layers="kda"),
    # Kimi Linear: three KDA layers to one MLA layer, and no positions in MLA (NoPE).
    "kimi-linear": ModelConfig(**_BASE, layers="kda,kda,kda,mla", mla_rope_dim=0),
    # Gated DeltaNet with a global attention layer every third block.
    "gdn-hybrid": ModelConfig(**{**_BASE, "n_layers": 6}, layers="gdn,gdn,attn"),
    "mlstm": ModelConfig(**_BASE, layers="mlstm"),
    "aaren": ModelConfig(**_BASE, layers="aaren"),
}


def preset_config(name: str, *, d_model: int | None = None, n_layers: int | None = None,
                  vocab_size: int | None = None, **overrides) -> ModelConfig:
    """The preset `name` with the given width, depth, vocabulary and any other fields
    replaced (validated again, so e.g. a width that the heads do not divide is an error).
    """
    if name not in PRESETS:
        raise ValueError(f"name: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    changes = dict(d_model=d_model, n_layers=n_layers, vocab_size=vocab_size)
    changes = {key: value for key, value in changes.items() if value is not None}
    return dataclasses.replace(PRESETS[name], **changes, **overrides)


def match_parameters(name: str, target: int, *, multiple_of: int | None = None,
                     exclude_embeddings: bool = False, **fields) -> ModelConfig:
    """The preset `name` (with `fields` such as n_layers, vocab_size replaced) at the
    width whose parameter count is closest to `target`.

    Widths tried are multiples of `multiple_of` (default: 4 × n_heads, so the head dim
    is a multiple of 4, as rotary and MLA's decoupled rotary part need).
    """
    if not isinstance(target, int) or target <= 0:
        raise ValueError(f"target: expected a positive int, got {target!r}")
    base = preset_config(name, **fields)
    step = multiple_of or 4 * base.n_heads
    best, best_gap, d_model = None, None, step
    while True:
        config = dataclasses.replace(base, d_model=d_model)
        count = count_parameters(config, exclude_embeddings=exclude_embeddings)
        gap = abs(count - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = config, gap
        # Counts grow with the width, so past the target nothing gets closer.
        if count >= target:
            return best
        d_model += step
