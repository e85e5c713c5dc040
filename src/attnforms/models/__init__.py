"""Small models built from the layers: configuration, presets, generation, checkpoints.

    from attnforms.models import build_model, preset_config, generate, save, load
    model = build_model(preset_config("gdn", d_model=64, n_layers=2))
    ids = generate(model, prompt_ids, max_new_tokens=100, temperature=0.8, top_p=0.95)
"""
from .blocks import Block, Stack, SwiGLU
from .build import build_model, count_parameters
from .checkpoint import load, save
from .config import MIXER_NAMES, ModelConfig
from .generate import generate, sample_next
from .lm import CausalLM, ModelOutput, SequenceModel
from .presets import PRESETS, match_parameters, preset_config

__all__ = [
    "Block", "CausalLM", "MIXER_NAMES", "ModelConfig", "ModelOutput", "PRESETS", "SequenceModel",
    "Stack", "SwiGLU", "build_model", "count_parameters", "generate", "load", "match_parameters",
    "preset_config", "sample_next", "save",
]
