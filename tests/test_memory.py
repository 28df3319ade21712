import pytest

from memenv.memory import MemoryBank, OpRecord


def build():
    bank = MemoryBank()
    bank, a = bank.add("Alice lives in Paris.", speaker="Alice", session=0, date="1 May 2023", turn=1)
    bank, b = bank.add("Bob works as a nurse.", speaker="Bob", session=0, date="1 May 2023", turn=1)
    bank = bank.update(a, "Alice moved to Lyon on 8 May 2023.", session=1, date="9 May 2023", turn=3)
    bank = bank.delete(b, session=1, turn=3)
    bank, c = bank.add("Bob plays chess.", speaker="Bob", session=1, date="9 May 2023", turn=3)
    return bank, (a, b, c)


def test_ids_are_stable_and_never_reused():
    bank, (a, b, c) = build()
    assert (a, b, c) == ("m0", "m1", "m2")
    assert [e.id for e in bank] == ["m0", "m2"]
    assert len(bank) == 2 and "m1" not in bank and bank["m0"].text == "Alice moved to Lyon on 8 May 2023."
    assert bank.next_id == "m3"


def test_entries_keep_speaker_session_date_and_turns():
    bank, _ = build()
    e = bank["m0"]
    assert (e.speaker, e.session, e.date, e.created_turn, e.updated_turn) == ("Alice", 1, "9 May 2023", 1, 3)


def test_history_audits_every_change():
    bank, _ = build()
    assert bank.history == [
        OpRecord("ADD", "m0", None, "Alice lives in Paris.", 0, 1),
        OpRecord("ADD", "m1", None, "Bob works as a nurse.", 0, 1),
        OpRecord("UPDATE", "m0", "Alice lives in Paris.", "Alice moved to Lyon on 8 May 2023.", 1, 3),
        OpRecord("DELETE", "m1", "Bob works as a nurse.", None, 1, 3),
        OpRecord("ADD", "m2", None, "Bob plays chess.", 1, 3),
    ]


def test_edits_return_new_banks_and_leave_the_old_one_alone():
    bank, _ = build()
    before = bank.to_dict()
    bigger, _ = bank.add("x y z")
    smaller = bank.delete("m0")
    assert bank.to_dict() == before
    assert len(bigger) == 3 and len(smaller) == 1 and len(bank) == 2


def test_token_count_and_text_lookup_follow_edits():
    bank, _ = build()
    assert bank.tokens == len("Alice moved to Lyon on 8 May 2023.".split()) + 3
    assert bank.ids_with_text("Bob plays chess.") == ("m2",)
    assert bank.ids_with_text("Alice lives in Paris.") == ()


def test_missing_ids_raise_keyerror_naming_the_id():
    bank, _ = build()
    with pytest.raises(KeyError, match="m1"):
        bank.delete("m1")
    with pytest.raises(KeyError, match="m9"):
        bank.update("m9", "text")


def test_save_and_load_lose_nothing(tmp_path):
    bank, _ = build()
    path = tmp_path / "bank.json"
    bank.save(path)
    loaded = MemoryBank.load(path)
    assert loaded == bank
    assert loaded.history == bank.history and loaded.next_id == bank.next_id and loaded.tokens == bank.tokens
    # the loaded bank keeps working with the same id sequence
    loaded, new_id = loaded.add("Alice adopted a cat.")
    assert new_id == "m3"


def test_load_rejects_bad_files_with_the_path(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        MemoryBank.load(bad)
    bad.write_text('{"format_version": 1, "entries": [{"id": "m0"}], "history": [], "next_id": 1}')
    with pytest.raises(ValueError, match="bad.json"):
        MemoryBank.load(bad)
