"""What a manage action does to a memory bank, apart from the episode around it.

The environment (:class:`memenv.env.MemorySessionEnv`) keeps the episode -- sessions,
roles, questions, rewards, observations -- and hands a parsed operation list to these pure
functions: resolve ``{"fact": i}`` references to the extracted facts' texts, check the
whole list against the bank (ids, texts, the memory budget), then apply it to the bank
and its retrieval index together. Gold facts of an annotated session resolve the same way
into operations on the current bank (``info["gold"]["operations"]``). Nothing here reads
or changes the environment; banks and indexes are immutable values, so the functions
return new ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from memenv.memory import MemoryBank
from memenv.parsing import Fact, Operation
from memenv.retrieval import Retriever
from memenv.types import GoldFact


def resolve_fact_refs(ops: Sequence[Operation], facts: Sequence[Fact]) -> tuple[list[Operation], str | None]:
    """``ops`` with every ``{"fact": i}`` reference of an ADD or UPDATE replaced by the text
    (and speaker, unless the operation names one) of extracted fact ``i``; ``([], error)``
    when a reference is out of range or an operation gives both a text and a fact."""
    out = []
    for i, op in enumerate(ops):
        if op.fact is not None and op.op in ("ADD", "UPDATE"):
            if op.text:
                return [], f"operations[{i}]: give either text or fact, not both"
            if not 0 <= op.fact < len(facts):
                return [], f"operations[{i}]: fact {op.fact} does not exist ({len(facts)} facts were extracted)"
            fact = facts[op.fact]
            op = Operation(op.op, op.id, fact.text, op.speaker or fact.speaker)
        out.append(op)
    return out, None


def validate_operations(ops: Sequence[Operation], bank: MemoryBank, budget: int | None = None) -> str | None:
    """None if the whole list can be applied to ``bank`` in order, else what is wrong: an
    ADD or UPDATE without text, an UPDATE or DELETE of an id that does not exist or was
    deleted earlier in the list, or (``budget``: most entries the bank may hold) a list
    that would grow the bank beyond the budget."""
    deleted: set[str] = set()
    for i, op in enumerate(ops):
        if op.op == "NOOP":
            continue
        if op.op in ("ADD", "UPDATE") and not op.text:
            return f"operations[{i}]: {op.op} needs a non-empty text"
        if op.op in ("UPDATE", "DELETE"):
            if not op.id:
                return f"operations[{i}]: {op.op} needs the id of an existing memory"
            if op.id in deleted:
                return f"operations[{i}]: memory {op.id} was deleted earlier in this list"
            if op.id not in bank:
                return f"operations[{i}]: no memory with id {op.id[:40]!r}"
            if op.op == "DELETE":
                deleted.add(op.id)
    if budget is not None:
        size = len(bank) + sum(op.op == "ADD" for op in ops) - len(deleted)
        if size > budget and size > len(bank):
            return (f"memory budget exceeded: these operations would leave {size} memories, the budget "
                    f"is {budget}; DELETE or UPDATE (merge) memories to make room")
    return None


def speaker_of(text: str, given: str | None, speakers: Sequence[str]) -> str | None:
    """The speaker a memory is about: ``given`` if it is one of ``speakers``, else the first
    speaker the text names, else None."""
    if given in speakers:
        return given
    lowered = text.lower()
    positions = [(lowered.find(s.lower()), s) for s in speakers if s and s.lower() in lowered]
    return min(positions)[1] if positions else None


def apply_operations(ops: Sequence[Operation], bank: MemoryBank, index: Retriever, *, session: int, date: str,
                     turn: int, speakers: Sequence[str]) -> tuple[MemoryBank, Retriever, list[dict]]:
    """Apply a validated list in order to the bank and its index; returns the new bank, the
    new index and the operations applied (``{"op", "id"[, "text"]}``; NOOPs left out)."""
    applied = []
    for op in ops:
        if op.op == "ADD":
            speaker = speaker_of(op.text, op.speaker, speakers)
            bank, memory_id = bank.add(op.text, speaker=speaker, session=session, date=date, turn=turn)
            index = index.add(memory_id, op.text)
            applied.append({"op": "ADD", "id": memory_id, "text": op.text})
        elif op.op == "UPDATE":
            bank = bank.update(op.id, op.text, session=session, date=date, turn=turn,
                               speaker=speaker_of(op.text, op.speaker, speakers))
            index = index.update(op.id, op.text)
            applied.append({"op": "UPDATE", "id": op.id, "text": op.text})
        elif op.op == "DELETE":
            bank = bank.delete(op.id, session=session, turn=turn)
            index = index.remove(op.id)
            applied.append({"op": "DELETE", "id": op.id})
    return bank, index, applied


def gold_operations(gold_facts: Sequence[GoldFact], bank: MemoryBank) -> list[dict]:
    """A session's gold facts as operations on ``bank``: ADD, UPDATE or DELETE by the id of
    the memory holding the gold ``old_text`` (the newest such), an UPDATE of a text not in
    the bank becoming an ADD, a DELETE of one dropped; ``[{"op": "NOOP"}]`` for none."""
    ops: list[dict] = []
    text_to_id: dict[str, str | None] = {}
    next_id = int(bank.next_id[1:])

    def find(text: str) -> str | None:
        if text in text_to_id:
            return text_to_id[text]
        ids = bank.ids_with_text(text)
        return ids[-1] if ids else None

    for fact in gold_facts:
        target = find(fact.old_text) if fact.op in ("UPDATE", "DELETE") else None
        if fact.op == "DELETE":
            if target is not None:
                ops.append({"op": "DELETE", "id": target})
                text_to_id[fact.old_text] = None
        elif fact.op == "UPDATE" and target is not None:
            ops.append({"op": "UPDATE", "id": target, "text": fact.text})
            text_to_id[fact.old_text] = None
            text_to_id[fact.text] = target
        else:
            ops.append({"op": "ADD", "text": fact.text, "speaker": fact.speaker})
            text_to_id[fact.text] = f"m{next_id}"
            next_id += 1
    return ops or [{"op": "NOOP"}]
