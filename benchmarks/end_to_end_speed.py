"""Real-model work before and after the fast path, side by side in one run.

    python -m benchmarks.end_to_end_speed            # SmolLM2-135M, about 20 minutes on 2 CPU cores

Two jobs, each run with the settings the library used before its fast path and with today's
defaults, alternately in one process tree so both see the same machine load:

* one LoGo-GRPO update of SmolLM2-135M at 4 sessions (oracle extractor, scripted answerer,
  compact prompts, group 4, 2 conversations, 128 new tokens): rollout plus update seconds from
  the trainer's own ``metrics.jsonl`` (model loading excluded). Before: fp32 weights, the
  sampled log-probs as old log-probs. After: the defaults (``--dtype auto``: bf16 where it
  measures faster, recomputed old log-probs in bf16; every core).
* the LoCoMo leaderboard's SmolLM2 answers (``rag-turns`` memory, ``--max-questions`` per
  conversation of the dev file): seconds per answered question. Before: fp32
  (``MEMENV_DTYPE=float32``), one torch thread, 4 questions per answerer call, as the
  committed LoCoMo rows were made. After: the defaults.

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


@dataclass
class Args:
    data_path: str = field(default="../shared/data/locomo/locomo_dev.json", metadata={"help": "the LoCoMo file of the leaderboard job"})
    max_questions: int = field(default=8, metadata={"help": "questions per conversation in the leaderboard job"})
    repeats: int = field(default=1, metadata={"help": "before/after pairs of each job (the fastest counts)"})
    skip_training: bool = field(default=False, metadata={"help": "time only the leaderboard job"})
    out: str = field(default="benchmarks/results/end_to_end_speed_cpu", metadata={"help": "results path without suffix"})

    def __post_init__(self) -> None:
        from algos.cli import check_range

        check_range("max_questions", self.max_questions, low=1)
        check_range("repeats", self.repeats, low=1)
        if not Path(self.data_path).is_file():
            raise ValueError(f"--data-path {self.data_path}: no such file (the LoCoMo dev file)")


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")


def logo_update_seconds(extra: list[str], work: Path) -> dict[str, float]:
    """Rollout and update seconds of one LoGo-GRPO update (from its metrics.jsonl)."""
    out = work / f"logo{len(list(work.iterdir()))}"
    _run(["-m", "algos.logo_grpo", *LOGO_FLAGS, *extra, "--output-dir", str(out)])
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"rollout_s": row["charts/rollout_seconds"], "update_s": row["charts/update_seconds"],
            "total_s": row["charts/rollout_seconds"] + row["charts/update_seconds"],
            "generated_tokens": row["charts/generated_tokens"]}


def answer_seconds(args: Args, extra: list[str], env: dict[str, str], work: Path) -> dict[str, float]:
    """Seconds per answered question of the LoCoMo leaderboard's SmolLM2 answerer."""
    out = work / f"board{len(list(work.iterdir()))}"
    _run(["-m", "benchmarks.leaderboard", "--source", "locomo", "--data-path", args.data_path, "--rows",
          "rag-turns+llm:smollm2-135m", "--max-questions", str(args.max_questions), "--no-progress", "--out", str(out),
          *extra], env)
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    return {"seconds_per_question": row["answer_seconds_per_question"], "f1": row.get("f1")}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time both jobs before and after; write and print the table."""
    from algos.cli import parse_args
    from benchmarks.provenance import environment, markdown_line

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    result: dict[str, Any] = {"command": " ".join([PROG, *argv]), "environment": environment()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_training:
            pairs = [(logo_update_seconds(LOGO_BEFORE, work), logo_update_seconds([], work))
                     for _ in range(args.repeats)]
            before = min((p[0] for p in pairs), key=lambda r: r["total_s"])
            after = min((p[1] for p in pairs), key=lambda r: r["total_s"])
            result["logo_update"] = {"before": before, "after": after, "speedup": before["total_s"] / after["total_s"]}
        old = (["--torch-threads", "1", "--batch-size", "4"], {"MEMENV_DTYPE": "float32"})
        pairs = [(answer_seconds(args, *old, work), answer_seconds(args, [], {}, work)) for _ in range(args.repeats)]
        before = min((p[0] for p in pairs), key=lambda r: r["seconds_per_question"])
        after = min((p[1] for p in pairs), key=lambda r: r["seconds_per_question"])
        result["locomo_answers"] = {"before": before, "after": after,
                                    "speedup": before["seconds_per_question"] / after["seconds_per_question"]}
    lines = ["# End-to-end speed: before and after the fast path", "", f"Command: `{result['command']}`", "",
             markdown_line(result["environment"]), "", "| job | before | after | speed-up |", "|---|---:|---:|---:|"]
    if "logo_update" in result:
        r = result["logo_update"]
        lines.append(f"| one LoGo-GRPO update of SmolLM2 at 4 sessions (rollouts + update, s) | "
                     f"{r['before']['total_s']:.1f} ({r['before']['rollout_s']:.1f} + {r['before']['update_s']:.1f}) | "
                     f"{r['after']['total_s']:.1f} ({r['after']['rollout_s']:.1f} + {r['after']['update_s']:.1f}) | "
                     f"{r['speedup']:.1f}x |")
    r = result["locomo_answers"]
    lines.append(f"| LoCoMo leaderboard, SmolLM2 answers (s per question) | {r['before']['seconds_per_question']:.2f} | "
                 f"{r['after']['seconds_per_question']:.2f} | {r['speedup']:.1f}x |")
    lines += ["", "Before: fp32 weights, sampled log-probs as old log-probs (trainer); fp32, one thread, 4 questions "
              "per call (leaderboard). After: the defaults.", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
