"""A paired bootstrap between two leaderboard rows, question by question; no model runs.

    python -m benchmarks.leaderboard.compare \\
        --a benchmarks/results/leaderboard_locomo_conv44_smollm2_logo.json \\
        --b benchmarks/results/leaderboard_locomo_conv44_add-only.json --metric f1

Each side is a leaderboard JSON written with ``--save-predictions`` (``FILE`` when it holds
one row, ``FILE#ROW`` to pick a row by its label). The two rows must have answered the same
questions; they are paired by question id. The difference of the means (A - B), its
percentile interval over ``--resamples`` paired resamples of the questions, and the fraction
of resamples in which A does not beat B are printed, and with ``--out`` written as JSON and
markdown. Scores are those saved with each answer (every metric of
:func:`memenv.metrics.question_scores`); ``--metric`` picks one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from algos.cli import UserError, check_range, parse_args, run_main
from memenv.metrics import paired_bootstrap

PROG = "python -m benchmarks.leaderboard.compare"
METRICS = ("f1", "bleu1", "em", "em_mem0", "squad_f1", "squad_bleu1", "locomo_f1")


@dataclass
class CompareArgs:
    """The comparison's command line."""

    a: str = field(default="", metadata={"help": "leaderboard JSON (FILE or FILE#ROW) of system A"})
    b: str = field(default="", metadata={"help": "leaderboard JSON (FILE or FILE#ROW) of system B, the baseline"})
    metric: str = field(default="f1", metadata={"help": "per-question score to compare", "choices": list(METRICS)})
    resamples: int = field(default=10_000, metadata={"help": "paired bootstrap resamples"})
    confidence: float = field(default=0.95, metadata={"help": "confidence of the percentile interval"})
    seed: int = field(default=0, metadata={"help": "seed of the resampling"})
    out: str | None = field(default=None, metadata={"help": "output prefix: writes OUT.json and OUT.md (none: print only)"})

    def __post_init__(self) -> None:
        if not self.a or not self.b:
            raise ValueError("--a and --b are both needed (leaderboard JSON files, FILE or FILE#ROW)")
        if self.metric not in METRICS:
            raise ValueError(f"--metric must be one of {METRICS}, got {self.metric!r}")
        check_range("resamples", self.resamples, low=1)
        if not 0 < self.confidence < 1:
            raise ValueError(f"--confidence must be in (0, 1), got {self.confidence}")


def load_row(spec: str) -> dict[str, Any]:
    """The row ``FILE#ROW`` (or the only row of ``FILE``) of a leaderboard JSON; one-line
    :class:`UserError` when the file, the row or its saved predictions are missing."""
    row = read_row(spec)
    if "predictions" not in row:
        raise UserError(f"{spec}: the row kept no answers (run the leaderboard with --save-predictions)")
    return row


def read_row(spec: str) -> dict[str, Any]:
    """The row ``FILE#ROW`` (or the only row of ``FILE``) of a leaderboard JSON; one-line
    :class:`UserError` when the file or the row is missing."""
    path, _, label = spec.partition("#")
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such leaderboard file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a leaderboard JSON ({err})") from None
    rows = results.get("rows") if isinstance(results, dict) else None
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{path}: not a leaderboard JSON (no rows)")
    if label:
        chosen = [row for row in rows if row.get("row") == label]
        if not chosen:
            raise UserError(f"{path}: no row {label!r}; its rows are {[row.get('row') for row in rows]}")
        row = chosen[0]
    elif len(rows) == 1:
        row = rows[0]
    else:
        raise UserError(f"{path} holds {len(rows)} rows; pick one as {path}#ROW, ROW one of {[r.get('row') for r in rows]}")
    return row


def paired_scores(a: dict[str, Any], b: dict[str, Any], metric: str) -> tuple[list[float], list[float]]:
    """Both rows' ``metric`` per question, paired by question id; the two must hold the same questions."""
    def by_id(row: dict[str, Any]) -> dict[str, float]:
        scores = {}
        for entry in row["predictions"]:
            if metric not in entry:
                raise UserError(f"row {row['row']!r} saved no per-question {metric!r} (re-run or rescore it)")
            scores[entry["question_id"]] = float(entry[metric])
        return scores

    sa, sb = by_id(a), by_id(b)
    if set(sa) != set(sb):
        only_a, only_b = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
        raise UserError(f"the rows answered different questions: {len(only_a)} only in A (e.g. {only_a[:3]}), "
                        f"{len(only_b)} only in B (e.g. {only_b[:3]})")
    ids = sorted(sa)
    return [sa[i] for i in ids], [sb[i] for i in ids]


def compare(args: CompareArgs) -> dict[str, Any]:
    """The bootstrap result of A against B (with the rows' labels and the settings used)."""
    a, b = load_row(args.a), load_row(args.b)
    xa, xb = paired_scores(a, b, args.metric)
    stats = paired_bootstrap(xa, xb, resamples=args.resamples, confidence=args.confidence, seed=args.seed)
    return {"a": {"spec": args.a, "row": a["row"], "mean": sum(xa) / len(xa)},
            "b": {"spec": args.b, "row": b["row"], "mean": sum(xb) / len(xb)},
            "metric": args.metric, "resamples": args.resamples, "confidence": args.confidence, "seed": args.seed,
            **stats}


def to_markdown(result: dict[str, Any]) -> str:
    """One table line per comparison, scores in percent."""
    pct = lambda v: f"{100 * v:+.1f}" if v else "0.0"  # noqa: E731
    level = f"{100 * result['confidence']:.0f}%"
    return "\n".join([
        f"| A | B | metric | questions | A | B | A - B | {level} interval | P(A - B <= 0) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
        f"| {result['a']['row']} | {result['b']['row']} | {result['metric']} | {result['n']} | "
        f"{100 * result['a']['mean']:.1f} | {100 * result['b']['mean']:.1f} | {pct(result['diff'])} | "
        f"[{pct(result['low'])}, {pct(result['high'])}] | {result['p_le_0']:.4f} |",
        "",
        f"Paired bootstrap over questions: {result['resamples']} resamples, seed {result['seed']}.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare, print, and write ``--out`` files; returns the result."""
    args = parse_args(CompareArgs, argv, description=__doc__, prog=PROG)
    result = compare(args)
    print(f"{result['a']['row']} - {result['b']['row']} ({result['metric']}, {result['n']} questions): "
          f"{100 * result['diff']:+.2f} points, {100 * args.confidence:.0f}% interval "
          f"[{100 * result['low']:+.2f}, {100 * result['high']:+.2f}], P(A - B <= 0) = {result['p_le_0']:.4f}")
    if args.out:
        from algos.run import write_json_atomically

        write_json_atomically(Path(f"{args.out}.json"), result)
        Path(f"{args.out}.md").write_text(to_markdown(result), encoding="utf-8")
        print(f"wrote {args.out}.json and {args.out}.md")
    return result


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
