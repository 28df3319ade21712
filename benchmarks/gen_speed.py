"""Generation throughput: one prompt at a time versus batched with shared prompts.

    python -m benchmarks.gen_speed [--model smollm2-135m] [--groups 4 8 16] [--new-tokens 64]
    python -m benchmarks.gen_speed --model smollm2-135m --engines hf vllm   # vLLM side by side

For each group size n (the n rollouts of one memory state in LoGo-GRPO), the same n
completions are produced twice, side by side in one run: *naive* calls ``generate`` once
per sample, each running the whole prompt; *batched* calls it once with
``num_samples=n``, which runs the prompt once and shares its KV cache. Both use real
extract-turn prompts from MemorySession-v0 and stop at ``--new-tokens`` (EOS is ignored so
both produce the same number of tokens). With ``--engines hf vllm`` the same prompts are
also sampled by :class:`agents.vllm_engine.VLLMEngine` (``n`` samples per prompt, bf16,
in the same run, after the library's loop), and the ratio vLLM / batched is printed
(vLLM needs the requirements-vllm.lock virtualenv and a model directory, not ``tiny``). Prints tokens per second and the ratio, and
writes JSON. Defaults: SmolLM2-135M-Instruct on a GPU, the tiny backbone on a CPU.
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

PROG = "python -m benchmarks.gen_speed"


def markdown(result: dict) -> str:
    """The results as a markdown page."""
    from benchmarks.provenance import markdown_line

    vllm = any("vllm_tok_s" in r for r in result["rows"])
    lines = [f"# Generation throughput: {result['model']} on {result['device']}", "",
             f"Command: `{result['command']}`", "", f"Prompt tokens: {result['prompt_tokens']}", "",
             markdown_line(result["environment"]) if "environment" in result else "Environment: not recorded.", "",
             "| group n | prompts | naive tok/s | batched + shared prompt tok/s | speed-up |"
             + (" vLLM tok/s | vLLM / batched |" if vllm else ""),
             "| ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if vllm else "")]
    for r in result["rows"]:
        lines.append(f"| {r['group']} | {r['prompts']} | {r['naive_tok_s']:.1f} | {r['batched_tok_s']:.1f} | "
                     f"{r['speedup']:.1f}x |" + (f" {r['vllm_tok_s']:.1f} | {r['vllm_ratio']:.2f}x |" if vllm else ""))
    return "\n".join(lines) + "\n"


@dataclass
class GenSpeedArgs:
    """The benchmark's command line; counts must be positive, and --out a file."""

    model: str | None = field(default=None, metadata={"help": "backbone (none: smollm2-135m on GPU, tiny on CPU)"})
    groups: tuple[int, ...] = field(default=(4, 8, 16), metadata={"help": "samples per prompt"})
    prompts: int = field(default=2, metadata={"help": "distinct prompts per call"})
    new_tokens: int = field(default=64, metadata={"help": "tokens generated per sample"})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "prompt budget"})
    repeats: int = field(default=2, metadata={"help": "timed repeats, best kept"})
    engines: tuple[str, ...] = field(default=("hf",), metadata={
        "help": "hf (the library's loop: naive and batched) and optionally vllm (timed after it, same prompts)"})
    out: str = field(default="benchmarks/results/gen_speed.json", metadata={"help": "JSON output (the markdown goes next to it)"})

    def __post_init__(self) -> None:
        bad = [n for n in self.groups if n < 1]
        if bad:
            raise ValueError(f"--groups takes positive integers, got {' '.join(map(str, bad))}")
        for name in ("prompts", "new_tokens", "max_prompt_tokens", "repeats"):
            check_range(name, getattr(self, name), low=1)
        unknown = [e for e in self.engines if e not in ("hf", "vllm")]
        if unknown or "hf" not in self.engines:
            raise ValueError(f"--engines takes hf and optionally vllm, got {' '.join(self.engines)}")
        out = Path(self.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory; give a file name such as {out / 'gen_speed.json'}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Time naive and batched generation for each group size; print the table, write JSON and markdown."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(GenSpeedArgs, argv, description=__doc__, prog=PROG)

    import gymnasium as gym
    import torch
    from rich.console import Console
    from rich.table import Table

    import memenv  # noqa: F401
    from agents.backbone import load_backbone
    from agents.generation import generate
    from agents.prompts import render_prompt

    has_gpu = torch.cuda.is_available()
    name = args.model or ("smollm2-135m" if has_gpu else "tiny")
    if not has_gpu:
        from algos.threads import default_threads

        torch.set_num_threads(default_threads(name))
    engine = None
    if "vllm" in args.engines:
        from agents.vllm_engine import VLLMEngine
        from algos.cli import check_rollout_engine

        check_rollout_engine("vllm", name)
    backbone = load_backbone(name)
    model, tokenizer = backbone.model.eval(), backbone.tokenizer
    env = gym.make("MemorySession-v0")
    prompts = []
    for seed in range(args.prompts):
        obs, _ = env.reset(seed=seed)
        try:
            prompts.append(render_prompt(tokenizer, obs, max_prompt_tokens=args.max_prompt_tokens))
        except ValueError as err:  # the budget cannot hold the prompt's fixed part
            from algos.cli import UserError

            raise UserError(f"--max-prompt-tokens {args.max_prompt_tokens}: {err}") from None
    no_stop: list[int] = []  # fixed-length completions, so both paths make the same tokens

    def sync() -> None:
        if has_gpu:
            torch.cuda.synchronize()

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        return best

    generate(model, tokenizer, prompts[:1], max_new_tokens=4, stop_token_ids=no_stop, seed=0)  # warm-up
    rows = []
    for n in args.groups:
        tokens = n * len(prompts) * args.new_tokens

        def naive() -> None:
            for prompt in prompts:
                for i in range(n):
                    generate(model, tokenizer, [prompt], max_new_tokens=args.new_tokens, stop_token_ids=no_stop, seed=i)

        def batched() -> None:
            generate(model, tokenizer, prompts, num_samples=n, max_new_tokens=args.new_tokens,
                     stop_token_ids=no_stop, seed=0)

        t_naive, t_batched = timed(naive), timed(batched)
        rows.append({"group": n, "prompts": len(prompts), "tokens": tokens, "naive_tok_s": tokens / t_naive,
                     "batched_tok_s": tokens / t_batched, "speedup": t_naive / t_batched})
    if "vllm" in args.engines:
        from agents.generation import encode_prompts

        # the process's shared engine: in process (vLLM's CPU setting here) a second engine that is
        # dropped again tears down the parallel state the first one runs on
        engine = VLLMEngine.shared(name, max_model_len=args.max_prompt_tokens + args.new_tokens + 64)
        encoded = encode_prompts(tokenizer, prompts)
        engine.sample_ids(encoded[:1], num_samples=1, max_new_tokens=4, temperature=1.0)  # warm-up
        for row in rows:
            t_vllm = timed(lambda: engine.sample_ids(encoded, num_samples=row["group"], max_new_tokens=args.new_tokens,
                                                     temperature=1.0, ignore_eos=True))
            row["vllm_tok_s"] = row["tokens"] / t_vllm
            row["vllm_ratio"] = row["vllm_tok_s"] / row["batched_tok_s"]
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name(0) if has_gpu else \
        f"CPU ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"
    table = Table(title=f"{name} on {device}: {args.new_tokens} new tokens per sample")
    columns = ["group n", "prompts", "naive tok/s", "batched + shared prompt tok/s", "speed-up"]
    for col in columns + (["vLLM tok/s", "vLLM / batched"] if engine is not None else []):
        table.add_column(col, justify="right")
    for r in rows:
        extra = [f"{r['vllm_tok_s']:.0f}", f"{r['vllm_ratio']:.2f}x"] if engine is not None else []
        table.add_row(str(r["group"]), str(r["prompts"]), f"{r['naive_tok_s']:.0f}", f"{r['batched_tok_s']:.0f}",
                      f"{r['speedup']:.1f}x", *extra)
    Console().print(table)
    from benchmarks.provenance import environment

    result = {"model": name, "device": device, "environment": environment(),
              "command": " ".join([PROG, *argv]),
              "prompt_tokens": [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts], "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
