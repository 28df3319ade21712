"""Role prompts for the memory agents, rendered from the environment's JSON observations.

One backbone plays three roles told apart only by their prompt (Memory-R2's
shared-parameter co-learning): the fact extractor (``extract``), the memory manager
(``manage``) and the answer agent (``answer``). The answer prompt asks for memory
distillation as in Memory-R1: first the ids of the relevant memories, then a short answer::

    Relevant: m3, m7
    Answer: Lyon

Prompts that would exceed ``max_prompt_tokens`` are trimmed by relevance, whole records at
a time (a record is never cut in the middle):

1. memories, least relevant first. Relevance: answer -- the rank of a memory within its
   speaker's list (the environment retrieves top-k per speaker, best first, and
   concatenates the lists), so speakers lose memories evenly; manage -- the best rank the
   memory has in any fact's ``related`` list; extract -- the position in the list.
2. then, as a last resort, manage drops facts from the end and extract drops the oldest
   dialogue turns. The answer prompt keeps its question.

A chunked session (the environment's ``session_chunks``) shows its history within the
session, as the official Memory-R2 rollout carries its chat history: the extract prompt
the session's earlier turns, the manage prompt the operations the earlier chunks applied.
Trimming drops that history first, oldest first.

Two prompt styles render the same observation: ``"default"`` (full instructions, for real
instruct models) and ``"compact"`` (one-line system prompts and terse records, for tiny
byte-level test models where every character is a token). Compact manage prompts number
the facts from 0, as the ``{"op": "ADD", "fact": 0}`` shorthand refers to them.

This module needs no torch; any tokenizer with a chat template and ``__call__`` works.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from memenv.parsing import RELEVANT_LINE, parse_answer  # noqa: F401  (parse_answer: agents' name for it)

EXTRACT = "extract"
MANAGE = "manage"
ANSWER = "answer"
ROLES = (EXTRACT, MANAGE, ANSWER)
DEFAULT_STYLE = "default"
COMPACT_STYLE = "compact"
STYLES = (DEFAULT_STYLE, COMPACT_STYLE)
# The synthetic worlds' gold answer for unanswerable questions (memenv.synthetic.UNKNOWN).
UNKNOWN_ANSWER = "unknown"

EXTRACT_SYSTEM = """You extract facts for a long-term memory about the people in a conversation.
Read the dialogue session and write down every fact worth remembering about the speakers: personal details, where they live and work, events, plans, preferences, relationships, possessions, and changes to earlier facts.
Rules:
- One short, self-contained sentence per fact, in the third person, naming the person (never "I", "you" or "we").
- Turn relative dates ("yesterday", "last week", "on Monday", "next month") into absolute dates using the session date.
- Skip greetings and small talk, and facts the known memories already hold unchanged.
Reply with JSON only, in this format:
{"facts": ["Alice moved to Lyon on 3 May 2023.", "Bob has a dog named Max."]}
If nothing is worth keeping, reply {"facts": []}."""

MANAGE_SYSTEM = """You maintain a long-term memory bank about the people in a conversation.
You get newly extracted facts, each with the ids of the existing memories related to it. For each fact choose one operation:
- ADD: the fact is new. {"op": "ADD", "text": "<the fact>"}
- UPDATE: the fact changes or adds detail to an existing memory; give that memory's id and its new full text. {"op": "UPDATE", "id": "m7", "text": "<new text>"}
- DELETE: the fact says an existing memory is no longer true. {"op": "DELETE", "id": "m2"}
- NOOP: the memory bank already holds the fact. {"op": "NOOP"}
Keep memories short, self-contained, in the third person, with absolute dates.
Reply with JSON only, one operation per fact, in the order of the facts:
{"operations": [{"op": "ADD", "text": "Alice moved to Lyon on 3 May 2023."}]}"""

ANSWER_SYSTEM_DISTILL = f"""You answer a question about the people in a conversation from their memory bank.
The memories retrieved for the question are listed below, each with its id and the date it was written.
First list the ids of the memories that help answer the question. Then give the answer in a few words (a name, a date, a place or a short phrase), not a full sentence. Use absolute dates. If the memories do not hold the answer, answer {UNKNOWN_ANSWER}.
Reply in exactly this format:
Relevant: m3, m7
Answer: Lyon"""

ANSWER_SYSTEM_DIRECT = f"""You answer a question about the people in a conversation from their memory bank.
The memories retrieved for the question are listed below, each with its id and the date it was written.
Give the answer in a few words (a name, a date, a place or a short phrase), not a full sentence. Use absolute dates. If the memories do not hold the answer, answer {UNKNOWN_ANSWER}.
Reply in exactly this format:
Answer: Lyon"""

# Compact style: a few dozen bytes per system prompt, so a byte-level tiny model spends its
# context (and CPU time) on the records rather than on instructions it cannot read.
COMPACT_EXTRACT_SYSTEM = 'Extract facts. Reply JSON: {"facts": ["..."]}'
COMPACT_MANAGE_SYSTEM = 'Memory manager. Per fact: ADD, UPDATE id, DELETE id or NOOP. Reply JSON: {"operations": [{"op": "ADD", "fact": 0}]}'
COMPACT_ANSWER_SYSTEM_DISTILL = f"Answer from memories, or {UNKNOWN_ANSWER}. Reply:\nRelevant: m3\nAnswer: Lyon"
COMPACT_ANSWER_SYSTEM_DIRECT = f"Answer from memories, or {UNKNOWN_ANSWER}. Reply:\nAnswer: Lyon"

_MEMORY_ID_RE = re.compile(r"\bm\d+\b")


# ---------------------------------------------------------------------------- records


def _memory_line(record: dict) -> str:
    date = record.get("date")
    when = f" ({date})" if date else ""
    return f"[{record.get('id', '?')}]{when} {record.get('text', '')}"


def _header(obs: dict) -> str:
    session = obs.get("session")
    total = obs.get("num_sessions")
    where = f"Session {session + 1} of {total}" if isinstance(session, int) and total else "Session"
    parts = [f"{where}, date: {obs.get('date', 'unknown')}."]
    speakers = obs.get("speakers") or []
    if speakers:
        parts.append(f"Speakers: {', '.join(map(str, speakers))}.")
    return " ".join(parts)


def _memory_block(title: str, memories: list[dict]) -> str:
    if not memories:
        return f"{title}: none."
    return f"{title}:\n" + "\n".join(_memory_line(m) for m in memories)


def _dialogue(turns: list[dict]) -> str:
    return "\n".join(f"{t.get('speaker', '?')}: {t.get('text', '')}" for t in turns)


def _operation_line(op: dict) -> str:
    text = f" {op['text']}" if op.get("text") else ""
    return f"{op.get('op', '?')} {op.get('id', '?')}:{text}".rstrip(":")


def _chunk_note(obs: dict, role: str, compact: bool) -> str:
    """A chunked session's history (``session_chunks``): the earlier turns of the session
    (extract) or the operations its earlier chunks applied (manage); empty when unchunked."""
    if "chunk" not in obs:
        return ""
    if role == EXTRACT:
        earlier = obs.get("previous_turns") or []
        title = "Earlier in this session (facts already extracted)"
        body = _dialogue(earlier)
    else:
        earlier = obs.get("previous_operations") or []
        title = "Already applied in this session"
        body = "\n".join(_operation_line(op) for op in earlier)
    if compact:
        return f"Earlier:\n{body}\n" if earlier else ""
    part = f"Part {obs['chunk'] + 1} of {obs.get('num_chunks', '?')} of the session."
    return f"{part}\n{title}:\n{body}\n\n" if earlier else f"{part}\n\n"


def _extract_user(obs: dict) -> str:
    dialogue = _dialogue(obs.get("turns") or []) or "(no turns shown)"
    return (
        f"{_header(obs)}\n\n{_memory_block('Known memories', obs.get('memories') or [])}\n\n"
        f"{_chunk_note(obs, EXTRACT, False)}Dialogue:\n{dialogue}\n\nList the facts worth remembering as JSON."
    )


def _manage_user(obs: dict) -> str:
    memories = obs.get("memories") or []
    shown = {m.get("id") for m in memories}
    lines = []
    for n, fact in enumerate(obs.get("facts") or [], start=1):
        related = [r for r in fact.get("related") or [] if r in shown]
        lines.append(f"{n}. {fact.get('text', '')} (related: {', '.join(related) or 'none'})")
    size = obs.get("memory_size")
    size_note = f" The memory bank holds {size} memories." if size is not None else ""
    return (
        f"{_header(obs)}{size_note}\n\n{_memory_block('Existing related memories', memories)}\n\n"
        f"{_chunk_note(obs, MANAGE, False)}New facts:\n" + ("\n".join(lines) or "(none)")
        + "\n\nReply with the operations as JSON."
    )


def _answer_user(obs: dict) -> str:
    return (
        f"{_header(obs)}\n\n{_memory_block('Memories', obs.get('memories') or [])}\n\n"
        f"Question: {obs.get('question', '')}"
    )


def _compact_memories(memories: list[dict]) -> str:
    return "\n".join(f"[{m.get('id', '?')}] {m.get('text', '')}" for m in memories) or "none"


def _compact_extract_user(obs: dict) -> str:
    dialogue = _dialogue(obs.get("turns") or []) or "(no turns shown)"
    return (f"Date: {obs.get('date', 'unknown')}\nMemories:\n{_compact_memories(obs.get('memories') or [])}\n"
            f"{_chunk_note(obs, EXTRACT, True)}Dialogue:\n{dialogue}")


def _compact_manage_user(obs: dict) -> str:
    memories = obs.get("memories") or []
    shown = {m.get("id") for m in memories}
    lines = []
    for n, fact in enumerate(obs.get("facts") or []):
        related = [r for r in fact.get("related") or [] if r in shown]
        lines.append(f"{n}: {fact.get('text', '')} [{' '.join(related)}]")
    return (f"Memories:\n{_compact_memories(memories)}\n{_chunk_note(obs, MANAGE, True)}Facts:\n"
            + ("\n".join(lines) or "none"))


def _compact_answer_user(obs: dict) -> str:
    return f"Memories:\n{_compact_memories(obs.get('memories') or [])}\nQuestion: {obs.get('question', '')}"


_USER_BUILDERS: dict[str, dict[str, Callable[[dict], str]]] = {
    DEFAULT_STYLE: {EXTRACT: _extract_user, MANAGE: _manage_user, ANSWER: _answer_user},
    COMPACT_STYLE: {EXTRACT: _compact_extract_user, MANAGE: _compact_manage_user, ANSWER: _compact_answer_user},
}


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {STYLES}")


def system_prompt(role: str, *, distill: bool = True, style: str = DEFAULT_STYLE) -> str:
    """The system prompt of a role in a style (``distill`` only matters for ``answer``)."""
    _check_style(style)
    compact = style == COMPACT_STYLE
    if role == EXTRACT:
        return COMPACT_EXTRACT_SYSTEM if compact else EXTRACT_SYSTEM
    if role == MANAGE:
        return COMPACT_MANAGE_SYSTEM if compact else MANAGE_SYSTEM
    if role == ANSWER:
        if compact:
            return COMPACT_ANSWER_SYSTEM_DISTILL if distill else COMPACT_ANSWER_SYSTEM_DIRECT
        return ANSWER_SYSTEM_DISTILL if distill else ANSWER_SYSTEM_DIRECT
    raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")


# --------------------------------------------------------------------------- trimming


def memory_drop_order(obs: dict, role: str) -> list[int]:
    """Indices of ``obs["memories"]``, least relevant first (the order trimming drops them)."""
    memories = obs.get("memories") or []
    if role == ANSWER:
        seen_per_speaker: dict[Any, int] = {}
        ranks = []
        for memory in memories:
            speaker = memory.get("speaker")
            ranks.append(seen_per_speaker.get(speaker, 0))
            seen_per_speaker[speaker] = ranks[-1] + 1
    elif role == MANAGE:
        best: dict[Any, int] = {}
        for fact in obs.get("facts") or []:
            for rank, memory_id in enumerate(fact.get("related") or []):
                best[memory_id] = min(rank, best.get(memory_id, rank))
        ranks = [best.get(m.get("id"), len(memories)) for m in memories]
    else:
        ranks = list(range(len(memories)))
    return sorted(range(len(memories)), key=lambda i: (ranks[i], i), reverse=True)


def drop_order(obs: dict, role: str) -> list[tuple[str, int]]:
    """Every droppable record as ``(field, index)``, in the order trimming drops them (a
    chunked session's history first, oldest first: it is context only)."""
    history = "previous_turns" if role == EXTRACT else "previous_operations" if role == MANAGE else None
    order = [(history, i) for i in range(len(obs.get(history) or []))] if history else []
    order += [("memories", i) for i in memory_drop_order(obs, role)]
    if role == MANAGE:
        order += [("facts", i) for i in reversed(range(len(obs.get("facts") or [])))]
    elif role == EXTRACT:
        order += [("turns", i) for i in range(len(obs.get("turns") or []))]
    return order


def _without(obs: dict, dropped: list[tuple[str, int]]) -> dict:
    """A copy of ``obs`` with the given records removed (order of the rest kept)."""
    gone: dict[str, set[int]] = {}
    for field, index in dropped:
        gone.setdefault(field, set()).add(index)
    trimmed = dict(obs)
    for field, indices in gone.items():
        trimmed[field] = [r for i, r in enumerate(obs.get(field) or []) if i not in indices]
    return trimmed


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of a rendered prompt, counted as generation encodes it (no added specials)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _messages(obs: dict, role: str, distill: bool, style: str) -> list[dict]:
    return [
        {"role": "system", "content": system_prompt(role, distill=distill, style=style)},
        {"role": "user", "content": _USER_BUILDERS[style][role](obs)},
    ]


def parse_observation(obs_json: str) -> dict:
    """The observation dict; ``ValueError`` when it is not a JSON object."""
    try:
        obs = json.loads(obs_json)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"observation is not valid JSON ({error}): {str(obs_json)[:80]!r}") from None
    if not isinstance(obs, dict):
        raise ValueError(f"observation must be a JSON object, got {type(obs).__name__}")
    return obs


def render_prompt(
    tokenizer,
    obs_json: str,
    *,
    max_prompt_tokens: int,
    role: str | None = None,
    distill: bool = True,
    style: str = DEFAULT_STYLE,
) -> str:
    """The chat-templated prompt for one observation, at most ``max_prompt_tokens`` long.

    ``role`` defaults to ``obs["role"]``; ``style`` is ``"default"`` or ``"compact"`` (see
    the module docstring). Records are dropped by relevance until the prompt fits (see
    the module docstring); ``ValueError`` when even the minimal prompt (system prompt,
    header and, for answer, the question) does not fit.
    """
    return _fit(tokenizer, obs_json, max_prompt_tokens, role, distill, style)[0]


def prompt_messages(
    tokenizer,
    obs_json: str,
    *,
    max_prompt_tokens: int,
    role: str | None = None,
    distill: bool = True,
    style: str = DEFAULT_STYLE,
) -> list[dict]:
    """The same prompt as :func:`render_prompt`, as chat messages (system, then user) before
    templating: trimmed so that the templated prompt fits ``max_prompt_tokens``."""
    return _fit(tokenizer, obs_json, max_prompt_tokens, role, distill, style)[1]


def _fit(tokenizer, obs_json: str, max_prompt_tokens: int, role: str | None, distill: bool,
         style: str) -> tuple[str, list[dict]]:
    """The templated prompt and its messages, with the fewest records dropped that make it fit."""
    _check_style(style)
    obs = parse_observation(obs_json)
    role = role if role is not None else obs.get("role")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")

    order = drop_order(obs, role)

    def render(num_dropped: int) -> tuple[str, int, list[dict]]:
        messages = _messages(_without(obs, order[:num_dropped]), role, distill, style)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, count_tokens(tokenizer, text), messages

    text, length, messages = render(0)
    if length <= max_prompt_tokens:
        return text, messages
    minimal, minimal_length, minimal_messages = render(len(order))
    if minimal_length > max_prompt_tokens:
        raise ValueError(
            f"the {role} prompt needs {minimal_length} tokens even with every droppable record "
            f"removed, more than max_prompt_tokens={max_prompt_tokens}"
        )
    # Binary search for the fewest drops that fit: length falls as records are dropped.
    low, high, best = 0, len(order), (minimal, minimal_messages)
    while high - low > 1:
        mid = (low + high) // 2
        candidate, candidate_length, candidate_messages = render(mid)
        if candidate_length <= max_prompt_tokens:
            high, best = mid, (candidate, candidate_messages)
        else:
            low = mid
    return best


# ---------------------------------------------------------------------------- parsing


def parse_relevant_ids(text: str) -> list[str]:
    """Memory ids listed on the ``Relevant:`` line of a distilled answer (empty if none)."""
    match = RELEVANT_LINE.search(text or "")
    if not match:
        return []
    before_answer = re.split(r"answer\s*[:：]", match.group(1), maxsplit=1, flags=re.IGNORECASE)[0]
    ids = _MEMORY_ID_RE.findall(before_answer)
    return list(dict.fromkeys(ids))
