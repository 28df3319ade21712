"""Tests for benchmarks.env_speed: its command line refuses bad counts in one line; a tiny run works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import env_speed


def refused(capsys, argv):
    """The one stderr line main(argv) exits with (exit status 2, nothing timed)."""
    with pytest.raises(SystemExit) as exit_info:
        env_speed.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "usage:" not in err, err
    return err


@pytest.mark.parametrize("argv, flag, value", [
    (["--sizes", "-5"], "--sizes", "-5"),
    (["--sizes", "10", "0"], "--sizes", "0"),
    (["--horizons", "8", "-1"], "--horizons", "-1"),
    (["--episodes", "0"], "--episodes", "0"),
])
def test_non_positive_counts_are_refused_in_one_line(capsys, monkeypatch, argv, flag, value):
    monkeypatch.setattr(env_speed, "fork_table", lambda sizes: pytest.fail("timed despite a bad flag"))
    err = refused(capsys, argv)
    assert f"{flag} takes positive integers, got {value}" in err


def test_non_integer_and_directory_out_are_refused_in_one_line(capsys, tmp_path):
    assert "--sizes: invalid int value: 'ten'" in refused(capsys, ["--sizes", "ten"])
    assert "is a directory" in refused(capsys, ["--out", str(tmp_path)])


def test_tiny_run_writes_json_and_markdown(tmp_path, monkeypatch):
    # one quick repeat per measurement: the test checks the plumbing, not the speed
    timer = env_speed._time
    monkeypatch.setattr(env_speed, "_time", lambda fn, **_: timer(fn, min_repeats=1, budget_s=0.0))
    out = tmp_path / "speed.json"
    result = env_speed.main(["--sizes", "3", "--horizons", "2", "--episodes", "1", "--out", str(out)])
    assert [r["memories"] for r in result["fork"]] == [3]
    assert result["throughput"][0]["num_sessions"] == 2 and result["throughput"][0]["steps"] > 0
    assert json.loads(out.read_text())["command"].endswith("--out " + str(out))
    assert "| 3 |" in out.with_suffix(".md").read_text()


def test_the_module_command_refuses_a_bad_count_in_one_line(tmp_path):
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.env_speed", "--episodes", "0", "--out",
                           str(tmp_path / "speed.json")], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 2 and not (tmp_path / "speed.json").exists()
    assert done.stderr == "python -m benchmarks.env_speed: error: --episodes takes positive integers, got 0\n"
