"""Training checkpoints: one directory per saved step.

    <out_dir>/checkpoints/step-00000100/
        model.safetensors   the weights, written by the injectable `save_model`
        optimizer.pt        optimizer.state_dict() (torch.save)
        trainer.pt          step, data-stream state, RNG states, the log so far, the task

The model is written and read through two functions passed in by the caller,
`save_model(model, directory)` and `load_model(model, directory)` (the second loads in
place), so that `attnforms.models` can later store its config next to the weights
without the training loop changing. The defaults store the state dict as safetensors.
A checkpoint is written under a temporary name and renamed when complete, so an
interrupted write never leaves a directory that looks finished.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_FILE = "trainer.pt"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step-(\d+)")

SaveModel = Callable[[torch.nn.Module, Path], None]
LoadModel = Callable[[torch.nn.Module, Path], None]


def save_weights(model: torch.nn.Module, directory: Path) -> None:
    """The default `save_model`: the state dict as `directory/model.safetensors` (tied
    weights are stored once)."""
    save_safetensors_model(model, str(Path(directory) / MODEL_FILE), force_contiguous=True)


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """The default `load_model`: read `directory/model.safetensors` into `model` in place
    (strict: every key must match)."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"directory: no {MODEL_FILE} in {directory}")
    load_safetensors_model(model, str(path), strict=True)


def step_directory(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step-{step:08d}"


def saved_steps(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every finished checkpoint under `out_dir`, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.fullmatch(path.name)
        if match and (path / TRAINER_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint directory `path` names: itself if it holds trainer.pt, else the
    latest checkpoint of the run directory `path`."""
    path = Path(path)
    if (path / TRAINER_FILE).is_file():
        return path
    steps = saved_steps(path)
    if not steps:
        raise ValueError(f"resume: {path} is neither a checkpoint nor a run directory with checkpoints")
    return steps[-1][1]


def write_checkpoint(
    out_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    trainer_state: dict, save_model: SaveModel, keep: int | None,
) -> Path:
    """Write the checkpoint of `step`; keep the newest `keep` (None: all). Returns its directory."""
    final = step_directory(out_dir, step)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_model(model, partial)
    torch.save(optimizer.state_dict(), partial / OPTIMIZER_FILE)
    torch.save(trainer_state, partial / TRAINER_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    if keep is not None:
        for _, old in saved_steps(out_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def read_checkpoint(directory: Path) -> tuple[dict, dict]:
    """(optimizer state dict, trainer state) of a checkpoint directory."""
    directory = Path(directory)
    optimizer_state = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    trainer_state = torch.load(directory / TRAINER_FILE, map_location="cpu", weights_only=True)
    return optimizer_state, trainer_state
