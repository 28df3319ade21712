"""Tests for agents.prompts: role prompts, relevance trimming, answer parsing."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.prompts import (
    ANSWER_SYSTEM_DIRECT,
    ANSWER_SYSTEM_DISTILL,
    COMPACT_ANSWER_SYSTEM_DISTILL,
    COMPACT_MANAGE_SYSTEM,
    EXTRACT_SYSTEM,
    MANAGE_SYSTEM,
    count_tokens,
    memory_drop_order,
    parse_answer,
    parse_relevant_ids,
    render_prompt,
    system_prompt,
)

BIG = 100_000


def _memory(i, speaker):
    return {"id": f"m{i}", "text": f"{speaker} fact number {i} is here.", "speaker": speaker, "session": 0,
            "date": "8 May 2023"}


def _base(role):
    return {"role": role, "session": 2, "num_sessions": 8, "date": "8 May 2023", "speakers": ["Alice", "Bob"]}


def answer_obs(per_speaker=10):
    alice = [_memory(i, "Alice") for i in range(per_speaker)]
    bob = [_memory(100 + i, "Bob") for i in range(per_speaker)]
    # As the environment builds it: top-k for each speaker, best first, concatenated.
    return {**_base("answer"), "question_id": "q1", "question": "Where does Alice live?",
            "memories": alice + bob, "memory_size": 2 * per_speaker}


def manage_obs():
    memories = [_memory(i, "Alice") for i in range(8)]
    facts = [
        {"index": 0, "text": "Alice moved to Lyon on 3 May 2023.", "speaker": "Alice", "related": ["m5", "m1", "m7"]},
        {"index": 1, "text": "Alice adopted a cat.", "speaker": "Alice", "related": ["m2", "m5", "m0"]},
        {"index": 2, "text": "Bob plays chess.", "speaker": "Bob", "related": []},
    ]
    return {**_base("manage"), "facts": facts, "memories": memories, "memory_size": 8}


def extract_obs(num_turns=12):
    turns = [{"speaker": "Alice" if i % 2 == 0 else "Bob", "text": f"Turn {i}: I went hiking yesterday.",
              "dia_id": f"D3:{i + 1}"} for i in range(num_turns)]
    return {**_base("extract"), "turns": turns, "memories": [_memory(i, "Alice") for i in range(4)]}


def _lines(prompt):
    return prompt.split("\n")


def _kept_memory_ids(prompt):
    return [line.split("]")[0][1:] for line in _lines(prompt) if line.startswith("[m")]


@pytest.mark.parametrize(
    "obs, system",
    [(extract_obs(), EXTRACT_SYSTEM), (manage_obs(), MANAGE_SYSTEM), (answer_obs(), ANSWER_SYSTEM_DISTILL)],
)
def test_full_prompt_holds_every_record(tiny_tokenizer, obs, system):
    prompt = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG)
    assert prompt.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "Session 3 of 8, date: 8 May 2023." in prompt
    for memory in obs["memories"]:
        assert f"[{memory['id']}] (8 May 2023) {memory['text']}" in _lines(prompt)
    for turn in obs.get("turns", []):
        assert f"{turn['speaker']}: {turn['text']}" in _lines(prompt)


def test_manage_prompt_lists_facts_with_related_ids(tiny_tokenizer):
    prompt = render_prompt(tiny_tokenizer, json.dumps(manage_obs()), max_prompt_tokens=BIG)
    assert "1. Alice moved to Lyon on 3 May 2023. (related: m5, m1, m7)" in _lines(prompt)
    assert "3. Bob plays chess. (related: none)" in _lines(prompt)
    assert '{"operations": [' in prompt


def test_answer_prompt_distill_option_and_role_override(tiny_tokenizer):
    obs = json.dumps(answer_obs(2))
    direct = render_prompt(tiny_tokenizer, obs, max_prompt_tokens=BIG, distill=False)
    assert ANSWER_SYSTEM_DIRECT in direct and "Relevant:" not in direct
    assert "Question: Where does Alice live?" in direct
    as_extract = render_prompt(tiny_tokenizer, obs, max_prompt_tokens=BIG, role="extract")
    assert EXTRACT_SYSTEM in as_extract


def test_answer_trimming_drops_lowest_ranks_evenly_per_speaker(tiny_tokenizer):
    obs = answer_obs(10)
    full = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG)
    line_tokens = count_tokens(tiny_tokenizer, "\n" + "[m0] (8 May 2023) Alice fact number 0 is here.")
    budget = count_tokens(tiny_tokenizer, full) - 7 * line_tokens
    prompt = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=budget)
    assert count_tokens(tiny_tokenizer, prompt) <= budget
    kept = _kept_memory_ids(prompt)
    # Dropped: ranks 9, 8, 7 of both speakers and rank 6 of the later one (Bob), by relevance.
    assert kept == [f"m{i}" for i in range(7)] + [f"m{100 + i}" for i in range(6)]
    assert "Question: Where does Alice live?" in prompt


def test_trimmed_prompts_fit_and_keep_whole_records(tiny_tokenizer):
    for obs in (answer_obs(6), manage_obs(), extract_obs()):
        full = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG)
        full_length = count_tokens(tiny_tokenizer, full)
        memories = {f"[{m['id']}] (8 May 2023) {m['text']}" for m in obs["memories"]}
        turns = {f"{t['speaker']}: {t['text']}" for t in obs.get("turns", [])}
        facts = {f["text"] for f in obs.get("facts", [])}
        fitted = 0
        for budget in range(full_length, 0, -37):
            try:
                prompt = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=budget)
            except ValueError:
                continue
            fitted += 1
            assert count_tokens(tiny_tokenizer, prompt) <= budget
            # Every record line is a whole record: never cut in the middle.
            for line in _lines(prompt):
                if line.startswith("[m"):
                    assert line in memories
                elif line.startswith(("Alice: ", "Bob: ")):
                    assert line in turns
                elif re.match(r"\d+\. ", line):
                    assert line.split(". ", 1)[1].split(" (related:")[0] in facts
        assert fitted > 3


def test_manage_trimming_drops_memories_then_facts(tiny_tokenizer):
    obs = manage_obs()
    assert memory_drop_order(obs, "manage")[:4] == [6, 4, 3, 7]  # unreferenced first, then worst rank
    full = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG)
    budget = count_tokens(tiny_tokenizer, full) - 5 * 45
    prompt = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=budget)
    kept = _kept_memory_ids(prompt)
    assert set(kept) <= {"m5", "m1", "m2", "m7", "m0"} and "m5" in kept and "m2" in kept
    for fact in obs["facts"]:
        assert fact["text"] in prompt  # facts go only after every memory
    for line in _lines(prompt):
        if "(related:" in line:  # related ids point only at memories still shown
            ids = line.split("(related:")[1].strip(" )").split(", ")
            assert ids == ["none"] or set(ids) <= set(kept)
    # The budget of a prompt with no memories and only the first fact keeps exactly that.
    first_fact_only = {**obs, "memories": [], "facts": obs["facts"][:1]}
    first_fact_prompt = render_prompt(tiny_tokenizer, json.dumps(first_fact_only), max_prompt_tokens=BIG)
    budget = count_tokens(tiny_tokenizer, first_fact_prompt)
    minimal = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=budget)
    assert _kept_memory_ids(minimal) == []
    assert "1. Alice moved to Lyon on 3 May 2023. (related: none)" in _lines(minimal)
    assert "Alice adopted a cat" not in minimal and "Bob plays chess" not in minimal


def test_extract_trimming_drops_memories_then_oldest_turns(tiny_tokenizer):
    obs = extract_obs(12)
    full = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG)
    budget = count_tokens(tiny_tokenizer, full) - 250
    prompt = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=budget)
    assert _kept_memory_ids(prompt) == [] and "Known memories: none." in prompt
    turn_lines = [line for line in _lines(prompt) if line.startswith(("Alice: Turn", "Bob: Turn"))]
    kept_turns = [int(line.split("Turn ")[1].split(":")[0]) for line in turn_lines]
    assert kept_turns == list(range(12 - len(kept_turns), 12)) and 0 < len(kept_turns) < 12


def test_prompt_too_small_or_bad_input_raises(tiny_tokenizer):
    with pytest.raises(ValueError, match="max_prompt_tokens=50"):
        render_prompt(tiny_tokenizer, json.dumps(answer_obs(2)), max_prompt_tokens=50)
    with pytest.raises(ValueError, match="not valid JSON"):
        render_prompt(tiny_tokenizer, "{oops", max_prompt_tokens=BIG)
    with pytest.raises(ValueError, match="unknown role 'judge'"):
        render_prompt(tiny_tokenizer, json.dumps({"role": "judge"}), max_prompt_tokens=BIG)
    with pytest.raises(ValueError, match="JSON object"):
        render_prompt(tiny_tokenizer, "[1, 2]", max_prompt_tokens=BIG)


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Relevant: m3, m7\nAnswer: Lyon", "Lyon"),
        ("Relevant: m3\nAnswer: 3 May 2023.\n", "3 May 2023."),
        ("Relevant: m1, m2 Answer: Paris", "Paris"),
        ("**Answer:** \"Lyon\"", "Lyon"),
        ('{"answer": "Lyon"}', "Lyon"),
        ('```json\n{"answer": "Lyon"}\n```', "Lyon"),
        ("Lyon\nbecause of m3", "Lyon"),
        ("Relevant: m1\nLyon", "Lyon"),
        ("answer: first\nanswer: second", "second"),
        ("Relevant: m1", ""),
        ("", ""),
    ],
)
def test_parse_answer(text, answer):
    assert parse_answer(text) == answer


def test_parse_relevant_ids():
    assert parse_relevant_ids("Relevant: m3, m7, m3\nAnswer: Lyon") == ["m3", "m7"]
    assert parse_relevant_ids("Relevant: m1 Answer: m2") == ["m1"]
    assert parse_relevant_ids("Answer: Lyon") == []
    assert parse_answer(None) == ""


def test_compact_style_is_short_and_keeps_records(tiny_tokenizer):
    for obs, system in ((manage_obs(), COMPACT_MANAGE_SYSTEM), (answer_obs(2), COMPACT_ANSWER_SYSTEM_DISTILL)):
        default = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG)
        compact = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG, style="compact")
        assert compact.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")
        assert compact.endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert count_tokens(tiny_tokenizer, compact) < count_tokens(tiny_tokenizer, default) / 2
        for memory in obs["memories"]:
            assert f"[{memory['id']}] {memory['text']}" in _lines(compact)
    compact = render_prompt(tiny_tokenizer, json.dumps(manage_obs()), max_prompt_tokens=BIG, style="compact")
    # Facts are numbered from 0, as the {"op": "ADD", "fact": 0} shorthand counts them.
    assert "0: Alice moved to Lyon on 3 May 2023. [m5 m1 m7]" in _lines(compact)
    assert "\n2: Bob plays chess. []<|im_end|>" in compact
    assert len(COMPACT_MANAGE_SYSTEM) < len(MANAGE_SYSTEM) / 4


def test_compact_style_trims_by_relevance_and_checks_style(tiny_tokenizer):
    obs = manage_obs()
    full = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG, style="compact")
    budget = count_tokens(tiny_tokenizer, full) - 3 * count_tokens(tiny_tokenizer, "\n[m0] Alice fact number 0 is here.")
    prompt = render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=budget, style="compact")
    assert count_tokens(tiny_tokenizer, prompt) <= budget
    assert _kept_memory_ids(prompt) == ["m0", "m1", "m2", "m5", "m7"]  # m6, m4, m3 dropped first
    assert "[m5 m1 m7]" in prompt
    with pytest.raises(ValueError, match="unknown prompt style 'tiny'"):
        render_prompt(tiny_tokenizer, json.dumps(obs), max_prompt_tokens=BIG, style="tiny")
    with pytest.raises(ValueError, match="unknown prompt style"):
        system_prompt("manage", style="short")
    assert system_prompt("manage") == MANAGE_SYSTEM


# --- parse_answer runs in linear time (it scores Memory-R1 rollouts) -------------------------

N = 200_000  # the environment's longest action


def _adversarial_answers() -> dict[str, str]:
    return {
        "x, blanks, x": "x" + " " * (N - 2) + "x",
        "x, tabs, y": "x" + "\t" * (N - 2) + "y",
        "newlines then x": "\n" * (N - 1) + "x",
        "answer then blanks then y": "answer: x" + " " * (N - 10) + "y",
        "newlines, answer, blanks": "\n" * (N // 2) + "answer" + " " * (N // 2 - 7) + "x",
        "relevant then blanks": "Relevant" + " " * (N - 9) + "x",
        "blanks then relevant line": " " * (N - 20) + "relevant: m1\nLyon",
        "relevant lines": "Relevant:\n" * (N // 10),
        "answer colon repeated": "answer:" * (N // 7),
        "fences": "```" * (N // 3),
        "fence, blanks, fence": "```" + " " * (N - 7) + "x```",
        "open braces": "{" * N,
        "keys never closed": '{"a":' * (N // 5),
        "over-long number": '{"answer": ' + "1" * (N - 20) + "}",
        "star lines": "*\n" * (N // 2),
    }


@pytest.mark.parametrize("name", list(_adversarial_answers()))
def test_parse_answer_is_linear_and_never_raises_on_adversarial_text(name):
    # "x, blanks, x" took ~150 s with the old fence regex, "relevant then blanks" minutes
    # with the old Relevant regex; "keys never closed" raised RecursionError.
    text = _adversarial_answers()[name]
    assert len(text) <= N
    for parse in (parse_answer, parse_relevant_ids):
        start = time.perf_counter()
        parse(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{parse.__name__} took {elapsed:.2f} s on {name!r}"


@pytest.mark.parametrize("text, answer", [
    ('```json\n{"answer": "Lyon"}', "Lyon"),
    ('{"answer": "Lyon"}\n```', "Lyon"),
    ('```json  \n {"answer": "Lyon"} \n ```', "Lyon"),
    ('````{"answer": "Lyon"}```', '{"answer": "Lyon"}'),  # a 4th backtick hides the JSON
    ("  * relevant memories: m1\n\nLyon", "Lyon"),
    ("- Relevant:\n* Answer: Lyon", "Lyon"),
    ("Relevant m1 and more\nLyon", "Relevant m1 and more"),
])
def test_parse_answer_fence_and_relevant_edge_cases(text, answer):
    assert parse_answer(text) == answer == _old_parse_answer(text)


# The regexes parse_answer used before, kept as the reference for its behaviour.
OLD_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
OLD_RELEVANT = re.compile(r"^\s*\W*relevant(?: memories)?\W*\s*[:：]\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
PIECES = ["answer", "Answer", ":", "：", " ", "\n", "\t", "\r", "\u2028", "x", "Lyon", "```", "`", "json", "{", "}",
          '"answer"', '"', "relevant", "Relevant", " memories", "*", "-", "m3", "m12", ","]


def _old_parse_answer(text: str) -> str:
    """parse_answer as it was, with the quadratic regexes (fine on short texts)."""
    def clean(t: str) -> str:
        return t.strip(" \t\r\n\"'`*")

    stripped = text.strip()
    unfenced = OLD_FENCE.sub("", stripped)
    if unfenced.startswith("{"):
        try:
            value = json.loads(unfenced)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and "answer" in value:
            return clean(str(value["answer"]))
    matches = re.findall(r"answer\s*[:：]\s*([^\n]*)", stripped, re.IGNORECASE)
    if matches:
        return clean(matches[-1])
    for line in stripped.splitlines():
        if line.strip() and not OLD_RELEVANT.match(line):
            return clean(line)
    return ""


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join))
def test_parse_answer_and_relevant_ids_match_the_old_regexes(text):
    assert parse_answer(text) == _old_parse_answer(text)
    assert parse_relevant_ids(text) == _old_relevant_ids(text)


def _old_relevant_ids(text: str) -> list[str]:
    match = OLD_RELEVANT.search(text)
    if not match:
        return []
    before_answer = re.split(r"answer\s*[:：]", match.group(1), maxsplit=1, flags=re.IGNORECASE)[0]
    return list(dict.fromkeys(re.findall(r"\bm\d+\b", before_answer)))


@pytest.mark.parametrize("style", ["default", "compact"])
def test_chunked_sessions_show_their_history_and_trim_it_first(tiny_tokenizer, style):
    """With the environment's session_chunks, a later chunk's extract prompt shows the
    session's earlier turns and its manage prompt the operations already applied; trimming
    drops that history (oldest first) before any memory."""
    import gymnasium as gym

    import memenv  # noqa: F401
    from memenv.scripted import OracleAgent

    env = gym.make("MemorySession-v0", num_sessions=2, session_chunks=3, disable_env_checker=True)
    obs, info = env.reset(seed=0)
    oracle, seen = OracleAgent(), {}
    while info["role"] != "answer" and len(seen) < 2:
        data = json.loads(obs)
        if data.get("chunk") == 1:
            seen.setdefault(data["role"], obs)
        obs, _, _, _, info = env.step(oracle.act(obs, info))
    extract, manage = json.loads(seen["extract"]), json.loads(seen["manage"])
    assert extract["previous_turns"] and manage["previous_operations"]
    prompt = render_prompt(tiny_tokenizer, seen["extract"], max_prompt_tokens=BIG, style=style)
    assert all(t["text"] in prompt for t in extract["previous_turns"] + extract["turns"])
    prompt = render_prompt(tiny_tokenizer, seen["manage"], max_prompt_tokens=BIG, style=style)
    assert all(op["text"] in prompt for op in manage["previous_operations"] if "text" in op)
    # one token under the full size: the oldest earlier turn goes, the newest stays, dialogue intact
    full = render_prompt(tiny_tokenizer, seen["extract"], max_prompt_tokens=BIG, style=style)
    trimmed = render_prompt(tiny_tokenizer, seen["extract"], max_prompt_tokens=count_tokens(tiny_tokenizer, full) - 1,
                            style=style)
    first, last = extract["previous_turns"][0]["text"], extract["previous_turns"][-1]["text"]
    assert first not in trimmed and last in trimmed and all(t["text"] in trimmed for t in extract["turns"])
    # an unchunked observation renders as before: no history block
    plain = dict(extract)
    for key in ("chunk", "num_chunks", "previous_turns"):
        plain.pop(key)
    text = render_prompt(tiny_tokenizer, json.dumps(plain), max_prompt_tokens=BIG, style=style)
    assert "Earlier" not in text and "Part " not in text
