"""The training loop: any model that maps token ids `[B, T]` to logits `[B, T, V]` (or to an
output whose `.logits` are those, as `attnforms.models` returns), on any
task, on CPU or GPU, seeded, checkpointed and resumable.

    log = train(model, task, TrainConfig(steps=800, batch_size=64, lr=3e-3, out_dir="runs/x"))
    log = train(model, task, config, resume="runs/x")   # continue from its latest checkpoint

- AdamW; weight decay on matrices only (biases, norms and other vectors are not decayed);
  linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio · lr`; gradient
  norm clipping. The learning rate is a function of the step alone (`learning_rate_at`),
  so a resumed run needs no scheduler state.
- bf16 autocast on CUDA, float32 on the CPU (`precision="auto"`); the loss is taken in
  float32 either way.
- Evaluation every `eval_every` steps and at the end, on one fixed held-out set drawn
  from seed `seed + 2**31` (split "validation"). With `stop_at`, training ends after the
  first evaluation whose metric reaches it (Zoology's MQAR runs stop once validation
  accuracy exceeds 0.99); the learning-rate schedule stays the one of `steps`.
- Reproducible: training data comes from a generator seeded with `seed` and torch's
  global RNG (dropout) is seeded with `seed` at the start. On the CPU in float32 a run
  resumed from a checkpoint gives bit-identical losses to an uninterrupted run; on a GPU
  it is as deterministic as the model's kernels are.

The log (returned, and written to `<out_dir>/log.json` at every evaluation):

    task          the task's name and settings
    config        this TrainConfig
    model         {"class": ..., "parameters": ...}
    device, precision, metric ("accuracy" or "bits_per_char")
    evals         one entry per evaluation: step, lr (of that step), train_loss (mean since the previous
                  evaluation), eval_loss (nats per scored token), <metric>, tokens_per_s
                  (training tokens per second of training time since the previous
                  evaluation), eval_s (wall seconds this evaluation took), wall_s (wall time
                  since the run started, across resumes)
    train_losses  the loss of every step
    final         the last entry of evals
    stopped_at    the step training stopped at: `steps`, or earlier with `stop_at`
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .base import IGNORE_INDEX, Task, check_int, describe, generator_for, held_out_seed
from .checkpoint import (
    LoadModel, SaveModel, load_weights, read_checkpoint, resolve_checkpoint, save_weights, saved_steps,
    write_checkpoint,
)
from .metrics import cross_entropy_sum, metric_totals
from .stream import BatchStream, generate_examples

PRECISIONS = ("auto", "bf16", "float32")
LOG_FILE = "log.json"
# Losses stay on the device and are read back this often (and at every evaluation and
# checkpoint): reading every step would make the GPU wait for the host each step.
LOSS_READ_EVERY = 10


@dataclass(frozen=True)
class TrainConfig:
    """steps: optimizer steps. batch_size: sequences per step. lr: peak learning rate.
    weight_decay, betas: AdamW's. warmup_steps: linear warm-up (clipped to `steps`).
    min_lr_ratio: final lr / peak lr of the cosine decay. grad_clip: max gradient norm
    (None: no clipping). eval_every: steps between evaluations. eval_examples: size of
    the held-out set. eval_batch_size: sequences per evaluation batch (None: batch_size).
    train_examples: fixed training-set size (None: fresh data every step). seed: in
    [0, 2**31). device: "auto" (CUDA when there is one), or a torch device string.
    precision: "auto" (bf16 autocast on CUDA, float32 elsewhere), "bf16" or "float32".
    out_dir: where the log and checkpoints go (None: nothing is written).
    checkpoint_every: steps between checkpoints (None: eval_every); one is always
    written at the end. keep_checkpoints: newest checkpoints kept (None: all).
    progress: show a tqdm bar. stop_at: None, or stop after the first evaluation whose
    metric reaches it (accuracy >= stop_at; bits per char <= stop_at)."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int = 100
    eval_examples: int = 1000
    eval_batch_size: int | None = None
    train_examples: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    out_dir: str | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = 1
    progress: bool = True
    stop_at: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_examples"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        for name in ("eval_batch_size", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.train_examples is not None:
            check_int("train_examples", self.train_examples, minimum=self.batch_size)
        held_out_seed(self.seed)  # raises unless 0 <= seed < 2**31
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two floats in [0, 1), got {self.betas!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: expected a float in [0, 1], got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip: expected > 0 or None, got {self.grad_clip!r}")
        if self.stop_at is not None and not (isinstance(self.stop_at, (int, float)) and self.stop_at > 0):
            raise ValueError(f"stop_at: expected a number > 0 or None, got {self.stop_at!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """The learning rate of the update made at 0-based `step`: (step + 1) / warmup of the
    peak during warm-up, then a cosine from the peak to min_lr_ratio · peak at the end."""
    warmup = min(config.warmup_steps, config.steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    floor = config.lr * config.min_lr_ratio
    progress = (step - warmup) / max(1, config.steps - warmup - 1)
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on parameters of two or more dimensions only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


def logits_of(output) -> torch.Tensor:
    """The logits `[B, T, V]` of a model's output: the output itself, or its `.logits`
    field (the `ModelOutput` of `attnforms.models`)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model: expected logits [B, T, V] or an output with .logits, got {type(output).__name__}")
    return logits


def _check_logits(logits: torch.Tensor, inputs: torch.Tensor, vocab_size: int) -> None:
    expected = (*inputs.shape, vocab_size)
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"model: expected logits [B, T, V] = {list(expected)} for inputs {list(inputs.shape)}, "
            f"got {list(logits.shape)}"
        )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, metric: str, inputs: torch.Tensor, targets: torch.Tensor,
    batch_size: int, device: torch.device, autocast,
) -> tuple[float, float]:
    """(mean cross-entropy in nats, metric) of `model` over inputs / targets `[N, T]`."""
    was_training = model.training
    model.eval()
    loss_sum, metric_sum, count = 0.0, 0.0, 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = targets[start : start + batch_size].to(device)
        with autocast():
            logits = logits_of(model(x))
        loss_sum += float(cross_entropy_sum(logits, y))
        numerator, scored = metric_totals(metric, logits, y)
        metric_sum, count = metric_sum + numerator, count + scored
    model.train(was_training)
    return loss_sum / max(count, 1), metric_sum / max(count, 1)


def _reached(entry: dict | None, metric: str, stop_at: float | None) -> bool:
    """Whether an evaluation entry reaches `stop_at` (higher is better for accuracy,
    lower for bits per char)."""
    if stop_at is None or entry is None:
        return False
    value = entry[metric]
    return value <= stop_at if metric == "bits_per_char" else value >= stop_at


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _write_log(out_dir: str | None, log: dict) -> None:
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / LOG_FILE).write_text(json.dumps(log, indent=1))


def _train_step(
    model, optimizer, inputs, targets, autocast, grad_clip: float | None, check_vocab: int | None
) -> torch.Tensor:
    """One AdamW update on inputs / targets `[B, T]`; returns the loss (0-dim, on the
    device). With `check_vocab`, first checks that the logits are `[B, T, check_vocab]`."""
    with autocast():
        logits = logits_of(model(inputs))
    if check_vocab is not None:
        _check_logits(logits, inputs, check_vocab)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


def _restore(resume, model, optimizer, stream: BatchStream, task: Task, device, load_model: LoadModel) -> dict:
    """Load a checkpoint into model, optimizer, data stream and RNGs; returns its trainer state."""
    directory = resolve_checkpoint(Path(resume))
    optimizer_state, state = read_checkpoint(directory)
    if state["task"] != describe(task):
        raise ValueError(f"resume: the checkpoint was made for task {state['task']}, not {describe(task)}")
    load_model(model, directory)
    optimizer.load_state_dict(optimizer_state)
    stream.load_state_dict(state["data"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return state


def train(
    model: torch.nn.Module, task: Task, config: TrainConfig, *, resume: str | Path | None = None,
    save_model: SaveModel = save_weights, load_model: LoadModel = load_weights,
) -> dict:
    """Train `model` on `task`; returns the log (see the module docstring).

    model: maps inputs `[B, T]` int64 to logits `[B, T, task.vocab_size]` (or to an output
    with such `.logits`); moved to the
    config's device and trained in place. resume: a checkpoint directory, or a run
    directory (its latest checkpoint); the task must be the one the checkpoint was made
    with. Without `resume`, `config.out_dir` must hold no checkpoints yet (a new run never
    mixes its checkpoints with an old one's). save_model(model, directory) /
    load_model(model, directory): how weights are written into and read from a
    checkpoint directory (load in place).
    """
    if resume is None and config.out_dir is not None and saved_steps(Path(config.out_dir)):
        raise ValueError(f"out_dir: {config.out_dir} already holds checkpoints; resume from it or choose another")
    device = _resolve_device(config.device)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    model.to(device).train()
    stream = BatchStream(task, config.batch_size, config.seed, config.train_examples)
    eval_inputs, eval_targets = generate_examples(
        task, config.eval_examples, generator_for(held_out_seed(config.seed)), "validation"
    )
    optimizer = make_optimizer(model, config)
    log = {
        "task": describe(task), "config": dataclasses.asdict(config),
        "model": {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())},
        "device": str(device), "precision": "bf16" if bf16 else "float32", "metric": task.metric,
        "evals": [], "train_losses": [], "final": None, "stopped_at": None,
    }
    # since_eval: losses of the steps after the last evaluation; wall_before: wall time of
    # the runs this one resumes.
    start_step, wall_before, since_eval = 0, 0.0, []
    if resume is None:
        torch.manual_seed(config.seed)
    else:
        state = _restore(resume, model, optimizer, stream, task, device, load_model)
        start_step, wall_before, since_eval = state["step"], state["wall_s"], state["since_eval"]
        log.update({key: state["log"][key] for key in ("evals", "train_losses", "final")})
        if _reached(log["final"], task.metric, config.stop_at):
            start_step = config.steps  # it had already stopped: nothing left to train

    checkpoint_every = config.checkpoint_every or config.eval_every
    tokens_per_step = config.batch_size * task.seq_len
    run_start = time.perf_counter()
    train_time, steps_timed = 0.0, 0  # since the last evaluation, for tokens/s
    pending: list[torch.Tensor] = []
    bar = tqdm(total=config.steps, initial=start_step, disable=not config.progress, unit="step", dynamic_ncols=True)

    def read_losses() -> None:
        values = torch.stack(pending).tolist() if pending else []
        log["train_losses"].extend(values)
        since_eval.extend(values)
        pending.clear()

    stopped_at = config.steps
    for step in range(start_step, config.steps):
        step_start = time.perf_counter()
        lr = learning_rate_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = (t.to(device, non_blocking=True) for t in stream.next())
        check_vocab = task.vocab_size if step == start_step else None
        pending.append(_train_step(model, optimizer, inputs, targets, autocast, config.grad_clip, check_vocab))
        done = step + 1
        evaluating = done % config.eval_every == 0 or done == config.steps
        checkpointing = config.out_dir is not None and (done % checkpoint_every == 0 or done == config.steps)
        reading = evaluating or checkpointing or done % LOSS_READ_EVERY == 0
        if reading:
            read_losses()  # this waits for the device, so the step times below add up truly
        train_time += time.perf_counter() - step_start
        steps_timed += 1
        if reading:
            bar.set_postfix(loss=f"{log['train_losses'][-1]:.4f}",
                            tok_s=f"{tokens_per_step * steps_timed / train_time:.0f}", refresh=False)
        bar.update(1)

        if evaluating:
            eval_start = time.perf_counter()
            eval_loss, value = evaluate(
                model, task.metric, eval_inputs, eval_targets, config.eval_batch_size or config.batch_size,
                device, autocast,
            )
            entry = {
                "step": done, "lr": lr, "train_loss": sum(since_eval) / len(since_eval), "eval_loss": eval_loss,
                task.metric: value, "tokens_per_s": tokens_per_step * steps_timed / train_time,
                "eval_s": time.perf_counter() - eval_start, "wall_s": wall_before + time.perf_counter() - run_start,
            }
            log["evals"].append(entry)
            log["final"] = entry
            since_eval.clear()
            train_time, steps_timed = 0.0, 0
            if config.progress:
                bar.write(f"step {done}: train loss {entry['train_loss']:.4f}, eval loss {eval_loss:.4f}, "
                          f"{task.metric} {value:.4f}")
            if _reached(entry, task.metric, config.stop_at):
                stopped_at = done
                checkpointing = config.out_dir is not None
            _write_log(config.out_dir, log)
        if checkpointing:
            trainer_state = {
                "step": done, "data": stream.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "log": log, "task": describe(task), "wall_s": wall_before + time.perf_counter() - run_start,
                "since_eval": list(since_eval),
            }
            write_checkpoint(Path(config.out_dir), done, model, optimizer, trainer_state, save_model,
                             config.keep_checkpoints)
        if stopped_at == done:
            break
    bar.close()
    read_losses()
    # A resumed run that had already stopped trains no further: it stopped at its last evaluation.
    log["stopped_at"] = stopped_at if start_step < config.steps or log["final"] is None else log["final"]["step"]
    _write_log(config.out_dir, log)
    return log
