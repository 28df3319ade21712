"""Episode protocol, rewards, invalid actions and forking of MemorySessionEnv (on a tiny fixed conversation)."""

import json
import subprocess
import sys

import gymnasium as gym
import pytest

import memenv
from memenv import constants as C
from memenv.env import MemorySessionEnv
from tests.helpers_env import TinySource

ADD_PARIS = '{"operations": [{"op": "ADD", "text": "Alice lives in Paris."}, {"op": "ADD", "text": "Bob works as a nurse."}]}'


def make(**kwargs):
    return MemorySessionEnv(source=TinySource(), **kwargs)


def oracle_step(env, obs, info):
    role = info["role"]
    if role == "extract":
        return json.dumps({"facts": info["gold"]["facts"]})
    if role == "manage":
        return json.dumps({"operations": info["gold"]["operations"]})
    return {"q0": "nurse", "q1": "Lyon"}[json.loads(obs)["question_id"]]


def run_oracle(env):
    obs, info = env.reset(seed=0)
    roles, rewards = [], []
    done = False
    while not done:
        roles.append(info["role"])
        obs, reward, done, truncated, info = env.step(oracle_step(env, obs, info))
        rewards.append(reward)
        assert not truncated
    return roles, rewards, info


def test_protocol_after_evidence_asks_each_question_after_its_last_evidence():
    roles, rewards, info = run_oracle(make())
    assert roles == ["extract", "manage", "answer", "extract", "manage", "answer"]
    assert info["episode_summary"]["num_questions"] == 2 and info["episode_summary"]["mean_score"] == 1.0
    assert info["session_credit"] == [1.0, 1.0]


def test_protocol_end_asks_all_questions_after_the_last_session():
    roles, _, info = run_oracle(make(qa_schedule="end"))
    assert roles == ["extract", "manage", "extract", "manage", "answer", "answer"]
    assert info["episode_summary"]["mean_score"] == 1.0


def test_observations_are_json_with_the_role_and_no_gold():
    env = make()
    obs, info = env.reset(seed=0)
    data = json.loads(obs)
    assert data["role"] == info["role"] == "extract"
    assert [t["speaker"] for t in data["turns"]] == ["Alice", "Bob"]
    assert "gold" not in obs.lower() and info["gold"]["memory"] == ["Alice lives in Paris.", "Bob works as a nurse."]
    obs, *_ , info = env.step('{"facts": ["Alice lives in Paris."]}')
    data = json.loads(obs)
    assert data["role"] == "manage" and data["facts"][0]["text"] == "Alice lives in Paris."
    obs, *_, info = env.step(ADD_PARIS)
    data = json.loads(obs)
    assert data["role"] == "answer" and data["question"] == "What is Bob's job?"
    assert {m["id"] for m in data["memories"]} == {"m0", "m1"}
    assert "gold" not in info and info["gold_answer"] == "nurse" and "nurse" not in data["question"]


def test_answer_reward_is_score_minus_compression_penalty():
    env = make(lambda_comp=0.5)
    env.reset(seed=0)
    env.step('{"facts": []}')
    long_text = " ".join(["word"] * 40)
    env.step(json.dumps({"operations": [{"op": "ADD", "text": "Bob works as a nurse. " + long_text}]}))
    seen = env._seen_tokens
    mem = env.memory.tokens
    _, reward, _, _, info = env.step("nurse")
    expected_penalty = 0.5 * max(0.0, mem - C.COMPRESSION_RATIO * seen) / seen
    assert info["compression_penalty"] == pytest.approx(expected_penalty) and expected_penalty > 0
    assert reward == pytest.approx(1.0 - expected_penalty)


@pytest.mark.parametrize("metric,prediction,expected", [("f1", "a nurse", 2 / 3), ("em", "a nurse", 0.0), ("em", "Nurse!", 1.0)])
def test_metric_is_selectable(metric, prediction, expected):
    env = make(metric=metric, lambda_comp=0.0)
    env.reset(seed=0)
    env.step("[]")
    env.step(ADD_PARIS)
    _, reward, _, _, info = env.step(prediction)
    assert reward == pytest.approx(expected) and info["score"] == pytest.approx(expected)


@pytest.mark.parametrize("action,fragment", [
    ('{"operations": [{"op": "UPDATE", "id": "m9", "text": "x"}]}', "no memory with id 'm9'"),
    ('{"operations": [{"op": "UPDATE", "id": "m0"}]}', "needs a non-empty text"),
    ('{"operations": [{"op": "ADD", "text": "ok"}, {"op": "DELETE", "id": "m0"}, {"op": "DELETE", "id": "m0"}]}', "deleted earlier"),
    ('{"operations": [{"op": "ADD", "text": "ok"}, {"op": "DELETE", "id": "m7"}]}', "no memory with id"),
    ("I think we should add it", "no JSON"),
])
def test_invalid_manage_actions_change_nothing_and_are_penalised(action, fragment):
    env = make()
    env.reset(seed=0)
    env.step("[]")
    env.step('{"operations": [{"op": "ADD", "text": "Alice lives in Paris."}]}')
    env.step("nurse")
    env.step("[]")
    before = env.memory
    _, reward, _, _, info = env.step(action)
    assert env.memory is before and env.memory.to_dict() == before.to_dict()
    assert reward == -C.INVALID_ACTION_PENALTY and info["valid"] is False and fragment in info["error"]
    assert info["role"] == "answer"  # the episode moves on


def test_invalid_extract_action_gives_no_facts_and_a_penalty():
    env = make()
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(12345)
    assert reward == -C.INVALID_ACTION_PENALTY and "string" in info["error"]
    assert json.loads(obs)["facts"] == []


def test_step_after_the_end_and_before_reset_raise():
    env = make()
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")
    run_oracle(env)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="qa_schedule"):
        make(qa_schedule="sometimes")
    with pytest.raises(ValueError, match="unknown answer metric"):
        make(metric="rouge")
    with pytest.raises(ValueError, match="lambda_comp"):
        make(lambda_comp=-1)
    with pytest.raises(TypeError, match="ready source"):
        MemorySessionEnv(source=TinySource(), num_sessions=3)
    with pytest.raises(ValueError, match="unknown data source"):
        MemorySessionEnv(source="wikipedia")
    env = make()
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"sed": 1})


def test_fork_is_independent_of_its_parent():
    env = make()
    env.reset(seed=0)
    env.step('{"facts": ["Alice lives in Paris."]}')
    child = env.fork()
    assert child.memory is env.memory and child.role == "manage"
    child.step(ADD_PARIS)
    assert len(child.memory) == 2 and len(env.memory) == 0 and env.role == "manage"
    env.step('{"operations": [{"op": "ADD", "text": "Other."}]}')
    assert [e.text for e in child.memory] == ["Alice lives in Paris.", "Bob works as a nurse."]
    assert [e.text for e in env.memory] == ["Other."]


def test_fork_copies_the_rng_stream():
    env = make()
    env.reset(seed=3)
    child = env.fork()
    assert env.np_random.integers(1 << 30) == child.np_random.integers(1 << 30)
    env.np_random.integers(1 << 30)
    assert env.np_random.integers(1 << 30) != child.np_random.integers(1 << 30)


def test_gym_make_result_forks_with_its_wrappers():
    env = gym.make("MemorySession-v0", source=TinySource(), disable_env_checker=True)
    env.reset(seed=0)
    env.step("[]")
    child = env.fork()
    assert child is not env and child.unwrapped is not env.unwrapped
    child.step(ADD_PARIS)
    assert len(child.unwrapped.memory) == 2 and len(env.unwrapped.memory) == 0
    assert env.memory is env.unwrapped.memory
    # the wrappers' own state was copied: the fork keeps working after the parent resets
    env.reset(seed=1)
    assert child.unwrapped.role == "answer"


def test_fork_env_rejects_environments_without_fork():
    with pytest.raises(TypeError, match="no fork"):
        memenv.fork_env(gym.make("CartPole-v1"))


def test_memory_save_load_round_trip_through_the_env(tmp_path):
    env = make()
    run_oracle(env)
    path = tmp_path / "m.json"
    env.memory.save(path)
    other = make()
    other.reset(seed=0)
    other.set_memory(memenv.MemoryBank.load(path))
    assert other.memory == env.memory
    assert [d for d, _ in other._index.search("Lyon", 3)] == [d for d, _ in env._index.search("Lyon", 3)]


def test_importing_memenv_does_not_import_torch_or_transformers():
    code = "import sys, memenv; import gymnasium as gym; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_module_prefixed_id_works_without_prior_import():
    code = ("import gymnasium as gym; env = gym.make('memenv:MemorySession-v0'); obs, info = env.reset(seed=0); "
            "f = env.fork(); print(info['role'], type(f).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["extract", "ForkableWrapper"]


def test_fork_spaces_sample_independently():
    env = make()
    env.reset(seed=0)
    env.action_space.seed(5)
    child = env.fork()
    assert child.action_space.sample() == env.action_space.sample()
    env.action_space.sample()
    assert child.action_space.sample() != env.action_space.sample()


def test_questions_without_evidence_are_asked_at_the_end():
    from memenv.types import Conversation, Question
    from tests.helpers_env import tiny_conversation

    conv = tiny_conversation()
    conv = Conversation(conv.conv_id, conv.speakers, conv.sessions,
                        conv.questions + (Question("q2", "Anything else?", "no", "open-domain", ()),))

    class Source(TinySource):
        def get(self, key):
            return conv

    env = MemorySessionEnv(source=Source())
    obs, info = env.reset(seed=0)
    asked = []
    done = False
    while not done:
        if info["role"] == "answer":
            asked.append((env.session_index, json.loads(obs)["question_id"]))
        obs, _, done, _, info = env.step("[]")
    assert asked == [(0, "q0"), (1, "q1"), (1, "q2")]


def test_step_info_separates_the_answered_question_from_the_next_one():
    env = make(qa_schedule="end")
    env.reset(seed=0)
    for _ in range(4):
        env.step("[]")
    _, _, _, _, info = env.step("nurse")
    assert info["answered"]["question_id"] == "q0" and info["answered"]["kind"] == "single-hop"
    assert info["answered"]["score"] == info["score"] == 1.0
    assert info["question_kind"] == "knowledge-update" and info["gold_answer"] == "Lyon"  # the next question


def test_operations_may_reference_extracted_facts_by_index():
    env = make()
    env.reset(seed=0)
    env.step('{"facts": [{"text": "Alice lives in Paris.", "speaker": "Alice"}, "Bob works as a nurse."]}')
    _, reward, _, _, info = env.step('{"operations": [{"op": "ADD", "fact": 1}, {"op": "ADD", "fact": "0"}]}')
    assert info["valid"] and reward == 0.0
    assert [(e.text, e.speaker) for e in env.memory] == [("Bob works as a nurse.", "Bob"), ("Alice lives in Paris.", "Alice")]


@pytest.mark.parametrize("ops,fragment", [
    ('[{"op": "ADD", "fact": 2}]', "fact 2 does not exist"),
    ('[{"op": "ADD", "fact": 0, "text": "x"}]', "either text or fact"),
    ('[{"op": "ADD", "fact": -1}]', "index of an extracted fact"),
])
def test_bad_fact_references_are_invalid(ops, fragment):
    env = make()
    env.reset(seed=0)
    env.step('{"facts": ["Alice lives in Paris.", "Bob works as a nurse."]}')
    _, reward, _, _, info = env.step(ops)
    assert not info["valid"] and fragment in info["error"] and len(env.memory) == 0


def test_probe_scores_any_question_without_changing_state():
    env = make()
    env.reset(seed=0)
    env.step("[]")
    env.step(ADD_PARIS)
    assert env.questions_due_by(0) == [0] and env.questions_due_by(1) == [0, 1]
    before = (env.role, env.memory, env._queue, env._turn)
    obs = json.loads(env.probe(1))
    assert obs["role"] == "answer" and obs["question"] == "Where does Alice live?"
    assert env.score_answer(1, "Paris") == 0.0 and env.score_answer(0, "Answer: nurse") == 1.0
    assert (env.role, env.memory, env._queue, env._turn) == before
    with pytest.raises(IndexError):
        env.probe(5)


def test_options_of_another_source_are_rejected_by_name():
    with pytest.raises(TypeError, match=r"'synthetic' source does not take \['conversations'\]"):
        MemorySessionEnv(conversations=["conv-26"])


# --- num_sessions is bounded -----------------------------------------------------------------

@pytest.mark.parametrize("value, error, fragment", [
    (0, ValueError, "num_sessions must be >= 1, got 0"),
    (-5, ValueError, "num_sessions must be >= 1, got -5"),
    (10**9, ValueError, f"num_sessions must be <= {C.MAX_SESSIONS}, got 1000000000"),
    (C.MAX_SESSIONS + 1, ValueError, f"num_sessions must be <= {C.MAX_SESSIONS}"),
    (2.5, TypeError, "num_sessions must be an int, got float 2.5"),
    ("8", TypeError, "num_sessions must be an int, got str '8'"),
    (True, TypeError, "num_sessions must be an int, got bool True"),
])
def test_num_sessions_out_of_range_or_not_an_int_fails_at_make(value, error, fragment):
    # 10**9 used to pass make() and then hang reset() generating a billion sessions
    with pytest.raises(error) as caught:
        gym.make("MemorySession-v0", num_sessions=value)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_the_largest_num_sessions_still_works():
    env = gym.make("MemorySession-v0", num_sessions=C.MAX_SESSIONS)
    env.reset(seed=0)
    assert env.unwrapped.conversation.num_sessions == C.MAX_SESSIONS


# --- lone surrogates in actions ----------------------------------------------------------------

# Actions holding lone surrogates both as characters and as JSON escapes ("\\ud800" in the
# JSON text, which json.loads turns into the character).
SURROGATE_ACTIONS = {
    "extract": '{"facts": [{"text": "Oskar \ud800 lives in Lisbon.", "speaker": "Os\\udfffkar"}, "Escaped \\ud800 fact."]}',
    "manage": '{"operations": [{"op": "ADD", "fact": 0}, {"op": "ADD", "text": "Raw \udc00, escaped \\ud800.",'
              ' "speaker": "B\ud800"}]}',
    "answer": "Relevant: m0\nAnswer: Lisbon \ud800",
}


def play_with_lone_surrogates(env, tmp_path, **reset_options):
    """Play one episode with SURROGATE_ACTIONS; check that nothing the environment hands
    out holds a lone surrogate and that its memory saves and loads back. Returns the bank."""
    obs, info = env.reset(seed=0, options=reset_options or None)
    done = False
    while not done:
        obs.encode("utf-8")  # what a tokenizer does first
        obs, _, done, _, info = env.step(SURROGATE_ACTIONS[info["role"]])
        assert info["valid"], info["error"]
        json.dumps(info, ensure_ascii=False).encode("utf-8")
    bank = env.unwrapped.memory
    assert any("\ufffd" in entry.text for entry in bank)
    path = tmp_path / "memory.json"
    bank.save(path)
    assert memenv.MemoryBank.load(path) == bank
    return bank


def test_lone_surrogates_in_actions_are_replaced_so_the_memory_saves(tmp_path):
    bank = play_with_lone_surrogates(make(), tmp_path)
    assert bank["m0"].text == "Oskar \ufffd lives in Lisbon." and bank["m1"].text == "Raw \ufffd, escaped \ufffd."
    env = gym.make("MemorySession-v0", num_sessions=2)
    play_with_lone_surrogates(env, tmp_path)


# ---------------------------------------------------------------- Memory-R2 options (issue 17)
def test_invalid_penalty_is_an_option_and_zero_reproduces_the_official_code():
    for penalty in (0.0, 0.25):
        env = make(invalid_penalty=penalty)
        env.reset(seed=0)
        _, reward, _, _, info = env.step("not json at all")
        assert info["valid"] is False and reward == -penalty
    with pytest.raises(ValueError, match="invalid_penalty"):
        make(invalid_penalty=-0.1)


def test_squad_f1_is_a_selectable_reward_metric():
    env = make(metric="squad_f1")
    env.reset(seed=0)
    env.step("[]")
    env.step('{"operations": [{"op": "ADD", "text": "Bob works as a nurse."}]}')
    # "A nurse!" -> "nurse" under SQuAD normalisation; the mem0 F1 keeps "a" and scores 2/3
    _, _, _, _, info = env.step("A nurse!")
    assert info["score"] == 1.0
    env = make()
    env.reset(seed=0)
    env.step("[]")
    env.step('{"operations": [{"op": "ADD", "text": "Bob works as a nurse."}]}')
    _, _, _, _, info = env.step("A nurse!")
    assert info["score"] == pytest.approx(2 / 3)


def test_session_chunks_give_each_chunk_an_extract_and_a_manage_turn():
    env = make(session_chunks=2)
    obs, info = env.reset(seed=0)
    first = json.loads(obs)
    assert (first["chunk"], first["num_chunks"]) == (0, 2) and info["chunk"] == 0
    assert [t["dia_id"] for t in first["turns"]] == ["D1:1"] and first["previous_turns"] == []
    assert info["gold"]["operations"][0]["op"] == "ADD"
    obs, _, _, _, info = env.step('{"facts": ["Alice lives in Paris."]}')
    assert json.loads(obs)["previous_operations"] == [] and info["role"] == "manage"
    obs, _, _, _, info = env.step('{"operations": [{"op": "ADD", "fact": 0}]}')
    second = json.loads(obs)
    assert info["role"] == "extract" and info["session"] == 0 and info["chunk"] == 1
    assert [t["dia_id"] for t in second["turns"]] == ["D1:2"]
    assert [t["dia_id"] for t in second["previous_turns"]] == ["D1:1"]
    assert info["gold"] == {"facts": [], "operations": [{"op": "NOOP"}], "memory": list(
        env.conversation.sessions[0].gold_memory)}
    obs, _, _, _, info = env.step('{"facts": ["Bob works as a nurse."]}')
    assert json.loads(obs)["previous_operations"][0]["op"] == "ADD"
    _, _, _, _, info = env.step('{"operations": [{"op": "ADD", "fact": 0}]}')
    assert info["role"] == "answer" and len(env.memory) == 2  # q0 is due after session 0
    # every turn's tokens were seen exactly once
    assert info["seen_tokens"] == sum(len(t.text.split()) for t in env.conversation.sessions[0].turns)


def test_unchunked_sessions_are_unchanged_by_the_option_default():
    roles, _, _ = run_oracle(make())
    roles_chunked, _, _ = run_oracle(make(session_chunks=1))
    assert roles == roles_chunked == ["extract", "manage", "answer", "extract", "manage", "answer"]
    with pytest.raises(ValueError, match="session_chunks"):
        make(session_chunks=0)


def test_similarity_threshold_and_session_order_shape_the_retrieved_memories():
    env = make(similarity_threshold=1e9)
    env.reset(seed=0)
    env.step('{"facts": ["Alice lives in Paris."]}')
    env.step('{"operations": [{"op": "ADD", "fact": 0}]}')
    env.step("Paris")
    obs, _, _, _, _ = env.step('{"facts": ["Alice lives in Paris now."]}')
    assert json.loads(obs)["facts"][0]["related"] == []  # nothing scores that high
    env = make(answer_order="session")
    env.reset(seed=0)
    env.step("[]")
    env.step('{"operations": [{"op": "ADD", "text": "Alice plays violin."}]}')
    env.step("x")
    env.step("[]")
    env.step('{"operations": [{"op": "ADD", "text": "Alice lives in Lyon, Alice moved."}]}')
    memories = json.loads(env.probe(1))["memories"]
    assert [m["session"] for m in memories] == [0, 1]  # relevance alone would put session 1 first
    with pytest.raises(ValueError, match="answer_order"):
        make(answer_order="random")
