"""How much the demo does: `quick` (a smoke run, about a minute on 2 CPU cores),
`default` (about 11 minutes on 2 CPU cores, measured; more steps and examples on a GPU) and `full`
(longer training, plus MQAR T0-b and the character LM)."""
from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("quick", "default", "full")
# Peak learning rates that differ from the settings' `lr`, from a one-seed sweep over
# {3e-3, 1e-2} at 800 steps on T0-a (2026-11-28, docs/demo.md): at 1e-2 linear attention
# went 0.138 -> 0.652 and mLSTM 0.129 -> 0.619, while GLA (0.811 -> 0.018) and the sliding
# window (0.079 -> 0.024) fell; the others solve T0-a at 3e-3.
LR_OVERRIDES = {"linear": 1e-2, "mlstm": 1e-2}


@dataclass(frozen=True)
class DemoSettings:
    """steps / batch_size / lr / warmup_steps / eval_every / eval_examples: the MQAR
    training budget of every formulation (T0-a and, with `t0b`, T0-b).
    train_examples: fixed training-set size (None: fresh data every step).
    contexts: context lengths of the decoding measurement; new_tokens: decoded tokens
    timed at each. t0b: also train on MQAR T0-b (8 heads of width 8). char_lm_steps:
    also train a character LM for this many steps (0: not)."""

    level: str
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    eval_every: int
    eval_examples: int
    train_examples: int | None
    contexts: tuple[int, ...]
    new_tokens: int
    t0b: bool = False
    char_lm_steps: int = 0

    def lr_for(self, preset: str) -> float:
        """The peak learning rate of one formulation (`LR_OVERRIDES`, else `lr`)."""
        return LR_OVERRIDES.get(preset, self.lr)


def settings_for(level: str, on_gpu: bool) -> DemoSettings:
    """The settings of `level` ("quick", "default" or "full") on a CPU or a GPU."""
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
    if level == "quick":
        return DemoSettings("quick", steps=20, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=10,
                            eval_examples=64, train_examples=None, contexts=(64, 128), new_tokens=4)
    # 800 steps is the Tier-0 budget of quality-anchors §5.1: MQAR's plateau at 1/K lasts
    # 200-400 steps at lr 3e-3 (measured: the softmax transformer 0.12 at step 200, 0.994
    # at 400; Gated DeltaNet 0.38 at 400, 0.97 at 800); 300 steps left every formulation
    # on it. The slowest formulation on the CPU (KDA's per-channel gates) takes about a
    # quarter of the run.
    steps = {("default", False): 800, ("default", True): 1500, ("full", False): 1500, ("full", True): 3000}
    full = level == "full"
    return DemoSettings(
        level, steps=steps[level, on_gpu], batch_size=64, lr=3e-3, warmup_steps=50,
        eval_every=50 if not full else 100, eval_examples=500 if not (on_gpu or full) else 1000,
        train_examples=20_000, contexts=(256, 1024) if not on_gpu else (1024, 8192),
        new_tokens=16 if not on_gpu else 64, t0b=full, char_lm_steps=1000 if full else 0,
    )
