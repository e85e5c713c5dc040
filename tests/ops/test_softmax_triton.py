"""softmax_attention on Triton kernels, run on the CPU through Triton's interpreter (the
conftest sets TRITON_INTERPRET=1 where there is no GPU) at small shapes: outputs,
log-sum-exp and gradients (of q, k, v, sinks, the KV cache and tensors captured by a
score_mod) against the float64 reference, and against PyTorch's SDPA with an explicit
mask; packed sequences, odd lengths, GQA / MQA, windows, sinks, block sparsity, split-KV
decoding, mod-compiler errors, and that a new sequence length compiles nothing.

Float32 inputs are judged by the noise-relative rule: error vs float64 <= 2x the
reference's own float32 error + 1e-5 (bf16 on the GPU: scripts/device_softmax_check.py).
"""
import pytest
import torch
import torch.nn.functional as F

import attnforms as af
from attnforms.ops.softmax.api import softmax_attention
from attnforms.ops.softmax.triton import ModError
from attnforms.mods import BlockMask, create_block_mask
from attnforms.testing import noise_relative_check, softmax_inputs

ATOL = 1e-5


def from_block_maps(partial: torch.Tensor, full: torch.Tensor, mask_mod, T: int, S: int,
                    block_q: int, block_kv: int) -> BlockMask:
    """A BlockMask from bool maps `[1, 1, T_blocks, S_blocks]` of partial and full blocks
    (disjoint), to test the kernel's reading of a map independently of the mask."""
    def lists(blocks):
        order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return blocks.sum(-1).to(torch.int32), order
    kvn, kvi = lists(partial)
    fkvn, fkvi = lists(full)
    qn, qi = lists(partial.transpose(-1, -2))
    fqn, fqi = lists(full.transpose(-1, -2))
    return BlockMask(kvn, kvi, fkvn, fkvi, qn, qi, fqn, fqi, block_q, block_kv, mask_mod, (T, S))


def _leafs(inputs: dict, dtype) -> dict:
    return {n: x.detach().to(dtype).requires_grad_(True) for n, x in inputs.items()}


def _run(inputs, dtype, impl, form, mods=None, sinks=None, grad=True, **kwargs):
    """Call the op on copies of `inputs` in `dtype`; mods(dtype) -> (kwargs, leaf tensors).
    Returns (output, lse, {name: grad})."""
    tensors = _leafs(inputs, dtype)
    extra, leaves = mods(dtype) if mods else ({}, {})
    if sinks is not None:
        leaves = dict(leaves, sinks=sinks.detach().to(dtype).requires_grad_(True))
        extra = dict(extra, sinks=leaves["sinks"])
    out = softmax_attention(**tensors, **extra, **kwargs, impl=impl, form=form, return_lse=True)
    grads = {}
    if grad:
        weight = torch.randn(out.output.shape, generator=torch.Generator().manual_seed(7),
                             dtype=torch.float64).to(dtype)
        (out.output * weight).sum().backward()
        grads = {n: x.grad for n, x in {**tensors, **leaves}.items()}
    return out.output, out.lse, grads


def _check(inputs, form="parallel", grad=True, **kwargs):
    golden = _run(inputs, torch.float64, "reference", "parallel", grad=grad, **kwargs)
    eager = _run(inputs, torch.float32, "reference", "parallel", grad=grad, **kwargs)
    ours = _run(inputs, torch.float32, "triton", form, grad=grad, **kwargs)
    assert ours[0].dtype == torch.float32
    _assert_close("output", ours[0], golden[0], eager[0])
    finite = torch.isfinite(golden[1])
    assert torch.equal(torch.isfinite(ours[1]), finite), "lse: -inf rows differ"
    _assert_close("lse", ours[1][finite], golden[1][finite], eager[1][finite])
    for name, g in golden[2].items():
        assert ours[2][name] is not None, f"no gradient for {name}"
        _assert_close(f"d{name}", ours[2][name], g, eager[2][name])
    return ours


def _assert_close(name, candidate, golden, eager):
    check = noise_relative_check(candidate, golden, eager, factor=2.0, atol=ATOL)
    assert check.passed, f"{name}: error {check.error:.3g} > bound {check.bound:.3g}"


def alibi(dtype):
    slopes = (2.0 ** -torch.arange(1, 5, dtype=torch.float64)).to(dtype).requires_grad_(True)
    return dict(score_mod=lambda score, b, h, q_idx, kv_idx: score - slopes[h] * (q_idx - kv_idx)), dict(slopes=slopes)


def t5_bias(dtype):
    table = (torch.randn(4, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
             .to(dtype).requires_grad_(True))
    return dict(score_mod=lambda s, b, h, q, kv: s + table[h, torch.clamp(q - kv, 0, 15)]), dict(table=table)


def forgetting(dtype):
    """Forgetting attention: a per-query and a per-key captured term (the q-only and
    kv-only gradient reductions), soft-capped."""
    cum = (torch.randn(2, 4, 80, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
           .cumsum(-1) * 0.1).to(dtype).requires_grad_(True)

    def mod(s, b, h, q_idx, kv_idx):
        s = 5.0 * torch.tanh(s / 5.0)
        return s + cum[b, h, q_idx] - cum[b, h, kv_idx]
    return dict(score_mod=mod), dict(cum=cum)


def prefix_lm(dtype):
    return dict(mask_mod=lambda b, h, q_idx, kv_idx: (kv_idx <= q_idx) | (kv_idx < 9)), {}


CASES = {
    "causal": dict(),
    "bidirectional": dict(causal=False),
    "window": dict(window=7),
    "sinks": dict(sinks=torch.tensor([0.5, -1.0, 2.0, 0.0])),
    "window-sinks-gqa": dict(window=20, sinks=torch.tensor([0.5, -1.0, 2.0, 0.0]), G=2),
    "mqa-cross-longer-keys": dict(G=1, S=50),
    "cross-fewer-keys": dict(S=20),
    "bidirectional-cross": dict(causal=False, S=29),
    "head-dims-40-24": dict(K=40, V=24),
    "alibi": dict(mods=alibi),
    "t5-bias": dict(mods=t5_bias, causal=False),
    "forgetting-softcap": dict(mods=forgetting),
    "prefix-lm": dict(mods=prefix_lm, causal=False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward_match_reference(case):
    config = dict(CASES[case])
    shape = dict(S=config.pop("S", None), G=config.pop("G", None), K=config.pop("K", 16),
                 V=config.pop("V", 16))
    inputs = softmax_inputs(2, 37, 4, shape["K"], shape["V"], S=shape["S"], G=shape["G"])
    _check(inputs, **config)


@pytest.mark.parametrize("T", [1, 63, 65, pytest.param(1000, marks=pytest.mark.slow)])
def test_odd_lengths(T):
    inputs = softmax_inputs(1, T, 2, 16, 16, G=1)
    _check(inputs, window=40 if T > 100 else None)


@pytest.mark.parametrize("D", [32, 96, 256])
def test_head_dims_forward(D):
    inputs = softmax_inputs(1, 20, 2, D, D)
    _check(inputs, grad=False)


def test_captured_tensor_on_another_device_is_refused():
    inputs = softmax_inputs(1, 4, 2, 16, 16, dtype=torch.float32)
    slopes = torch.rand(2, device="meta")
    with pytest.raises(ValueError, match="captures a tensor on meta"):
        softmax_attention(**inputs, score_mod=lambda s, b, h, q, kv: s - slopes[h] * (q - kv),
                          impl="triton")


def test_matches_sdpa_with_explicit_mask():
    """Bottom-right causal cross-attention, GQA, against SDPA given the explicit mask."""
    B, T, S, H, G, D = 2, 24, 40, 4, 2, 16
    inputs = softmax_inputs(B, T, H, D, D, S=S, G=G, dtype=torch.float32)
    ours = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items()}
    theirs = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items()}
    out = softmax_attention(**ours, impl="triton", form="parallel").output
    mask = torch.arange(S)[None, :] <= (S - T + torch.arange(T))[:, None]
    q, k, v = (x.transpose(1, 2) for x in theirs.values())
    k, v = (x.repeat_interleave(H // G, dim=1) for x in (k, v))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weight).sum().backward()
    (expected * weight).sum().backward()
    assert (out - expected).abs().max() < 1e-5
    for name in ours:
        assert (ours[name].grad - theirs[name].grad).abs().max() < 1e-5, name


def test_varlen_native_with_document_mod():
    offsets = [0, 7, 40, 41, 70]
    inputs = softmax_inputs(1, 70, 4, 16, 16, G=2)
    cu = torch.tensor(offsets)

    def mods(dtype):
        bias = torch.linspace(-1, 1, 4, dtype=torch.float64).to(dtype).requires_grad_(True)
        return dict(score_mod=lambda s, b, h, q, kv: s + bias[b] * (q - kv) * 0.1), dict(bias=bias)
    ours = _check(inputs, cu_seqlens=cu, window=20, mods=mods, sinks=torch.tensor([0.5, 0.0, -1.0, 1.0]))
    assert ours[1].shape == (1, 4, 70)


def test_block_mask_skips_blocks_and_matches_reference():
    T = S = 70
    mask_mod = lambda b, h, q, kv: ((q - kv) < 24) | (kv < 8)  # noqa: E731  sliding + global prefix
    inputs = softmax_inputs(2, T, 4, 16, 16)
    bm = create_block_mask(mask_mod, 1, 1, T, S, block_q=32, block_kv=32)
    assert int(bm.full_kv_num_blocks.sum()) > 0 and int(bm.kv_num_blocks.sum()) > 0
    _check(inputs, mods=lambda dtype: (dict(mask_mod=mask_mod), {}), block_mask=bm)


def test_block_mask_with_packed_sequences():
    """Per-sequence maps (b = sequence index), seq_lengths = the longest sequence."""
    offsets = [0, 45, 50, 90]
    limits = torch.tensor([40, 3, 10])
    mask_mod = lambda b, h, q, kv: (q - kv < limits[b]) & (kv <= q)  # noqa: E731
    inputs = softmax_inputs(1, 90, 4, 16, 16, G=2)
    bm = create_block_mask(mask_mod, 3, 1, 45, 45, block_q=16, block_kv=32)
    _check(inputs, mods=lambda dtype: (dict(mask_mod=mask_mod), {}), block_mask=bm, causal=False,
           cu_seqlens=torch.tensor(offsets))


def test_block_mask_semantics_full_blocks_skip_the_mask_empty_blocks_skipped():
    """A map that declares every block full must give unmasked attention (the mask is
    not evaluated there); a map with no block must give zeros."""
    T = S = 40
    inputs = softmax_inputs(1, T, 2, 16, 16, dtype=torch.float32)
    mask_mod = lambda b, h, q, kv: kv < 0  # noqa: E731  masks everything
    blocks = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    every_full = from_block_maps(~blocks, blocks, mask_mod, T, S, 32, 32)
    out = softmax_attention(**inputs, causal=False, mask_mod=mask_mod, block_mask=every_full,
                            impl="triton").output
    plain = softmax_attention(**inputs, causal=False, impl="reference").output
    assert (out - plain).abs().max() < 1e-5
    nothing = from_block_maps(~blocks, ~blocks, mask_mod, T, S, 32, 32)
    out = softmax_attention(**inputs, causal=False, mask_mod=mask_mod, block_mask=nothing,
                            impl="triton").output
    assert torch.equal(out, torch.zeros_like(out))


def test_block_mask_must_come_from_the_mask_mod():
    inputs = softmax_inputs(1, 8, 2, 16, 16)
    bm = create_block_mask(lambda b, h, q, kv: q >= kv, 1, 1, 8, 8, 16, 16)
    with pytest.raises(ValueError, match="block_mask"):
        softmax_attention(**inputs, mask_mod=lambda b, h, q, kv: q >= kv, block_mask=bm, impl="reference")


def _cache(B, L, G, D, filled, start_pos, seed=5):
    """A KV cache of L slots whose first `filled[b]` hold positions start_pos[b] ..."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(B, L, G, D, generator=gen, dtype=torch.float64)
    v = torch.randn(B, L, G, D, generator=gen, dtype=torch.float64)
    pos = torch.full((B, L), -1, dtype=torch.int64)
    for b in range(B):
        pos[b, : filled[b]] = start_pos[b] + torch.arange(filled[b])
    k[pos < 0] = float("nan")  # empty slots may hold anything
    nxt = torch.tensor([start_pos[b] + filled[b] for b in range(B)])
    return k, v, pos, nxt


@pytest.mark.parametrize("T,G,splits,options", [
    (1, 4, 1, dict()),
    (1, 2, 3, dict(sinks=True)),
    (2, 1, 2, dict(window=20)),
    (3, 2, 4, dict(mods=True)),
])
def test_decode_split_kv_matches_reference(T, G, splits, options):
    from attnforms.ops.softmax import triton as kernels
    B, H, D, L = 2, 4, 16, 50
    k_c, v_c, pos, nxt = _cache(B, L, G, D, filled=[45, 30], start_pos=[0, 3])
    inputs = softmax_inputs(B, T, H, D, D, G=G, seed=1)
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0]) if options.get("sinks") else None
    mask_mod = (lambda b, h, q, kv: (kv % 5) != 2) if options.get("mods") else None
    slopes = torch.rand(H, dtype=torch.float64)
    score_mod = (lambda s, b, h, q, kv: s - slopes[h] * (q - kv)) if options.get("mods") else None
    window = options.get("window")
    state = af.KVCache(k_c, v_c, pos, nxt)
    golden = softmax_attention(**inputs, initial_state=state, output_final_state=True, sinks=sinks,
                               window=window, mask_mod=mask_mod, score_mod=score_mod,
                               impl="reference", form="recurrent", return_lse=True)
    f32 = {n: x.float() for n, x in inputs.items()}
    state32 = af.KVCache(k_c.float(), v_c.float(), pos, nxt)
    slopes32 = slopes.float()
    score32 = (lambda s, b, h, q, kv: s - slopes32[h] * (q - kv)) if options.get("mods") else None
    ours = kernels.recurrent(
        **f32, causal=True, window=window, score_mod=score32, mask_mod=mask_mod,
        sinks=None if sinks is None else sinks.float(), scale=D ** -0.5, initial_state=state32,
        output_final_state=True, chunk_size=64, splits=splits)
    assert (ours.output - golden.output).abs().max() < 2e-5
    assert (ours.lse - golden.lse).abs().max() < 2e-5
    assert torch.equal(ours.final_state.positions, golden.final_state.positions)
    assert torch.equal(ours.final_state.next_position, golden.final_state.next_position)
    assert torch.equal(ours.final_state.k, golden.final_state.k.float())


def test_recurrent_form_stacks_gqa_rows_over_tiles_and_differentiates():
    """T·H/G = 80 query rows per key head (two row tiles of the decode kernel), no cache,
    keys longer than queries; gradients through the flash backward."""
    inputs = softmax_inputs(1, 20, 4, 16, 16, S=30, G=1)
    _check(inputs, form="recurrent", sinks=torch.tensor([0.5, -1.0, 2.0, 0.0]), window=12)


def test_parallel_with_cache_gives_cache_gradients():
    B, H, G, D, L, T = 2, 4, 2, 16, 20, 9
    k_c, v_c, pos, nxt = _cache(B, L, G, D, filled=[20, 11], start_pos=[0, 5])
    k_c[pos < 0] = 0.0
    inputs = softmax_inputs(B, T, H, D, D, G=G)
    results = {}
    for dtype, impl in ((torch.float64, "reference"), (torch.float32, "triton")):
        cache = af.KVCache(k_c.detach().to(dtype).requires_grad_(True), v_c.detach().to(dtype).requires_grad_(True), pos, nxt)
        tensors = _leafs(inputs, dtype)
        out = softmax_attention(**tensors, initial_state=cache, window=15, impl=impl, form="parallel")
        out.output.sum().backward()
        results[impl] = (out.output, cache.k.grad, cache.v.grad, tensors["q"].grad, tensors["k"].grad)
    for ours, golden in zip(results["triton"], results["reference"]):
        assert (ours - golden).abs().max() < 2e-5


def test_recurrent_decode_loop_matches_parallel():
    """Prefill with the flash kernel, then decode token by token with the split-KV one."""
    B, H, D, T = 1, 2, 16, 30
    inputs = softmax_inputs(B, T, H, D, D, dtype=torch.float32)
    whole = softmax_attention(**inputs, impl="reference", form="parallel").output
    first = softmax_attention(**{n: x[:, :20] for n, x in inputs.items()}, output_final_state=True,
                              impl="triton", form="parallel")
    outputs, state = [first.output], first.final_state
    for t in range(20, T):
        step = softmax_attention(**{n: x[:, t:t + 1] for n, x in inputs.items()}, initial_state=state,
                                 output_final_state=True, impl="triton", form="recurrent")
        outputs.append(step.output)
        state = step.final_state
    assert (torch.cat(outputs, 1) - whole).abs().max() < 2e-5


@pytest.mark.parametrize("mod,match", [
    (lambda s, b, h, q, kv: s if q > kv else -s, "Python bool"),
    (lambda s, b, h, q, kv: torch.softmax(s, -1), "softmax"),
    (lambda s, b, h, q, kv: s ** 0.5, "power"),
    (lambda s, b, h, q, kv: s + torch.ones(3), "without indexing"),
])
def test_unsupported_mods_fail_clearly(mod, match):
    inputs = softmax_inputs(1, 4, 2, 16, 16, dtype=torch.float32)
    with pytest.raises(ModError, match=match):
        softmax_attention(**inputs, score_mod=mod, impl="triton")


def test_float64_is_refused_and_auto_does_not_use_the_interpreter():
    inputs = softmax_inputs(1, 4, 2, 16, 16)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        softmax_attention(**inputs, impl="triton")
    # auto never picks the interpreter: the reference runs float64 fine.
    softmax_attention(**inputs, impl="auto")


def test_triton_with_a_cache_refuses_a_block_mask():
    inputs = softmax_inputs(1, 4, 2, 16, 16, dtype=torch.float32)
    mask_mod = lambda b, h, q, kv: q >= kv  # noqa: E731
    bm = create_block_mask(mask_mod, 1, 1, 4, 4, 16, 16)
    state = af.KVCache(torch.zeros(1, 2, 2, 16), torch.zeros(1, 2, 2, 16), torch.tensor([[0, 1]]),
                       torch.tensor([2]))
    with pytest.raises(ValueError, match="block_mask"):
        softmax_attention(**inputs, initial_state=state, mask_mod=mask_mod, block_mask=bm,
                          impl="triton", form="parallel")


def test_new_sequence_length_compiles_nothing(monkeypatch):
    """Bind the real (compiled, not interpreted) forward, backward and decode kernels on
    an sm_90 target at two sequence lengths; count the compilations the JIT cache asks for."""
    import importlib.util
    import sys

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    from attnforms.ops.softmax.triton import launch, modc

    class Sm90:
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    compiles = []

    def fake_compile(self, key, signature, device, constexprs, options, attrs, warmup):
        compiles.append(self.__name__)
        kernel = object()
        self.device_caches[device][0][key] = kernel
        return kernel

    def warm_only(self, *args, grid, warmup, **kwargs):
        return original_run(self, *args, grid=grid, warmup=True, **kwargs)

    try:  # imported lazily by the compile path; it must see the interpreter setting it was loaded with
        import triton.experimental.gluon.language  # noqa: F401
    except ImportError:
        pass
    # The compiled (not interpreted) module must not stay in the compiler's caches.
    monkeypatch.setattr(modc, "_modules", dict(modc._modules))
    monkeypatch.setattr(modc, "_by_key", dict(modc._by_key))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    slopes = torch.rand(2)
    graph = modc.trace(lambda s, b, h, q, kv: s - slopes[h] * (q - kv), "score")
    path = modc.kernels_for(graph, None).__file__
    spec = importlib.util.spec_from_file_location("softmax_kernels_compiled_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert isinstance(module._fwd_kernel, JITFunction)
    original_run = JITFunction.run
    previous = getattr(driver, "_active", None)
    driver.set_active(Sm90())
    monkeypatch.setattr(JITFunction, "_do_compile", fake_compile)
    monkeypatch.setattr(JITFunction, "run", warm_only)
    monkeypatch.setattr(launch.Plan, "module", property(lambda self: module))
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    try:
        counts = []
        for T, S in ((100, 100), (256, 320), (1024, 1024)):
            inputs = softmax_inputs(2, T, 2, 64, 64, S=S, dtype=torch.bfloat16)
            plan = launch.Plan(causal=True, window=None, scale=0.125, score_graph=graph, qoff=S - T)
            o, lse = launch.forward(**inputs, plan=plan)
            launch.backward(**inputs, do=o, lse_all=lse, delta=lse, plan=plan, cap_grads={0: slopes.clone()})
            cache = torch.zeros(2, T, 2, 64, dtype=torch.bfloat16)
            pos = torch.zeros(2, T, dtype=torch.int64)
            launch.decode(inputs["q"][:, :1], inputs["k"][:, :1], inputs["v"][:, :1], cache, cache, pos,
                          torch.zeros(2, dtype=torch.int32), plan)
            counts.append(len(compiles))
    finally:
        driver.set_active(previous)
    assert counts[0] == 5  # fwd, dkdv, dq, decode, combine
    assert counts[1] == counts[2] == counts[0], f"recompiled on a new length: {compiles}"


@pytest.mark.parametrize("form", ["parallel", "recurrent"])
def test_packed_sequences_with_caches(form):
    """cu_seqlens with a cache per sequence (one launch each, b = the sequence index)."""
    first = softmax_attention(**softmax_inputs(1, 30, 4, 16, 16, G=2, dtype=torch.float32),
                              cu_seqlens=torch.tensor([0, 10, 11, 30]), output_final_state=True,
                              impl="reference")
    new = softmax_inputs(1, 5, 4, 16, 16, G=2, dtype=torch.float32, seed=3)
    slopes = torch.rand(4)
    mod = lambda s, b, h, q, kv: s - slopes[h] * (q - kv) * (b + 1)  # noqa: E731
    kwargs = dict(cu_seqlens=torch.tensor([0, 2, 3, 5]), initial_state=first.final_state,
                  output_final_state=True, score_mod=mod, form=form, return_lse=True)
    ours = softmax_attention(**new, **kwargs, impl="triton")
    golden = softmax_attention(**new, **kwargs, impl="reference")
    assert (ours.output - golden.output).abs().max() < 2e-5
    assert (ours.lse - golden.lse).abs().max() < 2e-5
    assert torch.equal(ours.final_state.positions, golden.final_state.positions)
    assert torch.equal(ours.final_state.k, golden.final_state.k)


def test_dkdv_reads_tiles_through_descriptors_where_it_can():
    """The dk/dv kernel's TMA path (taken by every power-of-two head dim above, including
    the ragged last tile of a batch row, whose rows past the row's end belong to the
    next row) and its pointer fallback (head dims 40 / 24)."""
    from attnforms.ops.softmax.triton import launch
    assert launch.row_descriptors(torch.zeros(2, 37, 4, 16), 16) is not None
    assert launch.row_descriptors(torch.zeros(2, 37, 4, 40), 16) is None
    assert launch.row_descriptors(torch.zeros(2, 37, 4, 32)[..., :16], 16) is None  # strided


def test_compiled_kernels_take_descriptors_only_at_head_dim_128(monkeypatch):
    """Compiled for a Hopper GPU, the descriptor path is limited to launch.TMA_HEAD_DIMS:
    Triton 3.6's ptxas crashes on the descriptor kernels at head dims 32, 64 and 256."""
    from attnforms.ops.softmax.triton import launch
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "tma_device", lambda device: True)
    assert launch.row_descriptors(torch.zeros(2, 37, 4, 128), 64) is not None
    for D in (32, 64, 256):
        assert launch.row_descriptors(torch.zeros(2, 37, 4, D), 64) is None, D


@pytest.mark.parametrize("scale", [0.3, -0.3])
@pytest.mark.parametrize("causal", [True, False])
def test_explicit_and_negative_scales(scale, causal):
    # A positive scale without a score mod takes the forward's raw-product row max
    # (max(c·s) = c·max(s)); a negative one must not: with scores spread over hundreds,
    # a wrong row max overflows the exponentials.
    inputs = softmax_inputs(2, 70, 4, 16, 16, G=2)
    _check(inputs, causal=causal, scale=scale)
    _check(dict(inputs, q=inputs["q"] * 40), causal=causal, scale=scale, grad=False)
