"""Tests for agents.llm_agent.LLMAgent with the tiny backbone."""

from __future__ import annotations

import json

import pytest
import torch

from agents.backbone import tiny_backbone
from agents.llm_agent import LLMAgent, parse_spec, split_spec_options
from agents.lora import add_lora, adapter_parameters, save_adapter
from agents.prompts import parse_answer

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SMALL = {"extract": 12, "manage": 12, "answer": 10}


def _obs(role, **fields):
    base = {"role": role, "session": 0, "num_sessions": 2, "date": "8 May 2023", "speakers": ["Alice", "Bob"]}
    return json.dumps({**base, **fields})


MEMORY = {"id": "m0", "text": "Alice lives in Paris.", "speaker": "Alice", "session": 0, "date": "8 May 2023"}
OBSERVATIONS = [
    _obs("extract", turns=[{"speaker": "Alice", "text": "I moved to Lyon.", "dia_id": "D1:1"}], memories=[]),
    _obs("answer", question_id="q1", question="Where does Alice live?", memories=[MEMORY], memory_size=1),
    _obs("manage", facts=[{"index": 0, "text": "Alice lives in Lyon.", "speaker": "Alice", "related": ["m0"]}],
         memories=[MEMORY], memory_size=1),
    _obs("answer", question_id="q2", question="Who is Bob?", memories=[], memory_size=1),
]
INFOS = [{"role": json.loads(o)["role"]} for o in OBSERVATIONS]


def _agent(backbone=None, **kwargs):
    return LLMAgent(backbone or tiny_backbone(), max_new_tokens=SMALL, **kwargs)


# Unconstrained: at these budgets a grammar forces every token ('{"facts": [' alone is 11
# bytes of the byte-level tokenizer), so outputs could not tell adapters or seeds apart.
FREE = {"constrained": False}


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("llm:smollm2-135m", ("smollm2-135m", None)),
        ("tiny", ("tiny", None)),
        ("llm:/path/to/hf_dir:/path/to/adapter", ("/path/to/hf_dir", "/path/to/adapter")),
        ("/models/x.gguf:/ad", ("/models/x.gguf", "/ad")),
    ],
)
def test_parse_spec(spec, parsed):
    assert parse_spec(spec) == parsed


def test_parse_spec_rejects_empty_model():
    with pytest.raises(ValueError, match="names no model"):
        parse_spec("llm:")


def test_act_batch_is_one_deterministic_string_per_obs():
    agent = _agent()
    first = agent.act_batch(OBSERVATIONS, INFOS)
    assert len(first) == len(OBSERVATIONS) and all(isinstance(a, str) for a in first)
    assert agent.act_batch(OBSERVATIONS, INFOS) == first  # greedy: same actions every time
    assert _agent().act_batch(OBSERVATIONS, INFOS) == first
    # Batching across roles and envs changes nothing: same as one observation at a time.
    assert [agent.act(o, i) for o, i in zip(OBSERVATIONS, INFOS)] == first
    assert agent.act_batch([], []) == []


def test_answer_actions_are_parsed_short_answers():
    agent = _agent()
    actions = agent.act_batch(OBSERVATIONS, INFOS)
    raw = agent.sample([OBSERVATIONS[1], OBSERVATIONS[3]]).texts
    assert [actions[1], actions[3]] == [parse_answer(t) for t in raw]
    raw_extract = agent.sample([OBSERVATIONS[0]]).texts[0]
    assert actions[0] == raw_extract.strip()


def test_sample_returns_a_rollout_for_one_role():
    agent = _agent(temperature=1.0, seed=3)
    rollout = agent.sample([OBSERVATIONS[1], OBSERVATIONS[3]], num_samples=3)
    assert rollout.completion_ids.shape[0] == 6 and rollout.completion_ids.shape[1] <= SMALL["answer"]
    with pytest.raises(ValueError, match="one known role"):
        agent.sample(OBSERVATIONS[:2])


def test_sampling_agent_is_seeded():
    a = _agent(temperature=1.0, seed=1, **FREE).act_batch(OBSERVATIONS, INFOS)
    b = _agent(temperature=1.0, seed=1, **FREE).act_batch(OBSERVATIONS, INFOS)
    c = _agent(temperature=1.0, seed=2, **FREE).act_batch(OBSERVATIONS, INFOS)
    assert a == b and a != c


def test_adapter_from_spec_serves_extract_and_manage_only(tmp_path):
    trained = tiny_backbone()
    model = add_lora(trained, r=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter_parameters(model, "policy"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    save_adapter(model, tmp_path / "adapter", "policy")

    plain = LLMAgent.from_spec("llm:tiny?constrained=false")
    adapted = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'adapter'}?constrained=false")
    assert not plain.constrained and LLMAgent.from_spec("llm:tiny").constrained
    assert adapted.name == f"llm:tiny:{tmp_path / 'adapter'}" and plain.name == "llm:tiny"
    for agent in (plain, adapted):
        agent.max_new_tokens = dict(SMALL)
    plain_actions = plain.act_batch(OBSERVATIONS, INFOS)
    adapted_actions = adapted.act_batch(OBSERVATIONS, INFOS)
    assert adapted_actions[0] != plain_actions[0] and adapted_actions[2] != plain_actions[2]
    assert adapted_actions[1] == plain_actions[1] and adapted_actions[3] == plain_actions[3]  # base answers
    assert not any(p.requires_grad for p in adapted.model.parameters())  # loaded frozen
    # The in-memory adapted backbone acts exactly as the one loaded from disk.
    assert _agent(trained, **FREE).act_batch(OBSERVATIONS, INFOS) == adapted_actions


def test_answer_adapter_from_spec_serves_the_answer_role_only(tmp_path):
    trained = tiny_backbone()
    model = add_lora(trained, r=4, names=("answer",))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter_parameters(model, "answer"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    save_adapter(model, tmp_path / "answer", "answer")  # as algos.memory_r1 --mode answer saves it

    plain = LLMAgent.from_spec("llm:tiny?constrained=off")
    adapted = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'answer'}?constrained=0")
    for agent in (plain, adapted):
        agent.max_new_tokens = dict(SMALL)
    plain_actions = plain.act_batch(OBSERVATIONS, INFOS)
    adapted_actions = adapted.act_batch(OBSERVATIONS, INFOS)
    assert adapted_actions[1] != plain_actions[1] and adapted_actions[3] != plain_actions[3]  # answers change
    assert adapted_actions[0] == plain_actions[0] and adapted_actions[2] == plain_actions[2]  # base extracts
    assert _agent(trained, **FREE).act_batch(OBSERVATIONS, INFOS) == adapted_actions


def test_prompt_style_follows_the_adapter_then_the_backbone(tmp_path):
    from agents.lora import saved_adapter_info

    assert _agent().prompt_style == "compact"  # tiny: the trainers' choice
    assert _agent(prompt_style="default").prompt_style == "default"
    model = add_lora(tiny_backbone(), r=4)
    save_adapter(model, tmp_path / "default_style", "policy", prompt_style="default")
    assert saved_adapter_info(tmp_path / "default_style")["prompt_style"] == "default"
    agent = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'default_style'}")
    assert agent.prompt_style == "default"
    from agents.prompts import render_prompt

    expected = render_prompt(agent.tokenizer, OBSERVATIONS[0], max_prompt_tokens=agent.max_prompt_tokens, style="default")
    assert agent.prompt(OBSERVATIONS[0]) == expected != _agent().prompt(OBSERVATIONS[0])
    assert agent.max_prompt_tokens == 2048 and agent.max_new_tokens["manage"] == 256 and agent.distill
    # the recorded serving settings fill in what the caller leaves out, for the roles each adapter serves
    save_adapter(model, tmp_path / "served", "policy", prompt_style="compact", max_prompt_tokens=300,
                 max_new_tokens=40)
    served = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'served'}")
    assert (served.prompt_style, served.max_prompt_tokens) == ("compact", 300)
    assert served.max_new_tokens == {"extract": 40, "manage": 40, "answer": 64}
    answer_model = add_lora(tiny_backbone(), r=4, names=("answer",))
    save_adapter(answer_model, tmp_path / "answer", "answer", max_new_tokens=12, distill=False)
    answerer = LLMAgent(tiny_backbone(), adapter_path=tmp_path / "answer", max_prompt_tokens=500)
    assert answerer.max_new_tokens == {"extract": 256, "manage": 256, "answer": 12} and not answerer.distill
    assert answerer.max_prompt_tokens == 500  # given: wins over the record
    assert LLMAgent(tiny_backbone(), adapter_path=tmp_path / "answer", distill=True).distill
    renamed = LLMAgent(tiny_backbone(), adapter_path=tmp_path / "served", adapter_name="answer")
    assert renamed.max_new_tokens == {"extract": 256, "manage": 256, "answer": 40}  # lengths follow the new role
    per_role = add_lora(tiny_backbone(), r=4, per_role=True)
    save_adapter(per_role, tmp_path / "mixed" / "extract", "extract", prompt_style="default")
    save_adapter(per_role, tmp_path / "mixed" / "manage", "manage", prompt_style="compact")
    with pytest.raises(ValueError, match="different prompt_style"):
        LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'mixed'}")
    with pytest.raises(ValueError, match="prompt_style"):
        _agent(prompt_style="fancy")


def test_bad_inputs_raise():
    agent = _agent()
    with pytest.raises(ValueError, match="infos"):
        agent.act_batch(OBSERVATIONS, INFOS[:1])
    with pytest.raises(ValueError, match="unknown role"):
        agent.act_batch([json.dumps({"role": "judge"})], [{}])
    with pytest.raises(ValueError, match="unknown roles"):
        LLMAgent(tiny_backbone(), max_new_tokens={"answr": 5})


def test_plays_memory_session_episode_steps():
    """Actions from the tiny agent are accepted by the real environment (no exceptions)."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("memenv.env")
    import memenv  # noqa: F401  (registers MemorySession-v0)

    env = gym.make("MemorySession-v0")
    obs, info = env.reset(seed=0)
    agent = _agent(max_prompt_tokens=1500)
    roles = []
    for _ in range(4):
        roles.append(info["role"])
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        assert isinstance(reward, float)
        if terminated or truncated:
            break
    assert roles[:2] == ["extract", "manage"]


def test_spec_options_set_the_agents_settings(tmp_path):
    head, options = split_spec_options("llm:smollm2-135m:runs/x/adapter?prompt_style=compact&max_prompt_tokens=2048"
                                       "&max_new_tokens=128&constrained=off")
    assert head == "llm:smollm2-135m:runs/x/adapter"
    assert options == {"prompt_style": "compact", "max_prompt_tokens": 2048, "constrained": False,
                       "max_new_tokens": {"extract": 128, "manage": 128, "answer": 128}}
    assert split_spec_options("llm:tiny") == ("llm:tiny", {})
    assert parse_spec("llm:tiny:/a/b?max_prompt_tokens=9") == ("tiny", "/a/b")
    # An adapter records its training settings; options override them, others stay as recorded.
    model = add_lora(tiny_backbone(), r=4)
    save_adapter(model, tmp_path / "adapter", "policy", prompt_style="compact", max_prompt_tokens=300,
                 max_new_tokens=40)
    recorded = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'adapter'}")
    changed = LLMAgent.from_spec(f"llm:tiny:{tmp_path / 'adapter'}?max_prompt_tokens=900&prompt_style=default")
    assert (recorded.max_prompt_tokens, recorded.prompt_style) == (300, "compact")
    assert (changed.max_prompt_tokens, changed.prompt_style) == (900, "default")
    assert changed.max_new_tokens == recorded.max_new_tokens and changed.constrained
    budget = LLMAgent.from_spec("llm:tiny?max_new_tokens=5&prompt_style=compact")
    assert budget.max_new_tokens == {"extract": 5, "manage": 5, "answer": 5} and budget.prompt_style == "compact"


@pytest.mark.parametrize("spec, words", [
    ("llm:tiny?temperature=1", "unknown option 'temperature'"),
    ("llm:tiny?max_prompt_tokens=0", "max_prompt_tokens must be a whole number from 1 to 1048576"),
    ("llm:tiny?max_new_tokens=lots", "max_new_tokens must be a whole number from 1 to 1048576"),
    ("llm:tiny?prompt_style=verbose", "prompt_style must be one of"),
    ("llm:tiny?constrained=maybe", "constrained must be true or false"),
    ("llm:tiny?constrained", "option 'constrained' needs one value"),
    ("llm:tiny?constrained=1&constrained=0", "option 'constrained' needs one value"),
])
def test_bad_spec_options_are_one_line_errors_naming_the_option(spec, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        LLMAgent.from_spec(spec)
