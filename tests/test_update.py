"""The one PPO update of every trainer (algos.update): steps, parameters it moves, value head."""

import json

import numpy as np
import pytest
import torch

from agents.sampler import RoleSampler
from algos.update import Sample, UpdateConfig, collate, ppo_update

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_config_takes_the_update_fields_of_any_args_object():
    from algos.cli import parse_args
    from algos.logo_grpo import Args

    args = parse_args(Args, ["--ppo-epochs", "3", "--kl-coef", "0.5", "--clip-eps", "0.1"])
    config = UpdateConfig.from_args(args)
    assert (config.ppo_epochs, config.kl_coef, config.clip_eps) == (3, 0.5, 0.1)
    assert config.num_minibatches == args.num_minibatches and config.temperature == args.temperature


def test_collate_pads_prompts_left_and_completions_right():
    samples = [Sample([5, 6, 7], [8], [-0.5], "manage", 0, False, advantage=1.0, ref_logprobs=[-0.7]),
               Sample([9], [10, 11], [-0.1, -0.2], "manage", 0, False, advantage=-1.0)]
    b = collate(samples, pad_id=0, device="cpu")
    assert b["prompt_ids"].tolist() == [[5, 6, 7], [0, 0, 9]] and b["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["completion_ids"].tolist() == [[8, 0], [10, 11]] and b["completion_mask"].tolist() == [[1, 0], [1, 1]]
    assert torch.allclose(b["old_logprobs"], torch.tensor([[-0.5, 0.0], [-0.1, -0.2]]))
    assert torch.allclose(b["ref_logprobs"], torch.tensor([[-0.7, 0.0], [0.0, 0.0]]))
    assert b["advantages"].tolist() == [1.0, -1.0]


def test_update_with_fewer_samples_than_minibatches_takes_one_step_per_sample(tiny_backbone):
    from agents.lora import add_lora

    model = add_lora(tiny_backbone)
    model.eval()
    samples = [Sample([5, 6, 7], [8, 9], [-1.0, -1.0], role="manage", session=0, local=False, group=("g",),
                      advantage=a) for a in (1.0, -1.0)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ppo_update(model, samples, optimizer, UpdateConfig(ppo_epochs=1, num_minibatches=4),
               pad_id=tiny_backbone.tokenizer.pad_token_id, rng=np.random.default_rng(0))
    assert int(optimizer.state[params[0]]["step"]) == 2  # no empty minibatch steps


def test_update_changes_every_lora_parameter_and_no_base_parameter(tiny_backbone):
    import gymnasium as gym

    import memenv  # noqa: F401
    from agents.lora import add_lora
    from algos import rollouts as R
    from memenv.scripted import OracleAgent

    model = add_lora(tiny_backbone)
    model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # unconstrained: in 8 tokens a grammar forces every token (log-prob 0, no gradient to any adapter)
    policy = RoleSampler(model, tiny_backbone.tokenizer, max_prompt_tokens=1024, max_new_tokens=8, temperature=1.0,
                         generator=torch.Generator().manual_seed(0), constrained=False)
    make = lambda: gym.make("MemorySession-v0", num_sessions=3, disable_env_checker=True)  # noqa: E731
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        batch = R.collect(policy, R.ScriptedAnswerer(), make, [1_000_000], group_size=3, inner_fraction=1.0, inner_n=2,
                          max_local_questions=16, local_weight=1.0, rng=rng, extractor=OracleAgent())
        ppo_update(model, batch.samples, optimizer, UpdateConfig(ppo_epochs=2, num_minibatches=2),
                   pad_id=tiny_backbone.tokenizer.pad_token_id, rng=rng)
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    unchanged_lora = [n for n in lora if torch.equal(before[n], dict(model.named_parameters())[n])]
    changed_base = [n for n in base if not torch.equal(before[n], dict(model.named_parameters())[n])]
    assert unchanged_lora == [] and changed_base == []


def test_first_epoch_ratio_is_one_and_zero_advantages_leave_only_the_kl_and_entropy_terms(tiny_backbone):
    """Sampling-time and training-time log-probs agree (ratio 1 on the first epoch)."""
    from agents.generation import generate
    from agents.lora import add_lora
    from agents.sampler import generations

    model = add_lora(tiny_backbone)
    model.eval()
    rollout = generate(model, tiny_backbone.tokenizer, ["<|im_start|>user\nhi<|im_end|>\n"], num_samples=4,
                       max_new_tokens=6, seed=0)
    samples = [Sample(g.prompt_ids, g.completion_ids, g.logprobs, "manage", 0, False, advantage=0.0)
               for g in generations(rollout)[0]]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    stats = ppo_update(model, samples, optimizer, UpdateConfig(ppo_epochs=1, num_minibatches=1, kl_coef=0.0,
                                                              entropy_coef=0.0),
                       pad_id=tiny_backbone.tokenizer.pad_token_id, rng=np.random.default_rng(0))
    assert stats["losses/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert stats["losses/loss"] == pytest.approx(0.0, abs=1e-6)  # no advantage, no KL, no entropy: nothing to learn


def test_value_head_update_trains_lora_and_the_critic_towards_the_rewards(tiny_backbone):
    """Random tiny outputs all score 0, so rewards are set by hand (1 for even samples)."""
    from agents.lora import add_lora
    from algos import memory_r1 as M
    from algos.value import ValueHead

    model = add_lora(tiny_backbone, r=4, alpha=8, names=("answer",))
    head = ValueHead(model.config.hidden_size)
    config = UpdateConfig(ppo_epochs=2, num_minibatches=1, vf_coef=1.0)
    sampler = RoleSampler(model, tiny_backbone.tokenizer, prompt_style="compact", max_prompt_tokens=512,
                          max_new_tokens=6, generator=torch.Generator().manual_seed(0), batch_size=64)
    obs = [json.dumps({"role": "answer", "session": 0, "num_sessions": 1, "date": "1 May 2023", "speakers": ["A", "B"],
                       "question": f"Where does A live {i}?", "memories": []}) for i in range(6)]
    items = [M.AnswerItem(o, "Paris", "single-hop", 0, i) for i, o in enumerate(obs)]
    before_lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    before_base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    optimizer = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad], "lr": 1e-3},
                                   {"params": list(head.parameters()), "lr": 1e-2}])
    rng = np.random.default_rng(0)
    value_means = []
    for _ in range(3):
        samples, _ = M.collect_answer_batch(sampler, items, n=1, metric="em", algo="ppo")
        for i, s in enumerate(samples):
            s.reward = float(i % 2 == 0)
        stats = ppo_update(model, samples, optimizer, config, pad_id=tiny_backbone.tokenizer.pad_token_id, rng=rng,
                           value_head=head)
        value_means.append(stats["charts/value_mean"])
        # the advantages the loss used are r - V_old
        assert [s.advantage for s in samples] == pytest.approx([s.reward - s.value for s in samples], abs=1e-6)
    after = dict(model.named_parameters())
    assert [n for n in before_lora if torch.equal(after[n], before_lora[n])] == []
    assert all(torch.equal(after[n], p) for n, p in before_base.items())
    assert head.linear.weight.abs().sum() > 0 and head.linear.bias.item() != 0.0
    # the critic starts at 0 and moves towards the mean reward 0.5
    assert value_means[0] == 0.0 and 0.02 < value_means[-1] < 0.9, value_means


def test_a_value_head_batch_must_hold_one_role(tiny_backbone):
    from agents.lora import add_lora
    from algos.value import ValueHead

    model = add_lora(tiny_backbone)
    samples = [Sample([5], [6], [-1.0], role, 0, False) for role in ("extract", "manage")]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with pytest.raises(ValueError, match="one role"):
        ppo_update(model, samples, optimizer, UpdateConfig(), pad_id=0, rng=np.random.default_rng(0),
                   value_head=ValueHead(model.config.hidden_size))


@pytest.mark.parametrize("dtype,recompute", [(torch.float32, False), (torch.bfloat16, True)])
def test_first_epoch_ratio_is_one_in_every_dtype(dtype, recompute):
    """fp32: the sampled log-probs are used (sampler and trainer agree within 1e-4).
    bf16: they are recomputed by the training forward pass, so the first epoch's ratio is
    exactly 1, and the sampler-trainer gap is reported."""
    from agents.backbone import tiny_backbone
    from agents.generation import generate
    from agents.lora import add_lora
    from agents.sampler import generations
    from algos.update import recompute_old_logprobs

    backbone = tiny_backbone(0)
    backbone.model.to(dtype)
    model = add_lora(backbone)
    model.eval()
    assert recompute_old_logprobs(model, UpdateConfig()) is recompute
    rollout = generate(model, backbone.tokenizer, ["<|im_start|>user\nhi<|im_end|>\n", "Lyon?"], num_samples=4,
                       max_new_tokens=12, seed=0)
    samples = [Sample(g.prompt_ids, g.completion_ids, g.logprobs, "manage", 0, False, advantage=(-1.0) ** i)
               for i, g in enumerate(group for prompt in generations(rollout) for group in prompt)]
    sampled = [list(s.logprobs) for s in samples]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    stats = ppo_update(model, samples, optimizer, UpdateConfig(ppo_epochs=1, num_minibatches=1),
                       pad_id=backbone.tokenizer.pad_token_id, rng=np.random.default_rng(0))
    assert stats["losses/ratio_mean"] == pytest.approx(1.0, abs=1e-6 if recompute else 1e-4)
    assert stats["losses/clipfrac"] == 0.0
    if recompute:
        assert 0.0 < stats["losses/sampler_gap"] < 0.1  # bf16 rounding, not a different policy
        assert any(s.logprobs != old for s, old in zip(samples, sampled))
    else:
        assert "losses/sampler_gap" not in stats
        assert [s.logprobs for s in samples] == sampled


def _random_lora_batch(dtype: torch.dtype, num_samples: int):
    """A tiny model with random LoRA weights in ``dtype``, and manage samples it generated for
    two prompts (``num_samples`` each) with advantages -1, 0, 1 in turn."""
    from agents.backbone import tiny_backbone
    from agents.generation import generate
    from agents.lora import add_lora
    from agents.sampler import generations

    backbone = tiny_backbone(0)
    backbone.model.to(dtype)
    model = add_lora(backbone)
    model.eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    rollout = generate(model, backbone.tokenizer, ["<|im_start|>user\nhi<|im_end|>\n", "Lyon is in France."],
                       num_samples=num_samples, max_new_tokens=10, seed=0)
    samples = [Sample(g.prompt_ids, g.completion_ids, g.logprobs, "manage", 0, False, advantage=float(i % 3 - 1))
               for i, g in enumerate(group for prompt in generations(rollout) for group in prompt)]
    return backbone, model, samples


@pytest.mark.parametrize("num_minibatches", [1, 2])
def test_the_first_minibatch_takes_its_old_logprobs_from_its_own_training_pass(monkeypatch, num_minibatches):
    """With recomputed old log-probs (bf16), the first minibatch of the first epoch is not
    recomputed beforehand: its first training pass, taken before any optimizer step, gives
    them (one no-grad pass fewer). They match a no-grad recomputation up to bf16 rounding, and
    the second epoch still measures its ratio against them."""
    import agents.generation as G

    backbone, model, samples = _random_lora_batch(torch.bfloat16, 4)
    pad = backbone.tokenizer.pad_token_id
    batch = collate(samples, pad, "cpu")
    with torch.no_grad():  # what a separate recomputation would give
        recomputed = G.sequence_logprobs(model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                         batch["completion_mask"])
    rows = {True: 0, False: 0}  # sequences through sequence_logprobs with and without gradients
    real = G.sequence_logprobs
    monkeypatch.setattr(G, "sequence_logprobs", lambda model, prompt_ids, *a, **k: rows.__setitem__(
        torch.is_grad_enabled(), rows[torch.is_grad_enabled()] + len(prompt_ids)) or real(model, prompt_ids, *a, **k))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    config = UpdateConfig(ppo_epochs=2, num_minibatches=num_minibatches, micro_batch_size=8, kl_coef=0.1)
    stats = ppo_update(model, samples, optimizer, config, pad_id=pad, rng=np.random.default_rng(0))
    # without gradients: the reference log-probs of all 8 samples, and old log-probs for the
    # samples outside the first minibatch; with: every sample in each of the 2 epochs
    assert rows == {False: 8 + 8 - 8 // num_minibatches, True: 2 * 8}
    folded = [s.logprobs for s in samples]
    for k, s in enumerate(samples):
        assert np.allclose(folded[k], recomputed[k, : len(s.completion_ids)].numpy(), atol=0.02)
    assert 0.0 < stats["losses/sampler_gap"] < 0.1
    assert abs(stats["losses/ratio_mean"] - 1.0) > 1e-3  # later passes moved away from the old policy


def test_shared_prompts_make_the_same_update_as_full_passes():
    """share_prompts computes each distinct prompt of a micro-batch once; the update it makes
    (reference and old log-probs, loss, gradients, AdamW step) equals the full passes' within
    fp32 rounding, on a batch whose minibatches mix prompts and whose micro-batches split a
    prompt's samples. auto turns it on for models that are not fp32."""
    from agents.backbone import tiny_backbone
    from agents.lora import add_lora
    from algos.update import share_prompts

    results = []
    for share in ("never", "always"):
        backbone, model, samples = _random_lora_batch(torch.float32, 5)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        config = UpdateConfig(ppo_epochs=2, num_minibatches=2, micro_batch_size=3, kl_coef=0.1, share_prompts=share)
        assert share_prompts(model, config) is (share == "always")
        stats = ppo_update(model, samples, optimizer, config, pad_id=backbone.tokenizer.pad_token_id,
                           rng=np.random.default_rng(0))
        results.append((stats, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                        [s.ref_logprobs for s in samples]))
    (full_stats, full_params, full_ref), (shared_stats, shared_params, shared_ref) = results
    assert np.allclose(np.concatenate(shared_ref), np.concatenate(full_ref), atol=1e-4)
    for key in ("losses/loss", "losses/policy_loss", "losses/kl", "losses/entropy", "losses/grad_norm"):  # not
        # ratio_mean or clipfrac: those average per micro-batch, whose make-up by_prompt changes
        assert shared_stats[key] == pytest.approx(full_stats[key], rel=1e-3, abs=1e-5), key
    # AdamW divides by the gradients' running size, so the steps agree to a fraction of their size
    differ = max(float((p - q).abs().max()) for p, q in zip(full_params.values(), shared_params.values()))
    assert differ < 0.01 * max(float(p.abs().max()) for p in full_params.values())
    backbone = tiny_backbone(0)
    backbone.model.to(torch.bfloat16)
    assert share_prompts(add_lora(backbone), UpdateConfig()) is True
    with pytest.raises(ValueError, match="share_prompts must be auto, always or never"):
        share_prompts(backbone.model, UpdateConfig(share_prompts="yes"))


def test_by_prompt_groups_prompts_and_ignores_the_order_it_is_given():
    from algos.update import by_prompt

    samples = [Sample(p, c, [-1.0] * len(c), "manage", 0, False)
               for p, c in [([5, 6], [1]), ([7], [2]), ([5, 6], [3, 4]), ([7], [0]), ([5, 6], [2])]]
    ordered = by_prompt(samples)
    assert [s.prompt_ids for s in ordered] == [[7], [7], [5, 6], [5, 6], [5, 6]]  # shorter prompts first
    for seed in range(5):
        shuffled = [samples[i] for i in np.random.default_rng(seed).permutation(len(samples))]
        assert [id(s) for s in by_prompt(shuffled)] == [id(s) for s in ordered]
