"""Re-score saved leaderboard results with the current metrics; no model runs.

    python -m benchmarks.leaderboard.rescore --results benchmarks/results/leaderboard_locomo_dev_smollm2.json

Every row of the results must keep its answers (the leaderboard's ``--save-predictions``).
On synthetic worlds the gold answers are saved with them; LoCoMo and LongMemEval answers are
not (licensed data), so they are read again from the data set (``--data-path``, default:
the path recorded in the results) by question id, and each is checked against the F1 saved
with its answer before anything is written. The judge's saved labels give J again. Each
row's overall and per-kind scores are recomputed; the results record the rules they follow
(``metric_rules``), the scores they replaced and this command (``rescored``). The JSON and
its markdown are written back in place, or under ``--out``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from memenv.metrics import CORRECT, WRONG, summarize, token_f1
from memenv.sources import make_source

from algos.cli import UserError, parse_args, run_main
from benchmarks.leaderboard.evaluation import metric_rules
from benchmarks.leaderboard.render import to_markdown

PROG = "python -m benchmarks.leaderboard.rescore"


@dataclass
class RescoreArgs:
    """The re-scoring command line."""

    results: str = field(default="", metadata={"help": "leaderboard JSON written with --save-predictions"})
    data_path: str | None = field(default=None, metadata={"help": "LoCoMo / LongMemEval JSON file for the gold answers (none: the path recorded in the results)"})
    out: str | None = field(default=None, metadata={"help": "output prefix: writes OUT.md and OUT.json (none: overwrite the results and their .md)"})

    def __post_init__(self) -> None:
        if not self.results:
            raise ValueError("--results is required (a leaderboard JSON)")


def _gold_answers(results: dict[str, Any], data_path: str | None) -> dict[str, tuple[str, str]]:
    """question id -> (kind, gold answer), read from the data set the results were run on."""
    settings = results["settings"]
    source_name = settings["source"]
    if source_name == "synthetic":
        raise UserError("synthetic results keep their gold answers with the predictions; some are missing here")
    path = data_path or settings.get("data_path")
    if not path:
        raise UserError("the results record no data path: give --data-path")
    options: dict[str, Any] = {"data_path": path}
    key = "question_ids" if source_name == "longmemeval" else "conversations"
    options[key] = list(settings["conversations"])
    if settings.get("include_adversarial"):
        options["include_adversarial"] = True
    try:
        source = make_source(source_name, **options)
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise UserError(f"cannot load the {source_name} data {path}: {error}") from None
    return {q.qid: (q.kind, str(q.answer)) for k in source.keys() for q in source.get(k).questions}


def rescore_row(row: dict[str, Any], gold: dict[str, tuple[str, str]] | None, locomo: bool,
                judged: bool) -> dict[str, Any]:
    """Recompute ``row``'s overall and per-kind scores in place from its saved predictions;
    returns the overall scores it had before."""
    predictions = row.get("predictions")
    if not predictions:
        raise UserError(f"row {row['row']!r} has no saved predictions: re-run its leaderboard command "
                        "with --save-predictions")
    records, labels = [], []
    for entry in predictions:
        qid = entry["question_id"]
        if "gold_answer" in entry:
            answer = str(entry["gold_answer"])
        elif gold is not None and qid in gold:
            kind, answer = gold[qid]
            if kind != entry["kind"]:
                raise UserError(f"question {qid} is {kind!r} in the data but {entry['kind']!r} in the results")
        else:
            raise UserError(f"question {qid} of row {row['row']!r} is not in the data set")
        if "f1" in entry and not math.isclose(token_f1(entry["prediction"], answer), entry["f1"], abs_tol=1e-9):
            raise UserError(f"question {qid}: the gold answer in the data does not give the F1 saved with the "
                            "answer; is it the data set the results were run on?")
        records.append((entry["kind"], entry["prediction"], answer))
        if judged:
            if entry.get("judge") not in (CORRECT, WRONG):
                raise UserError(f"question {qid} of row {row['row']!r} has no saved judge label")
            labels.append(entry["judge"])
    if len(records) != row["num_questions"]:
        raise UserError(f"row {row['row']!r} saved {len(records)} answers for {row['num_questions']} questions")
    summary = summarize(records, judge_labels=labels if judged else None, locomo=locomo)
    previous = row["overall"]
    row["overall"], row["per_kind"] = summary["overall"], summary["per_kind"]
    return previous


def _changes(previous: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """A sentence naming the scores that changed and those that are new."""
    changed, added = set(), set()
    for row in rows:
        before = previous[row["row"]]
        for name, value in row["overall"].items():
            if name not in before:
                added.add(name)
            elif not math.isclose(value, before[name], abs_tol=1e-12):
                changed.add(name)
    parts = [f"Scores changed: {', '.join(sorted(changed))}" if changed else "No score changed"]
    parts += [f"added: {', '.join(sorted(added))}"] if added else []
    return "; ".join(parts) + " (the previous values are in the JSON's `rescored.previous`)."


def rescore(results: dict[str, Any], data_path: str | None = None, command: str = PROG) -> dict[str, Any]:
    """Re-score every row of ``results`` (a leaderboard JSON object) in place and return it."""
    settings = results["settings"]
    locomo, judged = bool(settings["locomo_metrics"]), settings.get("judge") is not None
    rows = results["rows"]
    if not rows:
        raise UserError("the results have no rows")
    needs_data = any("gold_answer" not in entry for row in rows for entry in row.get("predictions") or ())
    gold = _gold_answers(results, data_path) if needs_data else None
    previous = {row["row"]: rescore_row(row, gold, locomo, judged) for row in rows}
    results["metric_rules"] = metric_rules(locomo, judged)
    results["rescored"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
                           "note": _changes(previous, rows), "previous": previous}
    return results


def _write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary sibling and a rename: rescoring in place
    never leaves half of the results file (a kill or a full disk keeps the old one)."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Re-score a leaderboard JSON and write it and its markdown; returns the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(RescoreArgs, argv, description=__doc__, prog=PROG)
    path = Path(args.results)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not isinstance(results, dict) or "rows" not in results or "settings" not in results:
        raise UserError(f"{path} is not a leaderboard JSON (no rows and settings)")
    before = {row["row"]: dict(row["overall"]) for row in results["rows"]}
    rescore(results, args.data_path, f"{PROG} " + shlex.join(argv))
    out = Path(args.out) if args.out else path.with_suffix("")
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    md_path, json_path = Path(f"{out}.md"), Path(f"{out}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(json_path, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    _write_atomically(md_path, to_markdown(results))
    for row in results["rows"]:
        old = before[row["row"]]
        changes = ", ".join(f"{name} {'-' if name not in old else f'{100 * old[name]:.1f}'} -> {100 * value:.1f}"
                            for name, value in row["overall"].items() if name != "count")
        print(f"{row['row']}: {changes}")
    print(f"wrote {md_path} and {json_path}")
    return results


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
