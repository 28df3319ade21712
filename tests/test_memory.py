import json

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


# --- loading validates the whole file ---------------------------------------------------

def _write_bank(tmp_path, mutate=None, data=None):
    """The file of build()'s bank after ``mutate(data)``, as tmp_path/bank.json."""
    if data is None:
        data = build()[0].to_dict()
    if mutate is not None:
        mutate(data)
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(data))
    return path


def _deleted_only_in_history():
    bank, _ = MemoryBank().add("a")
    bank, _ = bank.add("b")
    return bank.delete("m1").to_dict()  # m1 lives on only in the history; next_id is 2


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(next_id=0), "'m0' but next_id is 0"),
    (lambda d: d.update(next_id=2), "entries[1].id is 'm2' but next_id is 2"),
    (lambda d: d["entries"].append(dict(d["entries"][0])), "entries[2].id 'm0' appears twice"),
    (lambda d: d["entries"][0].update(text=5), "entries[0].text must be a string, got int 5"),
    (lambda d: d["entries"][0].update(date=None), "entries[0].date must be a string"),
    (lambda d: d["entries"][0].update(speaker=["Alice"]), "entries[0].speaker must be a string or null"),
    (lambda d: d["entries"][0].update(id=["m0"]), "entries[0].id must be an id like 'm3', got list"),
    (lambda d: d["entries"][0].update(id=0), "entries[0].id must be an id like 'm3', got int 0"),
    (lambda d: d["entries"][0].update(id="m-1"), "entries[0].id must be an id like 'm3'"),
    (lambda d: d["entries"][0].update(id="m" + "9" * 400), "entries[0].id must be an id like 'm3'"),
    (lambda d: d["entries"][0].update(session=True), "entries[0].session must be a non-negative integer"),
    (lambda d: d["entries"][0].update(created_turn=-1), "entries[0].created_turn must be a non-negative integer"),
    (lambda d: d["entries"][0].update(updated_turn=2.0), "entries[0].updated_turn must be a non-negative integer"),
    (lambda d: d["entries"][0].pop("date"), "entries[0] lacks the key 'date'"),
    (lambda d: d["entries"][0].update(colour="red"), "entries[0] has the unknown key 'colour'"),
    (lambda d: d["entries"].__setitem__(0, "m0"), "entries[0] must be a JSON object, got str"),
    (lambda d: d.update(next_id=-1), "next_id must be a non-negative integer"),
    (lambda d: d.update(next_id=True), "next_id must be a non-negative integer"),
    (lambda d: d.update(next_id="3"), "next_id must be a non-negative integer"),
    (lambda d: d.update(next_id=10**30), "next_id must be a non-negative integer"),
    (lambda d: d.update(entries={"m0": {}}), "entries must be a list, got dict"),
    (lambda d: d.update(history=None), "history must be a list, got NoneType"),
    (lambda d: d.pop("history"), "the bank lacks the key 'history'"),
    (lambda d: d.update(notes="x"), "the bank has the unknown key 'notes'"),
    (lambda d: d.update(format_version=True), "format_version is bool True"),
    (lambda d: d.update(format_version=2), "format_version is int 2"),
    (lambda d: d.update(format_version=1.0), "format_version is float 1.0"),
    (lambda d: d["history"][0].update(op="MERGE"), "history[0].op must be 'ADD', 'UPDATE' or 'DELETE'"),
    (lambda d: d["history"][0].update(op=["ADD"]), "history[0].op must be"),
    (lambda d: d["history"][0].update(before="x"), "history[0]: ADD must have before null"),
    (lambda d: d["history"][2].update(after=None), "history[2].after must be a string"),
    (lambda d: d["history"][3].update(after="x"), "history[3]: DELETE must have after null"),
    (lambda d: d["history"][3].update(before=None), "history[3].before must be a string"),
    (lambda d: d["history"][0].update(id="m9"), "history[0].id is 'm9' but next_id is 3"),
    (lambda d: d["history"][0].update(turn=-3), "history[0].turn must be a non-negative integer"),
    (lambda d: d["history"].append("ADD m0"), "history[5] must be a JSON object"),
])
def test_load_refuses_malformed_banks_with_one_line_naming_the_problem(tmp_path, mutate, fragment):
    path = _write_bank(tmp_path, mutate)
    with pytest.raises(ValueError) as caught:
        MemoryBank.load(path)
    message = str(caught.value)
    assert fragment in message and "bank.json" in message and "\n" not in message


def test_next_id_must_exceed_ids_that_live_only_in_the_history(tmp_path):
    path = _write_bank(tmp_path, lambda d: d.update(next_id=1), data=_deleted_only_in_history())
    with pytest.raises(ValueError, match=r"history\[1\]\.id is 'm1' but next_id is 1"):
        MemoryBank.load(path)
    bank = MemoryBank.load(_write_bank(tmp_path, data=_deleted_only_in_history()))
    assert bank.add("c")[1] == "m2"


@pytest.mark.parametrize("text, fragment", [
    ('{"format_version": 1, "next_id": 1e309, "entries": [], "history": []}', "next_id must be a non-negative integer"),
    ('{"format_version": 1, "next_id": NaN, "entries": [], "history": []}', "next_id must be a non-negative integer"),
    ('{"format_version": 1, "next_id": 1' + "0" * 5000 + ', "entries": [], "history": []}', "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format_version": 1, "next_id": 0, "entries": ' + "[" * 100_000, "nested too deeply"),
    ("[]", "not a memory bank"),
    ('"bank"', "not a memory bank"),
    ("", "not valid JSON"),
])
def test_load_turns_every_bad_json_into_one_line_value_error(tmp_path, text, fragment):
    path = tmp_path / "bank.json"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        MemoryBank.load(path)
    message = str(caught.value)
    assert fragment in message and "bank.json" in message and "\n" not in message


def test_load_refuses_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "bank.json"
    path.write_bytes(b'{"format_version": 1, "next_id": 0, "entries": [], "history": [], "x": "\xff"}')
    with pytest.raises(ValueError, match="bank.json: not UTF-8"):
        MemoryBank.load(path)


def test_from_dict_messages_stay_short_for_huge_or_deep_values():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for data in (deep, {"format_version": 1, "next_id": 0, "entries": [], "history": [deep]}, "x" * 10**6):
        with pytest.raises(ValueError) as caught:
            MemoryBank.from_dict(data)
        assert len(str(caught.value)) < 300


def test_lone_surrogates_in_a_file_are_replaced_so_the_bank_saves_again(tmp_path):
    path = _write_bank(tmp_path, lambda d: (d["entries"][0].update(text="Alice \ud800 Lyon"),
                                            d["history"][2].update(after="Alice \ud800 Lyon")))
    assert "\\ud800" in path.read_text()  # json.dumps writes the escape; json.loads revives it
    bank = MemoryBank.load(path)
    assert bank["m0"].text == "Alice \ufffd Lyon" and bank.history[2].after == "Alice \ufffd Lyon"
    bank.save(tmp_path / "again.json")
    assert MemoryBank.load(tmp_path / "again.json") == bank
