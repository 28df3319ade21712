"""benchmarks.leaderboard --save-memory and benchmarks.leaderboard.memory_diff (scripted rows, the
tiny LoCoMo fixture, a fake reader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agents.registry as registry
from algos.cli import UserError
from benchmarks import leaderboard as lb
from benchmarks.leaderboard import memory_diff as md

FIXTURE_LOCOMO = Path(__file__).parent / "fixtures" / "locomo_tiny.json"


class LastMemoryReader:
    """Answers with the text of the last memory it is shown."""

    def act(self, obs, info):
        memories = json.loads(obs)["memories"] or [{"text": "none"}]
        return json.dumps({"answer": memories[-1]["text"]})


@pytest.fixture
def reader(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    registry.register_agent("last-memory", LastMemoryReader)


def board(tmp_path, name, strategy, *extra):
    out = tmp_path / name
    lb.main(["--source", "locomo", "--data-path", str(FIXTURE_LOCOMO), "--rows", f"{strategy}+last-memory",
             "--out", str(out), "--no-progress", *extra])
    return f"{out}.json"


def test_save_memory_keeps_each_final_memory_and_diff_counts_it(tmp_path, reader, capsys):
    turns = board(tmp_path, "turns", "rag-turns", "--save-memory")
    none = board(tmp_path, "noop", "noop", "--save-memory")
    conv = json.loads(Path(turns).read_text())["rows"][0]["conversations"][0]
    assert len(conv["memory"]) == conv["memory_size"] == 7  # every turn of conv-t1
    assert set(conv["memory"][0]) == {"id", "text", "speaker", "session", "date"}
    assert sum(len(m["text"].split()) for m in conv["memory"]) == conv["memory_tokens"]

    result = md.main(["--a", turns, "--b", turns, "--sessions", "1", "--out", str(tmp_path / "same")])
    rows = result["conversations"][conv["conversation"]]
    assert sum(r["shared"] for r in rows.values()) == 7 and all(r["only_a"] == r["only_b"] == 0 for r in rows.values())

    result = md.main(["--a", none, "--b", turns, "--sessions", "1", "--samples", "2"])
    rows = result["conversations"][conv["conversation"]]
    assert sum(r["only_b"] for r in rows.values()) == 7 and sum(r["a"] for r in rows.values()) == 0
    assert rows[1]["samples_only_b"] == [m["text"] for m in conv["memory"] if m["session"] == 0][:2]  # records count from 0
    assert "samples_only_b" not in rows.get(2, {})  # only the sessions asked for show texts
    printed = capsys.readouterr().out
    assert "| only in A | only in B |" in printed and conv["memory"][0]["text"] in printed

    counts = md.main(["--a", none, "--b", turns, "--sessions", "1", "--no-texts", "--out", str(tmp_path / "c")])
    assert all("samples_only_b" not in r for r in counts["conversations"][conv["conversation"]].values())
    assert conv["memory"][0]["text"] not in (tmp_path / "c.md").read_text()


def test_diff_matches_texts_as_a_multiset_within_a_session():
    a = [{"text": "x  y", "session": 0}, {"text": "x y", "session": 0}, {"text": "z", "session": 1}]
    b = [{"text": "x y", "session": 0}, {"text": "w", "session": 1}]
    d = md.diff(a, b)
    assert (d[1]["a"], d[1]["b"], d[1]["shared"]) == (2, 1, 1) and [e["text"] for e in d[1]["only_a"]] == ["x  y"]
    assert [e["text"] for e in d[2]["only_a"]] == ["z"] and [e["text"] for e in d[2]["only_b"]] == ["w"]


def test_a_row_without_saved_memory_is_one_line(tmp_path, reader):
    plain = board(tmp_path, "plain", "rag-turns")
    with pytest.raises(UserError, match="--save-memory"):
        md.main(["--a", plain, "--b", plain])
    with pytest.raises(ValueError, match="--sessions"):
        md.MemoryDiffArgs(a="x", b="y", sessions=(0,))
