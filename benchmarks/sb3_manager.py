"""Classical RL baseline: stable-baselines3 PPO learns the memory manager's per-fact decision.

    python -m benchmarks.sb3_manager [--timesteps 65536] [--seeds 0 1] [--eval-worlds 50]

PPO (``MlpPolicy``) trains on :class:`agents.sb3_decision_env.ManagerDecisionEnv` — one
step per candidate fact, ``Discrete(4)`` ADD / UPDATE nearest / DELETE nearest / NOOP over a
fixed-size feature vector — on synthetic worlds with seeds
``TRAIN_SEED_OFFSET + (0 .. train_worlds - 1)`` (gold extraction, scripted reader). Each
trained model is saved twice in ``--model-dir``: ``ppo_seed<seed>.safetensors``
(:func:`agents.sb3_model_file.save_manager`: tensors and a JSON header, no pickle; the file
``make_agent("sb3-manager:<path>")`` loads) and SB3's own ``ppo_seed<seed>.zip`` for SB3
users (``PPO.load`` unpickles it, so the project never opens it). The ``.safetensors`` file
is loaded back and played as a full agent (:class:`agents.sb3_agents.SB3ManagerAgent`)
through the ordinary text protocol on *held-out* worlds (seeds from ``eval_seed_offset``,
never seen in training) of ``MemorySessionBench-v0`` (every question after the last
session), next to a random manager and the scripted noop / add-all / oracle agents, which
share the same gold extraction and scripted reader. Reported: token F1 pooled over all
questions, overall and per question kind. Results go to ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

import memenv  # noqa: F401  (registers the environments)
from agents.sb3_agents import FeatureManagerAgent, RandomManagerAgent, SB3ManagerAgent
from agents.sb3_decision_env import REWARD_MODES, ManagerDecisionEnv
from agents.sb3_features import HAND_WRITTEN_RULES
from agents.sb3_model_file import save_manager
from algos import cli
from memenv.constants import TRAIN_SEED_OFFSET
from memenv.scripted import AddAllAgent, NoopAgent, OracleAgent
from memenv.types import HARD_SYNTHETIC_KINDS

PROG = "python -m benchmarks.sb3_manager"
DEFAULT_OUT = os.path.join("benchmarks", "results", "sb3_manager")
# The ablation: the inner env's own answer rewards, with the discounting that learned them
# best in development (the reward comes once per question, possibly sessions later).
ABLATION_ANSWERS = {"reward_mode": "answers", "gamma": 0.99, "gae_lambda": 0.95}
PPO_ROW = "PPO (sb3-manager)"
ABLATION_ROW = "PPO, reward_mode='answers' (ablation)"
# The project's convention: training worlds from TRAIN_SEED_OFFSET up, held-out ones below.
EVAL_SEED_OFFSET = 0
TABLE_WIDTH = 130


@dataclass
class Args:
    """Settings of one benchmark run (each field is a flag; its ``help`` metadata is the CLI help)."""

    timesteps: int = field(default=65_536, metadata={"help": "PPO environment steps (fact decisions) per training seed"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "training seeds; one model is trained and evaluated per seed"})
    n_envs: int = field(default=4, metadata={"help": "parallel training environments (DummyVecEnv)"})
    num_sessions: int = field(default=8, metadata={"help": "sessions per synthetic world (training and evaluation)"})
    train_worlds: int = field(default=200, metadata={"help": f"training worlds are the world seeds {TRAIN_SEED_OFFSET} .. {TRAIN_SEED_OFFSET} + N - 1"})
    eval_worlds: int = field(default=50, metadata={"help": "number of held-out evaluation worlds"})
    eval_seed_offset: int = field(default=EVAL_SEED_OFFSET, metadata={"help": f"first held-out world seed (held-out seeds stay below {TRAIN_SEED_OFFSET})"})
    difficulty: str = field(default="default", metadata={
        "help": "synthetic worlds for training and evaluation: 'default', or 'hard' (MemorySessionHard-v0: history, "
                "corrections, third parties, distractor talk, each world's memory budget)",
        "choices": ("default", "hard")})
    eval_env: str = field(default="", metadata={
        "help": "registered env id played by every agent at evaluation, with every question after the last session "
                "(default: MemorySessionBench-v0, or MemorySessionHard-v0 with --difficulty hard)"})
    reward_mode: str = field(default="probe", metadata={
        "help": "'probe': change of the summed score of every question due so far, re-asked on the current memory "
                "(aligned with the final-memory benchmark); 'answers': the inner env's answer rewards (each question "
                "asked once, right after its evidence)",
        "choices": REWARD_MODES})
    learning_rate: float = field(default=1e-3, metadata={"help": "PPO learning rate"})
    n_steps: int = field(default=512, metadata={"help": "PPO rollout steps per environment and update"})
    batch_size: int = field(default=256, metadata={"help": "PPO minibatch size"})
    n_epochs: int = field(default=10, metadata={"help": "PPO epochs per update"})
    gamma: float = field(default=0.9, metadata={"help": "discount; the probe reward credits each session at once, so a short horizon suffices"})
    gae_lambda: float = field(default=0.9, metadata={"help": "GAE lambda"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus (keeps UPDATE and DELETE explored while ADD dominates early)"})
    torch_threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for this small MLP next to the env)"})
    model_dir: str = field(default=os.path.join("runs", "sb3_manager"), metadata={
        "help": "where the trained models are saved: ppo_seed<seed>.safetensors (what sb3-manager:<path> loads, "
                "no pickle) and SB3's ppo_seed<seed>.zip"})
    out: str = field(default=DEFAULT_OUT, metadata={"help": "results path without extension: writes <out>.md and <out>.json"})
    ablation_answers: bool = field(default=False, metadata={
        "help": "also train one model per seed with reward_mode='answers' (gamma 0.99, gae_lambda 0.95) and report "
                "it as an extra row"})
    progress: bool = field(default=True, metadata={"help": "progress bars (--no-progress: none)"})
    # The command line that made these settings, for the results; not a flag (parse_args sets it).
    command: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("timesteps", "n_envs", "num_sessions", "train_worlds", "eval_worlds", "n_steps",
                     "batch_size", "n_epochs", "torch_threads"):
            cli.check_range(name, getattr(self, name), low=1)
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.difficulty not in ("default", "hard"):
            raise ValueError(f"--difficulty must be 'default' or 'hard', got {self.difficulty!r}")
        if not self.eval_env:
            self.eval_env = "MemorySessionHard-v0" if self.difficulty == "hard" else "MemorySessionBench-v0"
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"--reward-mode must be one of {REWARD_MODES}, got {self.reward_mode!r}")
        if (self.n_steps * self.n_envs) % self.batch_size:
            raise ValueError(f"--batch-size {self.batch_size} must divide n_steps * n_envs = "
                             f"{self.n_steps * self.n_envs}; change --batch-size or --n-steps")
        if self.eval_seed_offset + self.eval_worlds > TRAIN_SEED_OFFSET:
            raise ValueError(f"held-out worlds {self.eval_seed_offset}..{self.eval_seed_offset + self.eval_worlds - 1} "
                             f"reach the training worlds (seeds >= {TRAIN_SEED_OFFSET}); they must never be trained on")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}")

    @property
    def train_env(self) -> str:
        """The env id of the training worlds."""
        return "MemorySessionHard-v0" if self.difficulty == "hard" else "MemorySession-v0"

    @property
    def train_seeds(self) -> list[int]:
        return list(range(TRAIN_SEED_OFFSET, TRAIN_SEED_OFFSET + self.train_worlds))

    @property
    def eval_seeds(self) -> list[int]:
        return list(range(self.eval_seed_offset, self.eval_seed_offset + self.eval_worlds))


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """Args from the command line (defaults from :class:`Args`); bad values exit with
    ``python -m benchmarks.sb3_manager: error: ...`` (status 2)."""
    args = cli.parse_args(Args, argv, description=__doc__, prog=PROG)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args.command = PROG + (" " + shlex.join(argv_list) if argv_list else "")
    return args


# ------------------------------------------------------------------------- training --
def make_train_env(args: Args) -> ManagerDecisionEnv:
    """One training environment: the wrapper over MemorySession-v0 (MemorySessionHard-v0
    with ``--difficulty hard``) on the training worlds."""
    return ManagerDecisionEnv(args.train_env, reward_mode=args.reward_mode,
                              env_kwargs={"num_sessions": args.num_sessions, "world_seeds": args.train_seeds})


def train_manager(args: Args, seed: int, *, progress_bar: bool = False):
    """Train PPO (MlpPolicy) on the training worlds; returns the model."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    torch.set_num_threads(args.torch_threads)
    venv = make_vec_env(lambda: make_train_env(args), n_envs=args.n_envs, seed=seed)
    model = PPO("MlpPolicy", venv, learning_rate=args.learning_rate, n_steps=args.n_steps,
                batch_size=args.batch_size, n_epochs=args.n_epochs, gamma=args.gamma,
                gae_lambda=args.gae_lambda, ent_coef=args.ent_coef, seed=seed, device="cpu", verbose=0)
    # SB3's default logger makes an empty SB3-<date> folder in the temp directory per run
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=args.timesteps, progress_bar=progress_bar)
    venv.close()
    return model


# ----------------------------------------------------------------------- evaluation --
def evaluate_agent(agent: Any, world_seeds: Sequence[int], *, env_id: str = "MemorySessionBench-v0",
                   num_sessions: int = 8, progress: Any = None) -> dict:
    """Play ``agent`` on each world through the ordinary text protocol, every question
    after the last session (``qa_schedule="end"``).

    Returns ``f1`` (token F1 pooled over every question), ``by_kind`` (F1 per question
    kind), ``num_questions``, ``mean_memory_size`` (at the end of the episodes) and
    ``invalid_actions``. ``progress`` is an optional callable run after each world.
    """
    from memenv.play import play

    scores: list[float] = []
    by_kind: dict[str, list[float]] = {}
    sizes, invalid = [], 0

    def on_turn(turn) -> None:
        nonlocal invalid
        invalid += not turn.next_info.get("valid", True)
        answered = turn.next_info.get("answered")
        if isinstance(answered, dict):
            scores.append(float(answered["score"]))
            by_kind.setdefault(answered["kind"], []).append(float(answered["score"]))
        if turn.done:
            sizes.append(turn.next_info["memory_size"])

    for seed in world_seeds:  # one world at a time: a seeded random agent draws in the same order as before
        play(lambda: gym.make(env_id, num_sessions=num_sessions, qa_schedule="end"), [int(seed)], agent,
             on_turn=on_turn)
        if progress is not None:
            progress()
    return {
        "f1": float(np.mean(scores)) if scores else float("nan"),
        "by_kind": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
        "num_questions": len(scores),
        "mean_memory_size": float(np.mean(sizes)) if sizes else 0.0,
        "invalid_actions": int(invalid),
    }


def reference_agents(seed: int = 0) -> dict[str, Any]:
    """The agents every trained manager is compared with, by row name."""
    return {
        "random manager": RandomManagerAgent(seed),
        "noop": NoopAgent(),
        "add-all": AddAllAgent(),
        **{f"{name} (hand-written)": FeatureManagerAgent(rule, name=name.replace(" ", "-"))
           for name, rule in HAND_WRITTEN_RULES.items()},
        "oracle": OracleAgent(),
    }


# -------------------------------------------------------------------------- report ---
def _kinds(rows: dict[str, dict]) -> list[str]:
    present = {k for r in rows.values() for k in r["by_kind"]}
    return [k for k in HARD_SYNTHETIC_KINDS if k in present] + sorted(present - set(HARD_SYNTHETIC_KINDS))


def render_markdown(result: dict) -> str:
    """The results as a markdown page (command, setup, table, notes)."""
    from benchmarks.provenance import markdown_line

    rows = result["rows"]
    kinds = _kinds(rows)
    a = result["args"]
    lines = [
        "# Classical RL manager (stable-baselines3 PPO)",
        "",
        "Command:",
        "",
        "```",
        result["command"],
        "```",
        "",
        (f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs, Python "
         f"{result['machine']['python']}; stable-baselines3 {result['versions']['stable_baselines3']}, "
         f"torch {result['versions']['torch']}, gymnasium {result['versions']['gymnasium']}."),
        "",
        markdown_line(result["environment"]) if "environment" in result else "Environment: not recorded.",
        "",
        (f"PPO (MlpPolicy) on `ManagerDecisionEnv` (reward_mode={a['reward_mode']!r}), {a['timesteps']} fact "
         f"decisions per seed, seeds {list(a['seeds'])}, training worlds {TRAIN_SEED_OFFSET}..{TRAIN_SEED_OFFSET + a['train_worlds'] - 1} "
         f"({a['num_sessions']} sessions, difficulty {a.get('difficulty', 'default')!r}). Evaluation: {a['eval_worlds']} held-out worlds (seeds "
         f"{a['eval_seed_offset']}..{a['eval_seed_offset'] + a['eval_worlds'] - 1}) of `{a['eval_env']}`, "
         f"{result['num_questions']} questions; token F1 pooled over questions. Every agent extracts the gold "
         "facts and answers with the scripted reader; only the manager differs."),
        "",
        "| manager | F1 | " + " | ".join(kinds) + " | memories at end | invalid |",
        "| --- | ---: | " + " | ".join("---:" for _ in kinds) + " | ---: | ---: |",
    ]
    for name, row in rows.items():
        cells = [f"{row['by_kind'].get(k, float('nan')):.3f}" for k in kinds]
        f1 = f"{row['f1']:.3f}" + (f" ± {row['f1_std']:.3f}" if "f1_std" in row else "")
        lines.append(f"| {name} | {f1} | " + " | ".join(cells) + f" | {row['mean_memory_size']:.1f} | "
                     f"{row['invalid_actions']} |")
    lines += ["", "Per training run:", "", "| reward_mode | gamma | seed | F1 | train seconds | model |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for run in result["runs"]:
        lines.append(f"| {run['reward_mode']} | {run['gamma']} | {run['seed']} | {run['eval']['f1']:.3f} | "
                     f"{run['train_seconds']:.0f} | `{run['model']}` |")
    lines += [
        "",
        ("Notes: PPO rows are the mean over training seeds (± standard deviation when there are several). "
         "The random manager picks ADD / UPDATE / DELETE / NOOP uniformly per fact. The hand-written rules "
         "decide on the same features (what the observation allows), not learned: the feature rule UPDATEs "
         "the nearest memory on a change and DELETEs it on a retraction; the keep-history rule ADDs changes "
         "instead (past values stay as their own texts) and UPDATEs a repeat up to dates (a corrected date); "
         "the budget-aware keep-history rule UPDATEs instead of adding once the memory holds "
         "`BUDGET_RULE_MEMORIES` entries (`agents.sb3_features.HAND_WRITTEN_RULES`). "
         "`reward_mode='probe'` re-asks every question due so far after each session and rewards the change "
         "of their summed score, so the return is the score on the final memory; `reward_mode='answers'` "
         "pays the inner `MemorySession-v0` rewards, where each question is asked once, right after its "
         "evidence, so overwriting a memory whose questions were already asked costs nothing. "
         "Training seconds depend on the load of the machine."
         + (" Hard worlds: `MemorySessionHard-v0` (a home, job or partner's past and present merged into one "
            "record text, past clubs, cars and pets into one history text, trips and concerts into one list "
            "text; corrections, third-party news that is not kept, distractor talk, history / ordering / "
            "counting questions) under each world's memory budget, the largest gold memory; a manage action "
            "over it is refused (counted in `invalid`). A manager that writes only the facts' own texts "
            "cannot merge, so it must overwrite or drop what the gold memory keeps."
            if a.get("difficulty") == "hard" else "")),
        "",
    ]
    return "\n".join(lines)


def print_table(result: dict) -> None:
    """The results as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    rows = result["rows"]
    kinds = _kinds(rows)
    table = Table(title=f"Memory manager on {result['args']['eval_worlds']} held-out worlds (token F1)")
    table.add_column("manager")
    table.add_column("F1", justify="right")
    for k in kinds:
        table.add_column(k, justify="right")
    table.add_column("memories", justify="right")
    for name, row in rows.items():
        f1 = f"{row['f1']:.3f}" + (f" ± {row['f1_std']:.3f}" if "f1_std" in row else "")
        table.add_row(name, f1, *(f"{row['by_kind'].get(k, float('nan')):.3f}" for k in kinds),
                      f"{row['mean_memory_size']:.1f}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=TABLE_WIDTH)  # logs and pipes: do not squeeze the columns to 80
    console.print(table)


def _versions() -> dict:
    import stable_baselines3
    import torch

    return {"stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__,
            "gymnasium": gym.__version__}


def _mean_rows(evals: list[dict]) -> dict:
    kinds = sorted({k for e in evals for k in e["by_kind"]})
    row = {
        "f1": float(np.mean([e["f1"] for e in evals])),
        "by_kind": {k: float(np.mean([e["by_kind"][k] for e in evals if k in e["by_kind"]])) for k in kinds},
        "num_questions": evals[0]["num_questions"],
        "mean_memory_size": float(np.mean([e["mean_memory_size"] for e in evals])),
        "invalid_actions": int(sum(e["invalid_actions"] for e in evals)),
    }
    if len(evals) > 1:
        row["f1_std"] = float(np.std([e["f1"] for e in evals]))
    return row


def run(args: Args) -> dict:
    """Train one model per seed, evaluate it and the references; returns the results."""
    from rich.progress import Progress

    os.makedirs(args.model_dir, exist_ok=True)
    variants = [(PPO_ROW, args, "ppo")]
    if args.ablation_answers:
        variants.append((ABLATION_ROW, replace(args, **ABLATION_ANSWERS), "ppo_answers"))
    runs = []
    for row, train_args, prefix in variants:
        for seed in args.seeds:
            start = time.perf_counter()
            model = train_manager(train_args, seed, progress_bar=args.progress)
            seconds = time.perf_counter() - start
            stem = os.path.join(args.model_dir, f"{prefix}_seed{seed}")
            path = save_manager(model, stem + ".safetensors")
            model.save(stem + ".zip")
            # evaluate the saved file, so the reported numbers are those of what was written
            runs.append({"row": row, "seed": seed, "reward_mode": train_args.reward_mode, "gamma": train_args.gamma,
                         "model": path, "sb3_zip": stem + ".zip", "train_seconds": seconds,
                         "steps_per_second": args.timesteps / seconds, "agent": SB3ManagerAgent.load(path)})
    references = reference_agents(args.seeds[0])
    total = args.eval_worlds * (len(runs) + len(references))
    with Progress(disable=not args.progress, transient=True) as progress:
        task = progress.add_task("evaluating", total=total)

        def tick() -> None:
            progress.advance(task)

        for r in runs:
            r["eval"] = evaluate_agent(r.pop("agent"), args.eval_seeds, env_id=args.eval_env,
                                       num_sessions=args.num_sessions, progress=tick)
        ref_rows = {name: evaluate_agent(agent, args.eval_seeds, env_id=args.eval_env,
                                         num_sessions=args.num_sessions, progress=tick)
                    for name, agent in references.items()}
    rows = {row: _mean_rows([r["eval"] for r in runs if r["row"] == row]) for row, _, _ in variants}
    rows.update(ref_rows)
    from benchmarks.provenance import environment

    return {
        "command": args.command or "python -m benchmarks.sb3_manager",
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": _versions(),
        "environment": environment(),
        "args": {k: v for k, v in asdict(args).items() if k != "command"},
        "num_questions": rows["oracle"]["num_questions"],
        "rows": rows,
        "runs": runs,
    }


def write_results(result: dict, out: str) -> tuple[str, str]:
    """Write ``<out>.json`` and ``<out>.md``; returns both paths."""
    directory = os.path.dirname(out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    json_path, md_path = out + ".json", out + ".md"
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(render_markdown(result))
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> dict:
    """CLI entry point: train, evaluate, print and write the results."""
    args = parse_args(argv)
    result = run(args)
    print_table(result)
    json_path, md_path = write_results(result, args.out)
    print(f"wrote {md_path} and {json_path}")
    return result


if __name__ == "__main__":
    raise SystemExit(cli.run_main(main, PROG))
