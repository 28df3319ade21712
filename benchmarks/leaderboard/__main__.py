"""``python -m benchmarks.leaderboard``: see :mod:`benchmarks.leaderboard.cli`."""

from algos.cli import run_main
from benchmarks.leaderboard.cli import PROG, main

if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
