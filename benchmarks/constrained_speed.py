"""Generation throughput with and without grammar constraints, side by side.

    python -m benchmarks.constrained_speed [--model smollm2-135m] [--samples 4] [--new-tokens 128]

Real extract and manage observations of MemorySession-v0 (synthetic worlds, the manage
turn after the oracle's extraction) are rendered into prompts and sampled ``--samples``
times each in one batched call (shared prompts, KV cache), first under their grammars
(:mod:`agents.constrained`), then freely for exactly as many decode steps as the
constrained call took (stop tokens ignored), so both runs make the same number of tokens.
Prints both rates, the ratio (the issue's target: constrained at least 0.85 of
unconstrained), the grammar compile times, and writes JSON. Defaults: SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from algos.cli import check_range, parse_args

PROG = "python -m benchmarks.constrained_speed"


@dataclass
class ConstrainedSpeedArgs:
    """The benchmark's command line; counts must be positive, and --out a file."""

    model: str = field(default="smollm2-135m", metadata={"help": "backbone alias or path"})
    worlds: int = field(default=2, metadata={"help": "synthetic worlds: one extract and one manage prompt each"})
    samples: int = field(default=4, metadata={"help": "samples per prompt"})
    new_tokens: int = field(default=128, metadata={"help": "generation budget per sample"})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "prompt budget"})
    repeats: int = field(default=3, metadata={"help": "timed repeats of each (alternated), best kept"})
    dtype: str | None = field(default=None, metadata={"help": "model dtype (none: the library default)"})
    out: str = field(default="benchmarks/results/constrained_speed.json", metadata={"help": "JSON output"})

    def __post_init__(self) -> None:
        for name in ("worlds", "samples", "new_tokens", "max_prompt_tokens", "repeats"):
            check_range(name, getattr(self, name), low=1)
        if Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} is a directory; give a file name such as {self.out}/constrained_speed.json")


def main(argv: Sequence[str] | None = None) -> dict:
    """Time constrained and unconstrained generation of the same length; print and write JSON."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(ConstrainedSpeedArgs, argv, description=__doc__, prog=PROG)

    import gymnasium as gym
    import torch

    import memenv  # noqa: F401
    from agents.backbone import load_backbone
    from agents.constrained import compiled_matcher, grammar_for, ll_tokenizer
    from agents.generation import default_stop_ids, generate
    from agents.prompts import parse_observation, render_prompt
    from algos.threads import default_threads
    from memenv.scripted import OracleAgent

    has_gpu = torch.cuda.is_available()
    if not has_gpu:
        torch.set_num_threads(default_threads(args.model))
    backbone = load_backbone(args.model, dtype=args.dtype)
    model, tokenizer = backbone.model.eval(), backbone.tokenizer
    env = gym.make("MemorySession-v0", disable_env_checker=True)
    oracle = OracleAgent()
    observations = []
    for seed in range(args.worlds):
        obs, info = env.reset(seed=seed)
        observations.append(obs)
        obs, *_ = env.step(oracle.act(obs, info))
        observations.append(obs)
    prompts = [render_prompt(tokenizer, o, max_prompt_tokens=args.max_prompt_tokens) for o in observations]
    constraints = [grammar_for(parse_observation(o), parse_observation(o)["role"], max_new_tokens=args.new_tokens)
                   for o in observations]
    stop_ids = default_stop_ids(model, tokenizer)
    t0 = time.perf_counter()
    ll_tokenizer(tokenizer, stop_ids)  # built once per tokenizer
    tokenizer_ms = 1000 * (time.perf_counter() - t0)
    compile_ms = []
    for c in constraints:
        t0 = time.perf_counter()
        compiled_matcher(c, tokenizer, stop_ids)  # first compile (later ones hit the cache)
        compile_ms.append(1000 * (time.perf_counter() - t0))

    def sync() -> None:
        if has_gpu:
            torch.cuda.synchronize()

    def run_constrained():
        return generate(model, tokenizer, prompts, num_samples=args.samples, max_new_tokens=args.new_tokens, seed=0,
                        constraints=constraints)

    rollout = run_constrained()  # warm-up: the first masks of a grammar build its lexer states
    steps = rollout.completion_ids.shape[1]

    def run_free():
        return generate(model, tokenizer, prompts, num_samples=args.samples, max_new_tokens=steps, stop_token_ids=[],
                        seed=0)

    run_free()  # warm-up
    t_con = t_free = float("inf")
    for _ in range(args.repeats):  # alternated, best of each: the machine's load changes
        for which in ("constrained", "free"):
            sync()
            t0 = time.perf_counter()
            run_constrained() if which == "constrained" else run_free()
            sync()
            elapsed = time.perf_counter() - t0
            t_con, t_free = (min(t_con, elapsed), t_free) if which == "constrained" else (t_con, min(t_free, elapsed))
    rows = rollout.completion_ids.shape[0]
    tokens = rows * steps
    from memenv.parsing import parse_facts, parse_operations

    valid = [(parse_facts if c.role == "extract" else parse_operations)(text)[1] is None
             for text, c in zip(rollout.texts, rollout.constraints)]
    result = {
        "model": args.model, "dtype": str(next(model.parameters()).dtype),
        "device": torch.cuda.get_device_name(0) if has_gpu else f"CPU ({platform.machine()}, "
                                                                f"{torch.get_num_threads()} threads)",
        "command": " ".join([PROG, *argv]), "sequences": rows, "decode_steps": steps,
        "sampled_tokens": int(rollout.completion_mask.sum()),
        "constrained_tok_s": tokens / t_con, "unconstrained_tok_s": tokens / t_free, "ratio": t_free / t_con,
        "tokenizer_ms": tokenizer_ms, "compile_ms": compile_ms, "valid_outputs": f"{sum(valid)}/{len(valid)}",
    }
    print(f"{args.model} ({result['dtype']}) on {result['device']}: {rows} sequences x {steps} decode steps")
    print(f"  constrained   {result['constrained_tok_s']:8.1f} tok/s")
    print(f"  unconstrained {result['unconstrained_tok_s']:8.1f} tok/s")
    print(f"  ratio {result['ratio']:.3f} (target >= 0.85); valid outputs {result['valid_outputs']}; "
          f"grammar compile ms: {', '.join(f'{m:.1f}' for m in compile_ms)} (repeats hit the cache; "
          f"tokenizer built once in {tokenizer_ms:.0f} ms)")
    from benchmarks.provenance import environment

    result["environment"] = environment()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
