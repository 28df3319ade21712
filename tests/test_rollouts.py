"""Global groups, forked local rerollouts and their advantages, with a scripted stand-in policy."""

import json
from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest

import memenv  # noqa: F401
from agents.sampler import Generation
from algos import rollouts as R
from memenv.scripted import OracleAgent


class CoinPolicy:
    """Manage turns: ADD every fact (by index) or keep nothing, by a seeded coin."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.prompts = []

    def generate(self, observations):
        out = []
        for obs in observations:
            self.prompts.append(obs)
            data = json.loads(obs)
            if self.rng.random() < 0.5:
                text = json.dumps({"operations": [{"op": "ADD", "fact": i} for i in range(len(data["facts"]))]})
            else:
                text = '{"operations": [{"op": "NOOP"}]}'
            out.append(Generation(text, [1, 2], [3, len(text) % 7], [-0.5, -0.25]))
        return out


def make():
    return gym.make("MemorySession-v0", num_sessions=4, disable_env_checker=True)


def run(inner_fraction, seed=0, local_weight=1.0):
    return R.collect(CoinPolicy(seed), R.ScriptedAnswerer(), make, [1_000_003, 1_000_004], group_size=4,
                     inner_fraction=inner_fraction, inner_n=4, max_local_questions=16, local_weight=local_weight,
                     rng=np.random.default_rng(seed), extractor=OracleAgent())


def test_inner_fraction_zero_is_plain_grpo():
    batch = run(0.0)
    assert batch.stats["charts/local_groups"] == 0 and not any(s.local for s in batch.samples)
    # 2 conversations x 4 rollouts x 4 sessions, one manage sample each (extract is the oracle's)
    assert len(batch.samples) == 32 and {s.role for s in batch.samples} == {"manage"}


def test_local_rerollouts_start_from_one_state_and_are_normalised_within_their_set():
    batch = run(1.0)
    local = [s for s in batch.samples if s.local]
    assert batch.stats["charts/local_groups"] > 0 and len(local) == 4 * batch.stats["charts/local_groups"]
    # within a reroll set, rerolls that kept the facts beat those that kept nothing
    by_group = defaultdict(list)
    for s in local:
        by_group[s.group].append(s.advantage)
    assert all(len(v) == 4 and abs(sum(v)) < 1e-6 for v in by_group.values())
    assert any(max(v) > 0 > min(v) for v in by_group.values())


def test_rerolls_see_the_identical_forked_observation():
    policy = CoinPolicy(1)
    R.collect(policy, R.ScriptedAnswerer(), make, [1_000_003], group_size=2, inner_fraction=1.0, inner_n=3,
              max_local_questions=16, local_weight=1.0, rng=np.random.default_rng(1), extractor=OracleAgent())
    counts = defaultdict(int)
    for obs in policy.prompts:
        counts[obs] += 1
    # each local group's 3 rerolls get the same manage observation as the rollout they forked
    assert max(counts.values()) >= 4


def test_global_advantages_are_normalised_per_session_across_the_group():
    batch = run(0.0, seed=3)
    by_key = defaultdict(list)
    for s in batch.samples:
        by_key[s.session].append(s.advantage)
    flat = [a for v in by_key.values() for a in v]
    assert any(a != 0 for a in flat)
    for values in by_key.values():  # two conversations per session column: each sums to zero
        assert abs(sum(values)) < 1e-6


def test_local_weight_scales_local_advantages_only():
    one, two = run(1.0, seed=5), run(1.0, seed=5, local_weight=2.0)
    for a, b in zip(one.samples, two.samples):
        assert b.advantage == pytest.approx(a.advantage * (2.0 if a.local else 1.0))


def test_session_rewards_use_credit_compression_and_penalties():
    slot = R._Slot(env=None, obs="", info={}, group=("global", 0), local=False,
                   final_info={"session_credit": [1.0, None, 0.5], "episode_summary": {"mean_score": 0.6}})
    slot.compression = {0: 0.1, 2: 0.2}
    slot.penalty[1] = -0.1
    assert R.session_rewards(slot, 3).tolist() == pytest.approx([0.9, 0.5, 0.3])
