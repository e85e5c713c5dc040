"""The one place where `attnforms.tasks` meets `attnforms.models`: build a model for a task
from a preset name, and the functions that store it in training checkpoints.

The training loop itself takes any `nn.Module` mapping ids `[B, T]` to logits `[B, T, V]`
(or to an output with a `.logits` field, as `attnforms.models` returns); only the CLI and
the demo need this module.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import models


def build(preset: str, vocab_size: int, width: int | None = None, depth: int | None = None,
          seq_len: int | None = None, **overrides) -> models.CausalLM:
    """A freshly initialised `CausalLM` from preset `preset` (a key of
    `attnforms.models.PRESETS`) with vocabulary `vocab_size` and, where given, width
    (`d_model`) and depth (`n_layers`) changed; further `overrides` replace `ModelConfig`
    fields of the same names (e.g. `n_heads=1`, `short_conv=False`).

    `seq_len` is accepted for the task's length; no preset has learned positions (they
    use rotary or no positions), so it changes nothing. Raises ValueError for an unknown
    preset or field, or a combination the config refuses.
    """
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0):
        raise ValueError(f"seq_len: expected a positive int or None, got {seq_len!r}")
    known = set(models.ModelConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"overrides: ModelConfig has no field(s) {unknown}; its fields are {sorted(known)}")
    config = models.preset_config(preset, d_model=width, n_layers=depth, vocab_size=vocab_size, **overrides)
    return models.build_model(config)


def save_model(model: torch.nn.Module, directory: Path) -> None:
    """A `save_model` for `attnforms.tasks.train`: `attnforms.models.save` (config.json
    and model.safetensors), so every checkpoint can also be opened with `models.load`."""
    models.save(model, directory)


def load_model(model: torch.nn.Module, directory: Path) -> None:
    """A `load_model` for `attnforms.tasks.train`: read a checkpoint written by
    `save_model` into `model` in place. Raises ValueError when the checkpoint's config is
    not `model`'s (e.g. resuming with another preset or width)."""
    saved = models.load(directory, device="cpu")
    if saved.config != model.config:
        differing = sorted(key for key, value in saved.config.to_dict().items()
                           if model.config.to_dict()[key] != value)
        raise ValueError(f"resume: the checkpoint's model config differs from this model's in {differing}")
    model.load_state_dict(saved.state_dict())
