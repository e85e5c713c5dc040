"""`save` / `load`: a model directory holds `config.json` (the `ModelConfig` and the
weights' dtype) and `model.safetensors` (the state dict; a tied head is stored once,
as the embedding)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .build import build_model
from .config import ModelConfig
from .lm import CausalLM, SequenceModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "attnforms-model"
FORMAT_VERSION = 1


def save(model: CausalLM | SequenceModel, directory: str | Path) -> Path:
    """Write `model`'s config and weights into `directory` (created if missing).
    Returns the directory's path."""
    if not isinstance(model, (CausalLM, SequenceModel)):
        raise TypeError(f"model: expected a CausalLM or SequenceModel, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    dtypes = {str(value.dtype).removeprefix("torch.") for value in state.values() if value.is_floating_point()}
    if len(dtypes) != 1:
        raise ValueError(f"model: expected one floating dtype for all weights, got {sorted(dtypes)}")
    meta = dict(format=FORMAT, version=FORMAT_VERSION, dtype=dtypes.pop(), config=model.config.to_dict())
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load(directory: str | Path, *, device: str | torch.device = "cpu") -> CausalLM | SequenceModel:
    """The model saved in `directory`, on `device`, in the dtype it was saved in.

    Raises `ValueError` naming the key when the weights do not fit the config: a missing
    key, an unexpected key, or a shape that differs from the one the config builds.
    """
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"directory: expected {directory / name} (written by attnforms.models.save)")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{CONFIG_FILE}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
            f"got {meta.get('format')!r} version {meta.get('version')!r}"
        )
    model = build_model(ModelConfig.from_dict(meta["config"])).to(getattr(torch, meta["dtype"]))
    state = load_file(str(directory / WEIGHTS_FILE))
    _check_state(model.state_dict(), state)
    model.load_state_dict(state)
    return model.to(device)


def _check_state(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> None:
    """Raise `ValueError` naming the first key that is missing, unexpected or misshapen."""
    for key in expected:
        if key not in given:
            raise ValueError(f"{WEIGHTS_FILE}: missing key {key!r} (shape {list(expected[key].shape)})")
    for key in given:
        if key not in expected:
            raise ValueError(f"{WEIGHTS_FILE}: unexpected key {key!r}, not in a model of this config")
        if given[key].shape != expected[key].shape:
            raise ValueError(
                f"{WEIGHTS_FILE}: key {key!r} has shape {list(given[key].shape)}, "
                f"but the config builds {list(expected[key].shape)}"
            )
