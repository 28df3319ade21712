"""Supervised warm start from demonstrations (the Memory-SFT baseline of Memory-R2).

Demonstrations are (observation, action) pairs: by default the synthetic world's gold
facts (extract turns) and gold operations (manage turns), recorded by running the oracle
agent; any agent's trajectories work the same (``record_demonstrations(agent=...)``).
Training is next-token cross-entropy on the action tokens only, through the same role
prompts the RL policy uses, into the same LoRA adapter.

A *teacher* can be any registered agent (``--teacher``), and the demonstrations can come
from LoCoMo's real dialogue (``--source locomo``): e.g. the rule-based ``add-only`` memory's
facts and ADDs on the Memory-R2 training conversations, beside the oracle's gold facts and
operations on synthetic worlds (``--synthetic-worlds``), so that RL on real dialogue starts
about where the rule-based memory stands:

    python -m algos.sft --env MemorySession-v0 --model tiny --steps 200 --output-dir runs/sft
    python -m algos.sft --teacher add-only --source locomo --data-path locomo10.json \
        --split memory-r2 --part train --synthetic-worlds 8 --model smollm2-135m --output-dir runs/sft_locomo
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from agents.backbone import mixed_precision
from algos.cli import check_agent_name, check_json_object, parse_args, progress_bar, run_main
from memenv.constants import TRAIN_SEED_OFFSET

PROG = "python -m algos.sft"

COMPACT = (",", ":")
SCHEDULES = ("constant", "linear")


def _fact_index_ops(obs: str, action: str) -> str:
    """Rewrite ADD/UPDATE texts that repeat an extracted fact as ``{"fact": i}`` references."""
    facts = [f["text"] for f in json.loads(obs).get("facts", [])]
    ops = json.loads(action)["operations"]
    out = []
    for op in ops:
        op = {k: v for k, v in op.items() if k != "speaker"}
        if op.get("op") in ("ADD", "UPDATE") and op.get("text") in facts:
            op["fact"] = facts.index(op.pop("text"))
        out.append(op)
    return json.dumps({"operations": out}, separators=COMPACT)


def record_demonstrations(
    make_env: Callable[[], Any],
    conversations: Sequence[Any],
    *,
    agent: Any | None = None,
    roles: Sequence[str] = ("extract", "manage"),
    fact_indices: bool = True,
) -> list[tuple[str, str]]:
    """(observation, action) pairs of ``agent`` (default: the oracle) on the given conversations.

    With ``fact_indices``, manage actions refer to extracted facts by index (shorter targets).
    """
    from memenv.play import play

    if agent is None:
        from memenv.scripted import OracleAgent

        agent = OracleAgent()
    by_episode: list[list[tuple[str, str]]] = [[] for _ in conversations]

    def record(turn) -> None:
        if turn.role not in roles:
            return
        target = turn.action
        if turn.role == "manage" and fact_indices:
            target = _fact_index_ops(turn.obs, turn.action)
        elif turn.role == "extract":
            target = json.dumps({"facts": [f["text"] if isinstance(f, dict) else f
                                           for f in json.loads(turn.action)["facts"]]}, separators=(", ", ": "))
        by_episode[turn.episode].append((turn.obs, target))

    play(make_env, conversations, agent, on_turn=record)
    return [pair for pairs in by_episode for pair in pairs]


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], *, max_prompt_tokens: int,
                 prompt_style: str = "default", distill: bool = True) -> list[tuple[list[int], list[int]]]:
    """Token ids of (role prompt, target + end-of-turn) for each pair."""
    from agents.prompts import render_prompt

    eos = tokenizer.eos_token or ""
    out = []
    for obs, target in pairs:
        prompt = render_prompt(tokenizer, obs, max_prompt_tokens=max_prompt_tokens, style=prompt_style, distill=distill)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target + eos, add_special_tokens=False)["input_ids"]
        out.append((p, t))
    return out




def sft_loss(model, batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    """Mean cross-entropy of the target tokens given their prompts (prompt tokens are not scored)."""
    device = next(model.parameters()).device
    length = max(len(p) + len(t) for p, t in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for i, (p, t) in enumerate(batch):
        seq = p + t
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p): len(seq)] = torch.tensor(t)
        mask[i, : len(seq)] = 1
    with mixed_precision(model):
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
    return out.loss


def train_sft(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    max_prompt_tokens: int = 2048,
    seed: int = 0,
    prompt_style: str = "default",
    distill: bool = True,
    adapter: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
    schedule: str = "constant",
    micro_batch_size: int | None = None,
) -> list[float]:
    """Train the model's trainable (LoRA) parameters on the pairs; returns the loss per step.

    ``schedule``: ``"constant"`` (default) keeps the learning rate; ``"linear"`` decays it to
    0 over the steps (as TRL's SFTTrainer), so that the adapter does not end on whichever
    noisy step came last: at a high rate the last steps decide a tiny model's warm start.

    ``micro_batch_size``: each step's batch is run through the model this many
    demonstrations at a time, gradients accumulated and each micro-batch's loss weighted by
    its share of the batch's target tokens, so the step is the same token-mean loss as one
    pass over the whole batch with a fraction of its activation memory (a real model's
    full-vocabulary logits over long targets take gigabytes per sequence). None: one pass.

    Prompts are rendered as the policy renders them (``prompt_style``, ``distill`` for answer
    prompts); ``adapter`` names the adapter to train when the model holds several.
    """
    from agents.lora import use_adapter

    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    if not pairs:
        raise ValueError("no demonstrations to train on")
    encoded = encode_pairs(tokenizer, pairs, max_prompt_tokens=max_prompt_tokens, prompt_style=prompt_style,
                           distill=distill)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (add a LoRA adapter first)")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    decay = (lambda step: 1.0 - step / max(steps, 1)) if schedule == "linear" else (lambda step: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    rng = np.random.default_rng(seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    losses = []
    with use_adapter(model, adapter) if adapter is not None else contextlib.nullcontext():
        for step in range(steps):
            idx = rng.choice(len(encoded), size=min(batch_size, len(encoded)), replace=False)
            batch = [encoded[i] for i in idx]
            optimizer.zero_grad(set_to_none=True)
            if micro_batch_size is None or micro_batch_size >= len(batch):
                loss = sft_loss(model, batch, pad_id)
                loss.backward()
            else:
                total = sum(len(t) for _, t in batch)
                loss = torch.zeros(())
                for start in range(0, len(batch), micro_batch_size):
                    part = batch[start:start + micro_batch_size]
                    share = sft_loss(model, part, pad_id) * (sum(len(t) for _, t in part) / total)
                    share.backward()
                    loss = loss + share.detach()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if not np.isfinite(losses[-1]):
                from algos.cli import UserError

                raise UserError(f"SFT step {step + 1}: the loss is {losses[-1]}; stopping (try a smaller learning rate)")
            if on_step is not None:
                on_step(step, losses[-1])
    return losses


@contextlib.contextmanager
def sft_progress(steps: int, description: str = "SFT", *, console=None,
                 enabled: bool = True) -> Iterator[Callable[[int, float], None]]:
    """A rich progress bar for :func:`train_sft`; yields its ``on_step`` callback (shows the loss)."""
    progress = progress_bar("loss", console=console, enabled=enabled)
    with progress:
        task = progress.add_task(description, total=steps, loss="")

        def on_step(step: int, loss: float) -> None:
            progress.update(task, completed=step + 1, loss=f"loss {loss:.3f}")

        yield on_step


SOURCES = ("synthetic", "locomo")


@dataclass
class SFTArgs:
    env: str = field(default="MemorySession-v0", metadata={"help": "MemorySession environment id whose gold annotations give the demonstrations"})
    teacher: str = field(default="oracle", metadata={"help": "the agent whose extract/manage actions are imitated (a registry name, e.g. 'oracle' -- synthetic worlds' gold facts and operations -- or 'add-only', 'rag-turns', 'llm:...')"})
    source: str = field(default="synthetic", metadata={"help": "where the teacher plays: 'synthetic' worlds or 'locomo' conversations (needs --data-path)", "choices": list(SOURCES)})
    data_path: str | None = field(default=None, metadata={"help": "LoCoMo file (locomo10.json) for --source locomo"})
    split: str | None = field(default="memory-r2", metadata={"help": "--source locomo: the split preset whose --part is played"})
    part: str | None = field(default="train", metadata={"help": "--source locomo: the part of --split (train, val, test)"})
    synthetic_worlds: int = field(default=0, metadata={"help": "--source locomo: also imitate the oracle on this many synthetic training worlds (0: none)"})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON object of further environment options, e.g. '{\"session_chunks\": 4}'"})
    num_sessions: int | None = field(default=None, metadata={"help": "sessions per conversation: a synthetic world's length, or LoCoMo's first N sessions (none: the env's default; all of LoCoMo's)"})
    model: str = field(default="tiny", metadata={"help": "backbone: 'tiny', 'smollm2-135m', a HF directory or a .gguf file"})
    output_dir: str | None = field(default=None, metadata={"help": "a new or empty directory for the adapter (PEFT format) and losses (none: runs/sft__<seed>__<time>)"})
    num_worlds: int = field(default=32, metadata={"help": "training worlds (seeds from the training range)"})
    roles: tuple[str, ...] = field(default=("extract", "manage"), metadata={"help": "roles to imitate"})
    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "demonstrations per step"})
    micro_batch_size: int | None = field(default=None, metadata={"help": "demonstrations per forward/backward pass, gradients accumulated over the step's batch (the same loss; less memory; none: the whole batch at once)"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    schedule: str = field(default="constant", metadata={"help": "learning-rate schedule: 'constant' or 'linear' decay to 0", "choices": list(SCHEDULES)})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (none: twice the rank)"})
    lora_lm_head: bool = field(default=False, metadata={"help": "also put LoRA on the output layer (helps tiny models whose tied embeddings are frozen)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "generation budget recorded with the adapter for serving (none: not recorded)"})
    max_prompt_tokens: int = field(default=2048, metadata={"help": "prompts are trimmed by relevance to this many tokens"})
    prompt_style: str = field(default="default", metadata={"help": "role prompts: 'default' or 'compact' (use the trainer's)", "choices": ["default", "compact"]})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def __post_init__(self) -> None:
        from algos.cli import check_env_id, check_range

        bad = set(self.roles) - {"extract", "manage"}
        if bad:
            raise ValueError(f"--roles takes extract and/or manage, got {sorted(bad)}")
        for name in ("steps", "batch_size", "num_worlds", "lora_r", "max_prompt_tokens"):
            check_range(name, getattr(self, name), low=1)
        check_range("num_sessions", self.num_sessions, low=1, allow_none=True)
        check_range("micro_batch_size", self.micro_batch_size, low=1, allow_none=True)
        check_range("lora_alpha", self.lora_alpha, low=0, low_open=True, allow_none=True)
        check_range("max_new_tokens", self.max_new_tokens, low=1, allow_none=True)
        check_range("learning_rate", self.learning_rate, low=0, low_open=True)
        check_range("seed", self.seed, low=0)
        check_range("synthetic_worlds", self.synthetic_worlds, low=0)
        check_env_id(self.env)
        check_agent_name("--teacher", self.teacher)
        check_json_object("--env-kwargs", self.env_kwargs)
        if self.source not in SOURCES:
            raise ValueError(f"--source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "locomo" and not self.data_path:
            raise ValueError("--source locomo needs --data-path (the LoCoMo json file)")
        if self.source == "synthetic" and self.synthetic_worlds:
            raise ValueError("--synthetic-worlds adds oracle worlds to --source locomo; with synthetic worlds use --num-worlds")


def demonstration_env(args: SFTArgs, *, source: str | None = None) -> Callable[[], Any]:
    """A factory of the demonstrations' environment (``source``: ``args.source`` unless given);
    :class:`algos.run.UserError` when the id is not a MemorySession environment (its
    observations name no role) or the data cannot be loaded."""
    import gymnasium as gym

    import memenv  # noqa: F401
    from algos.cli import UserError

    source = source or args.source
    kwargs = json.loads(args.env_kwargs)
    if args.num_sessions is not None:
        kwargs["num_sessions"] = args.num_sessions
    if source == "locomo":
        kwargs.update(source="locomo", data_path=args.data_path, split=args.split, part=args.part)

    def make():
        return gym.make(args.env, disable_env_checker=True, **kwargs)

    try:
        _, info = make().reset(seed=0)
    except FileNotFoundError as err:
        raise UserError(f"--data-path: {err}") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"--env {args.env}: {err}".splitlines()[0]) from None
    if not isinstance(info, dict) or info.get("role") not in ("extract", "manage", "answer"):
        raise UserError(f"--env {args.env} is not a MemorySession environment (its reset() info names no role); "
                        "SFT imitates the gold actions of MemorySession worlds")
    return make


def demonstrations(args: SFTArgs) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """The (observation, action) pairs to imitate and how many came from each source.

    ``--source synthetic``: the teacher on ``--num-worlds`` training worlds. ``--source
    locomo``: the teacher on every conversation of ``--split``/``--part``, then the oracle
    on ``--synthetic-worlds`` training worlds. A teacher that writes nothing to imitate
    (e.g. a manager-only agent) is a one-line :class:`~algos.cli.UserError`.
    """
    from agents.registry import make_agent
    from algos.cli import UserError

    teacher = make_agent(args.teacher)
    make = demonstration_env(args)
    if args.source == "locomo":
        keys = list(make().unwrapped.source.keys())
    else:
        keys = [TRAIN_SEED_OFFSET + i for i in range(args.num_worlds)]
    pairs = record_demonstrations(make, keys, agent=teacher, roles=args.roles)
    counts = {f"{args.teacher} on {args.source}": len(pairs)}
    if args.source == "locomo" and args.synthetic_worlds:
        synthetic = record_demonstrations(demonstration_env(args, source="synthetic"),
                                          [TRAIN_SEED_OFFSET + i for i in range(args.synthetic_worlds)],
                                          roles=args.roles)
        counts["oracle on synthetic"] = len(synthetic)
        pairs = pairs + synthetic
    if not pairs:
        raise UserError(f"--teacher {args.teacher} gave no {'/'.join(args.roles)} actions to imitate")
    return pairs, counts


def main(argv: Sequence[str] | None = None, *, progress: bool = True) -> Path:
    """Record oracle demonstrations, train the adapter on them, save it; returns the adapter path."""
    from agents.backbone import load_backbone
    from agents.lora import LLAMA_TARGET_MODULES, POLICY_ADAPTER, add_lora
    from algos.run import RunDir, export_adapters, run_name, seed_everything

    args = parse_args(SFTArgs, argv, description=__doc__, prog=PROG)
    from algos.cli import check_model_flags

    check_model_flags(args.model)  # before anything is written
    pairs, counts = demonstrations(args)
    run_dir = RunDir(args.output_dir or f"runs/{run_name('sft', args.seed)}", resume=False)
    out = run_dir.path
    run_dir.write_json("args.json", dataclasses.asdict(args))
    seed_everything(args.seed)
    from algos.threads import default_threads

    torch.set_num_threads(default_threads(args.model))
    backbone = load_backbone(args.model)
    targets = [*LLAMA_TARGET_MODULES, "lm_head"] if args.lora_lm_head else None
    model = add_lora(backbone, r=args.lora_r, alpha=args.lora_alpha or 2 * args.lora_r, target_modules=targets)
    model.eval()
    start = time.perf_counter()
    from algos.cli import UserError

    try:
        encode_pairs(backbone.tokenizer, pairs, max_prompt_tokens=args.max_prompt_tokens, prompt_style=args.prompt_style)
    except ValueError as err:
        raise UserError(f"--max-prompt-tokens {args.max_prompt_tokens}: {err}".splitlines()[0]) from None
    with sft_progress(args.steps, enabled=progress) as on_step:
        losses = train_sft(model, backbone.tokenizer, pairs, steps=args.steps, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, max_prompt_tokens=args.max_prompt_tokens,
                           seed=args.seed, prompt_style=args.prompt_style, on_step=on_step,
                           schedule=args.schedule, micro_batch_size=args.micro_batch_size)
    adapter = export_adapters(model, out / "adapter", (POLICY_ADAPTER,), nested=False, prompt_style=args.prompt_style,
                              max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_new_tokens)
    run_dir.write_json("sft_losses.json", {"losses": losses, "demonstrations": len(pairs), "by_source": counts,
                                           "seconds": time.perf_counter() - start})
    shown = ", ".join(f"{n} from {where}" for where, n in counts.items())
    print(f"{len(pairs)} demonstrations ({shown}), loss {losses[0]:.3f} -> {losses[-1]:.3f}; adapter in {adapter}")
    run_dir.close()
    return adapter


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
