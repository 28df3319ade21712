"""Hard synthetic worlds (difficulty="hard"): determinism, gold annotations checked against
the dialogue, the text contract the scripted reader parses, the memory budget, the
oracle's F1 1.0 at 8, 16 and 32 sessions, and the hand-written rules falling well short."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import statistics

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import memenv
from memenv.scripted import AddAllAgent, NoopAgent, OracleAgent, scripted_answer
from memenv.synthetic import generate_world, parse_date, parse_fact, parse_question
from memenv.synthetic.dates import find_relative_phrase, format_date, resolve_relative_date
from memenv.synthetic.hard import BUDGET_SLACK
from memenv.synthetic.source import SyntheticSource
from memenv.synthetic.texts import PastState, canonical_fact, history_text, list_text, order_question_text, record_text
from memenv.types import COUNTING, HARD_SYNTHETIC_KINDS, HISTORY, ORDERING

import numpy as np

from agents.sb3_agents import FeatureManagerAgent
from agents.sb3_features import (
    ADD,
    BUDGET_RULE_MEMORIES,
    DELETE,
    FEATURE_NAMES,
    HAND_WRITTEN_RULES,
    MEMORY_SIZE_SCALE,
    NOOP,
    NUM_FEATURES,
    UPDATE,
    budget_keep_history_decision,
    keep_history_decision,
    rule_decision,
)

HARD_IDS = ("MemorySessionHard-v0", "MemorySessionHard16-v0", "MemorySessionHard32-v0")


def hard_worlds(seeds=range(8), num_sessions=8):
    return [generate_world(seed, num_sessions, "hard") for seed in seeds]


def item_texts(text):
    """The state texts a list or record text merges ("Alice's trips: ...", "Alice's homes:
    ..."), else ()."""
    parsed = parse_fact(text)
    if parsed is None or parsed.category not in ("list", "record"):
        return ()
    return tuple(canonical_fact(i.event, i.speaker, i.value, female=True, date=i.date)
                 for i in parsed.items if i.category == "state")


def turn_map(world):
    return {(s.index, t.dia_id): (s, t) for s in world.sessions for t in s.turns}


# ----------------------------------------------------------------------- determinism --
def test_same_seed_same_hard_world_and_default_worlds_unchanged():
    a, b = generate_world(5, 8, "hard"), generate_world(5, 8, "hard")
    assert a == b and a.extra == b.extra
    assert json.dumps(dataclasses.asdict(a), sort_keys=True) == json.dumps(dataclasses.asdict(b), sort_keys=True)
    assert generate_world(6, 8, "hard") != a
    default = generate_world(5, 8)
    assert default == generate_world(5, 8, "default") and default != a
    assert a.conv_id == "synthetic-hard-8-s5" and default.conv_id == "synthetic-8-s5"
    assert "memory_budget" not in default.extra and "stated_facts" not in default.extra


def test_source_difficulty_option_and_errors():
    source = SyntheticSource(8, difficulty="hard")
    assert source.get(3) is source.get(3) and source.get(3) == generate_world(3, 8, "hard")
    with pytest.raises(ValueError, match="difficulty must be one of"):
        SyntheticSource(8, difficulty="extreme")
    with pytest.raises(ValueError, match="difficulty must be one of"):
        generate_world(0, 8, "easy")


# ------------------------------------------------------------ gold against the dialogue --
def test_gold_ops_reproduce_gold_memory_and_budget_holds_it():
    from memenv.synthetic import apply_gold_facts

    for world in hard_worlds(range(10), 16):
        memory: tuple[str, ...] = ()
        for session in world.sessions:
            memory = apply_gold_facts(memory, session.gold_facts)
            assert memory == session.gold_memory
            assert len(memory) <= world.extra["memory_budget"]
        assert world.extra["memory_budget"] == max(len(s.gold_memory) for s in world.sessions) + BUDGET_SLACK
        # every gold memory text follows the canonical contract
        assert all(parse_fact(text) is not None for text in world.sessions[-1].gold_memory)


def test_stated_facts_are_said_by_their_speaker_with_their_date():
    checked = 0
    for world in hard_worlds(range(10)):
        turns = turn_map(world)
        stated = {(i, text) for i, facts in enumerate(world.extra["stated_facts"]) for text, _ in facts}
        assert stated == {(s, text) for s, _, text, _ in world.extra["fact_turns"]}
        for session_index, dia_id, text, offset in world.extra["fact_turns"]:
            session, turn = turns[(session_index, dia_id)]
            parsed = parse_fact(text)
            assert parsed is not None and parsed.speaker == turn.speaker
            if offset is not None:  # relative date in the turn, absolute in the fact
                phrase = find_relative_phrase(turn.text)
                assert format_date(resolve_relative_date(phrase, parse_date(session.date))) == parsed.date
                checked += 1
    assert checked > 100


def test_changes_merge_past_and_present_into_one_record_text():
    seen = 0
    for world in hard_worlds(range(10)):
        turns = turn_map(world)
        stated = {(s, t) for s, _, t, _ in world.extra["fact_turns"]}
        for session_index, dia_id, text, offset in world.extra["fact_turns"]:
            parsed = parse_fact(text)
            if parsed.event not in ("city_change", "job_change") or offset is None:
                continue  # no offset: a correction (its turn gives the absolute date)
            session = world.sessions[session_index]
            op = next(f for f in session.gold_facts if f.key == f"{parsed.speaker}/{parsed.slot}")
            record = parse_fact(op.text)
            assert op.op == "UPDATE" and record.category == "record"
            history, current = record.items
            assert (current.value, current.date) == (parsed.value, parsed.date)
            # the text it replaces: the old value's state text, or the record text so far
            old = parse_fact(op.old_text)
            before = old if old.category == "state" else old.items[1]
            entry = history.past[-1]
            assert (entry.value, entry.start, entry.end) == (before.value, before.date, parsed.date)
            if old.category == "record":
                assert history.past[:-1] == old.items[0].past
            said = turns[(session_index, dia_id)][1].text
            # the turn names the value it ends and the one it starts
            assert before.value in said and parsed.value in said
            # the record text is written by the manager, not stated
            assert (session_index, op.text) not in stated
            seen += 1
    assert seen > 20


def test_new_trips_and_concerts_merge_into_one_list_text():
    seen = 0
    for world in hard_worlds(range(10)):
        for session_index, _, text, offset in world.extra["fact_turns"]:
            parsed = parse_fact(text)
            if parsed.event not in ("trip_add", "concert_add") or offset is None:
                continue
            op = next(f for f in world.sessions[session_index].gold_facts
                      if f.key in (f"{parsed.speaker}/{parsed.slot}", f"{parsed.speaker}/{parsed.slot}/{parsed.value}"))
            if op.op == "ADD":  # the speaker's first trip (concert): its own state text
                assert op.text == text
                continue
            assert op.op == "UPDATE" and parse_fact(op.text).category == "list"
            # the list text adds the stated item to the texts it merged so far
            assert item_texts(op.text) == (item_texts(op.old_text) or (op.old_text,)) + (text,)
            seen += 1
    assert seen > 10


def test_retractions_corrections_and_third_parties_follow_the_dialogue():
    counts = {"retraction": 0, "correction": 0, "third-party": 0, "merged correction": 0}
    for world in hard_worlds(range(30)):
        turns = turn_map(world)
        for session_index, dia_id, text, offset in world.extra["fact_turns"]:
            parsed = parse_fact(text)
            said = turns[(session_index, dia_id)][1].text
            session = world.sessions[session_index]
            ops = [f for f in session.gold_facts if f.speaker == parsed.speaker]
            if parsed.category == "retraction":
                # the state's text goes: merged into the history text
                merge = next(f for f in ops if f.key == f"{parsed.speaker}/{parsed.slot}/past")
                history = parse_fact(merge.text)
                assert history.past[-1].value == parsed.value and history.past[-1].end == parsed.date
                assert parsed.value in said
                counts["retraction"] += 1
            elif parsed.category == "third-party":
                kin = parsed.detail
                assert f"My {kin}" in said and parsed.value in said
                # extracted, but the gold manager stores nothing about the third party
                assert not any(f.text == text for f in session.gold_facts)
                assert text not in session.gold_memory
                counts["third-party"] += 1
            elif offset is None and parsed.date and (
                    "wrong" in said or "Correction" in said or "mixed" in said):
                fact = next(f for f in ops if f.text == text or text in item_texts(f.text))
                old = parse_fact(fact.old_text)
                if old.category in ("list", "record"):  # the entry is rewritten inside the text
                    new_items = item_texts(fact.text)
                    gone = [t for t in item_texts(fact.old_text) if t not in new_items]
                    assert fact.op == "UPDATE" and len(gone) == 1 and text in new_items
                    old = parse_fact(gone[0])
                    counts["merged correction"] += 1
                assert fact.op == "UPDATE" and old.event == parsed.event
                assert (old.value, old.date) != (parsed.value, parsed.date)
                if old.date != parsed.date:  # a date correction names both dates
                    assert parsed.date in said and old.date in said
                else:                        # a value correction names both values
                    assert parsed.value in said and old.value in said
                counts["correction"] += 1
    assert all(n >= 5 for n in counts.values()), counts


def test_asides_look_like_facts_but_carry_none():
    kinds = set()
    for world in hard_worlds(range(10)):
        turns = turn_map(world)
        fact_turns = {(s, d) for s, d, _, _ in world.extra["fact_turns"]}
        for session_index, dia_id, kind, speaker, slot, value in world.extra["aside_turns"]:
            session, turn = turns[(session_index, dia_id)]
            assert turn.speaker == speaker and value in turn.text
            assert (session_index, dia_id) not in fact_turns
            assert find_relative_phrase(turn.text) is None
            # no gold fact of that session gives this speaker this value
            assert not any(parse_fact(f.text).value == value and f.speaker == speaker
                           for f in session.gold_facts if parse_fact(f.text).category != "history")
            kinds.add(kind)
    assert kinds == {"hypothetical", "plan", "negation"}


# ------------------------------------------------------------------------ questions --
def test_every_kind_appears_and_new_kinds_have_evidence_and_answers():
    kinds = set()
    for world in hard_worlds(range(6)):
        for q in world.questions:
            kinds.add(q.kind)
            assert q.evidence and all(0 <= e < world.num_sessions for e in q.evidence)
            assert parse_question(q.question) is not None, q.question
            if q.kind == ORDERING:
                assert q.answer in ("before", "after")
            if q.kind == COUNTING:
                assert int(q.answer) >= 2
            # the answer holds from its last evidence session on: the reader finds it there
            memory = world.sessions[q.due_after].gold_memory
            assert scripted_answer(q.question, memory) == q.answer, q.question
    assert kinds == set(HARD_SYNTHETIC_KINDS)


def test_ordering_answers_follow_the_dates_said_in_the_dialogue():
    checked = 0
    for world in hard_worlds(range(10)):
        starts = {}  # (slot, value) -> date the dialogue last gave for its start
        for session_index, _, text, _ in world.extra["fact_turns"]:
            parsed = parse_fact(text)
            if parsed.category == "state" and parsed.date:
                starts[(parsed.slot, parsed.value)] = parse_date(parsed.date)
        for q in world.questions:
            if q.kind != ORDERING:
                continue
            meta = dict(q.meta)
            first = starts[(meta["slot"], meta["value"])]
            second = starts[(meta["other_slot"], meta["other_value"])]
            assert q.answer == ("before" if first < second else "after")
            checked += 1
    assert checked >= 20


def test_history_and_counting_answers_follow_the_changes_said():
    checked = 0
    for world in hard_worlds(range(10)):
        values: dict[tuple[str, str], list[str]] = {}
        dates: dict[tuple[str, str, str], str] = {}  # (speaker, slot, date) -> value said
        for session_index, _, text, offset in world.extra["fact_turns"]:
            parsed = parse_fact(text)
            if parsed.category == "state":
                bucket = values.setdefault((parsed.speaker, parsed.slot), [])
                said_before = dates.get((parsed.speaker, parsed.slot, parsed.date))
                if offset is None and parsed.date and said_before not in (None, parsed.value):
                    bucket.remove(said_before)  # a correction of the value said for that date
                if parsed.date:
                    dates[(parsed.speaker, parsed.slot, parsed.date)] = parsed.value
                if parsed.value not in bucket:
                    bucket.append(parsed.value)
        for q in world.questions:
            meta = dict(q.meta)
            if q.kind == COUNTING:
                assert int(q.answer) == len(values[(meta["speaker"], meta["slot"])])
                checked += 1
            elif q.kind == HISTORY and parse_question(q.question).qtype == "ever":
                assert set(q.answer.split(" and ")) == set(values[(meta["speaker"], meta["slot"])])
                checked += 1
    assert checked >= 30


# -------------------------------------------------------------------- text contract --
def test_history_text_and_order_question_round_trip():
    states = [PastState("Paris", "", "3 May 2023"), PastState("New York", "3 May 2023", "4 July 2023")]
    text = history_text("Alice", "city", states)
    assert text == "Alice's past homes: Paris until 3 May 2023; New York from 3 May 2023 until 4 July 2023."
    parsed = parse_fact(text)
    assert (parsed.category, parsed.slot, parsed.speaker, parsed.past) == ("history", "city", "Alice", tuple(states))
    pets = history_text("Bob", "pet", [PastState("Milo", "1 May 2023", "9 May 2023", "dog")])
    assert parse_fact(pets).past[0].detail == "dog"
    question = order_question_text(np.random.default_rng(0), "Bob", False, ("pet", "Milo"), ("vehicle", "Kia"))
    parsed_q = parse_question(question)
    assert (parsed_q.qtype, parsed_q.slot, parsed_q.value, parsed_q.other_slot, parsed_q.other_value) == \
        ("order", "pet", "Milo", "vehicle", "Kia")
    memory = [text, "Alice moved to Lyon on 4 July 2023.", "Alice's cousin moved to Rome on 5 July 2023.",
              "Alice joined the chess club on 1 June 2023."]
    assert scripted_answer("Where does Alice live?", memory) == "Lyon"
    assert scripted_answer("Which cities has Alice called home?", memory) == "Paris and New York and Lyon"
    assert scripted_answer("How many homes has Alice had?", memory) == "3"
    assert scripted_answer("Where was Alice's home before Lyon?", memory) == "New York"
    assert scripted_answer("Did Alice join the chess club before or after she moved to Lyon?", memory) == "before"
    # a memory that keeps both dates of a corrected event cannot order it
    assert scripted_answer("Did Alice join the chess club before or after she moved to Lyon?",
                           memory + ["Alice joined the chess club on 6 July 2023."]) == "unknown"


# ---------------------------------------------------------------------- environment --
@pytest.mark.parametrize("env_id", HARD_IDS)
def test_check_env_on_hard_ids(env_id):
    env = gym.make(env_id, disable_env_checker=True)
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    assert env.unwrapped.conversation.conv_id.startswith("synthetic-hard-")


def test_memory_budget_refuses_a_manage_action_that_would_exceed_it():
    env = gym.make("MemorySession-v0", memory_budget=2)
    env.reset(seed=0)
    env.step(json.dumps({"facts": []}))
    ops = [{"op": "ADD", "text": f"Note {i}."} for i in range(3)]
    _, reward, _, _, info = env.step(json.dumps({"operations": ops}))
    assert not info["valid"] and "memory budget exceeded" in info["error"] and "budget is 2" in info["error"]
    assert reward < 0 and len(env.unwrapped.memory) == 0


def test_memory_budget_world_and_its_errors():
    env = gym.make("MemorySessionHard-v0")
    obs, info = env.reset(seed=1)
    budget = env.unwrapped.conversation.extra["memory_budget"]
    obs, *_ = env.step(OracleAgent().act(obs, info))
    assert json.loads(obs)["memory_budget"] == budget
    with pytest.raises(ValueError, match="memory_budget='world' needs a conversation with its own budget"):
        gym.make("MemorySession-v0", memory_budget="world").reset(seed=0)
    for bad in (0, -3, "all", 2.5, True):
        with pytest.raises(ValueError, match="memory_budget must be None, a positive int or 'world'"):
            gym.make("MemorySession-v0", memory_budget=bad)


def play_scores(env_id, agent, seeds):
    env = gym.make(env_id, qa_schedule="end")
    scores, invalid = [], 0
    for seed in seeds:
        obs, info = env.reset(options={"world_seed": seed})
        done = False
        while not done:
            obs, _, done, _, info = env.step(agent.act(obs, info))
            invalid += not info.get("valid", True)
            if "answered" in info:
                scores.append(info["score"])
    return statistics.mean(scores), len(scores), invalid


@pytest.mark.parametrize("env_id,seeds", [("MemorySessionHard-v0", range(10)), ("MemorySessionHard16-v0", range(4)),
                                          ("MemorySessionHard32-v0", range(3))])
def test_oracle_scores_f1_one_on_hard_worlds(env_id, seeds):
    score, n, invalid = play_scores(env_id, OracleAgent(), seeds)
    assert n > 60 and score == 1.0 and invalid == 0


def test_add_all_and_noop_fall_well_short_on_hard_worlds():
    add_all, _, invalid = play_scores("MemorySessionHard-v0", AddAllAgent(), range(10))
    noop, _, _ = play_scores("MemorySessionHard-v0", NoopAgent(), range(10))
    assert add_all < 0.5 and invalid > 0   # contradictions, and the budget refuses its growth
    assert noop < 0.15


def test_record_and_list_texts_round_trip_and_are_read_as_the_texts_they_merge():
    past = [PastState("Paris", "", "3 May 2023"), PastState("Oslo", "3 May 2023", "4 July 2023")]
    record = record_text("Alice", "city", past, "Lyon", "4 July 2023")
    assert record == "Alice's homes: Paris until 3 May 2023; Oslo from 3 May 2023 until 4 July 2023; Lyon since 4 July 2023."
    history, current = parse_fact(record).items
    assert history.past == tuple(past) and (current.value, current.date, current.is_state) == ("Lyon", "4 July 2023", True)
    trips = list_text("Alice", "trip", [("New Zealand", "1 May 2023"), ("Chile", "5 June 2023")])
    assert trips == "Alice's trips: New Zealand on 1 May 2023; Chile on 5 June 2023."
    assert [(i.value, i.date) for i in parse_fact(trips).items] == [("New Zealand", "1 May 2023"), ("Chile", "5 June 2023")]
    memory = [record, trips, "Alice's cousin moved to Rome on 5 July 2023."]
    assert scripted_answer("Where does Alice live?", memory) == "Lyon"
    assert scripted_answer("When did Alice move to Lyon?", memory) == "4 July 2023"
    assert scripted_answer("Where was Alice's home before Lyon?", memory) == "Oslo"
    assert scripted_answer("How many homes has Alice had?", memory) == "3"
    assert scripted_answer("Which countries has Alice visited?", memory) == "New Zealand and Chile"
    assert scripted_answer("When did Alice travel to Chile?", memory) == "5 June 2023"
    assert scripted_answer("Did Alice travel to Chile before or after she moved to Lyon?", memory) == "before"
    # a stale state text next to the record is read as a second current value
    assert scripted_answer("Where does Alice live?", memory + ["Alice lives in Paris."]) == "Paris and Lyon"
    with pytest.raises(ValueError, match="has no record text"):
        record_text("Alice", "pet", past, "Milo", "4 July 2023")
    with pytest.raises(ValueError, match="at least one entry"):
        list_text("Alice", "concert", [])


def feature_vector(**values):
    x = np.zeros(NUM_FEATURES, dtype=np.float32)
    for name, value in values.items():
        x[FEATURE_NAMES.index(name)] = value
    return x


def test_hand_written_rules_decide_as_documented():
    match = {"nearest0_present": 1, "nearest0_same_speaker": 1, "nearest0_same_topic": 1, "has_date": 1}
    small = 2 / (2 + MEMORY_SIZE_SCALE)
    full = BUDGET_RULE_MEMORIES / (BUDGET_RULE_MEMORIES + MEMORY_SIZE_SCALE)
    change = feature_vector(cue_change=1, memory_size=small, **match)
    assert rule_decision(change) == UPDATE and keep_history_decision(change) == ADD
    assert budget_keep_history_decision(change) == ADD
    assert budget_keep_history_decision(feature_vector(cue_change=1, memory_size=full, **match)) == UPDATE
    assert budget_keep_history_decision(feature_vector(cue_acquisition=1, memory_size=full, **match)) == UPDATE
    repeat = feature_vector(cue_change=1, nearest0_duplicate=1, **match)
    assert rule_decision(repeat) == NOOP and keep_history_decision(repeat) == UPDATE
    retraction = feature_vector(cue_retraction=1, memory_size=full, **match)
    assert all(rule(retraction) == DELETE for rule in HAND_WRITTEN_RULES.values())
    assert all(rule(feature_vector(placeholder=1)) == NOOP for rule in HAND_WRITTEN_RULES.values())
    with pytest.raises(ValueError, match="features must have"):
        keep_history_decision(np.zeros(3))


@pytest.mark.parametrize("name", list(HAND_WRITTEN_RULES))
def test_hand_written_rules_fall_well_short_of_the_oracle_on_hard_worlds(name):
    score, n, _ = play_scores("MemorySessionHard-v0", FeatureManagerAgent(HAND_WRITTEN_RULES[name]), range(10))
    assert n > 200 and score <= 0.65, (name, score)


def test_the_rule_manager_agent_plays_the_hand_written_rules_by_name_and_under_another_extractor():
    from agents.by_role import ByRoleAgent
    from agents.registry import make_agent
    from agents.sb3_agents import RuleManagerAgent

    for key, name in RuleManagerAgent.RULES.items():
        by_name = play_scores("MemorySessionHard-v0", make_agent(f"rule-manager:{key}"), range(3))
        assert by_name == play_scores("MemorySessionHard-v0", FeatureManagerAgent(HAND_WRITTEN_RULES[name]), range(3))
    assert make_agent("rule-manager").name == "rule-manager:feature"
    managed = play_scores("MemorySessionHard-v0", ByRoleAgent.from_spec("extract=oracle,manage=rule-manager,answer=oracle"), range(3))
    assert managed == play_scores("MemorySessionHard-v0", make_agent("rule-manager"), range(3))
    with pytest.raises(ValueError, match="unknown rule 'newest'.*feature, keep-history"):
        make_agent("rule-manager:newest")


def test_the_committed_sb3_manager_of_the_hard_board_loads_and_beats_noop():
    """benchmarks/results/models/sb3_manager_hard8_seed0.safetensors is the SB3 PPO manager of the
    hard 8-session boards (the README says how to rerun them with it)."""
    from pathlib import Path

    from agents.registry import make_agent

    path = Path(__file__).resolve().parents[1] / "benchmarks/results/models/sb3_manager_hard8_seed0.safetensors"
    score, n, _ = play_scores("MemorySessionHard-v0", make_agent(f"sb3-manager:{path}"), range(3))
    noop, _, _ = play_scores("MemorySessionHard-v0", NoopAgent(), range(3))
    assert n > 60 and score > noop + 0.2
