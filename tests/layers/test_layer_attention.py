"""Attention and MultiHeadLatentAttention against attention written out by hand from the
layers' weights: head layouts, RoPE, QK-norm, output gate, sinks, windows, mods, the
bounded window cache, and MLA's expanded and absorbed paths."""
import math

import pytest
import torch

from attnforms.core.states import KVCache
from attnforms.layers import Attention, LatentCache, MultiHeadLatentAttention, RecurrentCache, Rotary

D, H, B, T = 32, 4, 2, 21
TIGHT = 1e-12


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def rope_complex(x, positions, base=10000.0):
    """RoPE as a complex rotation of the pairs (channel i, channel i + K/2): x `[B, T, H, K]`,
    positions `[T]`."""
    half = x.shape[-1] // 2
    pairs = torch.complex(x[..., :half], x[..., half:])
    freqs = base ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    rotated = pairs * torch.polar(torch.ones_like(freqs), positions[:, None].double() * freqs)[None, :, None]
    return torch.cat([rotated.real, rotated.imag], dim=-1)


def rms(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight


def naive_attention(layer: Attention, x, *, score_mod=None, mask_mod=None):
    """The layer's function spelled out: projections, QK-norm, RoPE, scores over the GQA
    groups, causal / window / mod mask, sinks as an extra softmax column, gate, W_o."""
    Bx, Tx, _ = x.shape
    Hq, G, K = layer.n_query_heads, layer.n_kv_heads, layer.head_dim
    q = (x @ layer.q_proj.weight.T).view(Bx, Tx, Hq, K)
    k = (x @ layer.k_proj.weight.T).view(Bx, Tx, G, K)
    v = (x @ layer.v_proj.weight.T).view(Bx, Tx, G, K)
    if layer.q_norm is not None:
        q, k = rms(q, layer.q_norm.weight), rms(k, layer.k_norm.weight)
    pos = torch.arange(Tx)
    if layer.rotary is not None:
        q, k = rope_complex(q, pos), rope_complex(k, pos)
    k, v = k.repeat_interleave(Hq // G, dim=2), v.repeat_interleave(Hq // G, dim=2)
    scores = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(K)
    qi, ki = pos[:, None], pos[None, :]
    if score_mod is not None:
        scores = score_mod(scores, torch.arange(Bx).view(-1, 1, 1, 1), torch.arange(Hq).view(1, -1, 1, 1), qi, ki)
    keep = ki <= qi
    if layer.window is not None:
        keep = keep & (ki > qi - layer.window)
    if mask_mod is not None:
        keep = keep & mask_mod(torch.arange(Bx).view(-1, 1, 1, 1), torch.arange(Hq).view(1, -1, 1, 1), qi, ki)
    scores = scores.masked_fill(~keep, float("-inf"))
    if layer.sinks is not None:
        sink = layer.sinks.view(1, Hq, 1, 1).expand(Bx, Hq, Tx, 1)
        p = torch.cat([scores, sink], dim=-1).softmax(-1)[..., :-1]
    else:
        p = scores.softmax(-1)
    o = torch.einsum("bhts,bshv->bthv", p, v).reshape(Bx, Tx, Hq * K)
    if layer.gate is not None:
        o = o * torch.sigmoid(x @ layer.gate.weight.T)
    return o @ layer.o_proj.weight.T


def decode(layer, x, prefill: int):
    """Prefill `prefill` tokens in the chunk form, then step the rest; outputs `[B, T, D]`
    and the cache after every step."""
    out = layer(x[:, :prefill], use_cache=True, form="chunk")
    outputs, cache, caches = [out.output], out.cache, []
    for t in range(prefill, x.shape[1]):
        y, cache = layer.step(x[:, t], cache)
        outputs.append(y[:, None])
        caches.append(cache)
    return torch.cat(outputs, dim=1), caches


@pytest.mark.parametrize("n_query_heads, n_kv_heads, layout", [
    pytest.param(4, 4, "MHA", id="MHA-4q-4kv"),
    pytest.param(4, 2, "GQA", id="GQA-4q-2kv"),
    pytest.param(4, 1, "MQA", id="MQA-4q-1kv"),
    pytest.param(2, 1, "SQA", id="SQA-2q-1kv"),
    pytest.param(2, 2, "SQA", id="sSQA-2q-2kv"),
])
def test_head_layouts_compute_the_right_heads_and_cache(n_query_heads, n_kv_heads, layout):
    layer = Attention(D, H, n_query_heads=n_query_heads, n_kv_heads=n_kv_heads).double()
    K = D // H  # SQA keeps the head dim of the full head count
    assert layer.layout == layout and layer.head_dim == K
    assert layer.q_proj.weight.shape == (n_query_heads * K, D)
    assert layer.k_proj.weight.shape == layer.v_proj.weight.shape == (n_kv_heads * K, D)
    assert layer.o_proj.weight.shape == (D, n_query_heads * K)
    x = torch.randn(B, T, D, dtype=torch.float64)
    out = layer(x, use_cache=True)
    assert rel_err(out.output, naive_attention(layer, x)) < TIGHT
    assert out.cache.k.shape == (B, T, n_kv_heads, K)  # the cache is set by the KV heads


def test_every_option_matches_attention_written_out():
    def alibi(score, b, h, q_idx, kv_idx):
        return score - 0.25 * (h + 1) * (q_idx - kv_idx)

    def skip_odd_distance(b, h, q_idx, kv_idx):
        return ((q_idx - kv_idx) % 3 != 1) | (q_idx == kv_idx)

    layer = Attention(D, H, n_kv_heads=2, qk_norm=True, output_gate=True, sinks=True, window=7,
                      score_mod=alibi, mask_mod=skip_odd_distance).double()
    with torch.no_grad():
        layer.sinks.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
        layer.q_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(B, T, D, dtype=torch.float64)
    expected = naive_attention(layer, x, score_mod=alibi, mask_mod=skip_odd_distance)
    assert rel_err(layer(x).output, expected) < TIGHT
    assert rel_err(decode(layer, x, prefill=5)[0], expected) < TIGHT


def test_window_cache_stays_bounded_while_decoding():
    window = 5
    layer = Attention(D, H, n_kv_heads=2, window=window).double()
    x = torch.randn(B, 30, D, dtype=torch.float64)
    outputs, caches = decode(layer, x, prefill=3)
    assert rel_err(outputs, naive_attention(layer, x)) < TIGHT
    assert all(cache.k.shape[1] == window - 1 for cache in caches[window:])
    assert caches[-1].positions.tolist() == [list(range(30 - window + 1, 30))] * B
    assert caches[-1].next_position.tolist() == [30] * B


def test_global_cache_grows_by_one_slot_per_token():
    layer = Attention(D, H).double()
    _, caches = decode(layer, torch.randn(1, 12, D, dtype=torch.float64), prefill=4)
    assert [cache.k.shape[1] for cache in caches] == list(range(5, 13))


def test_rotary_scores_depend_only_on_relative_position():
    rotary = Rotary(16)
    q, k = torch.randn(1, 1, 3, 16, dtype=torch.float64), torch.randn(1, 1, 3, 16, dtype=torch.float64)

    def score(m, n):
        at = lambda p: torch.tensor([[p]])  # noqa: E731
        return (rotary(q, at(m)) * rotary(k, at(n))).sum(-1)

    for m, n, shift in [(5, 2, 11), (0, 0, 1000), (3, 9, 77), (40000, 39990, -39990)]:
        assert torch.allclose(score(m, n), score(m + shift, n + shift), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(score(5, 2), score(5, 3))
    # A rotation keeps norms, and position 0 is the identity.
    x, pos = torch.randn(2, 9, 3, 16, dtype=torch.float64), torch.arange(9).expand(2, 9)
    assert torch.allclose(rotary(x, pos).norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(rotary(x, torch.zeros_like(pos)), x)
    assert rel_err(rotary(x, pos), rope_complex(x, torch.arange(9))) < TIGHT


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_heads=5), "n_heads"),
    (dict(n_heads=4, n_query_heads=8), "n_query_heads"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(n_heads=4, window=0), "window"),
])
def test_bad_head_counts_raise_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Attention(D, **kwargs)


def test_wrong_cache_type_is_refused():
    layer = Attention(D, H)
    state = RecurrentCache(None, None)
    with pytest.raises(TypeError, match="cache: expected None or a KVCache"):
        layer(torch.randn(1, 2, D), state)
    with pytest.raises(ValueError, match="x: expected one token per row"):
        layer.step(torch.randn(1, 2, D))


# MLA ------------------------------------------------------------------------------------

def naive_mla(layer: MultiHeadLatentAttention, x):
    """DeepSeek-V2's MLA spelled out in the expanded form."""
    Bx, Tx, _ = x.shape
    Hh, N, P, V, R = layer.n_heads, layer.nope_dim, layer.rope_dim, layer.v_dim, layer.kv_rank
    c_q = x if layer.q_down is None else rms(x @ layer.q_down.weight.T, layer.q_norm.weight)
    q = (c_q @ layer.q_up.weight.T).view(Bx, Tx, Hh, N + P)
    kv = x @ layer.kv_down.weight.T
    c, k_r = rms(kv[..., :R], layer.kv_norm.weight), kv[..., R:]
    pos = torch.arange(Tx)
    q_nope, q_rope = q[..., :N], q[..., N:]
    if P:
        q_rope, k_r = rope_complex(q_rope, pos), rope_complex(k_r[:, :, None], pos)[:, :, 0]
    up = (c @ layer.kv_up.weight.T).view(Bx, Tx, Hh, N + V)
    k = torch.cat([up[..., :N], k_r[:, :, None].expand(-1, -1, Hh, -1)], dim=-1)
    scores = torch.einsum("bthk,bshk->bhts", torch.cat([q_nope, q_rope], -1), k) / math.sqrt(N + P)
    scores = scores.masked_fill(torch.ones(Tx, Tx, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhts,bshv->bthv", scores.softmax(-1), up[..., N:]).reshape(Bx, Tx, Hh * V)
    return o @ layer.o_proj.weight.T


@pytest.mark.parametrize("q_rank, rope_dim", [
    pytest.param(None, 4, id="rope4"), pytest.param(12, 8, id="qrank12-rope8"),
    pytest.param(None, 0, id="nope"),
])
def test_mla_expanded_and_absorbed_paths_match_mla_written_out(q_rank, rope_dim):
    R = 20
    layer = MultiHeadLatentAttention(D, H, kv_rank=R, q_rank=q_rank, rope_dim=rope_dim, v_dim=6).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    expected = naive_mla(layer, x)
    assert rel_err(layer(x).output, expected) < TIGHT
    outputs, caches = decode(layer, x, prefill=6)  # steps take the absorbed path
    assert rel_err(outputs, expected) < TIGHT
    last = caches[-1]
    assert isinstance(last, LatentCache)
    # Only the latent and the shared rotary key are cached: R + P numbers per token.
    assert last.latent.shape == (B, T, R) and last.rope_key.shape == (B, T, rope_dim)
    assert last.next_position.tolist() == [T] * B


def test_mla_chunked_prefill_equals_one_call():
    layer = MultiHeadLatentAttention(D, H, kv_rank=16).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    first = layer(x[:, :8], use_cache=True)
    second = layer(x[:, 8:], first.cache)
    assert rel_err(torch.cat([first.output, second.output], 1), layer(x).output) < TIGHT
    with pytest.raises(TypeError, match="LatentCache"):
        layer(x, KVCache(*first.cache))
