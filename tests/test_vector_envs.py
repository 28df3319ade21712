"""MemorySession-v0 in Gymnasium vector envs (sync and async) agrees with single envs run by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import memenv  # noqa: F401  (registers the environments)
from memenv.scripted import OracleAgent
from memenv.vector import unbatch_info, unbatch_infos

SEEDS = [3, 11, 42]
# Short worlds keep both episodes of every sub-env cheap; at 2 sessions an episode lasts
# about 15 steps, so this many steps crosses two to four boundaries per sub-env.
NUM_SESSIONS = 2
STEPS = 45
# Info keys compared step by step (all of them except the long per-step diagnostics,
# which are compared through `gold` and the episode summary).
COMPARED_KEYS = ("role", "session", "turn", "memory_size", "memory_tokens", "conversation", "gold",
                 "score", "answered", "question_kind", "episode_summary", "session_credit", "valid")


class ManualNextStepVector:
    """N single environments with Gymnasium's NEXT_STEP autoreset written out by hand."""

    def __init__(self, seeds: list[int]):
        self.envs = [gym.make("MemorySession-v0", num_sessions=NUM_SESSIONS) for _ in seeds]
        self.seeds = seeds
        self.needs_reset = [False] * len(seeds)

    def reset(self):
        pairs = [env.reset(seed=s) for env, s in zip(self.envs, self.seeds)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def step(self, actions: list[str]):
        out = []
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            if self.needs_reset[i]:
                obs, info = env.reset()
                out.append((obs, 0.0, False, False, info))
                self.needs_reset[i] = False
            else:
                obs, reward, terminated, truncated, info = env.step(action)
                self.needs_reset[i] = terminated or truncated
                out.append((obs, reward, terminated, truncated, info))
        return [list(col) for col in zip(*out)]


def _subset(info: dict) -> dict:
    return {k: info[k] for k in COMPARED_KEYS if k in info}


@pytest.mark.parametrize("mode,vector_kwargs", [("sync", {}), ("async", {}), ("async", {"shared_memory": False})])
def test_vector_env_matches_single_envs_across_episode_boundaries(mode, vector_kwargs):
    agent = OracleAgent()
    vec = gym.make_vec("MemorySession-v0", num_envs=len(SEEDS), vectorization_mode=mode,
                       vector_kwargs=vector_kwargs, num_sessions=NUM_SESSIONS)
    manual = ManualNextStepVector(SEEDS)
    try:
        assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        obs, infos = vec.reset(seed=SEEDS)
        m_obs, m_infos = manual.reset()
        assert isinstance(obs, tuple) and list(obs) == m_obs
        assert [_subset(i) for i in unbatch_infos(infos, len(SEEDS))] == [_subset(i) for i in m_infos]
        terminations = np.zeros(len(SEEDS), dtype=int)
        for _ in range(STEPS):
            actions = [agent.act(o, unbatch_info(infos, i)) for i, o in enumerate(obs)]
            m_actions = [agent.act(o, info) for o, info in zip(m_obs, m_infos)]
            assert actions == m_actions
            obs, rewards, terms, truncs, infos = vec.step(tuple(actions))
            m_obs, m_rewards, m_terms, m_truncs, m_infos = manual.step(m_actions)
            assert list(obs) == m_obs
            np.testing.assert_allclose(rewards, m_rewards, rtol=0, atol=1e-12)
            assert terms.tolist() == m_terms and truncs.tolist() == m_truncs
            got = [_subset(i) for i in unbatch_infos(infos, len(SEEDS))]
            assert got == [_subset(i) for i in m_infos]
            terminations += terms
        # every sub-env finished at least two episodes, at different steps
        assert terminations.min() >= 2
    finally:
        vec.close()


def test_async_shared_memory_carries_any_unicode_and_fresh_observations():
    from memenv.spaces import SharedTextView, UnicodeText, _create_unicode_text_shared_memory, \
        _write_unicode_text_to_shared_memory

    space = UnicodeText(50)
    memory = _create_unicode_text_shared_memory(space, n=2)
    view = SharedTextView(space, memory, 2)
    _write_unicode_text_to_shared_memory(space, 0, '{"t": "été 中 😀"}', memory)
    _write_unicode_text_to_shared_memory(space, 1, "", memory)
    assert tuple(view) == ('{"t": "été 中 😀"}', "")
    _write_unicode_text_to_shared_memory(space, 1, "new", memory)
    assert view[1] == "new" and view[-1] == "new"
    import copy

    snapshot = copy.deepcopy(view)
    _write_unicode_text_to_shared_memory(space, 1, "newer", memory)
    assert snapshot == ('{"t": "été 中 😀"}', "new") and type(snapshot) is tuple
    with pytest.raises(ValueError, match="does not fit"):
        _write_unicode_text_to_shared_memory(space, 0, "x" * 300, memory)


def test_oracle_scores_one_per_question_in_vector_env():
    """The oracle acting on unbatched infos answers every question right (gold reached it)."""
    agent = OracleAgent()
    vec = gym.make_vec("MemorySession-v0", num_envs=2, vectorization_mode="sync", num_sessions=NUM_SESSIONS)
    obs, infos = vec.reset(seed=[5, 6])
    summaries: list[dict] = []
    while len(summaries) < 2:
        actions = tuple(agent.act(o, unbatch_info(infos, i)) for i, o in enumerate(obs))
        obs, _, terms, _, infos = vec.step(actions)
        summaries += [unbatch_info(infos, i)["episode_summary"] for i in np.flatnonzero(terms)]
    vec.close()
    assert all(s["mean_score"] == 1.0 and s["num_questions"] > 0 for s in summaries)


def test_next_step_autoreset_ignores_the_action_after_termination():
    vec = gym.make_vec("MemorySession-v0", num_envs=1, vectorization_mode="sync", num_sessions=1)
    agent = OracleAgent()
    obs, infos = vec.reset(seed=[7])
    terminated = False
    while not terminated:
        obs, _, terms, _, infos = vec.step((agent.act(obs[0], unbatch_info(infos, 0)),))
        terminated = bool(terms[0])
    assert obs == ("",) and "episode_summary" in unbatch_info(infos, 0)
    # an unparseable action would be penalised if it reached the env; here it resets
    obs, rewards, terms, _, infos = vec.step(("not json at all",))
    vec.close()
    assert rewards[0] == 0.0 and not terms[0]
    assert unbatch_info(infos, 0)["role"] == "extract" and '"role": "extract"' in obs[0]


def test_unbatch_info_respects_masks_and_nesting():
    infos = {
        "role": np.array(["extract", None], dtype=object), "_role": np.array([True, False]),
        "score": np.array([0.0, 0.5]), "_score": np.array([False, True]),
        "gold": {"facts": np.array([["a"], None], dtype=object), "_facts": np.array([True, False])},
        "_gold": np.array([True, False]),
    }
    assert unbatch_info(infos, 0) == {"role": "extract", "gold": {"facts": ["a"]}}
    second = unbatch_info(infos, 1)
    assert second == {"score": 0.5} and type(second["score"]) is float
    with pytest.raises(ValueError, match="index"):
        unbatch_info(infos, -1)
    with pytest.raises(TypeError, match="infos"):
        unbatch_info([infos], 0)


def test_record_episode_statistics_works_with_default_key():
    """RecordEpisodeStatistics' ``episode`` key and the env's ``episode_summary`` coexist."""
    vec = gym.make_vec("MemorySession-v0", num_envs=2, vectorization_mode="sync", num_sessions=1)
    vec = gym.wrappers.vector.RecordEpisodeStatistics(vec)
    agent = OracleAgent()
    obs, infos = vec.reset(seed=[1, 2])
    for _ in range(40):
        obs, _, terms, _, infos = vec.step(tuple(agent.act(o, unbatch_info(infos, i)) for i, o in enumerate(obs)))
        if terms.any():
            i = int(np.flatnonzero(terms)[0])
            info = unbatch_info(infos, i)
            assert info["episode"]["l"] > 2 and info["episode_summary"]["mean_score"] == 1.0
            break
    else:
        pytest.fail("no episode ended")
    vec.close()
