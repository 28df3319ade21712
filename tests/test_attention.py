"""The CPU decode attention (agents.attention) and the allocator setting load_backbone makes."""

from __future__ import annotations

import pytest
import torch

from agents import backbone as bb
from agents import attention
from agents.attention import CPU_ATTENTION, cpu_attention, register
from agents.generation import generate, sequence_logprobs

pytestmark = pytest.mark.usefixtures("single_torch_thread")


class _Module:
    num_key_value_groups = 3
    is_causal = True


def _sdpa(query, key, value, mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(_Module(), query, key, value, mask)[0]


@pytest.mark.parametrize("kind", ["none", "bool", "additive"])
def test_one_query_token_matches_sdpa_with_grouped_heads_and_padding(kind):
    gen = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, length, dim = 5, 6, 2, 11, 8
    query = torch.randn(batch, heads, 1, dim, generator=gen)
    key = torch.randn(batch, kv_heads, length, dim, generator=gen)
    value = torch.randn(batch, kv_heads, length, dim, generator=gen)
    mask = None
    if kind != "none":
        attend = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        attend[1, ..., :4] = False  # left padding
        attend[3, ..., :9] = False
        mask = attend if kind == "bool" else torch.zeros(attend.shape).masked_fill(~attend, float("-inf"))
    module = _Module()
    module.num_key_value_groups = heads // kv_heads
    out, weights = cpu_attention(module, query, key, value, mask)
    assert weights is None and out.shape == (batch, 1, heads, dim)
    expected = _sdpa(query, key, value, mask)
    assert torch.allclose(out, expected, atol=1e-5)
    if kind != "none":  # the padded positions really are left out: changing them changes nothing
        key[1, :, :4] += 100.0
        value[1, :, :4] -= 50.0
        assert torch.allclose(cpu_attention(module, query, key, value, mask)[0], out, atol=1e-5)


def test_many_query_tokens_over_long_keys_go_to_sdpa():
    gen = torch.Generator().manual_seed(1)
    length = attention.SHORT_KEYS + 1
    query = torch.randn(2, 6, length, 8, generator=gen)
    key, value = torch.randn(2, 2, length, 8, generator=gen), torch.randn(2, 2, length, 8, generator=gen)
    assert torch.equal(cpu_attention(_Module(), query, key, value, None)[0], _sdpa(query, key, value, None))


def _short_case(kind, gen):
    """Query, key, value and mask of a short pass: a padded prompt (square, causal & padding),
    completions over a cache (Q < L), or a square pass without a mask (SDPA's causal flag)."""
    batch, heads, kv_heads, dim = 3, 6, 2, 8
    q_len, k_len = (5, 12) if kind == "cache" else (12, 12)
    query = torch.randn(batch, heads, q_len, dim, generator=gen, requires_grad=True)
    key = torch.randn(batch, kv_heads, k_len, dim, generator=gen, requires_grad=True)
    value = torch.randn(batch, kv_heads, k_len, dim, generator=gen, requires_grad=True)
    if kind == "none":
        return query, key, value, None, None
    real = torch.ones(batch, k_len, dtype=torch.bool)
    real[1, :4] = False  # left padding
    real[2, -3:] = kind != "cache"  # right padding of a completion, none for the prompt
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    mask = causal[None, None] & real[:, None, None, :]  # (B, 1, Q, L)
    queries = real[:, -q_len:] if kind == "cache" else real  # the real query positions
    return query, key, value, mask, queries


@pytest.mark.parametrize("kind", ["padded", "cache", "none"])
def test_short_keys_match_sdpa_with_gradients(kind, monkeypatch):
    """The two-product path of short passes gives SDPA's outputs and gradients at every real
    query (grouped heads, padding, a cache before the queries, no mask at all)."""
    calls = []
    real_short = attention._attend_short
    monkeypatch.setattr(attention, "_attend_short", lambda *a: calls.append(1) or real_short(*a))
    gen = torch.Generator().manual_seed(3)
    query, key, value, mask, queries = _short_case(kind, gen)
    assert key.shape[2] <= attention.SHORT_KEYS and query.shape[2] > 1
    weight = torch.randn(query.shape[0], query.shape[2], query.shape[1], query.shape[3], generator=gen)
    if queries is not None:
        weight = weight * queries[:, :, None, None]  # the loss reads real queries only
    grads = []
    for fn in (lambda: cpu_attention(_Module(), query, key, value, mask)[0],
               lambda: _sdpa(query, key, value, mask)):
        out = fn()
        (out * weight).sum().backward()
        grads.append((out.detach() * (weight != 0), [t.grad.clone() for t in (query, key, value)]))
        for t in (query, key, value):
            t.grad = None
    (ours, our_grads), (ref, ref_grads) = grads
    assert calls == [1]  # the first pass took the two-product path
    assert torch.allclose(ours, ref, atol=1e-5)
    for a, b in zip(our_grads, ref_grads):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-5)


def _causal_padding_mask(spans, length):
    real = torch.zeros(len(spans), length, dtype=torch.bool)
    for row, (start, end) in enumerate(spans):
        real[row, start:end] = True
    return torch.ones(length, length, dtype=torch.bool).tril()[None, None] & real[:, None, None, :]


def test_long_padded_prompts_are_attended_one_sequence_at_a_time_with_the_same_result():
    gen = torch.Generator().manual_seed(2)
    length = attention.LONG_PROMPT
    spans = [(0, length), (300, length), (0, length - 40), (length - 1, length)]  # left, right padding, one token
    query = torch.randn(4, 6, length, 8, generator=gen)
    key, value = torch.randn(4, 2, length, 8, generator=gen), torch.randn(4, 2, length, 8, generator=gen)
    mask = _causal_padding_mask(spans, length)
    assert attention._padded_rows(query, key, mask) == spans
    with torch.no_grad():
        out = cpu_attention(_Module(), query, key, value, mask)[0]
    expected = _sdpa(query, key, value, mask)
    for row, (start, end) in enumerate(spans):
        assert torch.allclose(out[row, start:end], expected[row, start:end], atol=1e-5)
        assert not out[row, :start].any() and not out[row, end:].any()


def test_the_one_sequence_path_is_left_to_sdpa_where_it_does_not_apply():
    length = attention.LONG_PROMPT
    query, key = torch.zeros(2, 6, length, 8), torch.zeros(2, 2, length, 8)
    mask = _causal_padding_mask([(5, length), (0, length)], length)
    holed = mask.clone()
    holed[0, ..., 50] = False  # a hole inside a sequence
    assert attention._padded_rows(query, key, holed) is None
    assert attention._padded_rows(query[..., :-1, :], key[..., :-1, :], mask[..., :-1, :-1]) is None  # short
    assert attention._padded_rows(query[..., -1:, :], key, mask[..., -1:, :]) is None  # a cache before it
    assert attention._padded_rows(query.requires_grad_(), key, mask) is None  # gradients: one masked SDPA call


def test_generation_with_the_cpu_attention_agrees_with_sdpa(tiny_backbone, monkeypatch):
    """Same greedy tokens and log-probs (fp32 rounding) for left-padded prompts of different
    lengths, and the training forward pass recomputes the sampler's log-probs."""
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    prompts = ["Where does Alice live?", "Bob moved to Lyon in May and adopted a dog."]
    stop = [tok.convert_tokens_to_ids("<|im_end|>")]
    runs = {}
    for name in ("sdpa", register(), "long-prompt path"):
        if name == "long-prompt path":  # every prompt counts as long: the one-sequence path on a real model
            monkeypatch.setattr(attention, "LONG_PROMPT", 2)
            name = CPU_ATTENTION
        model.set_attn_implementation(name)
        runs[name] = generate(model, tok, prompts, num_samples=2, max_new_tokens=12, temperature=0,
                              stop_token_ids=stop)
        if name == CPU_ATTENTION:
            ours, ref = runs[CPU_ATTENTION], runs["sdpa"]
            assert torch.equal(ours.completion_ids, ref.completion_ids)
            assert torch.allclose(ours.logprobs, ref.logprobs, atol=1e-5)
            with torch.no_grad():  # the padded prompt + completion pass, as the trainers' recomputation runs it
                recomputed = sequence_logprobs(model, *ours.sample_prompts(), ours.completion_ids,
                                               ours.completion_mask)
            assert torch.allclose(recomputed, ours.logprobs, atol=1e-4)
    model.set_attn_implementation("sdpa")


def test_loaded_models_decode_with_it_on_cpu_and_the_tiny_alias_keeps_sdpa(tmp_path, tiny_backbone):
    tiny_backbone.model.save_pretrained(tmp_path)
    tiny_backbone.tokenizer.save_pretrained(tmp_path)
    assert bb.load_backbone(str(tmp_path), device="cpu").model.config._attn_implementation == CPU_ATTENTION
    assert bb.load_backbone("tiny", device="cpu").model.config._attn_implementation == "sdpa"


def test_keeping_freed_memory_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(bb.KEEP_MEMORY_ENV_VAR, "0")
    assert bb.keep_freed_memory.__wrapped__() is False
    monkeypatch.delenv(bb.KEEP_MEMORY_ENV_VAR)
    import platform

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert bb.keep_freed_memory.__wrapped__() is expected
