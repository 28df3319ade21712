"""memenv.operations: a manage action applied to a memory bank, outside any episode."""

from memenv.memory import MemoryBank
from memenv.operations import (apply_operations, gold_operations, resolve_fact_refs, speaker_of,
                               validate_operations)
from memenv.parsing import Fact, Operation
from memenv.retrieval import make_retriever
from memenv.types import GoldFact

SPEAKERS = ("Alice", "Bob")


def _bank(*texts):
    bank = MemoryBank()
    for t in texts:
        bank, _ = bank.add(t, speaker=None, session=0, date="1 May 2023", turn=0)
    return bank


def test_fact_references_take_the_extracted_texts():
    ops, error = resolve_fact_refs([Operation("ADD", fact=1), Operation("NOOP")],
                                   [Fact("a"), Fact("Bob plays chess.", "Bob")])
    assert error is None and ops[0] == Operation("ADD", None, "Bob plays chess.", "Bob")
    assert resolve_fact_refs([Operation("ADD", fact=2)], [Fact("a")])[1].startswith("operations[0]: fact 2")
    assert "either text or fact" in resolve_fact_refs([Operation("ADD", text="x", fact=0)], [Fact("a")])[1]


def test_a_list_is_checked_whole_against_the_bank_and_the_budget():
    bank = _bank("Alice lives in Paris.", "Bob plays chess.")
    assert validate_operations([Operation("UPDATE", "m0", "Alice lives in Lyon.")], bank) is None
    assert "no memory with id 'm9'" in validate_operations([Operation("DELETE", "m9")], bank)
    assert "deleted earlier" in validate_operations([Operation("DELETE", "m1"), Operation("DELETE", "m1")], bank)
    assert "needs a non-empty text" in validate_operations([Operation("ADD", text="")], bank)
    assert validate_operations([Operation("ADD", text="x")], bank, budget=2).startswith("memory budget exceeded")
    assert validate_operations([Operation("DELETE", "m0"), Operation("ADD", text="x")], bank, budget=2) is None


def test_applying_builds_a_new_bank_and_index_and_leaves_the_old_ones():
    bank = _bank("Alice lives in Paris.")
    index = make_retriever("bm25").add("m0", "Alice lives in Paris.")
    new_bank, new_index, applied = apply_operations(
        [Operation("UPDATE", "m0", "Alice lives in Lyon."), Operation("ADD", text="Bob plays chess."),
         Operation("NOOP")], bank, index, session=1, date="2 May 2023", turn=3, speakers=SPEAKERS)
    assert applied == [{"op": "UPDATE", "id": "m0", "text": "Alice lives in Lyon."},
                       {"op": "ADD", "id": "m1", "text": "Bob plays chess."}]
    assert [e.text for e in bank] == ["Alice lives in Paris."] and len(new_bank) == 2
    assert new_bank["m1"].speaker == "Bob" and new_bank["m0"].speaker == "Alice"
    assert [d for d, _ in new_index.search("Lyon", 5)] == ["m0"] and not index.search("Lyon", 5)


def test_speakers_and_gold_operations():
    assert speaker_of("Bob met Alice.", None, SPEAKERS) == "Bob" and speaker_of("x", "Alice", SPEAKERS) == "Alice"
    assert speaker_of("Carol left.", "Carol", SPEAKERS) is None
    bank = _bank("Alice lives in Paris.")
    gold = [GoldFact("Alice lives in Lyon.", "UPDATE", "Alice", old_text="Alice lives in Paris."),
            GoldFact("Bob plays chess.", "ADD", "Bob"), GoldFact("", "DELETE", "Bob", old_text="Bob plays chess.")]
    assert gold_operations(gold, bank) == [{"op": "UPDATE", "id": "m0", "text": "Alice lives in Lyon."},
                                           {"op": "ADD", "text": "Bob plays chess.", "speaker": "Bob"},
                                           {"op": "DELETE", "id": "m1"}]
    assert gold_operations([], bank) == [{"op": "NOOP"}]
