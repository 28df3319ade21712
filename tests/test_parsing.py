import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memenv.parsing import (
    MAX_ACTION_CHARS,
    Fact,
    Operation,
    extract_json,
    parse_answer,
    parse_facts,
    parse_operations,
    replace_lone_surrogates,
)


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


# --- linear time on adversarial actions --------------------------------------------------

N = MAX_ACTION_CHARS  # every adversarial action below is this long (or nearly)


def _adversarial_actions() -> dict[str, str]:
    return {
        "newlines then x": "\n" * (N - 1) + "x",
        "mixed blanks": " \n\t\r" * (N // 4),
        "x, blanks, x": "x" + " " * (N - 2) + "x",
        "open braces": "{" * N,
        "open brackets": "[" * N,
        "deep nesting closed": "[" * (N // 2) + "]" * (N // 2),
        "brace space": "{ " * (N // 2),
        "keys never closed": '{"a":' * (N // 5),
        "backticks": "`" * N,
        "fence then blanks": "```" + " " * (N - 3),
        "fence then newlines": "```" + "\n" * (N - 3),
        "fence then long tag": "```" + "a" * (N - 3),
        "many small fences": "```{```" * (N // 7),
        "answer colon repeated": "answer:" * (N // 7),
        "answer lines": "Answer: x\n" * (N // 10),
        "blank answer lines": "Answer:\n" * (N // 8),
        "answer then blanks then y": "answer: x" + " " * (N - 10) + "y",
        "final newline repeated": "final\n" * (N // 6),
        "newlines, answer, blanks": "\n" * (N // 2) + "answer" + " " * (N // 2 - 7) + "x",
        "comma blanks": ",     " * (N // 6),
        "comma blanks in a list": "[1" + ",     " * ((N - 3) // 6) + "x",
        "32 brackets then numbers": "[" * 32 + "1," * ((N - 40) // 2),
        "32 brackets then strings": "[" * 32 + '"a",' * ((N - 40) // 4),
        "32 brackets then 4300-digit numbers": "[" * 32 + ("1" * 4300 + ",") * 46,
        "unclosed list of objects": '[{"a": 1}' + ', {"a": 1}' * ((N - 9) // 10),
        "relevant then blanks": "Relevant" + " " * (N - 9) + "x",
        "star lines": "*\n" * (N // 2),
        "surrogate escapes": '{"facts": ["' + "\\ud800" * ((N - 20) // 6) + '"]}',
    }


@pytest.mark.parametrize("name", list(_adversarial_actions()))
def test_adversarial_actions_are_parsed_in_linear_time(name):
    # Each took from seconds to minutes with the backtracking regexes (parse_answer on
    # 200,000 newlines and an "x": about 20 minutes, quadratic); now ~1-100 ms each.
    action = _adversarial_actions()[name]
    assert len(action) <= MAX_ACTION_CHARS
    for parse in (parse_answer, parse_facts, parse_operations, extract_json):
        start = time.perf_counter()
        parse(action)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{parse.__name__} took {elapsed:.2f} s on {name!r}"


# The regex the linear fence scan replaced, kept as the reference for its behaviour.
OLD_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
PIECES = ["answer", "Answer", "FINAL", "final ", ":", "：", " ", "\n", "\t", "\r", "\x0b", "\u2028", "x", "Lyon",
          "```", "json", "{", "}", "[", "]", ",", '"', '"answer"', '"facts"', '"op"', "1", "-"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_fences_match_the_old_regex(text):
    from memenv.parsing import _fenced_blocks

    assert _fenced_blocks(text) == [m.group(1) for m in OLD_FENCE.finditer(text)][:16]


@pytest.mark.parametrize("text,expected", [
    ("Answer:\nLyon", "Lyon"),
    ("answer: Paris\nFinal answer: Lyon  ", "Lyon"),
    ("Final\nanswer:  Lyon", "Lyon"),
    ("Answer: ", ""),
    ("Answer:\n", ""),  # a marker with nothing after it: no answer (it once scored the text "Answer:")
    ("I think\n  ANSWER ： Lyon\nthanks", "Lyon"),
    ("Relevant: m1, m2 Answer: Paris", "Paris"),  # distillation and answer on one line
    ("**Lyon**", "Lyon"),
    ("Lyon\nbecause m3 says so", "Lyon"),  # the first line, not the whole text
    (None, ""),
])
def test_answer_edge_cases(text, expected):
    assert parse_answer(text) == expected


def test_the_env_and_the_agents_read_answers_with_one_function():
    import agents.prompts

    assert agents.prompts.parse_answer is parse_answer


def test_json_after_many_failing_starts_is_still_found():
    prose = "see [1 and {2 " * 15  # 30 failing starts, within MAX_JSON_STARTS
    assert extract_json(prose + '{"facts": ["x"]}') == ({"facts": ["x"]}, None)
    assert parse_operations('```\n{"op": "ADD", "text": "a",}\n```') == ([Operation("ADD", None, "a")], None)


def test_fact_indexes_int_cannot_read_give_a_result_not_an_exception():
    # both raised ValueError from int(): "²" passes str.isdigit, 5000 digits pass Python's limit
    assert parse_operations('{"op": "ADD", "fact": "²"}') == ([Operation("ADD", None, "²")], None)
    ops, error = parse_operations(json.dumps({"op": "ADD", "fact": "1" * 5000}))
    assert ops == [] and "operations[0].fact must be the index of an extracted fact" in error


# --- lone surrogates -----------------------------------------------------------------------

def test_lone_surrogates_never_leave_the_parsers():
    facts, error = parse_facts('{"facts": [{"text": "Alice \\ud800 Paris", "speaker": "Al\\udfffice"}]}')
    assert error is None and facts == [Fact("Alice \ufffd Paris", "Al\ufffdice")]
    ops, error = parse_operations('{"op": "UPDATE", "id": "m1\\ud800", "text": "x\\udc00", "speaker": "B\\ud800"}')
    assert error is None and ops == [Operation("UPDATE", "m1\ufffd", "x\ufffd", "B\ufffd")]
    assert parse_answer("Answer: Lyon\ud800") == "Lyon\ufffd"
    assert parse_answer('{"answer": "Lyon\\ud800"}') == "Lyon\ufffd"
    assert parse_answer("\udc00") == "\ufffd"
    for text in ("Lyon\ufffd", "Alice \ufffd Paris", "Al\ufffdice", "m1\ufffd"):
        text.encode("utf-8")


def test_replace_lone_surrogates_keeps_pairs_and_other_text():
    assert replace_lone_surrogates("plain") == "plain"
    assert replace_lone_surrogates("é😀") == "é😀"
    assert replace_lone_surrogates("a\ud83d\ude00b") == "a😀b"  # a pair split in two code points
    assert replace_lone_surrogates("\ude00\ud83d") == "\ufffd\ufffd"
    assert replace_lone_surrogates("\ud800x\udfff") == "\ufffdx\ufffd"
