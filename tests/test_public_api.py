"""The public names and signatures are a contract (DESIGN.md): pin them."""
import inspect

import attnforms as af

EXPORTED = {
    "AarenState", "AttentionOutput", "FAMILIES", "ImplUnavailableError", "KVCache",
    "LinearState", "MLSTMState", "aaren", "delta_rule", "gated_delta_rule", "gated_deltanet",
    "gla", "kda", "linear_attention", "gated_delta_rule_update_", "mlstm", "mods", "simple_gla", "sliding_window_attention",
    "softmax_attention",
}
COMMON = ["scale", "initial_state", "output_final_state", "cu_seqlens", "chunk_size", "form", "impl"]


def test_exported_names_are_pinned():
    assert set(af.__all__) == EXPORTED
    assert all(hasattr(af, name) for name in EXPORTED)


def _keywords(fn):
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]


def _positional(fn):
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]


def test_softmax_attention_signature():
    assert _positional(af.softmax_attention) == ["q", "k", "v"]
    assert _keywords(af.softmax_attention) == ["causal", "window", "score_mod", "mask_mod", "block_mask", "sinks"] + COMMON + ["return_lse"]


MODS = {
    "BlockMask", "alibi", "alibi_slopes", "and_masks", "box_rpb", "box_rpb_tables", "causal",
    "compose_scores", "create_block_mask", "cumulative_log_forget", "document", "forgetting",
    "neighbourhood_2d", "or_masks", "prefix_lm", "sink_tokens", "sliding_window", "t5_bucket",
    "t5_relative_bias", "tanh_softcap",
}


def test_mods_names_are_pinned():
    assert set(af.mods.__all__) == MODS
    assert all(hasattr(af.mods, name) for name in MODS)


def test_create_block_mask_signature():
    params = inspect.signature(af.mods.create_block_mask).parameters
    assert list(params)[:8] == ["mask_mod", "B", "H", "T", "S", "block_q", "block_kv", "device"]
    assert params["block_q"].default == 128 and params["block_kv"].default == 128


def test_gated_delta_rule_signature():
    assert _positional(af.gated_delta_rule) == ["q", "k", "v"]
    assert _keywords(af.gated_delta_rule) == ["g", "beta"] + COMMON


def test_mlstm_signature():
    assert _positional(af.mlstm) == ["q", "k", "v", "i", "f"]
    # normaliser_gradient (session 15): an optional extension, the gradient TFLA computes.
    assert _keywords(af.mlstm) == ["input_gate", "normaliser_gradient"] + COMMON


def test_aaren_signature():
    assert _positional(af.aaren) == ["q", "k", "v"]
    assert _keywords(af.aaren) == COMMON


def test_every_family_is_registered_with_three_reference_forms():
    assert set(af.FAMILIES) == {"softmax_attention", "gated_delta_rule", "mlstm", "aaren"}
    for family in af.FAMILIES.values():
        assert set(family.reference) == {"parallel", "chunk", "recurrent"}


def test_defaults():
    params = inspect.signature(af.softmax_attention).parameters
    assert params["causal"].default is True
    for fn in (af.softmax_attention, af.gated_delta_rule, af.mlstm, af.aaren):
        params = inspect.signature(fn).parameters
        assert params["form"].default == "auto" and params["impl"].default == "auto"
        assert params["output_final_state"].default is False
