"""Tests for agents.generation: sampling log-probs, masks, shared prompts, recomputation."""

from __future__ import annotations

import pytest
import torch

from agents.generation import (
    filter_logits,
    generate,
    left_pad,
    reference_logprobs,
    sequence_logprobs,
)
from agents.lora import add_lora, adapter_parameters

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PROMPTS = [
    "<|im_start|>user\nWhere does Alice live?<|im_end|>\n<|im_start|>assistant\n",
    "Hi",
    "A noticeably longer prompt, so that the batch needs real left padding: {\"facts\": []}",
]
ATOL = 1e-4  # fp32: sampling (incremental, KV cache) vs recomputation (one full forward)


def _stop_ids(tokenizer, count=24):
    """Stop tokens frequent enough that random-model samples end at different steps."""
    return [tokenizer.eos_token_id] + list(range(60, 60 + count))


def _perturb(params, scale=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def test_left_pad_shapes_and_masks():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_filter_logits_top_k_and_top_p_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1]]))
    inf = float("-inf")
    kept_k = filter_logits(logits, top_k=2)
    assert torch.isinf(kept_k).tolist() == [[False, False, False, True]]  # ties at the k-th value stay
    kept_p = filter_logits(logits, top_p=0.6)  # 0.5 < 0.6, so the next token is needed too
    assert (kept_p == inf).sum().item() == 2 and kept_p[0, 0] == logits[0, 0]
    assert torch.equal(filter_logits(logits, top_p=0.4), torch.tensor([[logits[0, 0], inf, inf, inf]]))
    assert torch.equal(filter_logits(logits), logits)


def test_sampling_logprobs_equal_recomputed_ones(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    rollout = generate(
        model, tok, PROMPTS, num_samples=3, max_new_tokens=24, temperature=0.7, top_p=0.9, seed=0,
        stop_token_ids=_stop_ids(tok),
    )
    n_seq = len(PROMPTS) * 3
    assert rollout.prompt_ids.shape[0] == len(PROMPTS)
    assert rollout.completion_ids.shape == rollout.completion_mask.shape == rollout.logprobs.shape
    assert rollout.completion_ids.shape[0] == n_seq
    assert rollout.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rollout.prompt_mask.sum(-1).tolist() == [len(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    lengths = rollout.completion_mask.sum(-1)
    assert len(set(lengths.tolist())) > 1  # sequences really stop at different steps

    recomputed = sequence_logprobs(
        model, *rollout.sample_prompts(), rollout.completion_ids, rollout.completion_mask, temperature=0.7
    )
    assert torch.allclose(recomputed, rollout.logprobs, atol=ATOL)
    assert (rollout.logprobs[rollout.completion_mask.bool()] < 0).all()
    # Recorded log-probs are under the temperature-scaled distribution, not another one.
    other = sequence_logprobs(model, *rollout.sample_prompts(), rollout.completion_ids, rollout.completion_mask)
    assert not torch.allclose(other, rollout.logprobs, atol=ATOL)


def test_masks_stop_at_the_stop_token(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    stop = _stop_ids(tok)
    rollout = generate(model, tok, PROMPTS, num_samples=4, max_new_tokens=30, seed=1, stop_token_ids=stop)
    for ids, mask, logp, text in zip(rollout.completion_ids, rollout.completion_mask, rollout.logprobs, rollout.texts):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()  # 1 ... 1 0 ... 0
        stops = [i for i, t in enumerate(ids.tolist()) if t in stop]
        if stops and stops[0] < length:
            assert stops[0] == length - 1  # the mask includes the stop token and nothing after
        else:
            assert length == rollout.completion_ids.shape[1]  # ran to the length limit
        assert (ids[length:] == tok.pad_token_id).all()
        assert (logp[length:] == 0).all()
        assert text == tok.decode(ids[:length].tolist(), skip_special_tokens=True)
    # The batch stops as soon as every sequence has stopped.
    assert rollout.completion_ids.shape[1] == int(rollout.completion_mask.sum(-1).max())


def test_greedy_batched_equals_one_prompt_at_a_time(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, temperature=0)
    assert batched.temperature == 1.0
    for i, prompt in enumerate(PROMPTS):
        single = generate(model, tok, [prompt], max_new_tokens=12, temperature=0)
        length = single.completion_ids.shape[1]
        assert torch.equal(single.completion_ids[0], batched.completion_ids[i, :length])
        assert torch.allclose(single.logprobs[0], batched.logprobs[i, :length], atol=ATOL)
        assert single.texts[0] == batched.texts[i]
    top1 = generate(model, tok, PROMPTS, num_samples=2, max_new_tokens=12, temperature=1.0, top_k=1, seed=3)
    assert torch.equal(top1.completion_ids, batched.completion_ids.repeat_interleave(2, dim=0))


def test_token_id_prompts_and_seeds(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    kwargs = dict(num_samples=2, max_new_tokens=10, stop_token_ids=[])
    a = generate(model, tok, PROMPTS, seed=7, **kwargs)
    b = generate(model, tok, ids, seed=7, **kwargs)
    c = generate(model, tok, PROMPTS, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_shared_prompt_runs_each_prompt_once(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    shapes = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape)))
    n = 4
    try:
        shared = generate(model, tok, PROMPTS, num_samples=n, max_new_tokens=8, seed=5, stop_token_ids=[])
        calls_shared = list(shapes)
        shapes.clear()
        naive = generate(
            model, tok, PROMPTS, num_samples=n, max_new_tokens=8, seed=5, stop_token_ids=[], share_prompt=False
        )
        calls_naive = list(shapes)
    finally:
        hook.remove()
    prompt_len = shared.prompt_ids.shape[1]
    assert calls_shared[0] == (len(PROMPTS), prompt_len)  # one prompt forward, B rows
    assert calls_shared[1:] == [(len(PROMPTS) * n, 1)] * 7  # then one token per sample per step
    assert calls_naive[0] == (len(PROMPTS) * n, prompt_len)
    # Same seed, same distributions: the same samples and log-probs as the naive path.
    assert torch.equal(shared.completion_ids, naive.completion_ids)
    assert torch.allclose(shared.logprobs, naive.logprobs, atol=ATOL)


def test_gradients_reach_only_lora_parameters(tiny_backbone):
    model = add_lora(tiny_backbone, r=4, per_role=True)
    tok = tiny_backbone.tokenizer
    _perturb(adapter_parameters(model, "extract"))  # B = 0 at init would hide A's gradient
    rollout = generate(model, tok, PROMPTS, num_samples=2, max_new_tokens=6, seed=0)
    logprobs, entropy = sequence_logprobs(
        model, *rollout.sample_prompts(), rollout.completion_ids, rollout.completion_mask, return_entropy=True
    )
    (-(logprobs.sum()) - 0.01 * entropy.sum()).backward()
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert param.grad is None, name
    active = adapter_parameters(model, "extract")
    assert active and all(p.grad is not None and p.grad.abs().sum() > 0 for p in active)
    assert all(p.grad is None for p in adapter_parameters(model, "manage"))  # inactive adapter


def test_entropy_matches_the_distribution(tiny_backbone):
    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    rollout = generate(model, tok, PROMPTS[:1], max_new_tokens=5, stop_token_ids=[], seed=0)
    full = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, rollout.prompt_ids.shape[1] - 1 : -1] / 0.5
        _, entropy = sequence_logprobs(
            model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask,
            temperature=0.5, return_entropy=True,
        )
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(entropy[0], expected, atol=ATOL)


def test_chunking_and_reference_policy(tiny_backbone):
    tok = tiny_backbone.tokenizer
    model = add_lora(tiny_backbone, r=4)
    rollout = generate(model, tok, PROMPTS, num_samples=2, max_new_tokens=8, seed=2, stop_token_ids=_stop_ids(tok))
    args = (*rollout.sample_prompts(), rollout.completion_ids, rollout.completion_mask)
    with torch.no_grad():
        base_rollout_logprobs = sequence_logprobs(model, *args)  # LoRA B = 0: policy == base
    _perturb(adapter_parameters(model, "policy"))
    policy = sequence_logprobs(model, *args)
    chunked = sequence_logprobs(model, *args, chunk_size=4)
    reference = reference_logprobs(model, *args, chunk_size=5)
    assert torch.allclose(policy, chunked, atol=1e-5)
    assert not reference.requires_grad and policy.requires_grad
    assert torch.allclose(reference, base_rollout_logprobs, atol=1e-5)
    assert not torch.allclose(policy, reference, atol=1e-3)
    assert model.active_adapter == "policy"  # the adapter is back on after the reference pass


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"seed": 1, "generator": torch.Generator()}, "seed or generator"),
    ],
)
def test_bad_settings_raise(tiny_backbone, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_backbone.model, tiny_backbone.tokenizer, ["x"], **kwargs)


def test_bad_prompts_raise(tiny_backbone):
    with pytest.raises(ValueError):
        generate(tiny_backbone.model, tiny_backbone.tokenizer, [])
    with pytest.raises(ValueError):
        generate(tiny_backbone.model, tiny_backbone.tokenizer, "a bare string")
    with pytest.raises(ValueError, match="empty"):
        generate(tiny_backbone.model, tiny_backbone.tokenizer, ["ok", ""])


def test_generation_uses_no_deprecated_transformers_argument(tiny_backbone):
    """The KV cache goes in under the keyword this transformers version expects: no
    "``past_key_values`` is deprecated" warning (it goes away in transformers 5.40)."""
    import warnings

    model = add_lora(tiny_backbone)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(model, tiny_backbone.tokenizer, PROMPTS[:2], num_samples=2, max_new_tokens=4, seed=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not [m for m in messages if "past_key_values" in m], messages


def test_inverse_cdf_sampling_draws_the_categorical_distribution():
    """Large vocabularies sample by the inverse CDF (multinomial is slow there): frequencies
    match the probabilities, zero-probability tokens are never drawn."""
    from agents.generation import INVERSE_CDF_MIN_VOCAB, sample_categorical

    vocab = INVERSE_CDF_MIN_VOCAB * 2
    probs = torch.zeros(4, vocab)
    probs[:, [3, 700, vocab - 1]] = torch.tensor([0.5, 0.3, 0.2])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_categorical(probs, gen) for _ in range(2500)])  # 10,000 draws
    freq = {t: float((draws == t).float().mean()) for t in (3, 700, vocab - 1)}
    assert set(draws.tolist()) == {3, 700, vocab - 1}
    assert freq[3] == pytest.approx(0.5, abs=0.02) and freq[700] == pytest.approx(0.3, abs=0.02)
    assert freq[vocab - 1] == pytest.approx(0.2, abs=0.02)


BF16_ATOL = 0.1
"""bf16 (mixed precision): sampling (KV cache, one token at a time) and recomputation (one
full forward) round differently in bf16's 8-bit mantissa, about 0.4% per product. On the
2-layer tiny model the two agree to well within 0.1; on SmolLM2-135M (30 layers, LoRA r16)
346 sampled tokens differed by 0.05 on average and 0.29 at most. That is why the trainers
recompute the old log-probs in bf16 (``recompute_old_logprobs``) and the first PPO ratio
is then exactly 1 (``tests/test_update.py``)."""


def test_mixed_precision_trains_fp32_lora_on_a_bf16_model():
    from agents.backbone import mixed_precision, model_dtype, tiny_backbone

    backbone = tiny_backbone(0)
    backbone.model.to(torch.bfloat16)
    model = add_lora(backbone, r=4)
    _perturb(adapter_parameters(model, "policy"))
    assert model_dtype(model) is torch.bfloat16
    lora = adapter_parameters(model, "policy")
    assert {p.dtype for p in lora} == {torch.float32}
    rollout = generate(model, backbone.tokenizer, PROMPTS, num_samples=2, max_new_tokens=8, seed=0,
                       stop_token_ids=_stop_ids(backbone.tokenizer))
    recomputed = sequence_logprobs(model, *rollout.sample_prompts(), rollout.completion_ids, rollout.completion_mask)
    assert recomputed.dtype is torch.float32
    gap = (recomputed - rollout.logprobs).abs()[rollout.completion_mask.bool()]
    assert gap.max() < BF16_ATOL
    recomputed.sum().backward()
    assert all(p.grad is not None and p.grad.dtype is torch.float32 and p.grad.abs().sum() > 0 for p in lora)
    with mixed_precision(model):  # the context switches peft's input casting off only while open
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")


def test_mixed_precision_is_a_no_op_in_fp32_and_without_adapters():
    from agents.backbone import mixed_precision, tiny_backbone

    backbone = tiny_backbone(0)
    with mixed_precision(backbone.model):
        assert not torch.is_autocast_enabled("cpu")
    backbone.model.to(torch.bfloat16)  # one dtype throughout: nothing to cast
    with mixed_precision(backbone.model):
        assert not torch.is_autocast_enabled("cpu")


def test_logits_are_kept_only_at_the_completion_positions(tiny_backbone):
    """``completion_positions`` picks the P-1 .. P+T-2 logits, as the full forward pass does."""
    from agents.generation import completion_positions

    model, tok = tiny_backbone.model, tiny_backbone.tokenizer
    ids = torch.tensor([tok("Where does Alice live? In Lyon.")["input_ids"]])
    prompt_len, num_new = 4, ids.shape[1] - 4
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, prompt_len - 1: -1]
        kept = model(input_ids=ids, logits_to_keep=completion_positions(prompt_len, num_new)).logits
    assert kept.shape == full.shape
    assert torch.allclose(kept, full, atol=1e-5)


@pytest.mark.parametrize("vocab", [300, 5000])
@pytest.mark.parametrize("with_entropy", [False, True])
def test_logprobs_and_entropy_by_hand_for_small_and_large_vocabularies(vocab, with_entropy):
    """Small vocabularies take log-sum-exp, large ones the fused cross-entropy or a shared
    log_softmax: all give log p(token) and the entropy of softmax(logits), with gradients."""
    from agents.generation import logits_to_logprobs

    gen = torch.Generator().manual_seed(vocab)
    logits = (torch.randn(3, 4, vocab, generator=gen) * 3).requires_grad_()
    ids = torch.randint(0, vocab, (3, 4), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    logprobs, entropy = logits_to_logprobs(logits, ids, mask, with_entropy=with_entropy)
    expected = torch.distributions.Categorical(logits=logits.detach())
    assert torch.allclose(logprobs.detach(), expected.log_prob(ids) * mask, atol=1e-5)
    if with_entropy:
        assert torch.allclose(entropy.detach(), expected.entropy() * mask, atol=1e-4)
    else:
        assert entropy is None
    logprobs.sum().backward()
    grad = torch.softmax(logits.detach(), -1) * -mask[..., None]  # d log p(i) / d logits = onehot - p
    grad.scatter_add_(-1, ids[..., None], mask[..., None].float())
    assert torch.allclose(logits.grad, grad, atol=1e-5)


def test_finished_marks_the_samples_that_reached_a_stop_token(tiny_backbone):
    from agents.sampler import generations

    tok = tiny_backbone.tokenizer
    stops = _stop_ids(tok)
    rollout = generate(tiny_backbone.model, tok, PROMPTS, num_samples=4, max_new_tokens=6, seed=0, stop_token_ids=stops)
    lengths = rollout.completion_mask.sum(-1)
    last = rollout.completion_ids.gather(1, (lengths - 1)[:, None]).squeeze(1)
    expected = torch.isin(last, torch.tensor(stops))
    assert torch.equal(rollout.finished, expected)
    assert 0 < int(expected.sum()) < len(expected)  # both kinds present
    flat = [g for prompt in generations(rollout) for g in prompt]
    assert [g.truncated for g in flat] == (~expected).tolist()


@pytest.mark.parametrize("num_new", [1, 5])
def test_shared_prompt_logprobs_and_gradients_equal_the_full_pass(tiny_backbone, num_new):
    """Each distinct prompt computed once (share_prompts) gives the full pass's log-probs, entropy
    and LoRA gradients: rows repeat prompts out of order, prompts differ in length (left
    padding), completions in length (right padding), and the repeated cache carries the
    prompt's gradient."""
    from agents.generation import shared_prompt_rows

    tok = tiny_backbone.tokenizer
    model = add_lora(tiny_backbone, r=4)
    params = adapter_parameters(model, "policy")
    _perturb(params)
    prompts = [PROMPTS[i] for i in (0, 2, 0, 1, 2, 0)]
    ids, mask = left_pad([tok(p, add_special_tokens=False)["input_ids"] for p in prompts], pad_id=tok.pad_token_id)
    gen = torch.Generator().manual_seed(3)
    completion = torch.randint(60, 200, (len(prompts), num_new), generator=gen)
    completion_mask = torch.ones_like(completion, dtype=torch.float32)
    if num_new > 1:
        completion_mask[1, 3:] = 0  # a completion that stopped early
        completion_mask[3, 1:] = 0
    first, inverse = shared_prompt_rows(ids, mask)
    assert sorted(first.tolist()) == [0, 1, 3] and inverse[[0, 2, 5]].unique().numel() == 1
    assert shared_prompt_rows(ids[:3:2][:1], mask[:3:2][:1]) is None  # one row: nothing to share

    results = []
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        logp, entropy = sequence_logprobs(model, ids, mask, completion, completion_mask, temperature=0.7,
                                          return_entropy=True, share_prompts=share)
        (logp.sum() + 0.1 * entropy.sum()).backward()
        results.append((logp.detach(), entropy.detach(), [p.grad.clone() for p in params]))
    (full, full_entropy, full_grads), (shared, shared_entropy, shared_grads) = results
    assert torch.allclose(shared, full, atol=ATOL) and torch.allclose(shared_entropy, full_entropy, atol=ATOL)
    assert (shared[completion_mask == 0] == 0).all()
    assert any(g.abs().max() > 1e-3 for g in full_grads)
    for a, b in zip(shared_grads, full_grads):
        assert torch.allclose(a, b, atol=ATOL, rtol=1e-3)
    with torch.no_grad():
        ref_shared = reference_logprobs(model, ids, mask, completion, completion_mask, share_prompts=True)
        ref_full = reference_logprobs(model, ids, mask, completion, completion_mask)
    assert torch.allclose(ref_shared, ref_full, atol=ATOL) and not torch.allclose(ref_full, full, atol=ATOL)
