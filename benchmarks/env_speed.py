"""Speed of MemorySession-v0: fork latency against deepcopy and pickle snapshots, and
oracle-agent throughput.

    python -m benchmarks.env_speed [--sizes 10 100 1000 10000] [--episodes 20] [--out FILE]

Fork, ``copy.deepcopy`` and the pickle-to-disk snapshot of the official Memory-R2 code
are timed side by side in one run on the same environment state, so the printed ratios
hold even on a noisy machine. Targets: fork at 10,000 memories within 2x of fork at 10;
fork at least 100x faster than deepcopy at 1,000 memories; at least 1,000 env steps per
second with the oracle agent at 32 sessions.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import gymnasium as gym

import memenv  # noqa: F401  (registers the environments)
from algos.cli import parse_args
from memenv.memory import MemoryBank
from memenv.scripted import OracleAgent

PROG = "python -m benchmarks.env_speed"


def _time(fn, *, min_repeats: int = 5, budget_s: float = 0.5) -> float:
    """Median seconds of ``fn()`` over at least ``min_repeats`` calls or ``budget_s`` seconds."""
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget_s and len(times) < 10_000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def env_with_memories(n: int):
    """A MemorySession-v0 env mid-episode whose memory holds ``n`` entries."""
    env = gym.make("MemorySession-v0")
    env.reset(seed=0)
    bank = MemoryBank()
    for i in range(n):
        bank, _ = bank.add(f"Fact number {i}: speaker {i % 2} likes item {i * 7 % 1000} in city {i % 97}.",
                           speaker="x", session=i % 8, turn=i)
    env.unwrapped.set_memory(bank)
    return env


def pickle_snapshot(env, directory: str) -> None:
    """The official code's snapshot: pickle the state to a file and load it back."""
    path = os.path.join(directory, "snapshot.pkl")
    with open(path, "wb") as f:
        pickle.dump(env.unwrapped, f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path, "rb") as f:
        pickle.load(f)


def fork_table(sizes: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            env = env_with_memories(n)
            base = env.unwrapped
            fork_s = _time(base.fork)
            wrapped_fork_s = _time(env.fork)
            deepcopy_s = _time(lambda: copy.deepcopy(base), min_repeats=3, budget_s=0.3)
            pickle_s = _time(lambda: pickle_snapshot(env, tmp), min_repeats=3, budget_s=0.3)
            rows.append({"memories": n, "fork_us": fork_s * 1e6, "fork_gym_make_us": wrapped_fork_s * 1e6,
                         "deepcopy_us": deepcopy_s * 1e6, "pickle_disk_us": pickle_s * 1e6,
                         "deepcopy_over_fork": deepcopy_s / fork_s, "pickle_over_fork": pickle_s / fork_s})
    return rows


def throughput(num_sessions: int, episodes: int) -> dict:
    env = gym.make("MemorySession-v0", num_sessions=num_sessions)
    agent = OracleAgent()
    steps = 0
    scores = []
    start = time.perf_counter()
    for episode in range(episodes):
        obs, info = env.reset(seed=episode)
        done = False
        while not done:
            obs, _, done, _, info = env.step(agent.act(obs, info))
            steps += 1
        scores.append(info["episode_summary"]["mean_score"])
    elapsed = time.perf_counter() - start
    return {"num_sessions": num_sessions, "episodes": episodes, "steps": steps,
            "steps_per_s": steps / elapsed, "oracle_mean_f1": statistics.mean(s for s in scores if s == s)}


def markdown(result: dict) -> str:
    """The results as a markdown page."""
    from benchmarks.provenance import markdown_line

    m = result["machine"]
    lines = ["# MemorySession-v0 speed", "", f"Command: `{result['command']}`", "",
             f"Machine: {m['platform']}, Python {m['python']}, {m['cpus']} CPUs.", "",
             markdown_line(result["environment"]) if "environment" in result else "Environment: not recorded.", "",
             "## fork latency (median microseconds)", "",
             "| memories | fork() | gym.make fork() | deepcopy | pickle to disk + load | deepcopy / fork | pickle / fork |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["fork"]:
        lines.append(f"| {r['memories']} | {r['fork_us']:.1f} | {r['fork_gym_make_us']:.1f} | {r['deepcopy_us']:.0f} | "
                     f"{r['pickle_disk_us']:.0f} | {r['deepcopy_over_fork']:.0f}x | {r['pickle_over_fork']:.0f}x |")
    lines += ["", "## oracle agent throughput (resets included)", "", "| sessions | episodes | steps | steps/s | oracle F1 |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for r in result["throughput"]:
        lines.append(f"| {r['num_sessions']} | {r['episodes']} | {r['steps']} | {r['steps_per_s']:.0f} | {r['oracle_mean_f1']:.3f} |")
    lines += ["", "## targets", ""] + [f"- {k}: {v:.2f}" for k, v in result["checks"].items()]
    return "\n".join(lines) + "\n"


@dataclass
class EnvSpeedArgs:
    """The benchmark's command line; counts must be positive, and --out a file."""

    sizes: tuple[int, ...] = field(default=(10, 100, 1000, 10000), metadata={"help": "memory sizes at which to time fork, deepcopy and pickle"})
    horizons: tuple[int, ...] = field(default=(8, 16, 32), metadata={"help": "sessions per world for the oracle throughput"})
    episodes: int = field(default=20, metadata={"help": "oracle episodes per horizon"})
    out: str = field(default="benchmarks/results/env_speed.json", metadata={"help": "where to write the JSON results (the markdown goes next to it)"})

    def __post_init__(self) -> None:
        for flag, values in (("--sizes", self.sizes), ("--horizons", self.horizons), ("--episodes", [self.episodes])):
            bad = [v for v in values if v < 1]
            if bad:
                raise ValueError(f"{flag} takes positive integers, got {' '.join(map(str, bad))}")
        out = Path(self.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory; give a file name such as {out / 'env_speed.json'}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Time fork / deepcopy / pickle and the oracle throughput; write the JSON and markdown."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(EnvSpeedArgs, argv, description=__doc__, prog=PROG)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    with console.status("timing fork / deepcopy / pickle..."):
        forks = fork_table(args.sizes)
    table = Table(title="fork latency (median, microseconds)")
    for col in ("memories", "fork()", "gym.make fork()", "deepcopy", "pickle to disk", "deepcopy/fork", "pickle/fork"):
        table.add_column(col, justify="right")
    for r in forks:
        table.add_row(str(r["memories"]), f"{r['fork_us']:.1f}", f"{r['fork_gym_make_us']:.1f}", f"{r['deepcopy_us']:.0f}",
                      f"{r['pickle_disk_us']:.0f}", f"{r['deepcopy_over_fork']:.0f}x", f"{r['pickle_over_fork']:.0f}x")
    console.print(table)

    with console.status("oracle throughput..."):
        speeds = [throughput(h, args.episodes) for h in args.horizons]
    table = Table(title="oracle agent throughput (reset + steps, gym.make stack)")
    for col in ("sessions", "episodes", "steps", "steps/s", "oracle F1"):
        table.add_column(col, justify="right")
    for r in speeds:
        table.add_row(str(r["num_sessions"]), str(r["episodes"]), str(r["steps"]), f"{r['steps_per_s']:.0f}",
                      f"{r['oracle_mean_f1']:.3f}")
    console.print(table)

    by_size = {r["memories"]: r for r in forks}
    checks = {}
    if 10 in by_size and 10000 in by_size:
        checks["fork_10000_over_fork_10"] = by_size[10000]["fork_us"] / by_size[10]["fork_us"]
        console.print(f"fork at 10,000 / fork at 10 = {checks['fork_10000_over_fork_10']:.2f}x (target <= 2x)")
    if 1000 in by_size:
        checks["deepcopy_over_fork_at_1000"] = by_size[1000]["deepcopy_over_fork"]
        console.print(f"deepcopy / fork at 1,000 memories = {checks['deepcopy_over_fork_at_1000']:.0f}x (target >= 100x)")
    for r in speeds:
        if r["num_sessions"] == 32:
            checks["steps_per_s_at_32"] = r["steps_per_s"]
            console.print(f"oracle steps/s at 32 sessions = {r['steps_per_s']:.0f} (target >= 1000)")
    from benchmarks.provenance import environment

    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count()},
              "command": " ".join([PROG, *argv]),
              "fork": forks, "throughput": speeds, "checks": checks, "environment": environment()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    console.print(f"wrote {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
