"""CPU threads for a model, in one small module that every trainer, the evaluation and the
benchmarks import (it imports nothing of the project, and not torch)."""

from __future__ import annotations

import os


def default_threads(model_name: str) -> int:
    """CPU threads for a model: 1 for the tiny model (its small kernels only contend), every
    core this process may use otherwise."""
    return 1 if model_name == "tiny" else len(os.sched_getaffinity(0))
