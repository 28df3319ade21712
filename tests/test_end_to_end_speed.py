"""Tests for benchmarks.end_to_end_speed's 'before' tree (the timings themselves are the benchmark)."""

from __future__ import annotations

import pytest

from benchmarks.end_to_end_speed import export_revision


def test_a_revision_is_exported_as_a_runnable_tree(tmp_path):
    tree = export_revision("HEAD", tmp_path / "before")
    assert (tree / "algos" / "logo_grpo.py").is_file() and (tree / "memenv" / "__init__.py").is_file()


def test_an_unknown_revision_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--before-revision 'no-such-rev'"):
        export_revision("no-such-rev", tmp_path / "before")


def test_answer_figures_read_f1_from_either_leaderboard_row_format():
    from benchmarks.end_to_end_speed import answer_figures

    today = {"answer_seconds_per_question": 2.9, "overall": {"f1": 0.2, "bleu1": 0.16}}
    assert answer_figures(today) == {"seconds_per_question": 2.9, "f1": 0.2}
    assert answer_figures({"answer_seconds_per_question": 13.3, "f1": 0.19})["f1"] == 0.19
    assert answer_figures({"answer_seconds_per_question": 13.3})["f1"] is None
