"""Lenient parsing of the text actions an LLM writes.

Accepts the usual noise: code fences, prose around the JSON, trailing commas, a bare
list instead of the wrapping object, alternative key names (``event`` for ``op``,
``memory_id`` for ``id``...). Never raises for any input string: every function returns
either a parsed value or an error message saying what was wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_ACTION_CHARS = 200_000  # longer actions are rejected before any parsing
MAX_FACTS = 64
MAX_OPERATIONS = 128
MAX_TEXT_CHARS = 2_000  # one fact or one memory text
MAX_JSON_STARTS = 32  # positions tried when JSON is embedded in prose

OPS = ("ADD", "UPDATE", "DELETE", "NOOP")
_OP_ALIASES = {"NONE": "NOOP", "NO_OP": "NOOP", "NO-OP": "NOOP", "SKIP": "NOOP", "EDIT": "UPDATE", "REMOVE": "DELETE"}
_OP_KEYS = ("op", "event", "operation", "action", "type")
_ID_KEYS = ("id", "memory_id", "mem_id", "memoryid")
_TEXT_KEYS = ("text", "memory", "content", "new_text", "fact")
_OP_TEXT_KEYS = ("text", "memory", "content", "new_text")
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_ANSWER_LINE = re.compile(r"(?im)^\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$")


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


def extract_json(text: Any) -> tuple[Any, str | None]:
    """The first JSON object or list found in ``text``, or ``(None, error)``."""
    if not isinstance(text, str):
        return None, f"action must be a string, got {type(text).__name__}"
    if len(text) > MAX_ACTION_CHARS:
        return None, f"action is {len(text)} characters long; the limit is {MAX_ACTION_CHARS}"
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        candidate = candidate.strip()
        if not candidate:
            continue
        try:
            return _loads(candidate), None
        except ValueError:
            pass
        decoder = json.JSONDecoder()
        starts = [m.start() for m in re.finditer(r"[\[{]", candidate)][:MAX_JSON_STARTS]
        for start in starts:
            for variant in (candidate[start:], _TRAILING_COMMA.sub(r"\1", candidate[start:])):
                try:
                    value, _ = decoder.raw_decode(variant)
                except (ValueError, RecursionError):
                    continue
                if isinstance(value, (dict, list)):
                    return value, None
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
    value = value.strip()
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
            facts.append(Fact(fact, speaker.strip() if speaker else None))
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
            if memory_id.isdigit():
                memory_id = f"m{memory_id}"
        body = _pick(item, _OP_TEXT_KEYS)
        fact = _pick(item, ("fact", "fact_index"))
        if isinstance(fact, str) and body is None and not fact.strip().isdigit():
            body, fact = fact, None  # {"fact": "<text>"} is a text
        if fact is not None:
            if isinstance(fact, bool) or not isinstance(fact, (int, str)) or not str(fact).strip().isdigit():
                return [], f"operations[{i}].fact must be the index of an extracted fact"
            fact = int(str(fact).strip())
        if body is not None:
            body, error = _clean_text(body, f"operations[{i}].text")
            if error:
                return [], error
        speaker = _pick(item, ("speaker",))
        ops.append(Operation(name, memory_id, body, speaker if isinstance(speaker, str) else None, fact))
    return ops, None


def parse_answer(text: Any) -> str:
    """The answer in an answer action: ``{"answer": ...}``, an ``Answer:`` line, or the text."""
    if not isinstance(text, str):
        return ""
    text = text[:MAX_ACTION_CHARS]
    stripped = text.strip()
    if stripped.startswith(("{", "```")):
        value, error = extract_json(stripped)
        if error is None and isinstance(value, dict):
            answer = _pick(value, ("answer", "final_answer", "response"))
            if answer is not None:
                return str(answer).strip()[:MAX_TEXT_CHARS]
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1].strip()[:MAX_TEXT_CHARS]
    return stripped[:MAX_TEXT_CHARS]
