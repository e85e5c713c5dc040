"""Configs refuse bad values with errors that name the field; presets build and resize;
parameter counts are what the modules hold; save / load round-trips exactly and names
the key that does not fit; the sequence model pools what its config says."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnforms.models import (
    PRESETS, CausalLM, ModelConfig, SequenceModel, build_model, count_parameters, load,
    match_parameters, preset_config, save,
)


@pytest.mark.parametrize("fields, message", [
    pytest.param(dict(d_model=30, n_heads=4), "n_heads: expected a divisor of d_model = 30", id="heads-not-dividing"),
    pytest.param(dict(layers="gdn,mamba"), "layers: unknown mixer 'mamba'", id="unknown-mixer"),
    pytest.param(dict(layers="kda,kda,kda,mla", n_layers=6), "n_layers: expected a multiple of the pattern length 4", id="depth-vs-pattern"),
    pytest.param(dict(layers="swa"), "window", id="swa-without-window"),
    pytest.param(dict(d_model=0), "d_model: expected a positive int", id="zero-width"),
    pytest.param(dict(task="seq2seq"), "task", id="unknown-task"),
    pytest.param(dict(pool="max", task="sequence"), "pool", id="unknown-pool"),
    pytest.param(dict(mlstm_input_gate="tanh"), "mlstm_input_gate", id="unknown-gate"),
    pytest.param(dict(input_dim=3), "input_dim", id="features-for-lm"),
    pytest.param(dict(layers="mla", d_model=24, n_heads=4), "mla_rope_dim", id="odd-mla-rope-dim"),
])
def test_bad_configs_raise_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


def test_unknown_field_in_a_dict_and_unknown_preset_are_named():
    with pytest.raises(ValueError, match="unknown field 'heads'"):
        ModelConfig.from_dict(dict(heads=4))
    with pytest.raises(ValueError, match="unknown preset 'mamba'"):
        preset_config("mamba")
    with pytest.raises(ValueError, match="n_heads"):
        preset_config("gdn", d_model=70)


def test_every_preset_builds_its_pattern_and_resizes():
    expected_mixers = {
        "transformer": "Attention", "swa-transformer": "Attention", "linear": "LinearAttention",
        "gla": "GatedLinearAttention", "deltanet": "DeltaNet", "gdn": "GatedDeltaNet",
        "kda": "KimiDeltaAttention", "mlstm": "MLSTMLayer", "aaren": "AarenLayer",
    }
    assert set(expected_mixers) | {"kimi-linear", "gdn-hybrid"} == set(PRESETS)
    for name in PRESETS:
        config = preset_config(name, d_model=48, vocab_size=100)
        with torch.device("meta"):
            model = build_model(config)
        mixers = [type(block.mixer).__name__ for block in model.stack.blocks]
        assert len(mixers) == config.n_layers and model.embed.weight.shape == (100, 48)
        if name in expected_mixers:
            assert set(mixers) == {expected_mixers[name]}
    kimi = build_model(preset_config("kimi-linear", d_model=32, n_layers=8))
    assert [type(b.mixer).__name__ for b in kimi.stack.blocks] == (["KimiDeltaAttention"] * 3 + ["MultiHeadLatentAttention"]) * 2
    assert kimi.stack.blocks[3].mixer.rope_dim == 0  # NoPE in Kimi Linear's MLA layers
    swa = build_model(preset_config("swa-transformer", d_model=32, n_layers=2))
    assert swa.stack.blocks[0].mixer.window == PRESETS["swa-transformer"].window


def test_count_parameters_counts_each_tensor_once():
    model = build_model(preset_config("kda", d_model=32, n_layers=2, vocab_size=50))
    by_name = dict(model.named_parameters())  # a tied head is not a separate parameter
    assert count_parameters(model) == sum(p.numel() for p in by_name.values())
    assert count_parameters(model.config) == count_parameters(model)
    assert count_parameters(model, exclude_embeddings=True) == count_parameters(model) - 50 * 32
    untied = dataclasses.replace(model.config, tie_embeddings=False)
    assert count_parameters(untied) == count_parameters(model) + 50 * 32


def test_match_parameters_picks_the_closest_width():
    target = 300_000
    config = match_parameters("gdn", target, n_layers=2, vocab_size=256)
    step = 4 * config.n_heads
    gap = abs(count_parameters(config) - target)
    for d_model in (config.d_model - step, config.d_model + step):
        neighbour = dataclasses.replace(config, d_model=d_model)
        assert gap <= abs(count_parameters(neighbour) - target)


@pytest.mark.parametrize("name, dtype", [("kimi-linear", torch.float64), ("transformer", torch.float32)])
def test_save_then_load_gives_identical_outputs(tmp_path, name, dtype):
    config = preset_config(name, d_model=32, n_layers=len(PRESETS[name].pattern) * (1 if name == "kimi-linear" else 2),
                           vocab_size=40, qk_norm=True)
    torch.manual_seed(0)
    model = build_model(config).to(dtype)
    save(model, tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert isinstance(loaded, CausalLM) and loaded.config == config
    ids = torch.randint(0, 40, (2, 11))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert all(p.dtype == dtype for p in loaded.parameters())
    assert json.loads((tmp_path / "model" / "config.json").read_text())["config"]["layers"] == config.layers


def test_load_names_the_key_that_does_not_fit(tmp_path):
    model = build_model(preset_config("gdn", d_model=32, n_layers=2, vocab_size=40))
    directory = save(model, tmp_path / "model")
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    key = "stack.blocks.1.mixer.decay_gate.A_log"
    save_file({**state, key: torch.zeros(7)}, str(weights))
    with pytest.raises(ValueError, match=rf"key '{key}' has shape \[7\], but the config builds \[4\]"):
        load(directory)
    save_file({k: v for k, v in state.items() if k != key}, str(weights))
    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        load(directory)
    save_file({**state, "extra.weight": torch.zeros(1)}, str(weights))
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        load(directory)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path / "nowhere")


@pytest.mark.parametrize("pool", ["last", "mean", "none"])
def test_sequence_model_pools_the_stack_output(pool):
    config = ModelConfig(task="sequence", input_dim=5, n_outputs=3, pool=pool, d_model=32,
                         n_layers=2, layers="gdn,attn")
    torch.manual_seed(0)
    model = build_model(config).double()
    assert isinstance(model, SequenceModel)
    x = torch.randn(2, 9, 5, dtype=torch.float64)
    hidden = model.stack(model.embed(x)).hidden
    expected = {"last": hidden[:, -1], "mean": hidden.mean(1), "none": hidden}[pool] @ model.head.weight.T + model.head.bias
    out = model(x).logits
    assert out.shape == ((2, 9, 3) if pool == "none" else (2, 3))
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    # Streaming: after the last step the per-step output is what pool="last" reads.
    caches = None
    for t in range(9):
        step = model.step(x[:, t], caches)
        caches = step.caches
    assert torch.allclose(step.logits, hidden[:, -1] @ model.head.weight.T + model.head.bias, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="input_dim|F = 5"):
        model(torch.randn(2, 9, 4, dtype=torch.float64))


def test_sequence_model_on_tokens_saves_and_loads(tmp_path):
    config = ModelConfig(task="sequence", vocab_size=20, n_outputs=4, d_model=32, layers="mlstm")
    model = build_model(config)
    loaded = load(save(model, tmp_path / "classifier"))
    ids = torch.randint(0, 20, (3, 7))
    assert isinstance(loaded, SequenceModel) and torch.equal(loaded(ids).logits, model(ids).logits)
