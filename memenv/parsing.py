"""Lenient parsing of the text actions an LLM writes.

Accepts the usual noise: code fences, prose around the JSON, trailing commas, a bare
list instead of the wrapping object, alternative key names (``event`` for ``op``,
``memory_id`` for ``id``...). Never raises for any input string: every function returns
either a parsed value or an error message saying what was wrong.

Every function runs in time linear in the action's length (an action is untrusted model
output): a regular expression here backtracks at most over one run of characters per
attempt, the runs of different attempts do not overlap, and the search for JSON embedded
in prose has a fixed budget (``MAX_FENCED_BLOCKS``, ``MAX_JSON_STARTS``,
``MAX_JSON_SCAN_CHARS``).

Lone surrogates (``"\\ud800"``: a Python string can hold one, UTF-8 cannot encode it, and
JSON's ``"\\ud800"`` escape makes one) are replaced in every parsed text, speaker, id and
answer (:func:`replace_lone_surrogates`), so no later tokenizer or ``MemoryBank.save``
meets one.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_ACTION_CHARS = 200_000  # longer actions are rejected before any parsing
MAX_FACTS = 64
MAX_OPERATIONS = 128
MAX_TEXT_CHARS = 2_000  # one fact or one memory text
MAX_JSON_STARTS = 32  # positions tried when JSON is embedded in prose
MAX_FENCED_BLOCKS = 16  # code blocks tried before the whole text
# Characters the JSON decoder may read in failed attempts at JSON embedded in prose, over
# all starts: without it, 32 nested "[" before 200,000 characters of numbers cost 64 full
# decodes (about a second); with it, at most a few. Actions under 6,250 characters never
# reach it (64 attempts over the code blocks and 64 over the whole text).
MAX_JSON_SCAN_CHARS = 4 * MAX_ACTION_CHARS

OPS = ("ADD", "UPDATE", "DELETE", "NOOP")
_OP_ALIASES = {"NONE": "NOOP", "NO_OP": "NOOP", "NO-OP": "NOOP", "SKIP": "NOOP", "EDIT": "UPDATE", "REMOVE": "DELETE"}
_OP_KEYS = ("op", "event", "operation", "action", "type")
_ID_KEYS = ("id", "memory_id", "mem_id", "memoryid")
_TEXT_KEYS = ("text", "memory", "content", "new_text", "fact")
_OP_TEXT_KEYS = ("text", "memory", "content", "new_text")
# After an opening ``` : the language tag and the blank space before the block. Matched at
# one position only, and it always matches, so it never backtracks.
_FENCE_HEADER = re.compile(r"[a-zA-Z0-9_-]*\s*")
# Linear although \s crosses newlines: each comma's whitespace run is given back one
# character at a time, and the runs after different commas do not overlap.
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_JSON_START = re.compile(r"[\[{]")
# "Answer:" / "Final answer:" as the first non-blank characters of a line. [^\S\n]* (blanks
# other than newlines) keeps each line start scanning its own line only.
# Both run in linear time on any text (a reward reads them on model output): no two
# adjacent quantifiers overlap, and [^\w\n]* keeps each line start to its own line (the
# earlier r"^\s*\W*relevant...\W*\s*[:：]" backtracked quadratically over blank runs).
_ANSWER_RE = re.compile(r"answer\s*[:：]\s*([^\n]*)", re.IGNORECASE)
RELEVANT_LINE = re.compile(r"^[^\w\n]*relevant(?: memories)?\W*[:：]\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)
_ANSWER_STRIP = " \t\r\n\"'`*"
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECODER = json.JSONDecoder()


def replace_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so it encodes as UTF-8.

    A high surrogate followed by a low one (a UTF-16 pair split into two code points)
    becomes the character the pair encodes; any other surrogate becomes the replacement
    character U+FFFD, which (unlike ``"?"``) cannot be mistaken for text someone wrote.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


@dataclass(frozen=True)
class Fact:
    """One extracted fact; ``speaker`` is None when the agent did not say."""

    text: str
    speaker: str | None = None


@dataclass(frozen=True)
class Operation:
    """One memory operation as the agent wrote it (not yet checked against the bank)."""

    op: str
    id: str | None = None
    text: str | None = None
    speaker: str | None = None
    # ``{"op": "ADD", "fact": 0}``: take the text of extracted fact 0 (saves small models
    # from copying it token by token)
    fact: int | None = None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    cleaned = _TRAILING_COMMA.sub(r"\1", text)
    if cleaned != text:
        try:
            return json.loads(cleaned)
        except (ValueError, RecursionError):
            pass
    raise ValueError("not JSON")


def _fenced_blocks(text: str) -> list[str]:
    """The contents of the first ``MAX_FENCED_BLOCKS`` ```-fenced code blocks.

    A block starts after the opening ```, its language tag and any blank space, and ends
    at the next ``` (the text that ``r"```[a-zA-Z0-9_-]*\\s*\\n?(.*?)```"`` with DOTALL
    would capture, found with ``str.find`` instead of a regex that backtracks
    quadratically over a long tag or blank run with no closing fence).
    """
    blocks: list[str] = []
    position = 0
    while len(blocks) < MAX_FENCED_BLOCKS:
        opening = text.find("```", position)
        if opening < 0:
            break
        start = _FENCE_HEADER.match(text, opening + 3).end()
        closing = text.find("```", start)
        if closing < 0:
            break  # later openings lie before no closing fence either
        blocks.append(text[start:closing])
        position = closing + 3
    return blocks


def _embedded_json(candidate: str, budget: int) -> tuple[Any, int]:
    """The first JSON object or list that starts at one of the first ``MAX_JSON_STARTS``
    ``[`` or ``{`` of ``candidate`` (as is, then without trailing commas), or None; and
    what is left of ``budget`` (characters failed attempts may still read).
    """
    cleaned = _TRAILING_COMMA.sub(r"\1", candidate)
    texts = (candidate,) if cleaned == candidate else (candidate, cleaned)
    # Removing trailing commas keeps every "[" and "{", so the k-th start of ``cleaned``
    # is the k-th start of ``candidate``: decoding ``cleaned`` from it is decoding the
    # cleaned suffix of ``candidate``, without copying suffixes.
    starts = [[m.start() for m in itertools.islice(_JSON_START.finditer(t), MAX_JSON_STARTS)] for t in texts]
    for k in range(len(starts[0])):
        for text, text_starts in zip(texts, starts):
            start = text_starts[k]
            try:
                value, _ = _DECODER.raw_decode(text, start)
                return value, budget  # a list or a dict: it starts with [ or {
            except json.JSONDecodeError as err:
                budget -= max(err.pos - start, 1)
            except (ValueError, RecursionError):
                budget -= len(text) - start  # unknown how far it read: assume all
            if budget <= 0:
                return None, budget
    return None, budget


def extract_json(text: Any) -> tuple[Any, str | None]:
    """The first JSON object or list found in ``text``, or ``(None, error)``.

    Tries the fenced code blocks, then the whole text: each as JSON, then the JSON that
    starts at one of its first ``[`` or ``{``. Strings in the value may hold lone
    surrogates (JSON escapes make them); the parsers below replace them.
    """
    if not isinstance(text, str):
        return None, f"action must be a string, got {type(text).__name__}"
    if len(text) > MAX_ACTION_CHARS:
        return None, f"action is {len(text)} characters long; the limit is {MAX_ACTION_CHARS}"
    budget = MAX_JSON_SCAN_CHARS
    for candidate in _fenced_blocks(text) + [text]:
        candidate = candidate.strip()
        if not candidate:
            continue
        try:
            return _loads(candidate), None
        except ValueError:
            pass
        value, budget = _embedded_json(candidate, budget)
        if value is not None:
            return value, None
        if budget <= 0:
            break
    return None, "no JSON object or list found in the action"


def _pick(d: dict, keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in d.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _clean_text(value: Any, where: str) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, f"{where} must be a string, got {type(value).__name__}"
    value = replace_lone_surrogates(value.strip())
    if len(value) > MAX_TEXT_CHARS:
        return None, f"{where} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}"
    return value, None


def parse_facts(text: Any) -> tuple[list[Fact], str | None]:
    """Facts from ``{"facts": [...]}`` or a bare list; items are strings or ``{text, speaker}``."""
    value, error = extract_json(text)
    if error:
        return [], error
    if isinstance(value, dict):
        items = _pick(value, ("facts", "fact", "memories", "items"))
        if items is None:
            return [], 'expected an object with a "facts" list'
    else:
        items = value
    if not isinstance(items, list):
        return [], '"facts" must be a list'
    if len(items) > MAX_FACTS:
        return [], f"{len(items)} facts given; the limit is {MAX_FACTS}"
    facts = []
    for i, item in enumerate(items):
        speaker = None
        if isinstance(item, dict):
            speaker = _pick(item, ("speaker", "who", "subject"))
            item = _pick(item, _TEXT_KEYS)
            if speaker is not None and not isinstance(speaker, str):
                return [], f"facts[{i}].speaker must be a string"
        fact, error = _clean_text(item, f"facts[{i}]")
        if error:
            return [], error
        if fact:
            facts.append(Fact(fact, replace_lone_surrogates(speaker.strip()) if speaker else None))
    return facts, None


def parse_operations(text: Any) -> tuple[list[Operation], str | None]:
    """Operations from ``{"operations": [...]}``, a bare list, or a single operation object."""
    value, error = extract_json(text)
    if error:
        return [], error
    if isinstance(value, dict):
        if _pick(value, _OP_KEYS) is not None:
            items = [value]
        else:
            items = _pick(value, ("operations", "ops", "memory", "actions", "updates"))
        if items is None:
            return [], 'expected an object with an "operations" list'
    else:
        items = value
    if not isinstance(items, list):
        return [], '"operations" must be a list'
    if len(items) > MAX_OPERATIONS:
        return [], f"{len(items)} operations given; the limit is {MAX_OPERATIONS}"
    ops = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return [], f"operations[{i}] must be an object, got {type(item).__name__}"
        name = _pick(item, _OP_KEYS)
        if not isinstance(name, str):
            return [], f'operations[{i}] has no "op" naming one of {", ".join(OPS)}'
        name = name.strip().upper()
        name = _OP_ALIASES.get(name, name)
        if name not in OPS:
            return [], f"operations[{i}].op is {name[:40]!r}; expected one of {', '.join(OPS)}"
        memory_id = _pick(item, _ID_KEYS)
        if memory_id is not None:
            memory_id = str(memory_id).strip() if isinstance(memory_id, (str, int)) else None
            if memory_id is None:
                return [], f"operations[{i}].id must be a string"
            memory_id = replace_lone_surrogates(memory_id)
            if memory_id.isdigit():
                memory_id = f"m{memory_id}"
        body = _pick(item, _OP_TEXT_KEYS)
        fact = _pick(item, ("fact", "fact_index"))
        # isdecimal, not isdigit: int() refuses digits such as "²" that isdigit accepts
        if isinstance(fact, str) and body is None and not fact.strip().isdecimal():
            body, fact = fact, None  # {"fact": "<text>"} is a text
        if fact is not None:
            if isinstance(fact, bool) or not isinstance(fact, (int, str)) or not str(fact).strip().isdecimal():
                return [], f"operations[{i}].fact must be the index of an extracted fact"
            try:
                fact = int(str(fact).strip())
            except ValueError:  # over the interpreter's limit on digits in an int
                return [], f"operations[{i}].fact must be the index of an extracted fact"
        if body is not None:
            body, error = _clean_text(body, f"operations[{i}].text")
            if error:
                return [], error
        speaker = _pick(item, ("speaker",))
        speaker = replace_lone_surrogates(speaker) if isinstance(speaker, str) else None
        ops.append(Operation(name, memory_id, body, speaker, fact))
    return ops, None


def parse_answer(text: Any) -> str:
    """The short answer in an answer action -- the one reading of answers in this project:
    the environment scores it, and the Memory-R1 reward and the LLM agents use it too.

    Accepts ``{"answer": ...}`` JSON (also in a code fence), text with an ``Answer:`` marker
    (the last one wins, also on the same line as ``Relevant: m3``; ``Answer:`` followed by
    a line break takes the next line), or plain text (its first line that is not a
    ``Relevant:`` line of memory distillation). Quotes, backticks and asterisks around the
    answer are dropped; ``""`` when there is no answer or ``text`` is not a string. Linear
    in the length of ``text``.
    """
    if not isinstance(text, str):
        return ""
    stripped = text[:MAX_ACTION_CHARS].strip()
    # Drop an opening ``` or ```json and a closing ```, each with the blanks beside it,
    # with str methods: the regex r"^```(?:json)?\s*|\s*```$" did the same but was tried
    # at every position of a blank run, quadratic in its length.
    start, end = 0, len(stripped)
    if stripped.startswith("```"):
        start = 7 if stripped.startswith("json", 3) else 3
        start = end - len(stripped[start:].lstrip())
    if stripped.endswith("```") and end - 3 >= start:
        end = start + len(stripped[start:end - 3].rstrip())
    unfenced = stripped[start:end]
    answer = None
    if unfenced.startswith("{"):
        try:
            value = json.loads(unfenced)
        except (ValueError, RecursionError):  # bad JSON, too deep, or an over-long number
            value = None
        if isinstance(value, dict) and "answer" in value:
            answer = str(value["answer"])
    if answer is None:
        matches = _ANSWER_RE.findall(stripped)
        if matches:
            answer = matches[-1]
    if answer is None:
        answer = next((line for line in stripped.splitlines() if line.strip() and not RELEVANT_LINE.match(line)), "")
    return replace_lone_surrogates(answer.strip(_ANSWER_STRIP)[:MAX_TEXT_CHARS])
