"""`ModelConfig`: everything that fixes a model's architecture, validated on creation.

A model is a stack of `n_layers` blocks, each a sequence mixer and a SwiGLU MLP. Which
mixer each block uses comes from `layers`, a comma-separated pattern repeated over the
depth: `"attn"` is a transformer, `"kda,kda,kda,mla"` Kimi Linear's 3:1 hybrid,
`"gdn,gdn,attn"` a GDN hybrid.

Mixer names: `attn` (global softmax attention), `swa` (softmax attention with
`window`), `mla` (multi-head latent attention), `linear`, `gla`, `deltanet`, `gdn`,
`kda`, `mlstm`, `aaren`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MIXER_NAMES = ("attn", "swa", "mla", "linear", "gla", "deltanet", "gdn", "kda", "mlstm", "aaren")
TASKS = ("lm", "sequence")
POOLS = ("last", "mean", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a causal LM (`task="lm"`) or a sequence model (`task="sequence"`).

    Shape and depth:
        vocab_size: token ids are in [0, vocab_size) (LM, or a sequence model on tokens).
        d_model: D, the residual width.
        n_layers: number of blocks; a multiple of the pattern length.
        layers: the mixer pattern, e.g. "attn" or "kda,kda,kda,mla".
        n_heads: H; the head dim is `head_dim` or D / H.
        head_dim: K, per-head key (and value) dim, instead of D / H.
        mlp_hidden: SwiGLU hidden width (default: 8/3 · D rounded up to a multiple of 8).
        norm_eps: epsilon of every RMSNorm.

    Softmax attention (`attn`, `swa`):
        n_query_heads: fewer than n_heads is Sparse Query Attention (default n_heads).
        n_kv_heads: key/value heads dividing the query heads: GQA, 1 is MQA.
        rotary, rope_base: RoPE on q and k (also MLA's decoupled part).
        qk_norm, attn_output_gate, sinks: QK-norm, sigmoid output gate, learned sinks.
        window: the sliding window of `swa` layers (required with them).

    MLA (`mla`):
        mla_kv_rank: latent rank R (default 4 · head dim, as DeepSeek-V2).
        mla_q_rank: None (queries from x) or the rank of compressed queries.
        mla_rope_dim: decoupled rotary dims (default head dim / 2; 0 = NoPE, as Kimi
            Linear's MLA layers).

    Recurrent mixers (`linear`, `gla`, `deltanet`, `gdn`, `kda`, `mlstm`):
        expand_v: value dim = expand_v · head dim (linear-attention family).
        short_conv: None for each family's paper default (on for deltanet, gdn, kda; off
            for linear, gla, mlstm), or force it on / off.
        conv_size: kernel size of the short convolution.
        gate_rank: low-rank width of the GLA gate (default 16) and KDA gates (default
            head dim).
        mlstm_input_gate: "exp" or "sigmoid".

    Every mixer:
        chunk_size: tokens per chunk of the ops' chunk forms (default 64).
        block_conv: a depthwise causal convolution of `conv_size` on every mixer's
            (normalised) input, whatever the mixer: the one way to give softmax
            attention, Aaren and the recurrent mixers the same short convolution (as
            Zoology's MQAR recipe does); combine with `short_conv=False` to avoid two.

    Head:
        task: "lm" (token in, next-token logits out, tied embedding) or "sequence"
            (classification / regression of sequences or of every step).
        input_dim: sequence models only: None for token-id inputs, else the width of
            continuous inputs `[B, T, input_dim]`.
        n_outputs: sequence models: classes (logits) or regression targets.
        pool: sequence models: "last" token, "mean" over tokens, or "none" (per step).
        tie_embeddings: LM only: the output head reuses the embedding matrix.
    """

    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    layers: str = "attn"
    n_heads: int = 4
    head_dim: int | None = None
    mlp_hidden: int | None = None
    norm_eps: float = 1e-6

    n_query_heads: int | None = None
    n_kv_heads: int | None = None
    rotary: bool = True
    rope_base: float = 10000.0
    qk_norm: bool = False
    attn_output_gate: bool = False
    sinks: bool = False
    window: int | None = None

    mla_kv_rank: int | None = None
    mla_q_rank: int | None = None
    mla_rope_dim: int | None = None

    expand_v: int = 1
    short_conv: bool | None = None
    conv_size: int = 4
    gate_rank: int | None = None
    mlstm_input_gate: str = "exp"

    chunk_size: int | None = None
    block_conv: bool = False

    task: str = "lm"
    input_dim: int | None = None
    n_outputs: int = 1
    pool: str = "last"
    tie_embeddings: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "expand_v", "conv_size", "n_outputs"):
            _positive(name, getattr(self, name))
        for name in ("head_dim", "mlp_hidden", "n_query_heads", "n_kv_heads", "window", "mla_kv_rank",
                     "mla_q_rank", "gate_rank", "chunk_size", "input_dim"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"n_heads: expected a divisor of d_model = {self.d_model} (or set head_dim), got {self.n_heads}"
            )
        pattern = self.pattern
        unknown = [name for name in pattern if name not in MIXER_NAMES]
        if unknown:
            raise ValueError(f"layers: unknown mixer {unknown[0]!r} in {self.layers!r}; known: {', '.join(MIXER_NAMES)}")
        if self.n_layers % len(pattern):
            raise ValueError(
                f"n_layers: expected a multiple of the pattern length {len(pattern)} ({self.layers!r}), "
                f"got {self.n_layers}"
            )
        if "swa" in pattern and self.window is None:
            raise ValueError("window: the 'swa' mixer needs a window (a positive int), got None")
        if self.rotary and self.resolved_head_dim % 2 and ("attn" in pattern or "swa" in pattern):
            raise ValueError(f"head_dim: rotary attention needs an even head dim, got {self.resolved_head_dim}")
        if "mla" in pattern:
            rope_dim = self.mla_rope_dim
            if rope_dim is None:
                rope_dim = self.resolved_head_dim // 2 if self.rotary else 0
            if isinstance(rope_dim, bool) or not isinstance(rope_dim, int) or rope_dim < 0 or rope_dim % 2:
                raise ValueError(
                    f"mla_rope_dim: expected an even int >= 0 (default head_dim / 2), got {rope_dim!r}"
                )
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"norm_eps: expected a positive number, got {self.norm_eps!r}")
        if not (isinstance(self.rope_base, (int, float)) and self.rope_base > 1):
            raise ValueError(f"rope_base: expected a number > 1, got {self.rope_base!r}")
        if self.mlstm_input_gate not in ("exp", "sigmoid"):
            raise ValueError(f"mlstm_input_gate: expected 'exp' or 'sigmoid', got {self.mlstm_input_gate!r}")
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {self.pool!r}")
        if self.task == "lm" and self.input_dim is not None:
            raise ValueError("input_dim: language models take token ids; set task='sequence' for continuous inputs")

    @property
    def pattern(self) -> tuple[str, ...]:
        """The mixer names of one period of the pattern, e.g. ("kda", "kda", "kda", "mla")."""
        return tuple(name.strip() for name in self.layers.split(","))

    @property
    def mixers(self) -> tuple[str, ...]:
        """The mixer name of every block, the pattern repeated to `n_layers`."""
        pattern = self.pattern
        return tuple(pattern[i % len(pattern)] for i in range(self.n_layers))

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def resolved_mlp_hidden(self) -> int:
        """SwiGLU width: about 8/3 · D (same parameters as a 4·D GELU MLP), multiple of 8."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return -(-8 * self.d_model // 3 // 8) * 8

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Build from a dict (e.g. read from JSON); an unknown field is an error that names it."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"config: unknown field {unknown[0]!r}; fields are {', '.join(sorted(fields))}")
        return cls(**values)


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
