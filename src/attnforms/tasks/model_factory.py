"""The one place where `attnforms.tasks` meets `attnforms.models`: build a model for a task
from a preset name. The training loop itself takes any `nn.Module`; only the CLI needs this.

The seam assumes what DESIGN.md promises of `attnforms.models`: `PRESETS`, a dict from
name to a frozen `ModelConfig` dataclass (or to a dict of its fields), and
`build_model(config) -> nn.Module` mapping ids `[B, T]` to logits `[B, T, V]`. The keyword
arguments here are written over the preset's fields of the same names; when the models
package settles its field names, this function is what changes.
"""
from __future__ import annotations

import dataclasses

import torch


class ModelsUnavailableError(ImportError):
    """`attnforms.models` is not installed in this tree yet."""


def build(preset: str, vocab_size: int, width: int | None = None, depth: int | None = None,
          seq_len: int | None = None, **overrides) -> torch.nn.Module:
    """A model from preset `preset` with vocabulary `vocab_size` and, where given, the
    width, depth and maximum sequence length (the field `max_seq_len` or `seq_len`, if
    the config has one) changed; further `overrides` replace config fields of the same
    names. Returns the `nn.Module`. Raises ModelsUnavailableError while
    `attnforms.models` does not exist, ValueError for an unknown preset or field."""
    try:
        from attnforms.models import PRESETS, ModelConfig, build_model
    except ModuleNotFoundError as error:
        # Only the package being absent is this error; a broken import inside it is a bug
        # to see as it is.
        if error.name != "attnforms.models":
            raise
        raise ModelsUnavailableError(
            "attnforms.models is not available yet, so `attnforms train` cannot build a model; "
            "call attnforms.tasks.train.train(model, task, config) with your own nn.Module "
            "(ids [B, T] -> logits [B, T, V]) instead"
        ) from error
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    config = PRESETS[preset]
    if isinstance(config, dict):
        config = ModelConfig(**config)
    known = {field.name for field in dataclasses.fields(config)}
    requested = dict(vocab_size=vocab_size, width=width, depth=depth, **overrides)
    changes = {name: value for name, value in requested.items() if value is not None}
    # The length only matters to a model with learned positions; one without has no field for it.
    length_field = next((name for name in ("max_seq_len", "seq_len") if name in known), None)
    if seq_len is not None and length_field is not None:
        changes[length_field] = seq_len
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"overrides: ModelConfig has no field(s) {unknown}; its fields are {sorted(known)}")
    return build_model(dataclasses.replace(config, **changes))
