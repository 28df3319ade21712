"""Tests of the LongMemEval loader on an invented three-item file in its format."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from memenv.data import DataFormatError
from memenv.data.longmemeval import LongMemEvalSource, load_longmemeval, parse_date
from memenv.sources import make_source

FIXTURE = Path(__file__).parent / "fixtures" / "longmemeval_tiny.json"


def fixture_data() -> list:
    return json.loads(FIXTURE.read_text())


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "lme.json"
    path.write_text(json.dumps(data))
    return path


def test_each_item_becomes_one_conversation_with_one_question():
    convs = load_longmemeval(FIXTURE)
    assert [c.conv_id for c in convs] == ["lme_001", "lme_002", "lme_003_abs"]
    first = convs[0]
    assert first.source == "longmemeval"
    assert first.speakers == ("user", "assistant")
    (question,) = first.questions
    assert (question.qid, question.kind, question.answer) == ("lme_001", "single-session-user", "sage green")
    assert ("question_date", "2023/06/10 (Sat) 09:00") in question.meta


def test_sessions_are_sorted_by_date_and_keep_their_turns():
    first = load_longmemeval(FIXTURE)[0]
    # file order is noise_a (20 May), answer (2 May), noise_b (25 May)
    assert first.extra["session_ids"] == ("answer_lme_001", "noise_a", "noise_b")
    assert [s.date for s in first.sessions] == [
        "2023/05/02 (Tue) 08:30",
        "2023/05/20 (Sat) 14:05",
        "2023/05/25 (Thu) 19:45",
    ]
    assert [s.index for s in first.sessions] == [0, 1, 2]
    turn = first.sessions[0].turns[0]
    assert turn.speaker == "user"
    assert turn.text.startswith("I just painted my kitchen sage green")
    assert turn.dia_id == "answer_lme_001:0"


def test_evidence_comes_from_answer_session_ids_and_has_answer_marks():
    convs = {c.conv_id: c for c in load_longmemeval(FIXTURE)}
    assert convs["lme_001"].questions[0].evidence == (0,)
    # session 0 is listed; the update session is only marked has_answer; the empty one is skipped
    second = convs["lme_002"]
    assert second.extra["session_ids"] == ("answer_lme_002_a", "update_lme_002")
    assert second.questions[0].evidence == (0, 1)
    assert second.questions[0].answer == "3"  # an int in the file


def test_abstention_item_has_no_evidence_and_is_marked():
    third = load_longmemeval(FIXTURE)[2]
    question = third.questions[0]
    assert question.evidence == ()
    assert ("abstention", "true") in question.meta
    assert ("evidence", "unknown") in question.meta
    # equal dates keep the file order
    assert third.extra["session_ids"] == ("noise_c", "noise_d")


def test_selection_and_source():
    chosen = load_longmemeval(FIXTURE, question_ids=["lme_002", "lme_001"])
    assert [c.conv_id for c in chosen] == ["lme_002", "lme_001"]
    with pytest.raises(ValueError, match="lme_404"):
        load_longmemeval(FIXTURE, question_ids=["lme_404"])
    source = make_source("longmemeval", data_path=FIXTURE, question_ids=["lme_003_abs"])
    assert isinstance(source, LongMemEvalSource)
    assert source.keys() == ["lme_003_abs"]
    assert source.get("lme_003_abs").questions[0].kind == "temporal-reasoning"
    with pytest.raises(ValueError, match=r"lme_001.*\['lme_003_abs'\]"):
        source.get("lme_001")
    with pytest.raises(ValueError, match="LongMemEval"):
        LongMemEvalSource()


def test_parse_date():
    assert parse_date("2023/05/20 (Sat) 02:21") == datetime(2023, 5, 20, 2, 21)
    assert parse_date("2023/05/20") == datetime(2023, 5, 20)
    assert parse_date("2023-05-20T02:21:00") == datetime(2023, 5, 20, 2, 21)
    with pytest.raises(ValueError, match="last Tuesday"):
        parse_date("last Tuesday")
    assert parse_date("  2023/05/20(Sat)02:21 \n") == parse_date("2023/05/20  02:21") == datetime(2023, 5, 20, 2, 21)


def test_parse_date_is_fast_on_long_blank_runs():
    # the old pattern's adjacent \s* took ~20 s on 2,000 blanks (cubic)
    start = time.perf_counter()
    for text in ("2023/05/20" + " " * 100_000 + "x", " " * 100_000 + "2023/05/20 (Sat)" + " " * 100_000 + "x"):
        with pytest.raises(ValueError, match="unreadable date"):
            parse_date(text)
    assert time.perf_counter() - start < 1.0


def _set(index, key, value):
    def edit(data):
        data[index][key] = value
    return edit


def _drop(index, key):
    def edit(data):
        del data[index][key]
    return edit


def _set_turn(index, session, turn, key, value):
    def edit(data):
        data[index]["haystack_sessions"][session][turn][key] = value
    return edit


@pytest.mark.parametrize(
    "edit, names",
    [
        (_drop(1, "answer"), ["lme_002", "answer"]),
        (_drop(0, "haystack_session_ids"), ["lme_001", "haystack_session_ids"]),
        (_set(0, "haystack_dates", ["2023/05/20 (Sat) 14:05"]), ["lme_001", "differ in length"]),
        (_set(2, "question_date", "soon"), ["lme_003_abs", "question_date"]),
        (
            _set(1, "haystack_dates", ["2023/07/01", "2023/07/05", "yesterday"]),
            ["lme_002", "haystack_dates[2]"],
        ),
        (_set_turn(0, 1, 0, "has_answer", "yes"), ["lme_001", "haystack_sessions[1][0]", "has_answer"]),
        (_set_turn(0, 0, 1, "content", None), ["lme_001", "haystack_sessions[0][1]", "content"]),
        (_set(1, "answer_session_ids", "answer_lme_002_a"), ["lme_002", "answer_session_ids"]),
        (_set(2, "haystack_sessions", [[], []]), ["lme_003_abs", "no turn"]),
        (_drop(0, "question_id"), ["item 0", "question_id"]),
    ],
)
def test_malformed_file_fails_at_load_naming_where(tmp_path, edit, names):
    data = fixture_data()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(DataFormatError) as caught:
        load_longmemeval(path)
    message = str(caught.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_more_than_two_roles_is_an_error_and_duplicates_too(tmp_path):
    data = fixture_data()
    data[0]["haystack_sessions"][0][0]["role"] = "system"
    with pytest.raises(DataFormatError, match="more than two roles"):
        load_longmemeval(write(tmp_path, data))
    data = fixture_data()
    data[1]["question_id"] = "lme_001"
    with pytest.raises(DataFormatError, match="lme_001.*twice"):
        load_longmemeval(write(tmp_path, data))


def test_invalid_json(tmp_path):
    path = tmp_path / "lme.json"
    path.write_text("[{]")
    with pytest.raises(DataFormatError, match="lme.json.*not valid JSON"):
        load_longmemeval(path)


def test_lone_surrogates_are_replaced_at_load_and_an_episode_saves_its_memory(tmp_path):
    import gymnasium as gym

    import memenv  # noqa: F401  (registers the environments)
    from tests.test_env import play_with_lone_surrogates
    from tests.test_locomo import all_strings

    data = fixture_data()
    data[0]["haystack_sessions"][0][1]["content"] += " \ud800"
    data[0]["question"] = "What colour \udfff did I paint my kitchen?"
    data[0]["haystack_session_ids"][1] += "\ud800"  # the answer session's id ...
    data[0]["answer_session_ids"][0] += "\ud800"  # ... still matches after replacement
    path = write(tmp_path, data)
    assert "\\ud800" in path.read_text()
    (conversation,) = load_longmemeval(path, question_ids=["lme_001"])
    for text in all_strings(conversation):
        text.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    assert conversation.questions[0].question == "What colour \ufffd did I paint my kitchen?"
    assert conversation.questions[0].evidence == (0,)
    env = gym.make("MemorySession-v0", source="longmemeval", data_path=str(path), qa_schedule="end")
    play_with_lone_surrogates(env, tmp_path, conversation="lme_001")


def test_deeply_nested_json_fails_with_one_line_naming_the_file(tmp_path):
    path = tmp_path / "lme.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataFormatError) as caught:
        load_longmemeval(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
