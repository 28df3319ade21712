"""Real-model work before and after the fast path, side by side in one run.

    python -m benchmarks.end_to_end_speed            # SmolLM2-135M, about 25 minutes on 2 CPU cores

Two jobs, each run by the library as it was before its fast path and by the library as it is,
alternately in one process tree so both see the same machine load:

* one LoGo-GRPO update of SmolLM2-135M at 4 sessions (oracle extractor, scripted answerer,
  compact prompts, group 4, 2 conversations, 128 new tokens): rollout plus update seconds from
  the trainer's own ``metrics.jsonl`` (model loading excluded), and generated tokens per
  second (the defaults changed what is generated, e.g. grammar-constrained actions);
* the LoCoMo leaderboard's SmolLM2 answers (``rag-turns`` memory, ``--max-questions`` per
  conversation of the dev file): seconds per answered question, and their F1 (the same token
  F1 in both revisions). Today's answers are grammar-constrained (``Relevant: ...`` then a
  short ``Answer: ...``), which changes what the model writes; a third run times today's code
  with the grammar off (``llm:smollm2-135m?constrained=false``), so the table separates the
  speed of the fast path from the effect of the grammar on F1.

"Before" is ``--before-revision`` (default ``b11e324^``, the last commit before the fast
path: fp32 weights, the sampled log-probs as old log-probs, one thread and 4 questions per
call in the leaderboard, the lm_head over an expanded weight copy, a concatenating KV cache),
exported from this git repository into a temporary folder and run with its own defaults.
``--before-revision ''`` instead runs today's code with the old settings as flags (fp32,
sampled old log-probs, one leaderboard thread), which isolates what the settings alone give.
"After" is today's code with its defaults.

Writes ``benchmarks/results/end_to_end_speed_<device>.{json,md}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

PROG = "python -m benchmarks.end_to_end_speed"
LOGO_FLAGS = ("--model smollm2-135m --no-demo --stages 4 --updates-per-stage 1 --group-size 4 "
              "--conversations-per-update 2 --extractor oracle --answerer scripted --prompt-style compact "
              "--max-new-tokens 128 --max-prompt-tokens 512 --no-progress --no-tensorboard").split()
LOGO_BEFORE = "--dtype float32 --recompute-old-logprobs never".split()
UNCONSTRAINED = "llm:smollm2-135m?constrained=false"


@dataclass
class Args:
    data_path: str = field(default="../shared/data/locomo/locomo_dev.json", metadata={"help": "the LoCoMo file of the leaderboard job"})
    max_questions: int = field(default=8, metadata={"help": "questions per conversation in the leaderboard job"})
    repeats: int = field(default=1, metadata={"help": "before/after pairs of each job (the fastest counts)"})
    skip_training: bool = field(default=False, metadata={"help": "time only the leaderboard job"})
    unconstrained: bool = field(default=True, metadata={"help": "also time today's answers without the answer "
                                "grammar (it changes what the model writes, hence F1)"})
    out: str = field(default="benchmarks/results/end_to_end_speed_cpu", metadata={"help": "results path without suffix"})
    before_revision: str = field(default="b11e324^", metadata={"help": "git revision run as 'before' with its own "
                                 "defaults ('' runs today's code with the old settings as flags)"})

    def __post_init__(self) -> None:
        from algos.cli import check_range

        check_range("max_questions", self.max_questions, low=1)
        check_range("repeats", self.repeats, low=1)
        if not Path(self.data_path).is_file():
            raise ValueError(f"--data-path {self.data_path}: no such file (the LoCoMo dev file)")


REPO = Path(__file__).resolve().parents[1]


def export_revision(revision: str, target: Path) -> Path:
    """The files of ``revision`` of this repository, written under ``target``."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], capture_output=True)
    if archive.returncode != 0:
        raise ValueError(f"--before-revision {revision!r}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _run(argv: list[str], env: dict[str, str] | None = None, code: Path | None = None) -> None:
    """``python argv`` with today's code, or with the exported tree ``code`` (its cwd and path)."""
    env = {**os.environ, **(env or {})}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=code)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")


def logo_update_seconds(extra: list[str], work: Path, code: Path | None = None) -> dict[str, float]:
    """Rollout and update seconds of one LoGo-GRPO update (from its metrics.jsonl)."""
    out = work / f"logo{len(list(work.iterdir()))}"
    _run(["-m", "algos.logo_grpo", *LOGO_FLAGS, *extra, "--output-dir", str(out)], code=code)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    total = row["charts/rollout_seconds"] + row["charts/update_seconds"]
    return {"rollout_s": row["charts/rollout_seconds"], "update_s": row["charts/update_seconds"], "total_s": total,
            "generated_tokens": row["charts/generated_tokens"], "tokens_per_s": row["charts/generated_tokens"] / total,
            "invalid_rate": row.get("charts/invalid_rate")}


def answer_seconds(args: Args, extra: list[str], env: dict[str, str], work: Path,
                   code: Path | None = None, answerer: str = "llm:smollm2-135m") -> dict[str, float]:
    """Seconds per answered question of the LoCoMo leaderboard's SmolLM2 answerer."""
    out = work / f"board{len(list(work.iterdir()))}"
    _run(["-m", "benchmarks.leaderboard", "--source", "locomo", "--data-path", str(Path(args.data_path).resolve()),
          "--rows", f"rag-turns+{answerer}", "--max-questions", str(args.max_questions), "--no-progress",
          "--out", str(out), *extra], env, code)
    return answer_figures(json.loads(out.with_suffix(".json").read_text())["rows"][0])


def answer_figures(row: dict[str, Any]) -> dict[str, Any]:
    """Seconds per question and answer F1 of a leaderboard JSON row (F1 under ``overall``,
    or at the top level in older leaderboards; None when the row has none)."""
    overall = row.get("overall") if isinstance(row.get("overall"), dict) else {}
    return {"seconds_per_question": row["answer_seconds_per_question"], "f1": overall.get("f1", row.get("f1"))}


def _answer_lines(seconds_label: str, f1_label: str, pair: dict[str, Any]) -> list[str]:
    """The table rows of one before/after pair of leaderboard runs: seconds per question with the
    speed-up, then answer F1 (in percent; - where a run has none)."""
    before, after = pair["before"], pair["after"]
    f1 = ["-" if r["f1"] is None else f"{100 * r['f1']:.1f}" for r in (before, after)]
    return [f"| {seconds_label} | {before['seconds_per_question']:.2f} | {after['seconds_per_question']:.2f} | "
            f"{pair['speedup']:.1f}x |", f"| {f1_label} | {f1[0]} | {f1[1]} | |"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time both jobs before and after; write and print the table."""
    from algos.cli import parse_args
    from benchmarks.provenance import environment, markdown_line, write_report

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    result: dict[str, Any] = {"command": " ".join([PROG, *argv]), "environment": environment()}
    result["before_revision"] = args.before_revision
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "runs"
        work.mkdir()
        code = None
        old_logo, old_board = LOGO_BEFORE, (["--torch-threads", "1", "--batch-size", "4"], {"MEMENV_DTYPE": "float32"})
        if args.before_revision:
            code = export_revision(args.before_revision, Path(tmp) / "before")
            result["before_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.before_revision],
                                                     capture_output=True, text=True).stdout.strip()
            old_logo, old_board = [], ([], {})  # that revision's own defaults
        if not args.skip_training:
            pairs = [(logo_update_seconds(old_logo, work, code), logo_update_seconds([], work))
                     for _ in range(args.repeats)]
            before = min((p[0] for p in pairs), key=lambda r: r["total_s"])
            after = min((p[1] for p in pairs), key=lambda r: r["total_s"])
            result["logo_update"] = {"before": before, "after": after, "speedup": before["total_s"] / after["total_s"]}
        pairs = [(answer_seconds(args, *old_board, work, code), answer_seconds(args, [], {}, work))
                 for _ in range(args.repeats)]
        before = min((p[0] for p in pairs), key=lambda r: r["seconds_per_question"])
        after = min((p[1] for p in pairs), key=lambda r: r["seconds_per_question"])
        result["locomo_answers"] = {"before": before, "after": after,
                                    "speedup": before["seconds_per_question"] / after["seconds_per_question"]}
        if args.unconstrained:
            free = min((answer_seconds(args, [], {}, work, answerer=UNCONSTRAINED) for _ in range(args.repeats)),
                       key=lambda r: r["seconds_per_question"])
            result["locomo_answers_unconstrained"] = {
                "answerer": UNCONSTRAINED, "before": before, "after": free,
                "speedup": before["seconds_per_question"] / free["seconds_per_question"]}
    lines = ["# End-to-end speed: before and after the fast path", "", f"Command: `{result['command']}`", "",
             markdown_line(result["environment"]), "", "| job | before | after | speed-up |", "|---|---:|---:|---:|"]
    if "logo_update" in result:
        r = result["logo_update"]
        lines.append(f"| one LoGo-GRPO update of SmolLM2 at 4 sessions (rollouts + update, s) | "
                     f"{r['before']['total_s']:.1f} ({r['before']['rollout_s']:.1f} + {r['before']['update_s']:.1f}) | "
                     f"{r['after']['total_s']:.1f} ({r['after']['rollout_s']:.1f} + {r['after']['update_s']:.1f}) | "
                     f"{r['speedup']:.1f}x |")
        lines.append(f"| the same update, generated tokens per second (tokens) | {r['before']['tokens_per_s']:.1f} "
                     f"({r['before']['generated_tokens']}) | {r['after']['tokens_per_s']:.1f} "
                     f"({r['after']['generated_tokens']}) | {r['after']['tokens_per_s'] / r['before']['tokens_per_s']:.1f}x |")
    lines += _answer_lines("LoCoMo leaderboard, SmolLM2 answers (s per question)", "the same questions, answer F1",
                           result["locomo_answers"])
    if "locomo_answers_unconstrained" in result:
        lines += _answer_lines("the same, today's answers without the answer grammar (s per question)",
                               "the same questions without the grammar, answer F1",
                               result["locomo_answers_unconstrained"])
    before_text = (f"the library at `{args.before_revision}` ({result['before_commit'][:10]}) with its own defaults"
                   if args.before_revision else "today's code with fp32 weights and sampled old log-probs (trainer); "
                   "fp32, one thread, 4 questions per call (leaderboard)")
    lines += ["", f"Before: {before_text}. After: today's defaults.", ""]
    if "locomo_answers_unconstrained" in result:
        lines += ["F1 is the same token F1 in both revisions. Today's default answers are grammar-constrained "
                  "(`Relevant: <ids>` then a short `Answer: ...`); the rows without the grammar show how much of "
                  "an F1 change comes from what the grammar makes the model write rather than from the fast path.",
                  ""]
    write_report(Path(args.out), result, lines)
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
