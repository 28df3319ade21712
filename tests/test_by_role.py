"""The by-role agent: parsing, dispatch by role, batching, and its use as a leaderboard strategy."""

import json

import gymnasium as gym
import pytest

import memenv  # noqa: F401
from agents.by_role import ByRoleAgent, parse_by_role
from agents.registry import make_agent
from memenv.scripted import AddAllAgent, NoopAgent, OracleAgent


class Recorder:
    """Answers 'from <name>' and records how it was called."""

    def __init__(self, name):
        self.name, self.batches = name, []

    def act_batch(self, observations, infos):
        self.batches.append(len(observations))
        return [f"from {self.name}"] * len(observations)

    def act(self, obs, info):
        return self.act_batch([obs], [info])[0]


def test_parse_by_role_and_errors():
    assert parse_by_role("extract=oracle, manage=llm:tiny:/x/y") == {"extract": "oracle", "manage": "llm:tiny:/x/y"}
    with pytest.raises(ValueError, match="needs roles"):
        make_agent("by-role")
    for bad, fragment in (("", "needs roles"), ("extract", "ROLE=AGENT"), ("judge=oracle", "unknown role"),
                          ("manage=noop,manage=oracle", "given twice"), ("manage=", "ROLE=AGENT")):
        with pytest.raises(ValueError, match=fragment):
            parse_by_role(bad)


def test_dispatch_by_role_in_one_batch_per_role():
    ext, man = Recorder("ext"), Recorder("man")
    agent = ByRoleAgent({"extract": ext, "manage": man})
    obs = [json.dumps({"role": r}) for r in ("extract", "manage", "extract", "manage", "manage")]
    assert agent.act_batch(obs, [{}] * 5) == ["from ext", "from man", "from ext", "from man", "from man"]
    assert ext.batches == [2] and man.batches == [3]
    assert agent.act("not json", {"role": "manage"}) == "from man"  # role from info when obs says none
    with pytest.raises(ValueError, match="no agent for role 'answer'"):
        agent.act(json.dumps({"role": "answer"}), {})


def test_registry_builds_each_spec_once_and_plays_an_episode():
    agent = make_agent("by-role:extract=oracle,manage=add-all,answer=oracle")
    assert isinstance(agent.agents["extract"], OracleAgent) and isinstance(agent.agents["manage"], AddAllAgent)
    assert agent.agents["extract"] is agent.agents["answer"]
    # oracle extraction + add-all management gives exactly the add-all memory (add-all extracts gold facts too)
    banks = []
    for a in (agent, AddAllAgent()):
        env = gym.make("MemorySession-v0", num_sessions=3)
        obs, info = env.reset(seed=7)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(a.act(obs, info))
            done = term or trunc
        banks.append(sorted(env.unwrapped.memory.texts()))
    assert banks[0] == banks[1] and banks[0]
    noop_managed = make_agent("by-role:extract=oracle,manage=noop")
    assert isinstance(noop_managed.agents["manage"], NoopAgent)
