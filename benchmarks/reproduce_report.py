"""The reproduction's report: seeds aggregated per arm, the markdown table and the learning-curve plot
(used by :mod:`benchmarks.reproduce`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

ARMS = ("base", "sft", "grpo", "logo", "logo-nocurr", "logo-perrole")  # every arm of the comparison
RL_ARMS = ("grpo", "logo", "logo-nocurr", "logo-perrole")  # the arms a trainer runs

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; (nan, nan) for no values."""
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())


def aggregate(runs: Sequence[dict[str, Any]], arms: Sequence[str], seeds: Sequence[int],
              horizons: Sequence[int]) -> dict[str, Any]:
    """Per arm and horizon: mean/std over seeds of overall F1 and per-kind F1; token use of RL arms."""
    table: dict[str, Any] = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        if arm == "base" and mine:
            mine = mine * len(seeds)  # deterministic: the same numbers for every seed
        row: dict[str, Any] = {"seeds": len(mine), "horizons": {}}
        for h in map(str, horizons):
            evals = [r["eval"][h] for r in mine if h in r.get("eval", {})]
            kinds = sorted({k for e in evals for k in e["by_kind"]})
            row["horizons"][h] = {
                "f1": mean_std([e["f1"] for e in evals]),
                "invalid_rate": mean_std([e["invalid_rate"] for e in evals]),
                "memory_tokens": mean_std([e["memory_tokens"] for e in evals if "memory_tokens" in e]),
                "by_kind": {k: mean_std([e["by_kind"][k] for e in evals if k in e["by_kind"]]) for k in kinds},
            }
        if arm in RL_ARMS:
            row["tokens"] = mean_std([r["tokens"] for r in mine])
            row["updates"] = mean_std([r["updates"] for r in mine])
            # wall time of one update (rollouts + optimisation), mean over every update of every seed
            row["seconds_per_update"] = mean_std([p["seconds"] for r in mine for p in r.get("curve", [])
                                                  if p.get("seconds")])
        table[arm] = row
    return table


def _fmt(ms: tuple[float, float]) -> str:
    return "n/a" if ms[0] != ms[0] else f"{ms[0]:.3f} ± {ms[1]:.3f}"


def to_markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables: overall F1 per horizon, then per kind at each horizon."""
    from benchmarks.provenance import markdown_line

    table, horizons = report["table"], report["preset"]["eval_horizons"]
    lines = [f"# Memory-R2 reproduction, preset `{report['preset_name']}`", "",
             f"Command: `{report['command']}`", "",
             f"Held-out synthetic worlds (seeds 0..{report['preset']['eval_worlds'] - 1}), qa_schedule end, greedy "
             f"manage turns, {report['preset'].get('difficulty', 'default')} worlds, extractor "
             f"{report['preset']['trainer'].get('extractor') or 'the policy (shared extract+manage adapter)'}, "
             f"answerer {report['preset']['trainer'].get('answerer')}; mean ± std over seeds "
             f"{list(report['preset']['seeds'])}. RL token budget {report['preset']['token_budget']} generated "
             f"tokens per arm, curriculum {list(report['preset']['stages'])}. SFT warm start: "
             f"{report['preset']['sft_steps']} steps at learning rate {report['preset']['sft_learning_rate']}, "
             f"{report['preset'].get('sft_schedule', 'constant')} schedule. Wall time {report['seconds'] / 60:.1f} min.",
             "", markdown_line(report["environment"]) if "environment" in report else "Environment: not recorded.",
             "", "## Answer F1 (all questions)", "",
             "| arm | " + " | ".join(f"{h} sessions" for h in horizons) + " | invalid action rate "
             f"({horizons[-1]}) | memory tokens kept ({horizons[-1]}) | generated tokens | updates | s / update |",
             "|---" * (len(horizons) + 6) + "|"]
    for arm, row in table.items():
        cells = [_fmt(tuple(row["horizons"][str(h)]["f1"])) for h in horizons]
        last = row["horizons"][str(horizons[-1])]
        inv = _fmt(tuple(last["invalid_rate"]))
        mem = tuple(last.get("memory_tokens", (float("nan"),) * 2))
        mem = "n/a" if mem[0] != mem[0] else f"{mem[0]:.0f} ± {mem[1]:.0f}"
        tok = f"{row['tokens'][0]:.0f} ± {row['tokens'][1]:.0f}" if "tokens" in row else "-"
        upd = f"{row['updates'][0]:.1f}" if "updates" in row else "-"
        sec = tuple(row.get("seconds_per_update", (float("nan"),) * 2))
        sec = "-" if sec[0] != sec[0] else f"{sec[0]:.0f}"
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {inv} | {mem} | {tok} | {upd} | {sec} |")
    for h in horizons:
        kinds = sorted({k for row in table.values() for k in row["horizons"][str(h)]["by_kind"]})
        lines += ["", f"## Per question kind, {h} sessions", "", "| arm | " + " | ".join(kinds) + " |",
                  "|---" * (len(kinds) + 1) + "|"]
        for arm, row in table.items():
            bk = row["horizons"][str(h)]["by_kind"]
            lines.append(f"| {arm} | " + " | ".join(_fmt(tuple(bk.get(k, (float('nan'),) * 2))) for k in kinds) + " |")
    curves = {arm: [r["curve"] for r in report["runs"] if r["arm"] == arm and r.get("curve")] for arm in RL_ARMS}
    curves = {arm: c for arm, c in curves.items() if c}
    if curves:
        lines += ["", "## Learning curves against generated tokens (training rollouts, mean over seeds)", "",
                  "| arm | generated tokens | session reward | episode answer F1 | invalid action rate |",
                  "|---|---|---|---|---|"]
        for arm, arm_curves in curves.items():
            points = min(5, min(len(c) for c in arm_curves))
            x, reward = mean_curve(arm_curves, "session_reward", points)
            _, score = mean_curve(arm_curves, "episode_score", points)
            _, invalid = mean_curve(arm_curves, "invalid_rate", points)
            for i in range(points):
                lines.append(f"| {arm} | {x[i]:.0f} | {reward[i]:.3f} | {score[i]:.3f} | {invalid[i]:.3f} |")
    lines += ["", "Learning curves (training reward vs cumulative generated tokens, mean over seeds): "
              f"`{report['plot']}`.", ""]
    return "\n".join(lines)


def mean_curve(curves: Sequence[Sequence[dict[str, Any]]], key: str, points: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' step curves of ``key`` against tokens, resampled on a common grid and averaged."""
    top = min(c[-1]["tokens"] for c in curves)
    grid = np.linspace(min(c[0]["tokens"] for c in curves), top, points)
    ys = []
    for c in curves:
        t = np.array([p["tokens"] for p in c])
        v = np.array([p[key] if p[key] is not None else np.nan for p in c], dtype=float)
        ys.append(v[np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(v) - 1)])
    return grid, np.nanmean(np.stack(ys), axis=0)


def plot_curves(runs: Sequence[dict[str, Any]], path: Path) -> Path:
    """PNG of training reward (and episode F1) against cumulative generated tokens, one line per RL arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # distinct dashes: arms that train identically (per-role vs shared under a fixed extractor) overlap
    styles = dict(zip(RL_ARMS, ("-", "--", "-.", ":")))
    for arm in RL_ARMS:
        curves = [r["curve"] for r in runs if r["arm"] == arm and r.get("curve")]
        if not curves:
            continue
        for ax, key in zip(axes, ("session_reward", "episode_score")):
            x, y = mean_curve(curves, key)
            ax.plot(x, y, styles[arm], marker=".", label=arm, linewidth=2)
    for ax, title in zip(axes, ("training reward (session reward)", "training episode answer F1")):
        ax.set_xlabel("cumulative generated tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
