"""Peer implementations, each optional: a peer that cannot be imported, or that raises,
is recorded with the reason and the run goes on.

Each peer is wrapped so that it computes exactly the function attnforms computes for the
same inputs. The conventions below were read from the carried wheels
(flash-linear-attention / fla-core 0.6.0, mlstm_kernels 2.0.6):

fla (all time-major `[B, T, H, D]`, like attnforms; all return `(o, final_state)`;
`scale=None` means `K ** -0.5` multiplying q; states `[N, H, K, V]` float32):

- `fla.ops.kda.chunk_kda(q, k, v, g, beta, scale=None, initial_state=None,
  output_final_state=False, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
  use_beta_sigmoid_in_kernel=False, ..., chunk_size=64 via kwargs)`:
  g `[B, T, H, K]` natural-log decay (the kernel multiplies by 1/ln 2 for exp2); with
  `use_gate_in_kernel=True` it would instead compute `-exp(A_log)·softplus(g + dt_bias)`
  itself, so it is passed False; beta `[B, T, H]` already in (0, 1) (post-sigmoid) with
  `use_beta_sigmoid_in_kernel=False`. L2 norm of q/k only with
  `use_qk_l2norm_in_kernel=True`: passed False, and the keys fed are already normalised.
- `fla.ops.gated_delta_rule.chunk_gated_delta_rule(q, k, v, g, beta, scale=None, ...,
  use_qk_l2norm_in_kernel=False, use_beta_sigmoid_in_kernel=False, ...)`: g `[B, T, H]`
  natural-log decay (`use_gate_in_kernel` defaults to False), beta post-sigmoid. Its
  backward (through `chunk_bwd_dqkwg`) raises RuntimeError on Hopper with
  3.4 <= Triton < 3.7.1 ("produces incorrect results").
- `fla.ops.simple_gla.chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, ...)`:
  g `[B, T, H]` natural-log decay; no beta, no in-kernel L2 norm. Same backward refusal.
- `fla.ops.gla.chunk_gla(q, k, v, g, scale=None, ...)`: g `[B, T, H, K]` natural-log
  decay; no beta, no in-kernel L2 norm.
- `fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None,
  gv=None, beta=None, scale=None, initial_state=None, output_final_state=False,
  use_qk_l2norm_in_kernel=False, ...)`: g `[B, T, H]` natural-log decay applied as
  `S *= exp(g)` before the delta write; beta post-sigmoid; returns a new float32 state
  (not updated in place); its backward raises NotImplementedError.

mlstm_kernels:

- `mlstm_kernels.torch.get_mlstm_kernel("chunkwise--triton_xl_chunk")` is
  `mlstm_chunkwise__xl_chunk(q, k, v, i, f, c_initial=None, n_initial=None,
  m_initial=None, return_last_states=False, eps=1e-6, chunk_size=128, ...)`: head-major
  layout `[B, H, T, D]` (gates `[B, H, T]`), so inputs are transposed (and made
  contiguous) outside the timed region; `i` and `f` are pre-activations (passed in
  float32, an exact conversion of the bench's bf16 gates: with bf16 gates Triton 3.6's
  LLVM aborts compiling its `parallel_fw_Hintra` kernel, an SLPVectorizer assertion,
  reproduced without a GPU by compiling for sm_90; the two casts, about 1 MB at S1, are
  inside the timed call), exp input gate,
  forget gate `logsigmoid(f)` computed inside; the q scale is always `K ** -0.5` (not a
  parameter); T must be a multiple of the chunk size (128). Same function as
  `attnforms.mlstm(input_gate="exp")` (eps 1e-6); its backward, though, is the gradient
  with the normaliser and stabiliser held constant (bench/conventions.py), and is
  gated against that. Its gate preprocessing uses
  `torch.compile`, which adds to the first call. Before the gates were passed in
  float32, its first forward aborted the process on Triton 3.6; runs isolate
  implementations in processes (`workers.py`) for any such failure.
- `"chunkwise--triton_xl_chunk_siging"` is `mlstm_siging_chunkwise__xl_chunk(q, k, v, i,
  f, c_initial=None, n_initial=None, return_last_states=False, eps=1e-6,
  normalize=True, chunk_size=128, ...)`: the same layout; with `normalize=True` the same
  function as `attnforms.mlstm(input_gate="sigmoid")` (no stabiliser, floor 1), its
  backward holding the normaliser constant as above.
- `mlstm_kernels.torch.get_mlstm_step_kernel("triton_fused")` (or the first available
  step kernel) takes `q, k, v [B, H, D]`, `i, f [B, H, 1]` (passed in float32, as for
  the chunk kernels), `c [B, H, K, V]`, `n [B, H, K]`, `m [B, H, 1]` float32, `eps`, and
  returns `(h [B, H, V], (c, n, m))`: one exp-gate step with the scale `K ** -0.5`, the
  same as attnforms' recurrent mLSTM.

Aaren has no external peer; it is compared with the computation it replaces, attnforms'
softmax reference with the query repeated at every position (causal), and a plain
`torch.cumsum` of globally max-shifted weights (the same function, less stable).
"""
from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Runner:
    """One implementation of one op.

    label:       what the tables call it, e.g. "ours (triton)" or "fla chunk_kda".
    fn:          called with the op's inputs as keywords (attnforms names, in this
                 runner's layout); returns the output, or `(output, state)` for decode.
    unavailable: why it cannot run here (import failed, ...), or None.
    head_major:  takes and returns `[B, H, T, ...]` instead of `[B, T, H, ...]`.
    is_ours:     attnforms itself (the denominator of every ratio).
    in_place:    (decode) writes the new state over its state argument `S`, so it is
                 given its own copy of the inputs.
    prepare:     None, or `prepare(inputs) -> args`: builds this runner's arguments from
                 the inputs (attnforms layout) once, outside the timed region, where a
                 per-tensor layout change is not enough (e.g. SDPA decoding reads the
                 cache and the new token as one concatenated key tensor).
    compiles_per_shape: compiled for static shapes (torch.compile): every new shape is a
                 new compile, so the warm-up also calls it at the item's other shapes
                 (filling the on-disk compile caches the measuring process then reads).
    gradient_of: None, or `(what, function)` where the runner's backward is the gradient
                 of another function than the op (its forward the same): the gate checks
                 the backward against `function` (the op's inputs as keywords, attnforms
                 layout) and the tables say `what` (bench/conventions.py).
    """

    label: str
    fn: Callable | None
    unavailable: str | None = None
    head_major: bool = False
    in_place: bool = False
    is_ours: bool = False
    prepare: Callable[[dict], dict] | None = None
    compiles_per_shape: bool = False
    gradient_of: tuple[str, Callable] | None = None


def _load(module: str, attr: str):
    """`module.attr`, or None and the reason it cannot be imported."""
    try:
        return getattr(importlib.import_module(module), attr), None
    except Exception as exc:  # ImportError, or a peer failing at import time
        return None, f"{type(exc).__name__}: {exc}"


def _runner(label: str, module: str, attr: str, wrap: Callable, **flags) -> Runner:
    """A Runner calling `wrap(module.attr)`, or an unavailable one saying why."""
    function, reason = _load(module, attr)
    if function is not None:
        try:  # e.g. a registry lookup that fails where the peer's kernels did not import
            return Runner(label, wrap(function), **flags)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
    return Runner(label, None, unavailable=f"unavailable: {reason}", **flags)


def fla_chunk_kda() -> Runner:
    def wrap(chunk_kda):
        def run(q, k, v, g, beta):
            return chunk_kda(
                q, k, v, g, beta, scale=q.shape[-1] ** -0.5, use_qk_l2norm_in_kernel=False,
                use_gate_in_kernel=False, use_beta_sigmoid_in_kernel=False,
            )[0]
        return run
    return _runner("fla chunk_kda", "fla.ops.kda", "chunk_kda", wrap)


def fla_chunk_gated_delta_rule() -> Runner:
    def wrap(chunk_gated_delta_rule):
        def run(q, k, v, g, beta):
            return chunk_gated_delta_rule(
                q, k, v, g, beta, scale=q.shape[-1] ** -0.5, use_qk_l2norm_in_kernel=False,
                use_beta_sigmoid_in_kernel=False,
            )[0]
        return run
    return _runner("fla chunk_gated_delta_rule", "fla.ops.gated_delta_rule", "chunk_gated_delta_rule", wrap)


def fla_chunk_simple_gla() -> Runner:
    def wrap(chunk_simple_gla):
        def run(q, k, v, g):
            return chunk_simple_gla(q, k, v, g=g, scale=q.shape[-1] ** -0.5)[0]
        return run
    return _runner("fla chunk_simple_gla", "fla.ops.simple_gla", "chunk_simple_gla", wrap)


def fla_chunk_gla() -> Runner:
    def wrap(chunk_gla):
        def run(q, k, v, g):
            return chunk_gla(q, k, v, g, scale=q.shape[-1] ** -0.5)[0]
        return run
    return _runner("fla chunk_gla", "fla.ops.gla", "chunk_gla", wrap)


def tfla_xl_chunk() -> Runner:
    def wrap(get_mlstm_kernel):
        kernel = get_mlstm_kernel("chunkwise--triton_xl_chunk")

        def run(q, k, v, i, f):
            return kernel(q, k, v, i.float(), f.float(), return_last_states=False, eps=1e-6)
        return run

    return _runner(
        "mlstm_kernels triton_xl_chunk", "mlstm_kernels.torch", "get_mlstm_kernel", wrap, head_major=True,
        gradient_of=_held_normaliser("exp"),
    )


def tfla_xl_chunk_siging() -> Runner:
    def wrap(get_mlstm_kernel):
        kernel = get_mlstm_kernel("chunkwise--triton_xl_chunk_siging")

        def run(q, k, v, i, f):
            return kernel(q, k, v, i.float(), f.float(), return_last_states=False, eps=1e-6, normalize=True)
        return run

    return _runner(
        "mlstm_kernels triton_xl_chunk_siging", "mlstm_kernels.torch", "get_mlstm_kernel", wrap, head_major=True,
        gradient_of=_held_normaliser("sigmoid"),
    )


def _held_normaliser(input_gate: str) -> tuple[str, Callable]:
    """A `Runner.gradient_of` for TFLA, whose backward holds the mLSTM's normaliser and
    stabiliser constant (bench/conventions.py)."""
    from functools import partial

    from .conventions import HELD_NORMALISER, mlstm_held_normaliser

    return (HELD_NORMALISER, partial(mlstm_held_normaliser, input_gate=input_gate))


def tfla_step() -> Runner:
    def wrap(get_mlstm_step_kernel):
        from mlstm_kernels.torch import get_available_mlstm_step_kernels

        names = get_available_mlstm_step_kernels()
        step = get_mlstm_step_kernel("triton_fused" if "triton_fused" in names else names[0])

        def run(q, k, v, i, f, C, n, m):
            h, (C, _, _) = step(q=q[:, 0], k=k[:, 0], v=v[:, 0], i=i[:, 0, :, None].float(),
                                f=f[:, 0, :, None].float(),
                                c=C, n=n, m=m[..., None], eps=1e-6)
            return h[:, None], C
        return run

    return _runner("mlstm_kernels step", "mlstm_kernels.torch", "get_mlstm_step_kernel", wrap)


def softmax_repeated_query() -> Runner:
    def run(q, k, v):
        import attnforms

        B, T, H, K = k.shape
        return attnforms.softmax_attention(q[:, None].expand(B, T, H, K), k, v, causal=True,
                                           impl="reference", form="parallel").output
    return Runner("softmax reference, q repeated", run)


def softmax_kernel_repeated_query() -> Runner:
    """Our causal softmax Triton kernel on Aaren's computation (its query repeated over
    time): the issue's yardstick, Aaren forward + backward at least 5x faster."""
    import torch

    label = "softmax triton, q repeated"
    if not torch.cuda.is_available():
        return Runner(label, None, unavailable="unavailable: our softmax kernel is timed on a GPU")

    def run(q, k, v):
        import attnforms

        B, T, H, K = k.shape
        return attnforms.softmax_attention(q[:, None].expand(B, T, H, K), k, v, causal=True,
                                           impl="triton").output
    return Runner(label, run)


def cumsum_baseline() -> Runner:
    def run(q, k, v):
        import torch

        s = torch.einsum("bhk,bthk->bth", q.float(), k.float()) * q.shape[-1] ** -0.5
        w = torch.exp(s - s.amax(dim=1, keepdim=True))
        return (torch.cumsum(w[..., None] * v.float(), dim=1) / torch.cumsum(w, dim=1)[..., None]).to(v.dtype)
    return Runner("torch.cumsum baseline", run)


def fla_fused_recurrent_gated_delta_rule() -> Runner:
    def wrap(fused_recurrent):
        def run(q, k, v, g, beta, S):
            return fused_recurrent(
                q, k, v, g=g, beta=beta, scale=q.shape[-1] ** -0.5, initial_state=S,
                output_final_state=True, use_qk_l2norm_in_kernel=False,
            )
        return run
    return _runner(
        "fla fused_recurrent_gated_delta_rule", "fla.ops.gated_delta_rule",
        "fused_recurrent_gated_delta_rule", wrap,
    )


# op key -> {label: factory} of the peers that compute the same function. Labels are
# fixed here so that a run can be planned without importing any peer.
SEQUENCE_PEERS: dict[str, dict[str, Callable[[], Runner]]] = {
    "kda": {"fla chunk_kda": fla_chunk_kda},
    "gdn": {"fla chunk_gated_delta_rule": fla_chunk_gated_delta_rule},
    "simple_gla": {"fla chunk_simple_gla": fla_chunk_simple_gla},
    "gla": {"fla chunk_gla": fla_chunk_gla},
    "mlstm": {"mlstm_kernels triton_xl_chunk": tfla_xl_chunk},
    "mlstm_sig": {"mlstm_kernels triton_xl_chunk_siging": tfla_xl_chunk_siging},
    # Ours with TFLA's gradient: compared with TFLA's rows of "mlstm" / "mlstm_sig"
    # (linear.CROSS_PAIRINGS), not run again.
    "mlstm_held": {},
    "mlstm_sig_held": {},
    "aaren": {"softmax triton, q repeated": softmax_kernel_repeated_query,
              "softmax reference, q repeated": softmax_repeated_query, "torch.cumsum baseline": cumsum_baseline},
}
DECODE_PEERS: dict[str, Callable[[], Runner]] = {
    "fla fused_recurrent_gated_delta_rule": fla_fused_recurrent_gated_delta_rule,
}
MLSTM_DECODE_PEERS: dict[str, Callable[[], Runner]] = {"mlstm_kernels step": tfla_step}


def versions() -> dict:
    """Installed versions of the packages a result depends on (None where absent)."""
    found = {}
    for name in ("torch", "triton", "fla-core", "flash-linear-attention", "mlstm-kernels", "attnforms", "numpy", "matplotlib"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
