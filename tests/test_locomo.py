"""Tests of the LoCoMo loader on an invented fixture and, where present, the real dev file."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from memenv.data import DataFormatError
from memenv.data.locomo import (
    ADVERSARIAL_GOLD,
    SPLITS,
    LoCoMoSource,
    load_locomo,
    parse_evidence,
    question_counts,
)
from memenv.sources import make_source

FIXTURE = Path(__file__).parent / "fixtures" / "locomo_tiny.json"
# Real LoCoMo data (CC BY-NC 4.0) lives beside the checkout on development machines only.
DEV_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo_dev.json"


def needs_dev_file(test):
    """Mark a test as needing the real LoCoMo dev file, and skip it where that is absent."""
    skip = pytest.mark.skipif(not DEV_FILE.is_file(), reason=f"{DEV_FILE} not present")
    return pytest.mark.locomo(skip(test))


# Counted by hand from the raw JSON of locomo_dev.json (category -> questions).
DEV_COUNTS = {
    "conv-43": {"multi-hop": 31, "temporal": 26, "open-domain": 14, "single-hop": 107, "adversarial": 64},
    "conv-44": {"multi-hop": 30, "temporal": 24, "open-domain": 7, "single-hop": 62, "adversarial": 35},
    "conv-47": {"multi-hop": 20, "temporal": 34, "open-domain": 13, "single-hop": 83, "adversarial": 40},
}
DEV_SESSIONS = {"conv-43": 29, "conv-44": 28, "conv-47": 31}


def fixture_data() -> list:
    return json.loads(FIXTURE.read_text())


def write(tmp_path: Path, data, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def by_qid(conversation):
    return {q.qid: q for q in conversation.questions}


# --- the fixture ------------------------------------------------------------------------


def test_sessions_follow_numeric_order_and_skip_empty_ones():
    conv = load_locomo(FIXTURE)[0]
    assert conv.speakers == ("Mira", "Oskar")
    assert conv.extra["session_numbers"] == (1, 2, 10)  # session_3 is empty, session_11 has only a date
    assert [s.index for s in conv.sessions] == [0, 1, 2]
    assert [s.date for s in conv.sessions] == [
        "9:15 am on 3 January, 2022",
        "6:40 pm on 20 February, 2022",
        "8:05 pm on 11 April, 2022",
    ]
    assert [t.dia_id for t in conv.sessions[2].turns] == ["D10:1", "D10:2"]


def test_photos_become_text_from_their_caption():
    conv = load_locomo(FIXTURE)[0]
    shared = conv.sessions[1].turns[0]
    assert shared.text == (
        "I joined a chess club near the river. [shares a photo: a photo of a chess board on a wooden table]"
    )
    photo_only = conv.sessions[2].turns[1]
    assert photo_only.speaker == "Oskar"
    assert photo_only.text == "[shares a photo: a photo of a small dog on a sofa]"


def test_questions_map_evidence_to_session_indices_leniently():
    conv = load_locomo(FIXTURE)[0]
    q = by_qid(conv)
    assert q["conv-t1/q0"].evidence == (0,)
    assert q["conv-t1/q1"].evidence == (2,)  # D10 is the third kept session
    assert q["conv-t1/q2"].evidence == (0, 1)  # "D1:3; D2:1" in one string
    assert q["conv-t1/q3"].evidence == (1,)  # "D:2:2"
    assert q["conv-t1/q4"].evidence == (2,)  # "D30:05" has no session, "D10:01" does
    assert q["conv-t1/q5"].evidence == ()  # unreadable
    assert q["conv-t1/q6"].evidence == ()  # points into the empty session 3
    assert ("evidence", "unknown") in q["conv-t1/q5"].meta
    assert ("evidence", "unknown") not in q["conv-t1/q0"].meta
    assert conv.extra["dropped_evidence"] == 3


def test_kinds_answers_and_adversarial_exclusion():
    conv = load_locomo(FIXTURE)[0]
    q = by_qid(conv)
    assert [x.kind for x in conv.questions] == [
        "single-hop", "temporal", "multi-hop", "open-domain", "single-hop", "temporal", "single-hop"
    ]
    assert q["conv-t1/q1"].answer == "2019"  # an int in the file
    assert "conv-t1/q7" not in q
    with_adv = by_qid(load_locomo(FIXTURE, include_adversarial=True)[0])["conv-t1/q7"]
    assert with_adv.kind == "adversarial"
    assert with_adv.answer == ADVERSARIAL_GOLD
    assert ("adversarial_answer", "Lisbon") in with_adv.meta


def test_question_counts_per_kind():
    convs = load_locomo(FIXTURE, include_adversarial=True)
    assert question_counts(convs[:1]) == {
        "multi-hop": 1, "temporal": 2, "open-domain": 1, "single-hop": 3, "adversarial": 1
    }
    assert question_counts(convs) == {
        "multi-hop": 1, "temporal": 2, "open-domain": 1, "single-hop": 4, "adversarial": 1
    }
    assert "adversarial" not in question_counts(load_locomo(FIXTURE))


@pytest.mark.parametrize(
    "item, numbers, dropped",
    [
        ("D3:5", [3], 0),
        ("D:11:26", [11], 0),
        ("D30:05", [30], 0),
        ("D8:6; D9:17", [8, 9], 0),
        ("D8:6, D9", [8, 9], 0),
        ("see above", [], 2),
        (17, [], 1),
    ],
)
def test_parse_evidence(item, numbers, dropped):
    assert parse_evidence(item) == (numbers, dropped)


def test_selection_by_ids_keeps_the_requested_order_and_names_missing_ids():
    chosen = load_locomo(FIXTURE, conversations=["conv-t2", "conv-t1"])
    assert [c.conv_id for c in chosen] == ["conv-t2", "conv-t1"]
    with pytest.raises(ValueError, match=r"conv-99.*locomo_tiny\.json|locomo_tiny\.json.*conv-99"):
        load_locomo(FIXTURE, conversations=["conv-t1", "conv-99"])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"split": "memory-r2"}, "go together"),
        ({"part": "train"}, "go together"),
        ({"split": "memory-r3", "part": "train"}, "unknown LoCoMo split"),
        ({"split": "memory-r2", "part": "dev"}, "unknown part"),
        ({"split": "memory-r2", "part": "train", "conversations": ["conv-43"]}, "not both"),
    ],
)
def test_bad_selection_options(options, message):
    with pytest.raises(ValueError, match=message):
        load_locomo(FIXTURE, **options)


def test_split_presets_cover_ten_conversations_without_overlap():
    for name, parts in SPLITS.items():
        ids = [cid for part in parts.values() for cid in part]
        assert len(ids) == len(set(ids)) == 10, name


# --- malformed files fail at load time, naming file, conversation and key ---------------


def _drop(path_in_record):
    def edit(data):
        target = data[0]
        for key in path_in_record[:-1]:
            target = target[key]
        del target[path_in_record[-1]]
    return edit


def _set(path_in_record, value):
    def edit(data):
        target = data[0]
        for key in path_in_record[:-1]:
            target = target[key]
        target[path_in_record[-1]] = value
    return edit


@pytest.mark.parametrize(
    "edit, names",
    [
        (_drop(["conversation", "speaker_a"]), ["conv-t1", "speaker_a"]),
        (_drop(["conversation", "session_2_date_time"]), ["conv-t1", "session_2_date_time"]),
        (_set(["conversation", "session_2"], "not a list"), ["conv-t1", "session_2"]),
        (_drop(["conversation", "session_1", 1, "text"]), ["conv-t1", "session_1[1]", "text"]),
        (_set(["conversation", "session_1", 0, "speaker"], 3), ["conv-t1", "speaker"]),
        (_drop(["qa", 0, "answer"]), ["conv-t1", "qa[0]", "answer"]),
        (_set(["qa", 2, "category"], 9), ["conv-t1", "qa[2]", "category"]),
        (_set(["qa", 2, "category"], "4"), ["conv-t1", "qa[2]", "category"]),
        (_set(["qa", 1, "answer"], ["2019"]), ["conv-t1", "qa[1]", "answer"]),
        (_drop(["qa", 3, "evidence"]), ["conv-t1", "qa[3]", "evidence"]),
        (_drop(["qa"]), ["conv-t1", "qa"]),
        (_drop(["sample_id"]), ["item 0", "sample_id"]),
    ],
)
def test_malformed_file_fails_at_load_naming_where(tmp_path, edit, names):
    data = fixture_data()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(DataFormatError) as caught:
        load_locomo(path, conversations=["conv-t2"])  # validation covers unselected ones too
    message = str(caught.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_invalid_json_and_wrong_shapes(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"sample_id": "conv-1",')
    with pytest.raises(DataFormatError, match="broken.json.*not valid JSON"):
        load_locomo(broken)
    with pytest.raises(DataFormatError, match="JSON list"):
        load_locomo(write(tmp_path, {"sample_id": "conv-1"}))
    twice = fixture_data()
    twice.append(copy.deepcopy(twice[0]))
    with pytest.raises(DataFormatError, match="conv-t1.*twice"):
        load_locomo(write(tmp_path, twice, "twice.json"))
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_locomo(tmp_path / "nowhere.json")


# --- the source -------------------------------------------------------------------------


def test_source_keys_get_and_registry():
    source = make_source("locomo", data_path=FIXTURE, conversations=["conv-t2"])
    assert isinstance(source, LoCoMoSource)
    assert source.keys() == ["conv-t2"]
    assert source.get("conv-t2").questions[0].answer == "Pip"
    with pytest.raises(ValueError, match=r"conv-t1.*\['conv-t2'\]"):
        source.get("conv-t1")


def test_source_without_data_path_says_where_to_get_data():
    with pytest.raises(ValueError) as caught:
        LoCoMoSource()
    assert "locomo10.json" in str(caught.value)
    assert "../shared/data/locomo/locomo_dev.json" in str(caught.value)


# --- the real development file ----------------------------------------------------------


@needs_dev_file
def test_dev_file_counts_match_the_raw_json():
    convs = load_locomo(DEV_FILE, include_adversarial=True)
    assert [c.conv_id for c in convs] == ["conv-43", "conv-44", "conv-47"]
    raw = {c["sample_id"]: c for c in json.loads(DEV_FILE.read_text())}
    for conv in convs:
        assert question_counts([conv]) == DEV_COUNTS[conv.conv_id]
        # ... and the same from the raw categories, independently of the loader.
        by_category = Counter(q["category"] for q in raw[conv.conv_id]["qa"])
        assert [by_category[c] for c in (1, 2, 3, 4, 5)] == list(DEV_COUNTS[conv.conv_id].values())
        assert conv.num_sessions == DEV_SESSIONS[conv.conv_id]
        assert conv.extra["dropped_evidence"] == 0
        assert all(q.evidence for q in conv.questions)
    without_adversarial = load_locomo(DEV_FILE)
    assert [len(c.questions) for c in without_adversarial] == [178, 123, 150]


@needs_dev_file
def test_dev_file_evidence_maps_to_the_session_named_by_each_dia_id():
    raw = {c["sample_id"]: c for c in json.loads(DEV_FILE.read_text())}
    for conv in load_locomo(DEV_FILE, include_adversarial=True):
        qa = raw[conv.conv_id]["qa"]
        for question in conv.questions:
            item = qa[int(question.qid.rsplit("/q", 1)[1])]
            assert question.question == item["question"]
            expected = {int(e.replace("D:", "D").split(":")[0][1:]) - 1 for e in item["evidence"]}
            # sessions are numbered 1..N without gaps in the dev file
            assert set(question.evidence) == expected
            assert max(question.evidence) < conv.num_sessions


@needs_dev_file
def test_dev_file_splits_and_missing_ids():
    train = load_locomo(DEV_FILE, split="memory-r2", part="train")
    assert [c.conv_id for c in train] == ["conv-43", "conv-47"]
    assert sum(question_counts(train).values()) == 178 + 150
    assert [c.conv_id for c in load_locomo(DEV_FILE, split="memory-r2", part="val")] == ["conv-44"]
    with pytest.raises(ValueError) as caught:
        load_locomo(DEV_FILE, split="memory-r1", part="train")
    assert "conv-26" in str(caught.value) and "locomo_dev.json" in str(caught.value)
    # photos in the real data become text too
    turns = [t for s in train[0].sessions for t in s.turns]
    assert sum("[shares a photo: " in t.text for t in turns) == 164


# --- boundaries: lone surrogates, deep JSON ---------------------------------------------


def all_strings(value):
    """Every string inside a loaded value (dataclasses, tuples, lists, dicts), iteratively."""
    stack, found = [value], []
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            stack.extend(getattr(item, name) for name in item.__dataclass_fields__)
    return found


def test_lone_surrogates_are_replaced_at_load_and_an_episode_saves_its_memory(tmp_path):
    import gymnasium as gym

    import memenv  # noqa: F401  (registers the environments)
    from tests.test_env import play_with_lone_surrogates

    data = fixture_data()
    data[0]["conversation"]["session_1"][1]["text"] += " \ud800"
    data[0]["conversation"]["session_1"][1]["dia_id"] = "D1:2\udfff"
    data[0]["qa"][0]["question"] = "Where does \udc00 Oskar live?"
    data[0]["qa"][0]["answer"] = "Lisbon \ud800"
    path = write(tmp_path, data, "locomo.json")
    assert "\\ud800" in path.read_text()  # a JSON escape, as in a real file
    (conversation,) = load_locomo(path, conversations=["conv-t1"])
    for text in all_strings(conversation):
        text.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    assert conversation.sessions[0].turns[1].text.endswith(" \ufffd")
    assert conversation.questions[0].question == "Where does \ufffd Oskar live?"
    env = gym.make("MemorySession-v0", source="locomo", data_path=str(path), qa_schedule="end")
    play_with_lone_surrogates(env, tmp_path, conversation="conv-t1")


def test_deeply_nested_json_fails_with_one_line_naming_the_file(tmp_path):
    path = tmp_path / "deep.json"
    for text in ("[" * 100_000 + "]" * 100_000, '[{"qa": ' + "[" * 100_000, "[" + "1" * 5000 + "]"):
        path.write_text(text)
        with pytest.raises(DataFormatError) as caught:
            load_locomo(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
