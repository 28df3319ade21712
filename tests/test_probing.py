"""memenv.probing: score a memory on the questions due so far, without changing it."""

import json

import gymnasium as gym
import pytest

import memenv  # noqa: F401
from memenv.probing import due_questions, score_on_memory
from memenv.scripted import OracleAgent, scripted_answer


def _scripted(observations, infos):
    return [scripted_answer(json.loads(o)["question"], [m["text"] for m in json.loads(o)["memories"]])
            for o in observations]


def _play_until_session(env, session):
    agent = OracleAgent()
    obs, info = env.reset(options={"conversation": 1_000_003})
    while not (info["role"] == "extract" and info["session"] == session):
        obs, _, _, _, info = env.step(agent.act(obs, info))
    return obs, info


def test_scores_equal_answering_each_probe_and_the_env_is_unchanged():
    env = gym.make("MemorySession-v0", num_sessions=4, disable_env_checker=True)
    _play_until_session(env, 3)
    due = due_questions(env, 2)
    assert due and due_questions(env, 2, limit=2) == due[-2:]
    before = (env.unwrapped.memory, env.unwrapped.probe(due[0]))
    scores = score_on_memory([(env, q) for q in due], _scripted)
    expected = [env.unwrapped.score_answer(q, _scripted([env.unwrapped.probe(q)], [{}])[0]) for q in due]
    assert scores == expected and max(scores) > 0.0
    assert (env.unwrapped.memory, env.unwrapped.probe(due[0])) == before


def test_forks_are_scored_on_their_own_memories_in_one_batch():
    env = gym.make("MemorySession-v0", num_sessions=4, disable_env_checker=True)
    _play_until_session(env, 3)
    empty = env.unwrapped.fork()
    from memenv.memory import MemoryBank

    empty.set_memory(MemoryBank())
    calls = []

    def counting(observations, infos):
        calls.append((len(observations), {i["role"] for i in infos}))
        return _scripted(observations, infos)

    due = due_questions(env, 2)
    scores = score_on_memory([(env, q) for q in due] + [(empty, q) for q in due], counting)
    assert calls == [(2 * len(due), {"answer"})]
    assert sum(scores[: len(due)]) > sum(scores[len(due):])  # the forgetting fork answers worse


def test_an_answerer_that_drops_answers_is_an_error():
    env = gym.make("MemorySession-v0", num_sessions=4, disable_env_checker=True)
    _play_until_session(env, 3)
    with pytest.raises(ValueError, match="returned 0 answers"):
        score_on_memory([(env, q) for q in due_questions(env, 2)], lambda o, i: [])
    assert score_on_memory([], lambda o, i: pytest.fail("asked nothing")) == []
