"""`build_model` and `count_parameters`."""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .lm import CausalLM, SequenceModel


def build_model(config: ModelConfig) -> CausalLM | SequenceModel:
    """A freshly initialised model for `config` (float32, on the current default device):
    `CausalLM` for `task="lm"`, `SequenceModel` for `task="sequence"`."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config: expected a ModelConfig, got {type(config).__name__}")
    return CausalLM(config) if config.task == "lm" else SequenceModel(config)


def count_parameters(model: nn.Module | ModelConfig, *, exclude_embeddings: bool = False) -> int:
    """Number of trainable parameters of a model, or of the model a config would build
    (built on the meta device: no memory, no initialisation cost). A tied head counts
    once. With `exclude_embeddings`, the input embedding / projection is left out (the
    usual basis for comparing mixers at equal size)."""
    if isinstance(model, ModelConfig):
        with torch.device("meta"):
            model = build_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module or a ModelConfig, got {type(model).__name__}")
    skip = set()
    if exclude_embeddings and hasattr(model, "embed"):
        skip = {id(p) for p in model.embed.parameters()}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skip)
