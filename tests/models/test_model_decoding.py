"""Every preset computes one function however the sequence is fed: one forward, a prefill
then single-token steps, or a prefill in two calls; and `generate` decodes what the full
forward predicts."""
import pytest
import torch

from attnforms.models import PRESETS, build_model, generate, preset_config, sample_next

VOCAB, T = 61, 24
RELATIVE = 1e-9


def small_config(name: str, **overrides):
    """The preset at D = 32 with the fewest blocks that hold its whole pattern (2 at
    least), several chunks per prompt, and a window shorter than the prompt."""
    pattern = PRESETS[name].pattern
    extra = dict(window=6) if "swa" in pattern else {}
    return preset_config(name, d_model=32, n_layers=max(2, len(pattern)), vocab_size=VOCAB,
                         chunk_size=8, **extra, **overrides)


def small_model(name: str, **overrides):
    torch.manual_seed(0)
    return build_model(small_config(name, **overrides)).double()


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def token_ids(B=2, length=T, seed=3):
    return torch.randint(0, VOCAB, (B, length), generator=torch.Generator().manual_seed(seed))


def prefill_then_steps(model, ids, prefix: int):
    """Logits `[B, T, V]` of a chunk-form prefill of `prefix` tokens followed by one
    recurrent step per remaining token."""
    out = model(ids[:, :prefix], use_cache=True, form="chunk")
    logits, caches = [out.logits], out.caches
    for t in range(prefix, ids.shape[1]):
        step = model.step(ids[:, t], caches)
        logits.append(step.logits[:, None])
        caches = step.caches
    return torch.cat(logits, 1)


@pytest.mark.parametrize("name", PRESETS)
def test_prefill_then_steps_and_chunked_prefill_equal_one_forward(name):
    model = small_model(name)
    ids = token_ids()
    full = model(ids).logits

    assert rel_err(prefill_then_steps(model, ids, 9), full) < RELATIVE

    first = model(ids[:, :13], use_cache=True)
    second = model(ids[:, 13:], first.caches)
    assert rel_err(torch.cat([first.logits, second.logits], 1), full) < RELATIVE


VARIANTS = {
    "sqa-sinks-qknorm-gate": ("transformer", dict(n_query_heads=2, n_kv_heads=1, sinks=True, qk_norm=True, attn_output_gate=True)),
    "gqa-swa-no-rope": ("swa-transformer", dict(n_kv_heads=2, rotary=False)),
    "mla-rope-qrank": ("kimi-linear", dict(mla_rope_dim=4, mla_q_rank=16, mla_kv_rank=24)),
    "gdn-hybrid-expand2": ("gdn-hybrid", dict(expand_v=2, conv_size=3)),
    "linear-with-conv": ("linear", dict(short_conv=True)),
    "mlstm-sigmoid-conv": ("mlstm", dict(mlstm_input_gate="sigmoid", short_conv=True)),
    "gla-rank4": ("gla", dict(gate_rank=4, head_dim=12)),
    # The demo's setting: one short convolution in front of every mixer, the mixers' own off.
    "transformer-block-conv": ("transformer", dict(block_conv=True)),
    "gdn-block-conv": ("gdn", dict(block_conv=True, short_conv=False)),
    "aaren-block-conv": ("aaren", dict(block_conv=True)),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_variants_decode_like_one_forward(variant):
    name, overrides = VARIANTS[variant]
    model = small_model(name, **overrides)
    ids = token_ids()
    full = model(ids).logits
    assert rel_err(prefill_then_steps(model, ids, 11), full) < RELATIVE


@pytest.mark.parametrize("name", ["transformer", "gdn"])
def test_stepping_from_an_empty_cache_equals_one_forward(name):
    model = small_model(name)
    ids = token_ids(length=10)
    caches, logits = None, []
    for t in range(10):
        out = model.step(ids[:, t], caches)
        logits.append(out.logits[:, None])
        caches = out.caches
    assert rel_err(torch.cat(logits, 1), model(ids).logits) < RELATIVE


@pytest.mark.parametrize("name", ["transformer", "swa-transformer", "gdn", "kimi-linear"])
def test_greedy_generate_takes_the_argmax_of_the_full_forward(name):
    model = small_model(name)
    prompt = token_ids(length=5)
    generated = generate(model, prompt, max_new_tokens=8, temperature=0)
    expected = prompt
    for _ in range(8):
        next_ids = model(expected).logits[:, -1].argmax(-1)
        expected = torch.cat([expected, next_ids[:, None]], dim=1)
    assert torch.equal(generated, expected)


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = small_model("gdn")
    prompt = token_ids(length=4)

    def sample(seed, **kwargs):
        return generate(model, prompt, 10, generator=torch.Generator().manual_seed(seed), **kwargs)

    assert torch.equal(sample(5, temperature=1.0, top_p=0.9), sample(5, temperature=1.0, top_p=0.9))
    assert not torch.equal(sample(5, temperature=5.0), sample(6, temperature=5.0))
    assert torch.equal(sample(5, temperature=1.0, top_k=1), generate(model, prompt, 10, temperature=0))
    assert torch.equal(generate(model, prompt, 0), prompt)


def test_top_k_and_top_p_only_sample_inside_their_sets():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log().expand(400, 4)
    gen = torch.Generator().manual_seed(0)
    # Nucleus 0.7: tokens 1 (0.5) and 3 (0.3) reach it; the others never appear.
    assert set(sample_next(logits, top_p=0.7, generator=gen).tolist()) == {1, 3}
    assert set(sample_next(logits, top_k=3, generator=gen).tolist()) == {1, 2, 3}
    assert set(sample_next(logits, top_p=0.4, generator=gen).tolist()) == {1}
    # A low temperature concentrates on the argmax; temperature 1 keeps the distribution.
    draws = sample_next(probs.log().expand(4000, 4), generator=gen)
    frequencies = torch.bincount(draws, minlength=4) / 4000
    assert torch.allclose(frequencies, probs[0], atol=0.04)
    assert set(sample_next(logits, temperature=1e-3, generator=gen).tolist()) == {1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_generate_refuses_bad_sampling_arguments(kwargs, message):
    model = small_model("aaren")
    arguments = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, token_ids(length=3), **arguments)


def test_token_ids_out_of_range_raise_a_clear_error():
    model = small_model("transformer")
    with pytest.raises(ValueError, match=r"input_ids: expected token ids in \[0, 61\)"):
        model(torch.tensor([[0, 61]]))
    with pytest.raises(TypeError, match="input_ids"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="caches: expected one cache per block"):
        model(token_ids(length=3), caches=(None,))
