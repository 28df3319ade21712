"""One PPO update on one batch of real rollouts, full passes against shared prompts, side by side.

    python -m benchmarks.update_speed                       # the smollm2-cpu study's LoGo-GRPO settings
    python -m benchmarks.update_speed --trainer-flags "--model smollm2-135m --no-demo --stages 4 ..."

The trainer (``python -m algos.logo_grpo`` with ``--trainer-flags``, one update) plays its
rollouts as usual; when it calls the update, this benchmark takes that batch and times
``algos.update.ppo_update`` on copies of it ``--repeats`` times with ``share_prompts="never"``
(every sample's prompt in every forward pass) and ``"always"`` (each distinct prompt of a
micro-batch once, :func:`agents.generation.shared_prompt_logits`), alternately, with a
learning rate of 0 so that every timing sees the same weights. It reports the median seconds
of each, their ratio, the batch's prompt and completion tokens, how many distinct prompts it
holds, and the first-epoch ratio and loss of each (the same update up to rounding).

Writes ``--out`` .json and .md (default ``benchmarks/results/update_speed_<device>``).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PROG = "python -m benchmarks.update_speed"
# The smollm2-cpu study's LoGo-GRPO settings (benchmarks.reproduce, one update at 4 sessions,
# no SFT adapter): SmolLM2 extracts and manages, so a group's extract prompts repeat.
STUDY_FLAGS = ("--model smollm2-135m --no-demo --seed 0 --stages 4 --updates-per-stage 1 --preset memory-r2 "
               "--group-size 4 --conversations-per-update 1 --num-train-worlds 64 --max-final-questions 16 "
               "--ppo-epochs 1 --num-minibatches 1 --val-worlds 0 --env-kwargs '{\"session_chunks\": null}' "
               "--max-new-tokens 128 --max-prompt-tokens 512 --prompt-style compact --answerer scripted "
               "--no-lora-lm-head --micro-batch-size 8 --dtype auto --no-skip-uniform-groups")
MODES = ("never", "always")


@dataclass
class Args:
    trainer_flags: str = field(default=STUDY_FLAGS, metadata={"help": "flags of python -m algos.logo_grpo that "
                               "make the batch and the update settings (one update is played; --env and "
                               "--output-dir are set here)"})
    env: str = field(default="MemorySession-v0", metadata={"help": "environment id"})
    repeats: int = field(default=2, metadata={"help": "timed updates per mode (alternating; the median counts)"})
    out: str | None = field(default=None, metadata={"help": "results path without suffix (none: "
                            "benchmarks/results/update_speed_<device>)"})

    def __post_init__(self) -> None:
        from algos.cli import check_range

        check_range("repeats", self.repeats, low=1)
        given = shlex.split(self.trainer_flags)
        for flag in ("--output-dir", "--env"):
            if any(t == flag or t.startswith(f"{flag}=") for t in given):
                raise ValueError(f"--trainer-flags must not set {flag} (the benchmark sets it)")


def batch_tokens(samples: Sequence[Any]) -> dict[str, int]:
    """Prompt and completion tokens of a batch, and the prompt tokens once per distinct prompt."""
    distinct = {tuple(s.prompt_ids) for s in samples}
    return {"samples": len(samples), "distinct_prompts": len(distinct),
            "prompt_tokens": sum(len(s.prompt_ids) for s in samples),
            "distinct_prompt_tokens": sum(len(p) for p in distinct),
            "completion_tokens": sum(len(s.completion_ids) for s in samples)}


def time_update(update, model, samples: Sequence[Any], config, *, pad_id: int, repeats: int) -> dict[str, Any]:
    """Median seconds of ``update`` (``algos.update.ppo_update``, passed in because
    :func:`measure` patches the module's name) per share_prompts mode, alternating, at
    learning rate 0."""
    import torch

    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    stats: dict[str, dict[str, float]] = {}
    params = [p for p in model.parameters() if p.requires_grad]
    for rep in range(repeats):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:
            batch = [dataclasses.replace(s) for s in samples]  # the update reassigns, never mutates, fields
            optimizer = torch.optim.AdamW(params, lr=0.0)
            start = time.perf_counter()
            out = update(model, batch, optimizer, dataclasses.replace(config, share_prompts=mode),
                         pad_id=pad_id, rng=np.random.default_rng(0))
            seconds[mode].append(time.perf_counter() - start)
            stats[mode] = {k.split("/")[-1]: v for k, v in out.items() if k in ("losses/ratio_mean", "losses/loss")}
    median = {m: float(np.median(v)) for m, v in seconds.items()}
    return {"seconds": seconds, "median_seconds": median, "speedup": median["never"] / median["always"],
            "stats": stats}


def measure(args: Args) -> dict[str, Any]:
    """Play the trainer up to its first update and time that update in both modes."""
    import algos.logo_grpo as trainer
    import algos.update as U

    real_update = U.ppo_update
    found: dict[str, Any] = {}

    class _Measured(Exception):
        pass

    def intercept(model, samples, optimizer, config, *, pad_id, rng, world=1, value_head=None):
        if not samples:
            from algos.cli import UserError

            raise UserError("the trainer's batch is empty (every group tied and --skip-uniform-groups left "
                            "them out?): nothing to time")
        found.update(batch=batch_tokens(samples), timing=time_update(real_update, model, samples, config,
                                                                      pad_id=pad_id, repeats=args.repeats),
                     config=dataclasses.asdict(config))
        raise _Measured

    with tempfile.TemporaryDirectory() as tmp:
        U.ppo_update = intercept  # the trainer imports it from algos.update when it starts
        try:
            trainer.main([*shlex.split(args.trainer_flags), "--env", args.env, "--output-dir", str(Path(tmp) / "run"),
                          "--no-progress", "--no-tensorboard"])
        except _Measured:
            pass
        finally:
            U.ppo_update = real_update
    if not found:
        raise RuntimeError("the trainer finished without calling the update (no batch to time)")
    return found


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, then write and print the table."""
    import torch

    from algos.cli import parse_args
    from benchmarks.provenance import environment, markdown_line, write_report

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    found = measure(args)
    result = {"command": " ".join([PROG, *map(shlex.quote, argv)]), "trainer_flags": args.trainer_flags,
              "environment": environment(), **found}
    b, t = found["batch"], found["timing"]
    full = b["prompt_tokens"] + b["completion_tokens"]
    shared = b["distinct_prompt_tokens"] + b["completion_tokens"]
    lines = ["# One PPO update: full passes against shared prompts", "", f"Command: `{result['command']}`", "",
             f"Trainer flags: `{args.trainer_flags}`", "", markdown_line(result["environment"]), "",
             f"Batch: {b['samples']} samples, {b['distinct_prompts']} distinct prompts; {full} tokens in full passes, "
             f"{shared} with each distinct prompt once ({full / max(shared, 1):.2f}x fewer; micro-batches share "
             f"only within themselves). Update settings: ppo_epochs {found['config']['ppo_epochs']}, "
             f"num_minibatches {found['config']['num_minibatches']}, micro_batch_size "
             f"{found['config']['micro_batch_size']}.", "",
             "| share_prompts | seconds per update (median) | runs | first-epoch ratio mean | loss |",
             "|---|---:|---|---:|---:|"]
    for mode in MODES:
        st = t["stats"][mode]
        lines.append(f"| {mode} | {t['median_seconds'][mode]:.1f} | {', '.join(f'{s:.1f}' for s in t['seconds'][mode])} | "
                     f"{st.get('ratio_mean', float('nan')):.4f} | {st.get('loss', float('nan')):.5f} |")
    lines += ["", f"Speed-up of shared prompts: {t['speedup']:.2f}x.", ""]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    write_report(Path(args.out or f"benchmarks/results/update_speed_{device}"), result, lines)
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
