"""The per-fact manager wrapper for SB3, the trained-manager agent, and a short PPO run."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest

import memenv  # noqa: F401
from agents.sb3_manager import (
    ADD,
    DELETE,
    FEATURE_NAMES,
    NUM_FEATURES,
    UPDATE,
    FeatureManagerAgent,
    ManagerDecisionEnv,
    RandomManagerAgent,
    SB3ManagerAgent,
    SessionDecisions,
    change_kind,
    rule_decision,
    topics,
)
from benchmarks.sb3_manager import Args, evaluate_agent, main, train_manager
from memenv.env import MemorySessionEnv
from memenv.scripted import OracleAgent
from memenv.sources import ConversationSource
from memenv.synthetic import generate_world
from memenv.types import Conversation, GoldFact, Question, Session, Turn

pytestmark = pytest.mark.usefixtures("single_torch_thread")

HELD_OUT = list(range(500_000, 500_012))
# The trained manager must beat the random manager by at least this much (token F1).
MIN_MARGIN_OVER_RANDOM = 0.1


def _f(i):
    return FEATURE_NAMES.index(i)


class ClubSource(ConversationSource):
    """Two sessions: Alice joins a club and lives in Paris; then quits and moves."""

    def keys(self):
        return ["club"]

    def get(self, key):
        s0 = Session(0, "3 May 2023", (Turn("Alice", "I joined the chess club, and I live in Paris.", "D1:1"),),
                     (GoldFact("Alice joined the chess club on 2 May 2023.", "ADD", "Alice"),
                      GoldFact("Alice lives in Paris.", "ADD", "Alice")),
                     ("Alice joined the chess club on 2 May 2023.", "Alice lives in Paris."))
        s1 = Session(1, "9 May 2023", (Turn("Alice", "I quit the chess club and moved to Lyon.", "D2:1"),),
                     (GoldFact("Alice quit the chess club on 8 May 2023.", "DELETE", "Alice",
                               old_text="Alice joined the chess club on 2 May 2023."),
                      GoldFact("Alice moved to Lyon on 7 May 2023.", "UPDATE", "Alice",
                               old_text="Alice lives in Paris.")),
                     ("Alice moved to Lyon on 7 May 2023.",))
        questions = (Question("q0", "Where does Alice live?", "Lyon", "knowledge-update", (0, 1)),
                     Question("q1", "Which clubs is Alice a member of?", "unknown", "knowledge-update", (0, 1)))
        return Conversation("club", ("Alice", "Bob"), (s0, s1), questions)


def club_env(**kwargs) -> ManagerDecisionEnv:
    return ManagerDecisionEnv(MemorySessionEnv(ClubSource()), **kwargs)


# ------------------------------------------------------------------------ semantics --
def test_retraction_deletes_the_join_fact_and_a_change_updates_the_old_value():
    env = club_env()
    x, _ = env.reset(seed=0)
    assert x.shape == (NUM_FEATURES,) and x.dtype == np.float32
    for decision in (ADD, ADD):
        x, reward, terminated, _, info = env.step(decision)
    assert not terminated and [e.text for e in env.memory] == ["Alice joined the chess club on 2 May 2023.",
                                                               "Alice lives in Paris."]
    join_id, paris_id = [e.id for e in env.memory]
    # the retraction: its nearest memory is the join fact, same speaker and topic
    assert x[_f("cue_retraction")] == 1 and x[_f("nearest0_same_topic")] == 1
    x, _, _, _, info = env.step(DELETE)
    assert info["decision"] == "DELETE" and info["target"] == join_id
    # the move shares no value word with "lives in Paris" but is matched by topic
    assert x[_f("cue_change")] == 1 and x[_f("nearest0_same_topic")] == 1 and x[_f("nearest0_same_speaker")] == 1
    x, reward, terminated, _, info = env.step(UPDATE)
    assert terminated and info["target"] == paris_id
    assert info["operations"] == [{"op": "DELETE", "id": join_id},
                                  {"op": "UPDATE", "id": paris_id, "text": "Alice moved to Lyon on 7 May 2023."}]
    assert [(e.id, e.text) for e in env.memory] == [(paris_id, "Alice moved to Lyon on 7 May 2023.")]
    # both questions answered right: "Lyon", and "unknown" since no club is left
    assert info["answer_scores"] == [1.0, 1.0] and reward == pytest.approx(2.0)
    assert not np.any(x)  # the terminal observation is all zeros


def test_a_memory_updated_earlier_in_the_session_is_no_longer_a_target():
    obs = {"role": "manage", "session": 1, "num_sessions": 2, "speakers": ["Alice", "Bob"], "memory_size": 1,
           "facts": [{"index": 0, "text": "Alice moved to Lyon on 7 May 2023.", "speaker": "Alice", "related": ["m0"]},
                     {"index": 1, "text": "Alice moved to Rome on 8 May 2023.", "speaker": "Alice", "related": ["m0"]}],
           "memories": [{"id": "m0", "text": "Alice lives in Paris.", "speaker": "Alice", "session": 0, "date": ""}]}
    session = SessionDecisions(obs)
    session.decide(UPDATE)
    assert session.features()[_f("nearest0_present")] == 0  # m0 is taken
    session.decide(DELETE)  # nothing left to delete: dropped, the op list stays valid
    assert session.done and session.operations() == [
        {"op": "UPDATE", "id": "m0", "text": "Alice moved to Lyon on 7 May 2023."}]


def test_text_cues():
    assert change_kind("Alice quit the chess club on 9 June 2023.") == "retraction"
    assert change_kind("Ben gave his cat Milo to a friend on 2 May 2023.") == "retraction"
    assert change_kind("Alice started working as a pilot on 2 May 2023.") == "change"
    assert change_kind("Alice travelled to Peru on 2 May 2023.") == "acquisition"
    assert change_kind("The weather is nice") == "state" and change_kind("Hello there") is None
    assert topics("Alice started working as a pilot") == topics("Alice works as a nurse") == {"work"}
    assert "relationship" in topics("Alice broke up with Sam") & topics("Alice's partner is Sam.")


def test_session_without_facts_is_one_ignored_step():
    class Silent:
        def act(self, obs, info):
            return json.dumps({"facts": []})

    env = ManagerDecisionEnv(env_kwargs={"num_sessions": 3}, extractor=Silent())
    x, _ = env.reset(seed=1)
    steps = 0
    done = False
    while not done:
        assert x[_f("placeholder")] == 1 and x.sum() == 1
        x, _, done, _, info = env.step(ADD)
        steps += 1
    assert steps == 3 and len(env.memory) == 0 and info["memory_episode"]["num_questions"] > 0


@pytest.mark.parametrize("bad", [4, -1, 1.5, "ADD"])
def test_invalid_actions_raise(bad):
    env = club_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be"):
        env.step(bad)


def test_constructor_errors():
    with pytest.raises(ValueError, match="reward_mode"):
        ManagerDecisionEnv(reward_mode="dense")
    with pytest.raises(TypeError, match="extractor"):
        ManagerDecisionEnv(extractor=object())
    with pytest.raises(ValueError, match="sb3-manager needs"):
        SB3ManagerAgent.from_spec("")


# ---------------------------------------------------------------------- env checkers --
def test_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only "no spec, cannot test render modes"
        check_env(ManagerDecisionEnv(env_kwargs={"num_sessions": 3, "world_seeds": [1, 2, 3]}))


def test_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker warns about anything it dislikes
        check_env(ManagerDecisionEnv(env_kwargs={"num_sessions": 3, "world_seeds": [1, 2, 3]}))


# ----------------------------------------------------------------------- rewards ----
def test_probe_return_telescopes_to_the_score_on_the_final_memory():
    env = ManagerDecisionEnv(env_kwargs={"num_sessions": 4}, reward_mode="probe")
    rng = np.random.default_rng(0)
    env.reset(options={"world_seed": 21})
    total, done = 0.0, False
    while not done:
        _, reward, done, _, _ = env.step(int(rng.integers(4)))
        total += reward
    base = env.inner.unwrapped
    reader = OracleAgent()
    final = sum(base.score_answer(q, reader.act(base.probe(q), {})) for q in base.questions_due_by(3))
    assert total == pytest.approx(final) and 0 < final < len(base.questions_due_by(3))


def test_answers_return_equals_inner_env_return_of_the_same_decisions():
    """The wrapper's return in "answers" mode is what the inner env pays the same manager."""
    env = ManagerDecisionEnv(env_kwargs={"num_sessions": 4})
    agent = FeatureManagerAgent(rule_decision)
    x, _ = env.reset(options={"world_seed": 8})
    wrapper_return, done = 0.0, False
    while not done:
        x, reward, done, _, _ = env.step(rule_decision(x))
        wrapper_return += reward
    inner = gym.make("MemorySession-v0", num_sessions=4)
    obs, info = inner.reset(options={"world_seed": 8})
    inner_return, done = 0.0, False
    while not done:
        obs, reward, done, _, info = inner.step(agent.act(obs, info))
        inner_return += reward
    assert wrapper_return == pytest.approx(inner_return)
    assert inner.unwrapped.memory == env.memory


# ----------------------------------------------------------------- agents and PPO ---
def test_feature_rule_rebuilds_the_gold_memory_so_the_features_suffice():
    """A hand-written rule on the features reproduces the gold operations: what PPO can reach."""
    agent = FeatureManagerAgent(rule_decision)
    env = gym.make("MemorySessionBench-v0", num_sessions=8)
    for seed in HELD_OUT[:5]:
        obs, info = env.reset(options={"world_seed": seed})
        done = False
        while not done:
            obs, _, done, _, info = env.step(agent.act(obs, info))
        gold = generate_world(seed, 8).sessions[-1].gold_memory
        assert sorted(env.unwrapped.memory.texts()) == sorted(gold)
    assert evaluate_agent(agent, HELD_OUT[:3])["f1"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short PPO run (fixed seeds) and its saved model."""
    args = Args(timesteps=8192, seeds=(0,), train_worlds=100, eval_worlds=len(HELD_OUT),
                eval_seed_offset=HELD_OUT[0], progress=False)
    model = train_manager(args, seed=0)
    path = str(tmp_path_factory.mktemp("sb3") / "ppo.zip")
    model.save(path)
    return model, path


def test_ppo_beats_a_random_manager_on_held_out_worlds(trained):
    model, _ = trained
    ppo = evaluate_agent(SB3ManagerAgent(model), HELD_OUT)
    random = evaluate_agent(RandomManagerAgent(0), HELD_OUT)
    assert ppo["num_questions"] == random["num_questions"] > 100
    assert ppo["f1"] >= random["f1"] + MIN_MARGIN_OVER_RANDOM, (ppo["f1"], random["f1"])
    assert ppo["invalid_actions"] == 0


def test_saved_model_loads_through_the_registry_spec_and_acts_the_same(trained):
    model, path = trained
    loaded = SB3ManagerAgent.from_spec(path)
    env = gym.make("MemorySession-v0", num_sessions=4)
    obs, info = env.reset(options={"world_seed": HELD_OUT[0]})
    in_memory = SB3ManagerAgent(model)
    while info["role"] != "manage":
        obs, _, _, _, info = env.step(in_memory.act(obs, info))
    action = loaded.act(obs, info)
    assert action == in_memory.act(obs, info)
    assert json.loads(action)["operations"][0]["op"] in ("ADD", "UPDATE", "DELETE", "NOOP")


def test_cli_writes_markdown_and_json(tmp_path):
    out = tmp_path / "res"
    result = main(["--timesteps", "512", "--n-steps", "128", "--batch-size", "128", "--n-envs", "2",
                   "--eval-worlds", "2", "--num-sessions", "3", "--no-progress",
                   "--out", str(out), "--model-dir", str(tmp_path / "models")])
    data = json.loads((tmp_path / "res.json").read_text())
    markdown = (tmp_path / "res.md").read_text()
    assert set(data["rows"]) == {"PPO (sb3-manager)", "random manager", "noop", "add-all",
                                 "feature rule (hand-written)", "oracle"}
    assert data["rows"]["oracle"]["f1"] == 1.0 and data["command"].startswith("python -m benchmarks.sb3_manager")
    assert "--timesteps 512" in markdown and "| oracle | 1.000 |" in markdown
    assert (tmp_path / "models" / "ppo_seed0.zip").exists() and result["runs"][0]["seed"] == 0


def test_args_refuse_training_on_evaluation_worlds():
    with pytest.raises(ValueError, match="reach the training worlds"):
        Args(eval_worlds=100, eval_seed_offset=999_950)
    assert Args().train_seeds[0] == 1_000_000 and Args().eval_seeds[-1] < 1_000_000
    with pytest.raises(ValueError, match="batch-size"):
        Args(n_steps=100, n_envs=1, batch_size=64)
