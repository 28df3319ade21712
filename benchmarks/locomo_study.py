"""The real-dialogue memory-agent study: SmolLM2 extracting and managing memory on LoCoMo.

    python -m benchmarks.locomo_study --data-path ../shared/data/locomo/locomo_dev.json \\
        --work-dir runs/locomo_study                 # every step below; rerun to continue
    python -m benchmarks.locomo_study --probe ...    # the learning-rate / group-size probe only

Steps, each skipped when its result is already in ``--work-dir`` with the same settings:

1. **Teacher SFT** (``python -m algos.sft --teacher add-only --source locomo``): the shared
   extract + manage adapter imitates the rule-based ``add-only`` memory on the Memory-R2
   train part (conv-43, conv-47), beside the oracle's gold operations on synthetic worlds.
2. **RL arms** from that adapter, one ``python -m algos.logo_grpo`` run per arm and seed on
   the train part: ``logo`` (LoGo-GRPO) and ``grpo`` (``--inner-fraction 0``), the same
   budget of generated tokens, a curriculum over each conversation's first ``--stages``
   sessions, reward = the frozen answer agent's F1 on the final memory with per-session
   credit, validation on conv-44 with best-checkpoint hand-off. A killed run resumes
   from its latest checkpoint (``--resume``); a finished run is reused only when its saved
   settings equal this command's.
3. **Evaluation** on the val part (conv-44, every question at the end), one leaderboard row
   per memory agent (zero-shot, SFT, each RL arm and seed) with the same answerer.

``--manager-only`` trains the memory manager alone, the arm this study has pursued since its session 2
(``benchmarks/results/locomo_memory_agent.md``): the rule-based ``add-only``
extractor writes the facts and the SmolLM2 manager decides per fact, under the manage grammar
narrowed to ADD / NOOP (an add-only memory with learned contents, what the official champion
does), sampled at temperature 1.5 (LoGo's rerolls too), KL 0.05 to the stage start, from
``--init-adapter`` (default: the teacher SFT adapter). Its runs live in
``<work-dir>/<arm>_addnoop/seed<N>``, and its rows put each manager behind add-only's facts:

    python -m benchmarks.locomo_study --manager-only --work-dir runs/locomo_study \\
        --init-adapter benchmarks/results/models/smollm2_memory_sft_addonly_locomo

``--candidates add-only-turns`` gives the manager add-only's facts and every raw turn to keep
or drop (runs in ``<arm>_addnoop_turns/seed<N>``; the rows add the candidates kept whole).

Runs already under way are continued before new ones start. Every trained row is compared
with ``add-only``, question by question (a paired bootstrap, ``benchmarks.leaderboard.compare``).

``--probe`` instead runs short LoGo-GRPO runs over a grid of learning rates and group sizes
(``--probe-lrs``, ``--probe-groups``, ``--probe-updates`` each) and tabulates their
training reward; it is how the RL settings were chosen.

Outputs: ``<work-dir>/study.json`` and ``study.md`` (what ran, with commands, seconds and
scores), ``curves.png`` (training reward and validation score against generated tokens).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from algos.cli import UserError, check_range, parse_args, run_main

PROG = "python -m benchmarks.locomo_study"
ARMS = ("logo", "grpo")
DEFAULT_ANSWERER = "llm:smollm2-135m:benchmarks/results/models/smollm2_answer_locomo"
# Environment options of training and evaluation: the official 4 rounds per session, 3
# related memories per fact in manage prompts (the whole prompt fits 1,024 tokens), BM25 top 5
# memories per speaker for answers ordered by relevance with no score threshold (what the
# answer adapter was trained on and what the leaderboard shows it), token F1 as reward.
ENV = {"session_chunks": 4, "manage_top_k": 3, "answer_top_k": 5, "metric": "f1", "answer_order": "relevance",
       "similarity_threshold": 0.0}
# --manager-only defaults: each conversation's first 2 sessions, and 94,094 generated tokens
# per run, what the session-4 manager run (40 updates, greedy rerolls) spent
MANAGER_STAGES, MANAGER_BUDGET = (2,), 94_094
FULL_STAGES, FULL_BUDGET = (2, 4), 240_000
# --manager-only --candidates: the rule extractors (agents.baselines) whose facts the manager judges
CANDIDATES = ("add-only", "add-only-turns")
# the manager's generation budget: the manage grammar prices each token of fixed syntax as a
# byte, so 256 new tokens admit at most 7 fact ADDs per turn (agents.constrained.manage_capacity)
# and 384 admit 10, fewer than add-only's facts in some rounds; 1,024 admit 31
MANAGER_NEW_TOKENS = 1024


@dataclass
class StudyArgs:
    """The study's command line."""

    data_path: str = field(default="../shared/data/locomo/locomo_dev.json", metadata={"help": "LoCoMo file holding conv-43, conv-44 and conv-47"})
    work_dir: str = field(default="runs/locomo_study", metadata={"help": "where every run, evaluation and the report live (never deleted)"})
    model: str = field(default="smollm2-135m", metadata={"help": "backbone of the memory agent"})
    answerer: str = field(default=DEFAULT_ANSWERER, metadata={"help": "frozen answer agent of rewards and evaluation rows"})
    seeds: tuple[int, ...] = field(default=(0, 1), metadata={"help": "seeds of every RL arm"})
    arms: tuple[str, ...] = field(default=ARMS, metadata={"help": "RL arms: logo (LoGo-GRPO), grpo (--inner-fraction 0)"})
    stages: tuple[int, ...] | None = field(default=None, metadata={"help": "curriculum: each training conversation's first N sessions per stage (none: 2 then 4, which fit this 2-core CPU; 2 with --manager-only; the official 8 -> 16 -> 32 is for GPUs)"})
    token_budget: int | None = field(default=None, metadata={"help": "generated tokens per RL run, split evenly over the stages (none: 240,000; 94,094 with --manager-only)"})
    manager_only: bool = field(default=False, metadata={"help": "train the manager alone (ADD / NOOP) over the add-only extractor's facts; see above"})
    candidates: str = field(default="add-only", metadata={"help": "with --manager-only, the rule extractor whose facts the manager keeps or drops: add-only (its first-person facts) or add-only-turns (those facts and every raw turn)"})
    init_adapter: str | None = field(default=None, metadata={"help": "adapter every RL arm starts from (none: the study's teacher SFT adapter, trained first)"})
    group_size: int = field(default=4, metadata={"help": "global rollouts per conversation"})
    learning_rate: float = field(default=1e-4, metadata={"help": "RL learning rate (LoRA)"})
    max_final_questions: int = field(default=16, metadata={"help": "questions scoring each final memory"})
    sft_steps: int = field(default=120, metadata={"help": "teacher SFT optimizer steps (batch 4: 120 is one pass over the 480 add-only demonstrations)"})
    sft_learning_rate: float = field(default=2e-4, metadata={"help": "teacher SFT learning rate (linear decay)"})
    synthetic_worlds: int = field(default=0, metadata={"help": "oracle worlds beside the add-only demonstrations (8 made 185 of 489 extract targets empty, and the SFT agent then wrote {\"facts\": []} on conv-44)"})
    evaluate: bool = field(default=True, metadata={"help": "score every memory agent on conv-44 (--no-evaluate: training only)"})
    rl: bool = field(default=True, metadata={"help": "train the RL arms (--no-rl: teacher SFT and the zero-shot, SFT and add-only rows only, e.g. to measure the start first)"})
    probe: bool = field(default=False, metadata={"help": "run only the learning-rate / group-size probe"})
    probe_lrs: tuple[float, ...] = field(default=(3e-5, 1e-4, 3e-4), metadata={"help": "probe: learning rates"})
    probe_groups: tuple[int, ...] = field(default=(4, 8), metadata={"help": "probe: group sizes (at the middle learning rate)"})
    probe_updates: int = field(default=3, metadata={"help": "probe: updates per probe run"})

    def __post_init__(self) -> None:
        if self.stages is None:
            self.stages = MANAGER_STAGES if self.manager_only else FULL_STAGES
        if self.token_budget is None:
            self.token_budget = MANAGER_BUDGET if self.manager_only else FULL_BUDGET
        if self.candidates not in CANDIDATES:
            raise ValueError(f"--candidates takes {', '.join(CANDIDATES)}, got {self.candidates!r}")
        if self.candidates != CANDIDATES[0] and not self.manager_only:
            raise ValueError("--candidates applies to --manager-only (the full agent writes its own facts)")
        bad = sorted(set(self.arms) - set(ARMS))
        if bad:
            raise ValueError(f"--arms takes {', '.join(ARMS)}, got {bad}")
        for name in ("token_budget", "group_size", "max_final_questions", "sft_steps", "probe_updates"):
            check_range(name, getattr(self, name), low=1)
        check_range("synthetic_worlds", self.synthetic_worlds, low=0)
        if not self.stages or any(s < 1 for s in self.stages):
            raise ValueError(f"--stages takes session counts >= 1, got {self.stages}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")


# ---------------------------------------------------------------------------- commands
def env_kwargs(args: StudyArgs, part: str = "train") -> dict[str, Any]:
    """The trainer's environment: LoCoMo's Memory-R2 ``part`` with the study's options."""
    return {"source": "locomo", "data_path": args.data_path, "split": "memory-r2", "part": part, **ENV}


def sft_argv(args: StudyArgs, out: Path) -> list[str]:
    """The teacher SFT command (``python -m algos.sft ...``)."""
    return ["--teacher", "add-only", "--source", "locomo", "--data-path", args.data_path, "--split", "memory-r2",
            "--part", "train", "--synthetic-worlds", str(args.synthetic_worlds),
            "--env-kwargs", json.dumps({k: ENV[k] for k in ("session_chunks", "manage_top_k")}),
            "--model", args.model, "--steps", str(args.sft_steps), "--batch-size", "4", "--micro-batch-size", "1",
            "--learning-rate", str(args.sft_learning_rate), "--schedule", "linear", "--lora-r", "8", "--lora-alpha", "16",
            "--no-lora-lm-head", "--max-prompt-tokens", "1024", "--max-new-tokens", "384", "--prompt-style", "compact",
            "--seed", "0", "--output-dir", str(out)]


def rl_argv(args: StudyArgs, arm: str, seed: int, init: Path, out: Path, *, stages: Sequence[int] | None = None,
            learning_rate: float | None = None, group_size: int | None = None, token_budget: int | None = None,
            updates_per_stage: int | None = None, validate: bool = True) -> list[str]:
    """One RL run's command (``python -m algos.logo_grpo ...``); ``updates_per_stage`` (none: 500,
    200 with --manager-only) only caps a stage, the token budget ends it. With --manager-only the
    manager alone is trained (ADD / NOOP) over the facts of --candidates."""
    manager = args.manager_only
    argv = ["--model", args.model, "--seed", str(seed), "--stages", *map(str, stages or args.stages),
            "--updates-per-stage", str(updates_per_stage or (200 if manager else 500)),
            "--token-budget", str(token_budget or args.token_budget), "--preset", "memory-r2",
            "--env-kwargs", json.dumps(env_kwargs(args)), "--answerer", args.answerer,
            "--group-size", str(group_size or args.group_size), "--conversations-per-update", "1",
            "--inner-fraction", "0.5" if arm == "logo" else "0", "--inner-n", "4", "--max-local-questions", "8",
            "--max-final-questions", str(args.max_final_questions),
            "--learning-rate", str(learning_rate or args.learning_rate), "--ppo-epochs", "1", "--num-minibatches", "1",
            "--micro-batch-size", "2", "--max-new-tokens", str(MANAGER_NEW_TOKENS) if manager else "384",
            "--max-prompt-tokens", "1024", "--prompt-style", "compact", "--no-lora-lm-head", "--dtype", "auto",
            "--init-adapter", str(init), "--checkpoint-every", "1", "--keep-checkpoints", "10" if manager else "2",
            "--no-progress", "--output-dir", str(out)]
    if manager:
        # temperature 1.5: at 1.0 the SFT manager's groups tied; ADD / NOOP: with every operation
        # offered it collapsed to deleting (locomo_memory_agent.md, sessions 3-4)
        argv += ["--extractor", args.candidates, "--temperature", "1.5", "--kl-coef", "0.05", "--manage-ops", "ADD", "NOOP"]
    else:
        argv += ["--no-tensorboard"]
    if arm == "logo":
        # the preset decodes rerolls greedily (the official code's setting): identical rerolls, no
        # local signal; sample them at the global rollouts' temperature
        argv += ["--local-temperature", "1.5" if manager else "1.0"]
    if validate:
        argv += ["--val-env-kwargs", json.dumps({"part": "val"}), "--val-every", "4" if manager else "5"]
        if manager:
            argv += ["--early-stop-patience", "0", "--handoff", "best"]
    else:
        argv += ["--val-worlds", "0"]
    return argv


def manager_spec(model: str, adapter: Path | str | None = None) -> str:
    """The ``llm:`` spec of an ADD / NOOP manager, with the prompt and generation budget it trains under."""
    where = f"{model}:{adapter}" if adapter is not None else model
    return (f"llm:{where}?prompt_style=compact&max_prompt_tokens=1024&max_new_tokens={MANAGER_NEW_TOKENS}"
            "&manage_ops=ADD/NOOP")


def manager_strategy(manager: str, candidates: str = CANDIDATES[0]) -> str:
    """The leaderboard agent of a manager behind a rule extractor's facts (``manager``: an ``llm:`` spec)."""
    return f"by-role:extract={candidates},manage={manager}"


def row_argv(args: StudyArgs, strategy: str, out: Path) -> list[str]:
    """One conv-44 leaderboard row (``python -m benchmarks.leaderboard ...``)."""
    return ["--source", "locomo", "--data-path", args.data_path, "--split", "memory-r2", "--part", "val",
            "--session-chunks", str(ENV["session_chunks"]), "--rows", f"{strategy}+{args.answerer}",
            "--answer-top-k", str(ENV["answer_top_k"]), "--context-tokens", "450", "--save-predictions",
            "--save-memory", "--no-progress", "--out", str(out)]  # memories: benchmarks.leaderboard.memory_diff


def run_module(module: str, argv: Sequence[str], log: Path) -> float:
    """Run ``python -m module argv`` with its output in ``log``; returns its seconds. A failure
    is one :class:`UserError` naming the command and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "-m", module, *map(shlex.quote, argv)])
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {command}\n")
        handle.flush()
        code = subprocess.call([sys.executable, "-m", module, *argv], stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        raise UserError(f"`{command}` failed with exit status {code}; see {log}")
    return time.perf_counter() - start


def same_settings(out: Path, module: str, argv: Sequence[str]) -> bool:
    """Whether the finished run in ``out`` was made with ``argv`` (its args.json against a fresh parse)."""
    import dataclasses
    import importlib

    saved = json.loads((out / "args.json").read_text())
    mod = importlib.import_module(module)
    cls = {"algos.sft": "SFTArgs", "algos.logo_grpo": "Args"}[module]
    parsed = parse_args(getattr(mod, cls), list(argv), prog=module)
    if hasattr(mod, "apply_preset"):
        parsed, _ = mod.apply_preset(parsed, list(argv))  # args.json holds the settings after --preset
    wanted = dataclasses.asdict(parsed)
    ignore = {"resume", "progress", "output_dir", "tensorboard"}  # none of them changes what is trained
    differ = sorted(k for k in wanted if k not in ignore and k in saved and json.loads(json.dumps(wanted[k])) != saved[k])
    if differ:
        raise UserError(f"{out} was made with other settings ({', '.join(differ)}); use another --work-dir")
    return True


def train(module: str, argv: list[str], out: Path, log: Path) -> dict[str, Any]:
    """Run, resume or reuse one training run; returns what was done."""
    if (out / "adapter").is_dir() and same_settings(out, module, argv):
        return {"status": "reused", "seconds": 0.0}
    if (out / "checkpoints" / "latest").exists():
        if (out / "args.json").is_file():
            same_settings(out, module, argv)  # a run under way is continued only with the settings it began with
        return {"status": "resumed", "seconds": run_module(module, ["--resume", str(out), "--no-progress"], log)}
    return {"status": "trained", "seconds": run_module(module, argv, log)}


def adapter_digest(adapter: Path) -> str:
    """sha256 of an adapter's weights (what an evaluation was made with)."""
    return hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()


def evaluate(args: StudyArgs, name: str, strategy: str, root: Path, adapter: Path | None) -> dict[str, Any]:
    """A conv-44 row, reused when it was made with the same command and adapter weights."""
    out = root / "eval" / name
    argv = row_argv(args, strategy, out)
    stamp = {"argv": argv, "adapter_sha256": adapter_digest(adapter) if adapter else None}
    stamp_path = out.with_suffix(".stamp.json")
    if out.with_suffix(".json").is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        seconds = 0.0
    else:
        seconds = run_module("benchmarks.leaderboard", argv, root / "logs" / f"eval_{name}.log")
        stamp_path.write_text(json.dumps(stamp))
    row = json.loads(out.with_suffix(".json").read_text())["rows"][0]
    return {"name": name, "strategy": strategy, "file": str(out.with_suffix(".json")), "seconds": seconds,
            "f1": row["overall"]["f1"], "bleu1": row["overall"]["bleu1"], "em": row["overall"]["em"],
            "locomo_f1": row["overall"].get("locomo_f1"), "r2_f1": row["by_conversation"]["squad_f1"],
            "r2_bleu1": row["by_conversation"]["squad_bleu1"],
            "per_kind_f1": {k: v["f1"] for k, v in row["per_kind"].items()},
            "memory_tokens": row["memory_tokens_mean"], "memory_seconds": row["memory_seconds_per_conversation"]}


def read_metrics(out: Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl rows (empty when absent)."""
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ---------------------------------------------------------------------------- the probe
def probe(args: StudyArgs, root: Path, sft: Path) -> list[dict[str, Any]]:
    """Short LoGo-GRPO runs over learning rates (at the first group size) and group sizes
    (at the middle learning rate), no validation: mean training reward of the first and
    last update, seconds per update, generated tokens."""
    lr_mid = args.probe_lrs[len(args.probe_lrs) // 2]
    grid = [(lr, args.probe_groups[0]) for lr in args.probe_lrs]
    grid += [(lr_mid, g) for g in args.probe_groups[1:]]
    rows = []
    for lr, group in grid:
        out = root / "probe" / f"lr{lr:g}_g{group}"
        argv = rl_argv(args, "logo", 0, sft, out, stages=args.stages[:1], learning_rate=lr, group_size=group,
                       token_budget=10**9, updates_per_stage=args.probe_updates, validate=False)
        done = train("algos.logo_grpo", argv, out, root / "logs" / f"probe_{out.name}.log")
        metrics = [m for m in read_metrics(out) if "charts/session_reward" in m]
        rows.append({"learning_rate": lr, "group_size": group, "status": done["status"],
                     "rewards": [m["charts/session_reward"] for m in metrics],
                     "episode_f1": [m.get("charts/episode_score") for m in metrics],
                     "seconds_per_update": [m.get("charts/rollout_seconds", 0) + m.get("charts/update_seconds", 0)
                                            for m in metrics],
                     "generated_tokens": metrics[-1].get("charts/cumulative_tokens") if metrics else None})
    return rows


# ---------------------------------------------------------------------------- report
def plot(runs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Training reward and validation score of every RL run against cumulative generated tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(r["metrics"] for r in runs):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        train_rows = [m for m in run["metrics"] if "charts/session_reward" in m]
        tokens = {m["update"]: m.get("charts/cumulative_tokens", 0) for m in train_rows}
        label = f"{run['arm']} seed {run['seed']}"
        axes[0].plot([m["charts/cumulative_tokens"] for m in train_rows],
                     [m["charts/session_reward"] for m in train_rows], marker=".", label=label)
        val = [(tokens.get(m["update"], 0), m["val/score"]) for m in run["metrics"] if "val/score" in m]
        if val:
            axes[1].plot(*zip(*val), marker="o", label=label)
    for ax, title in zip(axes, ("training reward (session reward)", "validation answer F1 (conv-44, first sessions)")):
        ax.set_xlabel("cumulative generated tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_markdown(study: dict[str, Any]) -> str:
    """The study's tables."""
    lines = [f"# {study['title']}", "", f"Machine: {study['environment'].get('cpu')}. Code {study['environment'].get('code')}.", ""]
    if study.get("probe"):
        lines += ["## Probe (LoGo-GRPO, first stage, no validation)", "",
                  "| learning rate | group | training reward per update | episode F1 per update | s / update | tokens |",
                  "|---:|---:|---|---|---:|---:|"]
        for r in study["probe"]:
            fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs if x is not None)  # noqa: E731
            secs = sum(r["seconds_per_update"]) / max(len(r["seconds_per_update"]), 1)
            lines.append(f"| {r['learning_rate']:g} | {r['group_size']} | {fmt(r['rewards'])} | {fmt(r['episode_f1'])} "
                         f"| {secs:.0f} | {r['generated_tokens'] or 0:.0f} |")
        lines.append("")
    if study.get("runs"):
        lines += ["## RL runs", "", "| arm | seed | status | updates | generated tokens | best val F1 | wall s |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for r in study["runs"]:
            lines.append(f"| {r['arm']} | {r['seed']} | {r['status']} | {r['updates']} | {r['tokens']:.0f} | "
                         f"{r['best_val'] if r['best_val'] is None else round(r['best_val'], 3)} | {r['seconds']:.0f} |")
        lines.append("")
    if study.get("rows"):
        kinds = list(dict.fromkeys(k for r in study["rows"] for k in r["per_kind_f1"]))
        lines += ["## conv-44, every question at the end", "",
                  "| memory agent | F1 | F1 - add-only [95%] | B1 | EM | LoCoMo-F1 | R2-F1 | R2-B1 | "
                  + " | ".join(f"F1 {k}" for k in kinds) + " | mem tokens | mem s/conv | file |",
                  "|---|" + "---:|" * (7 + len(kinds) + 2) + "---|"]
        for r in study["rows"]:
            pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
            vs = r.get("vs_add_only")
            gap = "-" if vs is None else f"{100 * vs['diff']:+.1f} [{100 * vs['low']:+.1f}, {100 * vs['high']:+.1f}]"
            lines.append(f"| {r['name']} | {pct(r['f1'])} | {gap} | {pct(r['bleu1'])} | {pct(r['em'])} | {pct(r['locomo_f1'])} | "
                         f"{pct(r['r2_f1'])} | {pct(r['r2_bleu1'])} | "
                         + " | ".join(pct(r["per_kind_f1"].get(k)) for k in kinds)
                         + f" | {r['memory_tokens']:.0f} | {r['memory_seconds']:.0f} | `{r['file']}` |")
        lines.append("")
    lines += ["## Commands", "", "```bash", *study["commands"], "```", ""]
    return "\n".join(lines)


def candidates_tag(args: StudyArgs) -> str:
    """The short name of --candidates in run and row names: "" for add-only, "turns" for add-only-turns."""
    return "" if args.candidates == CANDIDATES[0] else args.candidates.removeprefix("add-only-")


def run_dir(args: StudyArgs, root: Path, arm: str, seed: int) -> Path:
    """Where one RL run lives: ``<arm>/seed<N>``, or ``<arm>_addnoop/seed<N>`` with --manager-only
    (``<arm>_addnoop_turns/seed<N>`` over --candidates add-only-turns)."""
    if not args.manager_only:
        return root / arm / f"seed{seed}"
    tag = candidates_tag(args)
    return root / (f"{arm}_addnoop_{tag}" if tag else f"{arm}_addnoop") / f"seed{seed}"


def run_order(args: StudyArgs, root: Path) -> list[tuple[int, str]]:
    """(seed, arm) of every RL run, seed by seed; runs under way (a checkpoint, no final
    adapter) first, so a study stopped mid-run finishes that run before it starts another."""
    order = [(seed, arm) for seed in args.seeds for arm in args.arms]

    def under_way(run: tuple[int, str]) -> bool:
        out = run_dir(args, root, run[1], run[0])
        return (out / "checkpoints" / "latest").exists() and not (out / "adapter").is_dir()

    return sorted(order, key=lambda run: not under_way(run))


def evaluate_all(args: StudyArgs, root: Path, init: Path, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conv-44 rows (add-only first), each trained row with its paired bootstrap against add-only."""
    rows = [evaluate(args, "add-only", "add-only", root, None)]
    if args.manager_only:
        over = f"-{candidates_tag(args)}" if candidates_tag(args) else ""
        if over:  # the candidates themselves, every one kept: what the manager starts from
            rows.append(evaluate(args, args.candidates, args.candidates, root, None))
        rows += [evaluate(args, f"zero-shot-manager{over}", manager_strategy(manager_spec(args.model), args.candidates), root, None),
                 evaluate(args, f"sft-manager{over}", manager_strategy(manager_spec(args.model, init), args.candidates),
                          root, init)]
    else:
        rows += [evaluate(args, "zero-shot", f"llm:{args.model}?prompt_style=compact&max_prompt_tokens=1024&max_new_tokens=384", root, None),
                 evaluate(args, "sft", f"llm:{args.model}:{init}", root, init)]
    for r in runs:
        adapter = Path(r["out"]) / "adapter"
        if not adapter.is_dir():
            continue  # stopped before its budget was spent (e.g. --stop-after): no final adapter yet
        agent = (manager_strategy(manager_spec(args.model, adapter), args.candidates) if args.manager_only
                 else f"llm:{args.model}:{adapter}")
        rows.append(evaluate(args, f"{Path(r['out']).parent.name}-seed{r['seed']}", agent, root, adapter))
    for row in rows[1:]:
        row["vs_add_only"] = against(row["file"], rows[0]["file"])
    return rows


def against(file: str, baseline: str) -> dict[str, float]:
    """F1 of a row minus the baseline's, question by question: the mean and its 95% interval."""
    from benchmarks.leaderboard.compare import CompareArgs, compare

    result = compare(CompareArgs(a=file, b=baseline, metric="f1"))
    return {"diff": result["diff"], "low": result["low"], "high": result["high"], "n": result["n"]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the study; returns what study.json holds."""
    from benchmarks.provenance import environment

    args = parse_args(StudyArgs, argv, description=__doc__, prog=PROG)
    if not Path(args.data_path).is_file():
        raise UserError(f"--data-path {args.data_path}: no such file (the LoCoMo file holding conv-43, conv-44, conv-47)")
    root = Path(args.work_dir)
    root.mkdir(parents=True, exist_ok=True)
    env = environment()
    study: dict[str, Any] = {"title": "SmolLM2-135M memory agent on LoCoMo (Memory-R2 split)",
                             "environment": {"cpu": env.get("cpu"), "code": env.get("code_revision")},
                             "commands": [" ".join(["python", "-m", "benchmarks.locomo_study",
                                                    *map(shlex.quote, sys.argv[1:] if argv is None else argv)])]}
    if args.init_adapter is not None:
        init = Path(args.init_adapter)
        if not (init / "adapter_config.json").is_file():
            raise UserError(f"--init-adapter {init}: not an adapter directory (no adapter_config.json)")
        study["sft"] = {"status": "given", "seconds": 0.0, "adapter": str(init)}
    else:
        sft_out = root / "sft"
        study["sft"] = train("algos.sft", sft_argv(args, sft_out), sft_out, root / "logs" / "sft.log")
        init = sft_out / "adapter"
    if args.probe:
        study["probe"] = probe(args, root, init)
    else:
        runs = []
        for seed, arm in run_order(args, root) if args.rl else ():
            out = run_dir(args, root, arm, seed)
            done = train("algos.logo_grpo", rl_argv(args, arm, seed, init, out), out,
                         root / "logs" / f"{out.parent.name}_seed{seed}.log")
            metrics = read_metrics(out)
            trained = [m for m in metrics if "charts/session_reward" in m]
            vals = [m["val/score"] for m in metrics if "val/score" in m]
            runs.append({"arm": arm, "seed": seed, **done, "updates": len(trained), "out": str(out),
                         "tokens": trained[-1].get("charts/cumulative_tokens", 0) if trained else 0,
                         "best_val": max(vals) if vals else None, "metrics": metrics})
        study["runs"] = [{k: v for k, v in r.items() if k != "metrics"} for r in runs]
        curves = plot(runs, root / "curves.png")
        study["curves"] = str(curves) if curves else None
        if args.evaluate:
            study["rows"] = evaluate_all(args, root, init, runs)
    (root / "study.json").write_text(json.dumps(study, indent=2, default=str) + "\n")
    (root / "study.md").write_text(to_markdown(study))
    print(f"wrote {root / 'study.md'} and {root / 'study.json'}")
    return study


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
