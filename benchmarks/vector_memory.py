"""Memory of async MemorySession-v0 children over many episodes: does it level off?

    python -m benchmarks.vector_memory [--num-envs 8] [--episodes-per-env 320] [--num-sessions 2]

Runs ``--num-envs`` environments in a Gymnasium ``AsyncVectorEnv`` (the oracle agent acts),
until every child has played ``--episodes-per-env`` episodes (more than the 256 worlds the
synthetic world cache holds), and prints the children's total resident memory (VmRSS from
/proc) every ``--report-every`` episodes per env. Memory that keeps growing after the world
cache is full is a leak.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Sequence

import gymnasium as gym
import numpy as np

import memenv  # noqa: F401
from algos.cli import parse_args
from memenv.scripted import OracleAgent
from memenv.vector import unbatch_info

PROG = "python -m benchmarks.vector_memory"


@dataclass
class Args:
    num_envs: int = field(default=8, metadata={"help": "async environments"})
    episodes_per_env: int = field(default=320, metadata={"help": "episodes each environment plays (> 256)"})
    num_sessions: int = field(default=2, metadata={"help": "sessions per synthetic world (short episodes)"})
    report_every: int = field(default=32, metadata={"help": "print memory every this many episodes per env"})
    out: str | None = field(default=None, metadata={"help": "write the samples as JSON here"})


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    vec = gym.make_vec("MemorySession-v0", num_envs=args.num_envs, vectorization_mode="async",
                       num_sessions=args.num_sessions)
    agent = OracleAgent()
    pids = [p.pid for p in vec.unwrapped.processes]
    episodes = np.zeros(args.num_envs, dtype=int)
    samples = []
    start = time.perf_counter()
    steps = 0
    next_report = 0
    try:
        obs, infos = vec.reset(seed=list(range(args.num_envs)))
        while episodes.min() < args.episodes_per_env:
            actions = tuple(agent.act(o, unbatch_info(infos, i)) for i, o in enumerate(obs))
            obs, _, terms, truncs, infos = vec.step(actions)
            episodes += np.logical_or(terms, truncs)
            steps += 1
            if episodes.min() >= next_report:
                row = {"episodes_per_env": int(episodes.min()), "steps": steps,
                       "children_rss_mib": round(sum(rss_mib(p) for p in pids), 1),
                       "seconds": round(time.perf_counter() - start, 1)}
                samples.append(row)
                print(json.dumps(row), flush=True)
                next_report += args.report_every
    finally:
        vec.close()
    result = {"num_envs": args.num_envs, "num_sessions": args.num_sessions, "samples": samples}
    if args.out:
        open(args.out, "w").write(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
