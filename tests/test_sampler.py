"""The one LLM sampler (agents.sampler.RoleSampler): roles, adapters, shared prompts, batching."""

import json

import pytest
import torch

from agents.sampler import RoleSampler

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _obs(role: str, question: str = "Where does Alice live?") -> str:
    base = {"role": role, "session": 0, "num_sessions": 1, "date": "1 May 2023", "speakers": ["Alice", "Bob"]}
    if role == "answer":
        return json.dumps({**base, "question": question, "memories": []})
    if role == "manage":
        return json.dumps({**base, "facts": [{"text": "Alice lives in Paris.", "related": []}]})
    return json.dumps({**base, "turns": [{"speaker": "Alice", "text": "I moved to Paris."}], "memories": []})


def test_each_observation_gets_its_samples_in_order(tiny_backbone):
    sampler = RoleSampler(tiny_backbone.model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=5,
                          generator=torch.Generator().manual_seed(0))
    observations = [_obs("answer", "q1"), _obs("extract"), _obs("answer", "q2"), _obs("manage")]
    groups = sampler.sample(observations, num_samples=3)
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    for obs, group in zip(observations, groups):
        prompt = tiny_backbone.tokenizer(sampler.prompt(obs), add_special_tokens=False)["input_ids"]
        assert all(g.prompt_ids == prompt for g in group)
        assert all(len(g.completion_ids) == len(g.logprobs) <= 5 for g in group)


def test_identical_prompts_are_run_once_and_sampled_together(tiny_backbone, monkeypatch):
    import agents.generation

    calls = []
    real = agents.generation.generate

    def counting(model, tokenizer, prompts, **kwargs):
        calls.append((len(prompts), kwargs["num_samples"]))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(agents.generation, "generate", counting)
    sampler = RoleSampler(tiny_backbone.model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=4,
                          generator=torch.Generator().manual_seed(0))
    same = _obs("extract")
    groups = sampler.sample([same, same, same, _obs("answer")], num_samples=2)
    assert calls == [(1, 6), (1, 2)]  # one prompt sampled 3 x 2 times, then the answer prompt twice
    texts = [g.text for group in groups[:3] for g in group]
    assert len(texts) == 6 and all(len(group) == 2 for group in groups)


def test_batch_size_bounds_the_sequences_of_one_call(tiny_backbone, monkeypatch):
    import agents.generation

    calls = []
    real = agents.generation.generate

    def counting(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts) * kwargs["num_samples"])
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(agents.generation, "generate", counting)
    sampler = RoleSampler(tiny_backbone.model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=2,
                          generator=torch.Generator().manual_seed(0), batch_size=8)
    seen = []
    sampler.sample([_obs("answer", f"q{i}") for i in range(5)], num_samples=4, on_batch=seen.append)
    assert calls == [8, 8, 4] and seen == [2, 2, 1]


def test_greedy_samples_are_deterministic_and_the_rollout_keeps_one_role(tiny_backbone):
    sampler = RoleSampler(tiny_backbone.model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=6)
    a = sampler.sample([_obs("answer")], greedy=True)[0][0]
    b = sampler.sample([_obs("answer")], greedy=True)[0][0]
    assert a.completion_ids == b.completion_ids
    rollout = sampler.rollout([_obs("answer", "q1"), _obs("answer", "q2")], num_samples=2)
    assert rollout.completion_ids.shape[0] == 4
    with pytest.raises(ValueError, match="one known role"):
        sampler.rollout([_obs("answer"), _obs("extract")])


def test_each_role_uses_its_adapter(tiny_backbone):
    """The answer role runs the base model (adapters disabled) unless an answer adapter exists."""
    from agents.lora import add_lora, adapter_parameters

    model = add_lora(tiny_backbone)
    with torch.no_grad():
        for p in adapter_parameters(model, "policy"):
            p.add_(torch.randn_like(p) * 0.5)
    # unconstrained: in 6 tokens a grammar would force every token, whatever the adapter
    sampler = RoleSampler(model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=6, constrained=False)
    base = RoleSampler(tiny_backbone.model.get_base_model(), tiny_backbone.tokenizer, prompt_style="compact",
                       max_new_tokens=6, constrained=False)
    with model.disable_adapter():
        plain_answer = base.sample([_obs("answer")], greedy=True)[0][0].completion_ids
        plain_extract = base.sample([_obs("extract")], greedy=True)[0][0].completion_ids
    assert sampler.sample([_obs("answer")], greedy=True)[0][0].completion_ids == plain_answer
    assert sampler.sample([_obs("extract")], greedy=True)[0][0].completion_ids != plain_extract


def test_generate_at_another_temperature_and_rescore_at_the_samplers_own(tiny_backbone):
    from agents.generation import sequence_logprobs

    sampler = RoleSampler(tiny_backbone.model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=6,
                          temperature=0.7, generator=torch.Generator().manual_seed(0), constrained=False)
    obs = [_obs("answer"), _obs("answer", "Who is Bob?")]
    greedy = sampler.generate(obs, temperature=0.0)
    assert [g.text for g in greedy] == [g.text for g in sampler.generate(obs, temperature=0.0)]
    assert sampler.temperature == 0.7  # restored
    rescored = sampler.rescore(obs, greedy)
    for g, r in zip(greedy, rescored):
        assert (r.text, r.prompt_ids, r.completion_ids) == (g.text, g.prompt_ids, g.completion_ids)
        expected = sequence_logprobs(tiny_backbone.model, torch.tensor([g.prompt_ids]),
                                     torch.ones(1, len(g.prompt_ids), dtype=torch.long),
                                     torch.tensor([g.completion_ids]),
                                     torch.ones(1, len(g.completion_ids), dtype=torch.long), temperature=0.7)
        assert r.logprobs == pytest.approx(expected[0].tolist(), abs=1e-4)


def test_rescore_replays_the_grammar_masks_of_constrained_generations(tiny_backbone):
    """Rescoring constrained samples at the temperature they were drawn at gives back the
    log-probs recorded while sampling (the masked distribution), and keeps the constraint."""
    sampler = RoleSampler(tiny_backbone.model, tiny_backbone.tokenizer, prompt_style="compact", max_new_tokens=64,
                          temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert sampler.constrained
    obs = [_obs("extract"), _obs("manage"), _obs("answer")]
    gens = sampler.generate(obs)
    assert all(g.constraint is not None for g in gens)
    rescored = sampler.rescore(obs, gens)
    for g, r in zip(gens, rescored):
        assert r.constraint is g.constraint
        assert r.logprobs == pytest.approx(g.logprobs, abs=1e-4)
    # without the masks the same tokens score lower: the grammar moved probability mass
    unmasked = sampler.rescore(obs, [type(g)(g.text, g.prompt_ids, g.completion_ids, g.logprobs) for g in gens])
    assert sum(map(sum, (r.logprobs for r in unmasked))) < sum(map(sum, (g.logprobs for g in gens))) - 1.0
