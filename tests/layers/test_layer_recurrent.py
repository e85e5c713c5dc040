"""The recurrent layers: each equals its recurrence written out token by token from the
layer's weights; prefill, chunked prefill and stepping give one function; caches keep a
fixed size; the short convolution, gates and norms do what their formulas say."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnforms.core.states import AarenState, KVCache, LinearState, MLSTMState
from attnforms.layers import (
    AarenLayer, DeltaNet, GatedDeltaNet, GatedLinearAttention, KimiDeltaAttention, LinearAttention,
    LogSigmoidDecay, LowRankDecay, MambaDecay, MLSTMLayer, RecurrentCache, ShortConv, cache_nbytes,
    l2_normalize,
)

D, H, B, T = 32, 4, 2, 22
TIGHT = 1e-10


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def rms(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight


def causal_conv(x, weight):
    """Depthwise causal convolution as a sum of shifted copies: x `[B, T, C]`, weight `[C, 1, W]`."""
    W = weight.shape[-1]
    out = torch.zeros_like(x)
    for j in range(W):
        shift = W - 1 - j  # tap j reads the input `shift` steps back
        out[:, shift:] += weight[:, 0, j] * x[:, : x.shape[1] - shift]
    return out


def naive_delta_layer(layer, x):
    """A layer over the gated delta rule, written out from its weights with a token loop."""
    Bx, Tx, _ = x.shape
    Hh, K, V = layer.n_heads, layer.head_dim, layer.value_dim
    qkv = torch.cat([x @ layer.q_proj.weight.T, x @ layer.k_proj.weight.T, x @ layer.v_proj.weight.T], -1)
    if layer.conv is not None:
        qkv = causal_conv(qkv, layer.conv.weight)
    q, k, v = qkv.split([Hh * K, Hh * K, Hh * V], -1)
    q, k, v = q.view(Bx, Tx, Hh, K), k.view(Bx, Tx, Hh, K), v.view(Bx, Tx, Hh, V)
    g = beta = None
    if isinstance(layer, LinearAttention):
        q, k = F.elu(q) + 1, F.elu(k) + 1
    elif not isinstance(layer, GatedLinearAttention):
        unit = lambda t: t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6)  # noqa: E731
        q, k, v = unit(F.silu(q)), unit(F.silu(k)), F.silu(v)
        beta = torch.sigmoid(x @ layer.beta_proj.weight.T)
    if isinstance(layer, GatedLinearAttention):
        down, up = layer.decay_gate.proj
        g = F.logsigmoid(x @ down.weight.T @ up.weight.T + up.bias).view(Bx, Tx, Hh, K) / 16
    elif isinstance(layer, GatedDeltaNet):
        gate = layer.decay_gate
        g = -torch.exp(gate.A_log) * F.softplus(x @ gate.proj.weight.T + gate.dt_bias)
    elif isinstance(layer, KimiDeltaAttention):
        gate = layer.decay_gate
        down, up = gate.proj
        rate = F.softplus(x @ down.weight.T @ up.weight.T + gate.dt_bias).view(Bx, Tx, Hh, K)
        g = -torch.exp(gate.A_log)[:, None] * rate
    S = torch.zeros(Bx, Hh, K, V, dtype=x.dtype)
    outputs = []
    for t in range(Tx):
        if g is not None:
            decay = torch.exp(g[:, t])
            S = S * (decay[..., None, None] if decay.ndim == 2 else decay[..., None])
        k_t, v_t = k[:, t], v[:, t]
        if beta is None:
            S = S + k_t[..., None] * v_t[..., None, :]
        else:
            error = v_t - torch.einsum("bhkv,bhk->bhv", S, k_t)
            S = S + beta[:, t, :, None, None] * k_t[..., None] * error[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t] / math.sqrt(K)))
    o = rms(torch.stack(outputs, 1), layer.norm.weight)
    if isinstance(layer, (GatedLinearAttention, GatedDeltaNet)):
        o = o * F.silu(x @ layer.out_gate.proj.weight.T).view_as(o)
    elif isinstance(layer, KimiDeltaAttention):
        down, up = layer.out_gate.proj
        o = o * torch.sigmoid(x @ down.weight.T @ up.weight.T + up.bias).view_as(o)
    return o.flatten(-2) @ layer.o_proj.weight.T


DELTA_LAYERS = {
    "linear": lambda: LinearAttention(D, H),
    "linear-conv": lambda: LinearAttention(D, H, short_conv=True, conv_size=3),
    "gla": lambda: GatedLinearAttention(D, H, expand_v=2),
    "deltanet": lambda: DeltaNet(D, H),
    "gdn": lambda: GatedDeltaNet(D, H, expand_v=2),
    "kda": lambda: KimiDeltaAttention(D, H, head_dim=12),
}

ALL_LAYERS = {
    **DELTA_LAYERS,
    "mlstm-exp": lambda: MLSTMLayer(D, H),
    "mlstm-sigmoid-conv": lambda: MLSTMLayer(D, H, input_gate="sigmoid", short_conv=True),
    "aaren": lambda: AarenLayer(D, H),
}


@pytest.mark.parametrize("name", DELTA_LAYERS)
def test_delta_family_layer_matches_its_recurrence_written_out(name):
    layer = DELTA_LAYERS[name]().double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    assert rel_err(layer(x).output, naive_delta_layer(layer, x)) < TIGHT


def test_aaren_layer_is_causal_attention_of_a_learned_query():
    layer = AarenLayer(D, H).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    K = D // H
    k = (x @ layer.k_proj.weight.T).view(B, T, H, K)
    v = (x @ layer.v_proj.weight.T).view(B, T, H, K)
    scores = torch.einsum("hk,bshk->bhs", layer.query, k)[:, :, None, :].expand(B, H, T, T) / math.sqrt(K)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhts,bshv->bthv", scores.softmax(-1), v).reshape(B, T, D)
    assert rel_err(layer(x).output, o @ layer.o_proj.weight.T) < TIGHT


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_prefill_chunked_prefill_and_steps_equal_one_forward(name):
    torch.manual_seed(1)
    layer = ALL_LAYERS[name]()
    layer.chunk_size = 4  # several chunks in the chunk form
    layer = layer.double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    full = layer(x).output
    first = layer(x[:, :7], use_cache=True, form="chunk")
    second = layer(x[:, 7:13], first.cache, form="parallel")
    outputs, cache, shapes = [first.output, second.output], second.cache, set()
    for t in range(13, T):
        y, cache = layer.step(x[:, t], cache)
        outputs.append(y[:, None])
        shapes.add(tuple(tuple(s.shape) for s in cache.state) + (None if cache.conv is None else tuple(cache.conv.shape),))
    assert rel_err(torch.cat(outputs, 1), full) < TIGHT
    # The cache has one size whatever the number of tokens seen.
    assert len(shapes) == 1
    assert isinstance(cache, RecurrentCache)
    assert isinstance(cache.state, (LinearState, MLSTMState, AarenState))
    tensors = [*cache.state] + ([] if cache.conv is None else [cache.conv])
    assert cache_nbytes(cache) == sum(t.numel() * t.element_size() for t in tensors)


def test_short_conv_is_a_causal_depthwise_convolution_with_a_rolling_cache():
    conv = ShortConv(6, kernel_size=4).double()
    x = torch.randn(B, 11, 6, dtype=torch.float64)
    y, cache = conv(x)
    assert rel_err(y, causal_conv(x, conv.weight)) < 1e-14
    assert torch.equal(cache, x[:, -3:])
    # The cache owns just its W - 1 rows, not the whole input it was cut from.
    assert cache.untyped_storage().nbytes() == cache_nbytes(cache) == B * 3 * 6 * 8
    # Split at every length, including pieces shorter than the kernel.
    pieces, cache = [], None
    for part in (x[:, :2], x[:, 2:3], x[:, 3:9], x[:, 9:]):
        out, cache = conv(part, cache)
        pieces.append(out)
    assert rel_err(torch.cat(pieces, 1), y) < 1e-14
    with pytest.raises(ValueError, match="conv_size"):
        ShortConv(6, kernel_size=1)


def test_gates_are_log_decays_with_the_papers_initialisation():
    x = torch.randn(B, T, D, dtype=torch.float64) * 50  # extreme inputs: still finite and <= 0
    mamba, low_rank, gla = MambaDecay(D, H).double(), LowRankDecay(D, H, 8, rank=8).double(), LogSigmoidDecay(D, H, 8).double()
    for gate, shape in ((mamba, (B, T, H)), (low_rank, (B, T, H, 8)), (gla, (B, T, H, 8))):
        g = gate(x)
        assert g.shape == shape and bool(torch.isfinite(g).all()) and bool((g <= 0).all())
    for gate in (mamba, low_rank):
        A, dt = gate.A_log.exp(), F.softplus(gate.dt_bias)
        assert bool(((A >= 1) & (A <= 16)).all())
        assert bool(((dt >= 1e-4 - 1e-12) & (dt <= 0.1 + 1e-12)).all())
    # GLA: 16 · g is a log-sigmoid, so the decay exp(g) is a sigmoid raised to 1/16.
    assert torch.allclose(torch.exp(16 * gla(x)), torch.sigmoid(gla.proj(x)).view(B, T, H, 8))


def test_gla_decay_spread_screen_sets_the_rates_it_names(monkeypatch):
    import attnforms.layers.gates as gates

    monkeypatch.setattr(gates, "GLA_DECAY_RATE_INIT", (1e-3, 0.1))
    gla = LogSigmoidDecay(D, H, 8).double()
    with torch.no_grad():
        gla.proj[0].weight.zero_()  # zero input to the bias: the decay the bias alone sets
    rate = -gla(torch.randn(1, 1, D, dtype=torch.float64))
    assert bool(((rate >= 1e-3 - 1e-12) & (rate <= 0.1 + 1e-12)).all())
    assert float(rate.max() / rate.min()) > 3  # spread over timescales, not one value


def test_mlstm_gates_start_as_in_the_xlstm_cell_and_do_not_starve_the_read_out():
    torch.manual_seed(0)
    layer = MLSTMLayer(D, H)
    # xLSTM's mLSTMCell.reset_parameters: gate weights 0, input bias N(0, 0.1²), forget
    # biases linspace(3, 6) over the heads.
    assert not layer.i_proj.weight.any() and not layer.f_proj.weight.any()
    assert torch.equal(layer.f_proj.bias, torch.linspace(3.0, 6.0, H))
    assert float(layer.i_proj.bias.abs().max()) < 0.5
    # With exp(i) ≈ 1 the cell output h = Cᵀq / max(|nᵀq|, exp(-m)) is of order 1, so its
    # mean square is far above the output RMSNorm's eps and the norm takes it to unit RMS
    # (x / sqrt(mean(x²) + eps) has RMS sqrt(ms / (ms + eps))). An input-gate bias of -10
    # leaves mean(h²) near 1e-9 and the normalised read-out near 0.03 RMS.
    seen = []
    layer.norm.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    layer(torch.randn(B, T, D))
    h, normed = seen[0]
    mean_square = h.square().mean(-1)
    assert float(mean_square.median()) > 1e3 * layer.norm.eps
    assert float(normed.square().mean(-1).sqrt().median()) > 0.99


def test_l2_normalize_gives_unit_vectors():
    x = torch.randn(3, 5, 7, dtype=torch.float64) * 10
    assert torch.allclose(l2_normalize(x).norm(dim=-1), torch.ones(3, 5, dtype=torch.float64))


def test_recurrent_layers_refuse_other_caches_and_bad_arguments():
    layer = GatedDeltaNet(D, H)
    kv = KVCache(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(TypeError, match="RecurrentCache"):
        layer(torch.randn(1, 3, D), kv)
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(1, 3, D + 1))
    with pytest.raises(ValueError, match="n_heads"):
        KimiDeltaAttention(D, 5)
    with pytest.raises(ValueError, match="input_gate"):
        MLSTMLayer(D, H, input_gate="relu")


def test_mlstm_layer_passes_its_normaliser_gradient_to_the_op(monkeypatch):
    # Same output either way; the parameters' gradients differ (the held gradient is
    # TFLA's: the normaliser and stabiliser constants), and a bad value is refused.
    import attnforms.layers.recurrent as recurrent

    torch.manual_seed(0)
    exact = MLSTMLayer(D, H).double()
    held = MLSTMLayer(D, H, normaliser_gradient="held").double()
    held.load_state_dict(exact.state_dict())
    x = torch.randn(B, T, D, dtype=torch.float64)
    seen = []
    real = recurrent.mlstm
    monkeypatch.setattr(recurrent, "mlstm", lambda *a, **kw: seen.append(kw["normaliser_gradient"]) or real(*a, **kw))
    outputs = [layer(x).output for layer in (exact, held)]
    assert seen == ["exact", "held"]
    assert rel_err(outputs[1], outputs[0]) < TIGHT
    grads = [torch.autograd.grad(out.square().sum(), layer.qkv_proj.weight)[0]
             for out, layer in zip(outputs, (exact, held))]
    assert rel_err(grads[1], grads[0]) > 1e-6
    with pytest.raises(ValueError, match="normaliser_gradient"):
        MLSTMLayer(D, H, normaliser_gradient="tfla")
