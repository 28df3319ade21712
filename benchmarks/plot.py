"""Draw a training run's ``metrics.jsonl`` into a PNG beside it, so a run can be seen without TensorBoard.

    python -m benchmarks.plot runs/x                 # writes runs/x/metrics.png
    python -m benchmarks.plot runs/x --out x.png

Four panels against the run's generated tokens (``charts/cumulative_tokens``, else the running
sum of ``charts/generated_tokens``; the update number where neither is logged):

* **reward** -- ``charts/session_reward`` (LoGo-GRPO's per-session reward of the global
  rollouts) and ``charts/local_reward`` (its rerollouts), or ``charts/reward`` (Memory-R1);
* **score** -- ``charts/episode_score`` (answer F1 of the whole trajectories) and, as
  markers, ``val/score`` (the held-out validation score, when the run validates);
* **KL** -- ``losses/kl`` (k3 KL to the reference policy) and ``losses/approx_kl`` (to the
  policy that sampled);
* **invalid rate** -- ``charts/invalid_rate``, or ``1 - charts/valid_rate`` (Memory-R1).

A curriculum stage change (``charts/stage_sessions``) is a dotted vertical line. A metric a
run does not log leaves its panel saying so. Works for every trainer that writes
``metrics.jsonl`` (:class:`algos.run.MetricsLog`): ``algos.logo_grpo``, ``algos.memory_r1``.
A resumed run's lines for an update already logged replace the earlier ones.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

from algos.cli import OneLineParser, UserError, run_main

PROG = "python -m benchmarks.plot"
METRICS = "metrics.jsonl"
DEFAULT_NAME = "metrics.png"

# panel title -> (key, label) curves drawn as lines, first present wins for each label
PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("reward", (("charts/session_reward", "session reward"), ("charts/local_reward", "local (rerollout) reward"),
                ("charts/reward", "reward"))),
    ("score", (("charts/episode_score", "episode score (F1)"), ("val/score", "validation score"))),
    ("KL", (("losses/kl", "KL to reference"), ("losses/approx_kl", "approx. KL to sampler"))),
    ("invalid rate", (("charts/invalid_rate", "invalid actions"), ("charts/valid_rate", "invalid actions"))),
)
MARKER_KEYS = {"val/score"}  # logged every few updates: drawn as points


def load_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metrics, one dict per update in update order (lines of one update merged,
    a later line's values winning). :class:`UserError` for a missing directory or file, an
    empty file, or a line that is not a JSON object."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    path = run_dir / METRICS
    if not path.is_file():
        raise UserError(f"{run_dir} has no {METRICS} (is it a run's --output-dir?)")
    by_update: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number} is not a JSON line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number} is not a JSON object")
        update = row.get("update", len(by_update) + 1)
        by_update.setdefault(int(update), {}).update(row)
    if not by_update:
        raise UserError(f"{path} is empty: the run has not finished an update yet")
    return [dict(by_update[u], update=u) for u in sorted(by_update)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def x_axis(rows: Sequence[dict[str, Any]]) -> tuple[list[float], str]:
    """The x value of each row and the axis label: cumulative generated tokens where logged."""
    if all(_number(r.get("charts/cumulative_tokens")) is not None for r in rows):
        return [float(r["charts/cumulative_tokens"]) for r in rows], "generated tokens"
    if all(_number(r.get("charts/generated_tokens")) is not None for r in rows):
        total, xs = 0.0, []
        for r in rows:
            total += float(r["charts/generated_tokens"])
            xs.append(total)
        return xs, "generated tokens"
    return [float(r["update"]) for r in rows], "update"


def curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[str, str, list[float], list[float]]]]:
    """Per panel: ``(key, label, xs, ys)`` of every curve the run logs (rows without the key left out)."""
    xs, _ = x_axis(rows)
    out: dict[str, list[tuple[str, str, list[float], list[float]]]] = {}
    for title, candidates in PANELS:
        drawn: list[tuple[str, str, list[float], list[float]]] = []
        for key, label in candidates:
            if any(label == d[1] for d in drawn):
                continue
            points = [(x, _number(r.get(key))) for x, r in zip(xs, rows)]
            points = [(x, y) for x, y in points if y is not None]
            if not points:
                continue
            ys = [1.0 - y if key == "charts/valid_rate" else y for _, y in points]
            drawn.append((key, label, [x for x, _ in points], ys))
        out[title] = drawn
    return out


def stage_starts(rows: Sequence[dict[str, Any]]) -> list[tuple[float, int]]:
    """``(x, sessions)`` where a new curriculum stage's first update is (the first stage included)."""
    xs, _ = x_axis(rows)
    starts, previous = [], None
    for x, r in zip(xs, rows):
        sessions = r.get("charts/stage_sessions")
        if sessions is not None and sessions != previous:
            starts.append((x, int(sessions)))
            previous = sessions
    return starts


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw ``run_dir/metrics.jsonl`` into ``out`` (default ``run_dir/metrics.png``); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = load_metrics(run_dir)
    drawn = curves(rows)
    if not any(drawn.values()):
        raise UserError(f"{run_dir / METRICS} logs none of the plotted metrics "
                        f"({', '.join(k for _, c in PANELS for k, _ in c)})")
    _, xlabel = x_axis(rows)
    starts = stage_starts(rows)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for ax, (title, _) in zip(axes.flat, PANELS):
        ax.set_title(title)
        ax.grid(alpha=0.3)
        for key, label, xs, ys in drawn[title]:
            if key in MARKER_KEYS or len(xs) == 1:
                ax.plot(xs, ys, "o", label=label)
            else:
                ax.plot(xs, ys, marker="." if len(xs) <= 50 else None, label=label)
        if title == "invalid rate":
            ax.set_ylim(-0.03, 1.03)
        if not drawn[title]:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
        elif len(drawn[title]) > 1 or title == "invalid rate":
            ax.legend(fontsize="small")
        for i, (x, sessions) in enumerate(starts):
            if i:
                ax.axvline(x, color="gray", linestyle=":", linewidth=1)
            if ax is axes.flat[0]:
                ax.annotate(f" {sessions} sessions", (x, 0.02), xycoords=("data", "axes fraction"),
                            fontsize="x-small", color="gray", va="bottom")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    fig.suptitle(f"{run_dir.resolve().name}: {len(rows)} updates")
    fig.tight_layout()
    target = Path(out) if out is not None else run_dir / DEFAULT_NAME
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trainer's --output-dir (holding metrics.jsonl)")
    parser.add_argument("--out", default=None, help=f"the PNG to write (default: RUN_DIR/{DEFAULT_NAME})")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    path = plot_run(args.run_dir, args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
