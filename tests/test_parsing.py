import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memenv.parsing import MAX_ACTION_CHARS, Fact, Operation, parse_answer, parse_facts, parse_operations


@pytest.mark.parametrize("text", [
    '{"facts": ["Alice lives in Paris."]}',
    '```json\n{"facts": ["Alice lives in Paris."]}\n```',
    'Sure! Here are the facts:\n{"facts": ["Alice lives in Paris.",]}\nHope this helps.',
    '["Alice lives in Paris."]',
    '{"facts": [{"text": "Alice lives in Paris."}]}',
])
def test_facts_are_parsed_leniently(text):
    facts, error = parse_facts(text)
    assert error is None and facts == [Fact("Alice lives in Paris.")]


def test_fact_speakers_are_kept():
    facts, error = parse_facts('{"facts": [{"text": "x", "speaker": "Bob"}, "y", "  "]}')
    assert error is None and facts == [Fact("x", "Bob"), Fact("y")]


@pytest.mark.parametrize("text,expected", [
    ('{"operations": [{"op": "ADD", "text": "a"}, {"op": "noop"}]}', [Operation("ADD", None, "a"), Operation("NOOP")]),
    ('[{"event": "UPDATE", "memory_id": "m3", "memory": "b"}]', [Operation("UPDATE", "m3", "b")]),
    ('{"op": "DELETE", "id": 4}', [Operation("DELETE", "m4")]),
    ('I will do this: ```\n{"operations": [{"op": "delete", "id": "m1"},]}\n```', [Operation("DELETE", "m1")]),
])
def test_operations_are_parsed_leniently(text, expected):
    ops, error = parse_operations(text)
    assert error is None and ops == expected


@pytest.mark.parametrize("text,fragment", [
    ("no json here", "no JSON"),
    ('{"operations": [{"op": "MERGE"}]}', "MERGE"),
    ('{"operations": ["ADD"]}', "must be an object"),
    ('{"operations": {"op": 1}}', "must be a list"),
    ('{"something": []}', "operations"),
    ("x" * (MAX_ACTION_CHARS + 1), "limit"),
])
def test_bad_operations_give_a_reason(text, fragment):
    ops, error = parse_operations(text)
    assert ops == [] and fragment in error


@pytest.mark.parametrize("text,expected", [
    ("Lyon", "Lyon"),
    ('{"answer": "Lyon"}', "Lyon"),
    ("Relevant: m3, m7\nAnswer: Lyon", "Lyon"),
    ("  Lyon.  ", "Lyon."),
])
def test_answers(text, expected):
    assert parse_answer(text) == expected


def test_deep_and_huge_json_do_not_raise():
    deep = "[" * 100_000 + "]" * 100_000
    assert parse_facts(deep)[1] is not None
    assert parse_operations("{" * 150_000)[1] is not None
    assert parse_answer("[" * 100_000) == "[" * 2000


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parsers_never_raise_on_any_string(text):
    for parse in (parse_facts, parse_operations):
        value, error = parse(text)
        assert isinstance(value, list) and (error is None or isinstance(error, str))
    assert isinstance(parse_answer(text), str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parsers_never_raise_on_any_json(value):
    text = json.dumps(value)
    for parse in (parse_facts, parse_operations):
        value, error = parse(text)
        assert isinstance(value, list)
