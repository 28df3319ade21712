"""memenv.play: the one episode loop (lockstep, batched by actor)."""

import gymnasium as gym
import pytest

import memenv  # noqa: F401
from memenv.play import act_batch_of, play
from memenv.scripted import NoopAgent, OracleAgent


def make():
    return gym.make("MemorySession-v0", num_sessions=3, disable_env_checker=True)


def test_play_equals_stepping_each_episode_alone():
    turns = []
    finals = play(make, [1_000_000, 1_000_001], OracleAgent(), on_turn=turns.append)
    for episode, key in enumerate([1_000_000, 1_000_001]):
        env, agent = make(), OracleAgent()
        obs, info = env.reset(options={"conversation": key})
        alone, done = [], False
        while not done:
            action = agent.act(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            alone.append((action, reward))
            done = terminated or truncated
        assert [(t.action, t.reward) for t in turns if t.episode == episode] == alone
        assert finals[episode]["episode_summary"] == info["episode_summary"]
    assert sum(t.done for t in turns) == 2


def test_roles_sharing_an_actor_are_batched_together():
    calls, turns = [], []
    oracle = OracleAgent()

    def policy(observations, infos):
        calls.append((len(observations), sorted({i["role"] for i in infos})))
        return [oracle.act(o, i) for o, i in zip(observations, infos)]

    play(make, [1_000_000, 1_000_001, 1_000_002], {"extract": policy, "manage": policy, "answer": NoopAgent()},
         on_turn=turns.append)
    assert calls and all(roles in (["extract"], ["manage"], ["extract", "manage"]) for _, roles in calls)
    ticks = max(sum(t.episode == e for t in turns) for e in range(3))
    assert len(calls) <= ticks  # at most one call per tick, never one per episode
    assert sum(n for n, _ in calls) == sum(t.role in ("extract", "manage") for t in turns)
    assert max(n for n, _ in calls) == 3  # the three episodes' turns in one call


def test_bad_actors_are_named():
    with pytest.raises(TypeError, match="no actor"):
        act_batch_of(42)
    with pytest.raises(KeyError, match="no actor for role 'answer'"):
        play(make, [1_000_000], {"extract": OracleAgent(), "manage": OracleAgent()})
    with pytest.raises(ValueError, match="returned 0 actions"):
        play(make, [1_000_000], lambda observations, infos: [])
