"""python -m benchmarks.plot: a run's metrics.jsonl drawn into a PNG beside it."""

import json
import subprocess
import sys

import pytest

from benchmarks import plot

PNG = b"\x89PNG\r\n\x1a\n"


def _write(run, rows):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _logo_rows():
    rows, tokens = [], 0.0
    for update in range(1, 7):
        tokens += 1000.0
        rows.append({"update": update, "charts/session_reward": 0.1 * update, "charts/local_reward": 0.2,
                     "charts/episode_score": 0.05 * update, "charts/invalid_rate": 1.0 / update,
                     "losses/kl": 1e-3 * update, "losses/approx_kl": 1e-4, "charts/generated_tokens": 1000.0,
                     "charts/cumulative_tokens": tokens, "charts/stage_sessions": 2 if update <= 3 else 4})
    rows.append({"update": 3, "val/score": 0.4, "val/best": 0.4})  # a validation line of an update
    return rows


def test_a_written_run_is_drawn_beside_its_metrics(tmp_path):
    run = _write(tmp_path / "run", _logo_rows())
    path = plot.plot_run(run)
    assert path == run / "metrics.png" and path.read_bytes().startswith(PNG)


def test_the_panels_read_the_trainers_keys_against_generated_tokens(tmp_path):
    rows = plot.load_metrics(_write(tmp_path / "run", _logo_rows()))
    assert [r["update"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[2]["val/score"] == 0.4
    xs, label = plot.x_axis(rows)
    assert label == "generated tokens" and xs == [1000.0 * i for i in range(1, 7)]
    drawn = plot.curves(rows)
    assert [c[0] for c in drawn["reward"]] == ["charts/session_reward", "charts/local_reward"]
    assert [c[0] for c in drawn["score"]] == ["charts/episode_score", "val/score"]
    assert drawn["score"][1][2:] == ([3000.0], [0.4])
    assert [c[0] for c in drawn["KL"]] == ["losses/kl", "losses/approx_kl"]
    assert drawn["invalid rate"][0][3][:2] == [1.0, 0.5]
    assert plot.stage_starts(rows) == [(1000.0, 2), (4000.0, 4)]


def test_memory_r1_keys_and_a_resumed_run(tmp_path):
    """Memory-R1 logs charts/reward and charts/valid_rate and no cumulative tokens; a resumed
    run's repeated update replaces the earlier line."""
    rows = [{"update": u, "charts/reward": 0.1 * u, "charts/valid_rate": 0.75, "charts/generated_tokens": 10.0}
            for u in (1, 2, 2, 3)]
    rows[2]["charts/reward"] = 0.9
    run = _write(tmp_path / "r1", rows)
    loaded = plot.load_metrics(run)
    assert [r["charts/reward"] for r in loaded] == [0.1, 0.9, pytest.approx(0.3)]
    assert plot.x_axis(loaded) == ([10.0, 20.0, 30.0], "generated tokens")
    drawn = plot.curves(loaded)
    assert drawn["invalid rate"][0][3] == [0.25, 0.25, 0.25] and drawn["KL"] == []
    assert plot.plot_run(run, tmp_path / "elsewhere.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "no such run directory"),
    (lambda d: d, "has no metrics.jsonl"),
    (lambda d: _write(d / "empty", []), "is empty"),
    (lambda d: (_write(d / "bad", []) / "metrics.jsonl").write_text("{oops\n") and d / "bad", "metrics.jsonl:1 is not a JSON line"),
    (lambda d: _write(d / "other", [{"update": 1, "charts/memory_size": 3.0}]), "logs none of the plotted metrics"),
])
def test_user_errors_are_one_line(tmp_path, make, message):
    run = make(tmp_path)
    done = subprocess.run([sys.executable, "-m", "benchmarks.plot", str(run)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("python -m benchmarks.plot: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_help():
    done = subprocess.run([sys.executable, "-m", "benchmarks.plot", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "RUN_DIR" in done.stdout and "generated tokens" in done.stdout


@pytest.mark.usefixtures("single_torch_thread")
def test_a_tiny_logo_grpo_run_is_drawn(tmp_path):
    from algos import logo_grpo

    run = tmp_path / "run"
    logo_grpo.main(["--model", "tiny", "--stages", "2", "3", "--updates-per-stage", "1", "--group-size", "2",
                    "--conversations-per-update", "1", "--inner-n", "2", "--max-new-tokens", "8", "--ppo-epochs", "1",
                    "--answerer", "scripted", "--no-progress", "--no-tensorboard", "--output-dir", str(run)])
    rows = plot.load_metrics(run)
    assert len(rows) == 2 and plot.x_axis(rows)[1] == "generated tokens"
    assert all(plot.curves(rows)[panel] for panel in ("reward", "score", "KL", "invalid rate"))
    assert [s for _, s in plot.stage_starts(rows)] == [2, 3]
    done = subprocess.run([sys.executable, "-m", "benchmarks.plot", str(run)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"wrote {run / 'metrics.png'}"
    assert (run / "metrics.png").read_bytes().startswith(PNG)
