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


def test_the_table_separates_the_answer_grammar_from_the_speed(tmp_path, monkeypatch):
    """With --unconstrained (the default) the leaderboard job is also timed with today's
    answers unconstrained, and the table gives that row's speed-up and F1 beside the default's."""
    import json

    import benchmarks.end_to_end_speed as E

    calls = []

    def fake(args, extra, env, work, code=None, answerer="llm:smollm2-135m"):
        calls.append((tuple(extra), answerer))
        if extra:  # the old settings
            return {"seconds_per_question": 12.0, "f1": 0.135}
        return {"seconds_per_question": 4.0 if "constrained=false" in answerer else 3.0,
                "f1": 0.134 if "constrained=false" in answerer else 0.064}

    monkeypatch.setattr(E, "answer_seconds", fake)
    data = tmp_path / "locomo.json"
    data.write_text("[]")
    out = tmp_path / "e2e"
    result = E.main(["--skip-training", "--before-revision", "", "--data-path", str(data), "--out", str(out)])
    assert [a for _, a in calls] == ["llm:smollm2-135m", "llm:smollm2-135m", E.UNCONSTRAINED]
    assert result["locomo_answers"]["speedup"] == 4.0
    assert result["locomo_answers_unconstrained"]["speedup"] == 3.0
    table = out.with_suffix(".md").read_text()
    assert "| the same, today's answers without the answer grammar (s per question) | 12.00 | 4.00 | 3.0x |" in table
    assert "| the same questions without the grammar, answer F1 | 13.5 | 13.4 | |" in table
    assert json.loads(out.with_suffix(".json").read_text())["locomo_answers_unconstrained"]["answerer"] == E.UNCONSTRAINED
    calls.clear()
    E.main(["--skip-training", "--before-revision", "", "--data-path", str(data), "--out", str(out),
            "--no-unconstrained"])
    assert len(calls) == 2 and "without the answer grammar" not in out.with_suffix(".md").read_text()
