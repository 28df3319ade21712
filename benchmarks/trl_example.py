"""TRL on MemorySession-v0: an SFTTrainer warm start, then GRPOTrainer, scored on held-out worlds.

The README's "Quickstart: training with TRL" script at a larger size: the oracle's demonstrations warm
up a LoRA adapter (``SFTTrainer``), then ``GRPOTrainer`` trains the memory manager on
forked manage states (``algos.trl.manage_reward``), or whole sessions with
``--sessions`` (``algos.trl.SessionRollout``). Before training, after SFT and after GRPO
it prints the greedy manager's mean manage reward and valid-action rate on held-out
worlds (seeds below 1,000,000, never trained on)::

    python -m benchmarks.trl_example                       # tiny model on a CPU
    python -m benchmarks.trl_example --model smollm2-135m --bf16 --grpo-steps 200

Needs the ``[trl]`` extra (``pip install -e ".[trl]"``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from algos.cli import parse_args, run_main

PROG = "python -m benchmarks.trl_example"


@dataclass
class TRLExampleArgs:
    model: str = field(default="tiny", metadata={"help": "backbone: 'tiny', 'smollm2-135m', a HF directory or a .gguf file"})
    output_dir: str = field(default="runs/trl_example", metadata={"help": "TRL's output directory (sft/ and grpo/ under it); scores.json goes there too"})
    num_sessions: int = field(default=4, metadata={"help": "sessions per synthetic world"})
    train_worlds: int = field(default=8, metadata={"help": "training worlds (seeds from 1,000,000)"})
    eval_worlds: int = field(default=8, metadata={"help": "held-out worlds (seeds 0..N-1)"})
    sft_steps: int = field(default=200, metadata={"help": "SFTTrainer steps on the oracle's manage demonstrations"})
    sft_learning_rate: float = field(default=1e-2, metadata={"help": "SFT learning rate"})
    grpo_steps: int = field(default=24, metadata={"help": "GRPOTrainer steps"})
    grpo_learning_rate: float = field(default=5e-4, metadata={"help": "GRPO learning rate"})
    num_generations: int = field(default=8, metadata={"help": "completions per prompt (a TRL group: one forked snapshot)"})
    max_completion_length: int = field(default=128, metadata={"help": "generated tokens per turn"})
    max_prompt_tokens: int = field(default=512, metadata={"help": "prompts are trimmed by relevance to this many tokens"})
    prompt_style: str | None = field(default=None, metadata={"help": "'default' or 'compact' (none: compact for tiny, else default)"})
    sessions: bool = field(default=False, metadata={"help": "train whole sessions (extract, then manage) with SessionRollout"})
    bf16: bool = field(default=False, metadata={"help": "bf16 training (a GPU)"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def __post_init__(self) -> None:
        from algos.cli import check_range

        for name in ("num_sessions", "train_worlds", "eval_worlds", "num_generations", "max_completion_length",
                     "max_prompt_tokens"):
            check_range(name, getattr(self, name), low=1)
        for name in ("sft_steps", "grpo_steps", "seed"):
            check_range(name, getattr(self, name), low=0)
        if self.prompt_style not in (None, "default", "compact"):
            raise ValueError(f"--prompt-style must be default or compact, got {self.prompt_style}")


def evaluate_manager(model, tokenizer, data, store, max_new_tokens: int) -> dict[str, float]:
    """Greedy manage actions on every row of ``data``: mean manage reward and valid-action rate."""
    import torch

    from agents.generation import generate
    from algos.trl import ManageReward, ValidAction

    was_training = model.training
    model.eval()
    texts = []
    with torch.no_grad():
        for start in range(0, len(data), 16):
            rows = data[start: start + 16]
            texts += generate(model, tokenizer, list(rows["prompt"]), max_new_tokens=max_new_tokens,
                              temperature=0.0).texts
    model.train(was_training)
    states = list(data["state"])
    rewards = ManageReward(store=store)(texts, states)
    valid = ValidAction(store=store)(texts, states)
    return {"manage_reward": sum(rewards) / len(rewards), "valid_action": sum(valid) / len(valid)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Warm start, train, and print the held-out scores of each stage; returns them."""
    args = parse_args(TRLExampleArgs, argv, description=__doc__, prog=PROG)
    from algos.cli import check_model_flags
    from algos.trl import require

    check_model_flags(args.model)  # before TRL writes into --output-dir

    trl = require("trl")
    import torch
    from peft import LoraConfig

    from agents.backbone import load_backbone
    from algos.threads import default_threads
    from algos.trl import (SessionRollout, SnapshotStore, demonstration_dataset, manage_reward, role_dataset,
                           session_dataset, session_reward, valid_action)

    torch.set_num_threads(default_threads(args.model))
    backbone = load_backbone(args.model)
    tokenizer = backbone.tokenizer
    style = args.prompt_style or ("compact" if args.model == "tiny" else "default")
    data = dict(prompt_style=style, max_prompt_tokens=args.max_prompt_tokens,
                env_kwargs={"num_sessions": args.num_sessions})
    held_out_store = SnapshotStore()
    held_out = role_dataset("manage", tokenizer, worlds=list(range(args.eval_worlds)), store=held_out_store, **data)
    common = dict(bf16=args.bf16, report_to="none", save_strategy="no", logging_steps=max(1, args.grpo_steps // 8),
                  seed=args.seed, gradient_checkpointing=False)
    start = time.perf_counter()
    scores = {}
    model = backbone.model
    peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    if args.sft_steps:
        sft = trl.SFTTrainer(model, trl.SFTConfig(f"{args.output_dir}/sft", max_steps=args.sft_steps,
                                                  learning_rate=args.sft_learning_rate, **common),
                             train_dataset=demonstration_dataset(tokenizer, worlds=args.train_worlds,
                                                                 roles=["manage"], **data),
                             processing_class=tokenizer, peft_config=peft_config)
        scores["base"] = evaluate_manager(sft.model, tokenizer, held_out, held_out_store, args.max_completion_length)
        sft.train()
        model, peft_config = sft.model, None
        scores["sft"] = evaluate_manager(model, tokenizer, held_out, held_out_store, args.max_completion_length)
    config = trl.GRPOConfig(f"{args.output_dir}/grpo", max_steps=args.grpo_steps, learning_rate=args.grpo_learning_rate,
                            num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                            per_device_train_batch_size=args.num_generations, reward_weights=[1.0, 0.0], **common)
    if args.sessions:
        trainer = trl.GRPOTrainer(model, [session_reward, valid_action], config, processing_class=tokenizer,
                                  train_dataset=session_dataset(tokenizer, worlds=args.train_worlds, **data),
                                  rollout_func=SessionRollout(prompt_style=style,
                                                              max_prompt_tokens=args.max_prompt_tokens),
                                  peft_config=peft_config)
    else:
        trainer = trl.GRPOTrainer(model, [manage_reward, valid_action], config, processing_class=tokenizer,
                                  train_dataset=role_dataset("manage", tokenizer, worlds=args.train_worlds, **data),
                                  peft_config=peft_config)
    if args.grpo_steps:
        trainer.train()
    scores["grpo"] = evaluate_manager(trainer.model, tokenizer, held_out, held_out_store, args.max_completion_length)
    seconds = time.perf_counter() - start
    print(f"held-out manage states: {len(held_out)} ({args.eval_worlds} worlds, {args.num_sessions} sessions)")
    for stage, s in scores.items():
        print(f"{stage:5s} manage reward {s['manage_reward']:+.3f}  valid actions {s['valid_action']:.2f}")
    logged = [h for h in trainer.state.log_history if "frac_reward_zero_std" in h]
    if logged:
        print(f"GRPO groups with zero reward spread: {sum(h['frac_reward_zero_std'] for h in logged) / len(logged):.2f}")
    print(f"{seconds:.0f} s")
    result = {"args": asdict(args), "scores": scores, "seconds": seconds, "trl": trl.__version__}
    from pathlib import Path

    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "scores.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
