"""LoGo-GRPO: local-global group relative policy optimisation for memory agents.

Implements the trainer of Memory-R2 (arXiv 2605.21768, section 3): the fact extractor and
the memory manager share one LoRA adapter (told apart by role prompts) and one reward.

* Global groups: ``group_size`` rollouts of each training conversation over the whole
  horizon; per-session rewards (Memory-R2's credit) normalised across the group.
* Local groups: before a session, with probability ``inner_fraction``, one global rollout
  is forked (``env.fork()``) and the session rerolled ``inner_n`` times from the identical
  memory state; each reroll is scored at once on the questions due so far and normalised
  within its reroll set. ``--inner-fraction 0`` is plain trajectory-level GRPO.
* One PPO-clip objective over global and local samples, k3 KL to the reference (the base
  model with the adapter disabled), entropy bonus, gradient clipping.
* Curriculum: stages of 8, 16 and 32 sessions, each warm-started from the previous one.

    python -m algos.logo_grpo --env MemorySession-v0                 # GPU: SmolLM2; CPU: short demo
    torchrun --nproc-per-node 2 -m algos.logo_grpo --env MemorySession-v0   # data parallel

Outputs in ``--output-dir``: ``metrics.jsonl`` (namespaced metrics per update),
``checkpoints/`` (adapter, optimizer, RNG states; atomic), ``adapter/`` (final PEFT adapter),
``args.json``, and TensorBoard events when tensorboard is installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from algos.cli import TrainerArgs, parse_args, progress_bar, with_defaults
from memenv.constants import TRAIN_SEED_OFFSET  # training worlds use seeds >= it, evaluation below

# The CPU demo: the tiny byte-level model, compact prompts, short worlds, the oracle playing
# the extract turns, an SFT warm start, then LoGo-GRPO on the manage turns.
CPU_DEMO = dict(model="tiny", stages=(2, 4), updates_per_stage=4, group_size=8, conversations_per_update=2,
                num_train_worlds=2, inner_n=4, max_new_tokens=128, max_prompt_tokens=256, learning_rate=1e-3,
                kl_coef=0.0, sft_warmup_steps=100, sft_learning_rate=1e-2, answerer="scripted", extractor="oracle",
                prompt_style="compact", lora_lm_head=True, checkpoint_every=4, micro_batch_size=16)


@dataclass
class Args(TrainerArgs):
    env: str = field(default="MemorySession-v0", metadata={"help": "registered env id (or module:Id) whose env offers fork()"})
    stages: tuple[int, ...] = field(default=(8, 16, 32), metadata={"help": "curriculum: sessions per conversation in each stage"})
    updates_per_stage: int = field(default=50, metadata={"help": "policy updates in each stage (at most, with --token-budget)"})
    token_budget: int | None = field(default=None, metadata={"help": "generated tokens for the whole run, split evenly over the stages: a stage ends once its share is spent or after --updates-per-stage updates, whichever comes first (arms of a comparison get equal budgets)"})
    conversations_per_update: int = field(default=2, metadata={"help": "training conversations per update (across all processes)"})
    group_size: int = field(default=8, metadata={"help": "global rollouts per conversation (official: 16)"})
    inner_fraction: float = field(default=0.5, metadata={"help": "probability that a session gets local rerollouts (0: plain GRPO)"})
    inner_n: int = field(default=4, metadata={"help": "rerollouts per local group"})
    max_local_questions: int = field(default=16, metadata={"help": "questions that score one rerollout"})
    local_weight: float = field(default=1.0, metadata={"help": "weight of local advantages"})
    num_minibatches: int = field(default=4, metadata={"help": "optimizer steps per epoch"})
    kl_coef: float = field(default=0.001, metadata={"help": "k3 KL penalty to the reference policy"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens per extract/manage action"})
    lora_lm_head: bool = field(default=False, metadata={"help": "also put LoRA on the output layer (helps tiny models whose tied embeddings are frozen)"})
    prompt_style: str = field(default="default", metadata={"help": "role prompts: 'default' (full instructions) or 'compact' (for tiny models)", "choices": ["default", "compact"]})
    per_role_adapters: bool = field(default=False, metadata={"help": "one adapter per role instead of the shared one"})
    answerer: str = field(default="auto", metadata={"help": "frozen answer agent: 'base' (backbone, adapter off), 'scripted' (synthetic worlds' reader) or an agent name (auto: base, scripted for the tiny model)"})
    extractor: str | None = field(default=None, metadata={"help": "a fixed agent (e.g. 'oracle') plays the extract turns; they are then not trained"})
    sft_warmup_steps: int = field(default=0, metadata={"help": "supervised steps on oracle demonstrations before RL"})
    sft_learning_rate: float = field(default=1e-4, metadata={"help": "learning rate of the SFT warm start"})
    sft_worlds: int = field(default=16, metadata={"help": "training worlds whose oracle demonstrations the warm start imitates"})
    init_adapter: str | None = field(default=None, metadata={"help": "start from this PEFT adapter (e.g. an SFT result)"})
    checkpoint_every: int = field(default=10, metadata={"help": "checkpoint every K updates (and at the end of each stage and at --stop-after)"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard events when tensorboard is installed"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.inner_fraction <= 1.0:
            raise ValueError(f"--inner-fraction must be in [0, 1], got {self.inner_fraction}")
        if self.inner_fraction > 0 and self.inner_n < 2:
            raise ValueError("--inner-n must be >= 2 when --inner-fraction > 0 (a group of one has no advantage)")
        if self.group_size < 2:
            raise ValueError(f"--group-size must be >= 2 for group-relative advantages, got {self.group_size}")
        if not self.stages or any(s < 1 for s in self.stages):
            raise ValueError(f"--stages needs positive session counts, got {self.stages}")
        for name in ("updates_per_stage", "conversations_per_update", "num_minibatches", "max_new_tokens",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.init_adapter and self.per_role_adapters:
            raise ValueError("--init-adapter loads one shared adapter; it cannot be combined with --per-role-adapters")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"--token-budget must be >= 1, got {self.token_budget}")
        if self.local_weight < 0:
            raise ValueError(f"--local-weight must be >= 0, got {self.local_weight}")


def apply_demo_defaults(args: Args, argv: Sequence[str], has_gpu: bool) -> Args:
    """On a CPU without --model, use the short tiny-model demo (flags given explicitly win)."""
    demo = args.demo if args.demo is not None else (not has_gpu and args.model is None)
    return with_defaults(dataclasses.replace(args, demo=True), argv, CPU_DEMO) if demo else args


# ---------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def all_reduce_mean(tensors: Sequence[torch.Tensor], world: int) -> None:
    if world > 1:
        for t in tensors:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
            t.div_(world)


# ---------------------------------------------------------------------------- update
def collate(samples, pad_id: int, device) -> dict[str, torch.Tensor]:
    """Left-padded prompts and right-padded completions of a list of samples."""
    n = len(samples)
    p_len = max(len(s.prompt_ids) for s in samples)
    c_len = max(len(s.completion_ids) for s in samples)
    prompt_ids = torch.full((n, p_len), pad_id, dtype=torch.long)  # (N, P)
    prompt_mask = torch.zeros((n, p_len), dtype=torch.long)
    completion_ids = torch.full((n, c_len), pad_id, dtype=torch.long)  # (N, T)
    completion_mask = torch.zeros((n, c_len), dtype=torch.float32)
    old_logprobs = torch.zeros((n, c_len), dtype=torch.float32)
    for i, s in enumerate(samples):
        prompt_ids[i, p_len - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
        prompt_mask[i, p_len - len(s.prompt_ids):] = 1
        completion_ids[i, : len(s.completion_ids)] = torch.tensor(s.completion_ids)
        completion_mask[i, : len(s.completion_ids)] = 1
        old_logprobs[i, : len(s.logprobs)] = torch.tensor(s.logprobs)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)  # (N,)
    out = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
               completion_mask=completion_mask, old_logprobs=old_logprobs, advantages=advantages)
    return {k: v.to(device) for k, v in out.items()}


def ppo_update(model, samples, optimizer, args: Args, *, pad_id: int, rng: np.random.Generator, world: int) -> dict[str, float]:
    """PPO epochs over the batch: clipped surrogate + k3 KL + entropy, token-level mean."""
    from agents.generation import reference_logprobs, sequence_logprobs
    from agents.lora import role_adapter, use_adapter
    from algos.losses import logo_grpo_loss

    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    stats: dict[str, list[float]] = {}
    # Reference log-probs once per batch: the base model with adapters disabled.
    ref: list[torch.Tensor] = []
    for i in range(0, len(samples), args.micro_batch_size):
        b = collate(samples[i: i + args.micro_batch_size], pad_id, device)
        ref.append(reference_logprobs(model, b["prompt_ids"], b["prompt_mask"], b["completion_ids"], b["completion_mask"],
                                      temperature=args.temperature).cpu())
    for s, r in zip(samples, (row for block in ref for row in block)):
        s.ref_logprobs = r[: len(s.completion_ids)].tolist()
    for _ in range(args.ppo_epochs):
        order = rng.permutation(len(samples))
        for chunk in np.array_split(order, args.num_minibatches):
            if len(chunk) == 0 and world == 1:
                continue  # fewer samples than minibatches: an empty step would still move AdamW's weights
            optimizer.zero_grad(set_to_none=True)
            minibatch = [samples[i] for i in chunk]
            total_tokens = max(sum(len(s.completion_ids) for s in minibatch), 1)
            for i in range(0, len(minibatch), args.micro_batch_size):
                micro = minibatch[i: i + args.micro_batch_size]
                by_adapter: dict[str | None, list] = {}
                for s in micro:
                    by_adapter.setdefault(role_adapter(model, s.role), []).append(s)
                for adapter, group in by_adapter.items():
                    b = collate(group, pad_id, device)
                    ref_lp = torch.zeros_like(b["old_logprobs"])
                    for j, s in enumerate(group):
                        ref_lp[j, : len(s.ref_logprobs)] = torch.tensor(s.ref_logprobs)
                    with use_adapter(model, adapter):
                        logp, entropy = sequence_logprobs(model, b["prompt_ids"], b["prompt_mask"], b["completion_ids"],
                                                          b["completion_mask"], temperature=args.temperature,
                                                          return_entropy=True)
                    loss, st = logo_grpo_loss(logp, b["old_logprobs"], ref_lp.to(device), b["advantages"],
                                              b["completion_mask"], clip_eps=args.clip_eps, kl_coef=args.kl_coef,
                                              entropy_coef=args.entropy_coef, entropy=entropy, agg="token")
                    tokens = float(b["completion_mask"].sum())
                    (loss * tokens / total_tokens).backward()
                    for k, v in st.items():
                        stats.setdefault(k, []).append(float(v))
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            for p, g in zip(params, grads):
                p.grad = g
            all_reduce_mean(grads, world)
            norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            stats.setdefault("grad_norm", []).append(float(norm))
            optimizer.step()
    return {f"losses/{k}": float(np.mean(v)) for k, v in stats.items()}


# ---------------------------------------------------------------------------- checkpoints
def _rng_state(np_rng: np.random.Generator, torch_gen: torch.Generator) -> dict[str, Any]:
    return {"python": random.getstate(), "numpy_global": np.random.get_state(), "torch": torch.get_rng_state(),
            "np_rng": np_rng.bit_generator.state, "sampling": torch_gen.get_state()}


def save_checkpoint(out: Path, model, optimizer, state: dict, np_rng, torch_gen, adapter_names: Sequence[str],
                    keep: int = 3, modules: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write a checkpoint directory atomically and point ``checkpoints/latest`` at it.

    ``modules``: further trained modules (e.g. a value head) saved by name with their state dicts.
    """
    from agents.lora import save_adapter

    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"update-{state['update']:06d}"
    tmp = root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for adapter in adapter_names:
        save_adapter(model, tmp / "adapters" / adapter, adapter)
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state(np_rng, torch_gen), "state": state,
                "modules": {name: m.state_dict() for name, m in (modules or {}).items()}},
               tmp / "trainer_state.pt")
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / ".latest.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / "latest")
    older = sorted((p for p in root.glob("update-*") if p != final), key=lambda p: p.name)
    for old in older[: max(len(older) - (keep - 1), 0)] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(run_dir: Path, model, optimizer, np_rng, torch_gen, adapter_names: Sequence[str],
                    modules: dict[str, torch.nn.Module] | None = None) -> dict:
    """Restore adapters, optimizer, RNG states (and ``modules``) from ``run_dir``'s latest checkpoint."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    root = run_dir / "checkpoints"
    latest = root / "latest"
    if not latest.is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no checkpoints/latest (no checkpoint was written there)")
    ckpt = root / latest.read_text().strip()
    for adapter in adapter_names:
        weights = load_file(str(ckpt / "adapters" / adapter / "adapter_model.safetensors"))
        set_peft_model_state_dict(model, weights, adapter_name=adapter)
    blob = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    saved_modules = blob.get("modules", {})
    missing = sorted(set(modules or {}) - set(saved_modules))
    if missing:
        raise ValueError(f"--resume {run_dir}: checkpoint {ckpt.name} holds no {missing} (saved: {sorted(saved_modules)}); "
                         "was it written with other settings?")
    for name, module in (modules or {}).items():
        module.load_state_dict(saved_modules[name])
    optimizer.load_state_dict(blob["optimizer"])
    rng = blob["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy_global"])
    torch.set_rng_state(rng["torch"])
    np_rng.bit_generator.state = rng["np_rng"]
    torch_gen.set_state(rng["sampling"])
    return blob["state"]


def prepare_output_dir(out: Path, resume: str | None) -> None:
    """Create ``out``; a fresh run (no ``--resume``) refuses a directory where an earlier run
    left checkpoints or metrics, since it would prune and interleave them (nothing is deleted)."""
    if resume is None:
        leftovers = [p.name for p in (out / "checkpoints", out / "metrics.jsonl") if p.exists()]
        if leftovers:
            raise SystemExit(f"--output-dir {out} already holds {' and '.join(leftovers)} of an earlier run; "
                             f"continue it with --resume {out}, or choose another directory (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)


def adapter_digest(model) -> str:
    """A hash of every trainable parameter (ranks of a data-parallel run must agree)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- main
class MetricsLog:
    """JSON lines (and TensorBoard) of namespaced metrics; only rank 0 writes."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                self.tb = None

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after update ``step`` (a resumed run writes them again); how many."""
        if not self.enabled or not self.path.is_file():
            return 0
        lines = self.path.read_text().splitlines(keepends=True)

        def kept(line: str) -> bool:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return False  # a line torn by a crash mid-write
            return isinstance(row, dict) and row.get("update", 0) <= step

        keep = [line if line.endswith("\n") else line + "\n" for line in lines if line.strip() and kept(line)]
        if len(keep) != len(lines):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(keep))
            os.replace(tmp, self.path)
        return len(lines) - len(keep)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"update": step, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)


def make_env_factory(args: Args, num_sessions: int):
    import gymnasium as gym

    import memenv  # noqa: F401

    kwargs = json.loads(args.env_kwargs)
    probe = gym.make(args.env, **kwargs)
    source = getattr(probe.unwrapped, "source", None)
    if source is not None and type(source).__name__ == "SyntheticSource":
        kwargs["num_sessions"] = num_sessions

    def make():
        return gym.make(args.env, disable_env_checker=True, **kwargs)

    env = make()
    if not callable(getattr(env, "fork", None)):
        raise SystemExit(f"--env {args.env}: the environment has no fork(); LoGo-GRPO needs forkable environments "
                         "(wrap it with memenv.ForkableWrapper or implement fork() on the env)")
    return make, env


def training_pool(env, num_worlds: int) -> list[Any]:
    """The source's conversations, or the first ``num_worlds`` synthetic training seeds."""
    source = getattr(env.unwrapped, "source", None)
    keys = source.keys() if source is not None else None
    if keys:
        return list(keys)
    return [TRAIN_SEED_OFFSET + i for i in range(num_worlds)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, argv, description=__doc__, prog="python -m algos.logo_grpo")
    has_gpu = torch.cuda.is_available() and args.device != "cpu"
    args = apply_demo_defaults(args, argv, has_gpu)
    if args.resume and args.output_dir is None:
        args = dataclasses.replace(args, output_dir=args.resume)
    rank, world = dist_info()
    if world > 1:
        backend = "nccl" if has_gpu else "gloo"
        torch.distributed.init_process_group(backend)
        if args.conversations_per_update % world:
            raise SystemExit(f"--conversations-per-update {args.conversations_per_update} must divide by the "
                             f"{world} processes")
    from rich.console import Console

    console = Console(quiet=rank != 0)
    model_name = args.model or ("smollm2-135m" if has_gpu else "tiny")
    if args.demo:
        console.print("[bold]No GPU: running a short CPU demo[/] (tiny random backbone, warm-started on oracle "
                      "demonstrations; pass --model to train a real model).")
    run_name = f"{args.env.replace(':', '_')}__logo_grpo__{args.seed}__{int(time.time())}"
    out = Path(args.output_dir or f"runs/{run_name}")
    prepare_output_dir(out, args.resume)
    if rank == 0:
        (out / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    np_rng = np.random.default_rng(args.seed)

    from agents.backbone import load_backbone
    from agents.lora import add_lora, adapter_names, role_adapter, save_adapter
    from algos import rollouts as R

    device = args.device or ("cuda" if has_gpu else "cpu")
    if device == "cpu" and model_name == "tiny":
        # a tiny model gains nothing from threads, and on a shared CPU they spin against each other
        torch.set_num_threads(1)
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    backbone = load_backbone(model_name, device=device, dtype=args.dtype)
    if args.init_adapter:
        from agents.lora import load_adapter

        model = load_adapter(backbone, args.init_adapter, is_trainable=True)
    else:
        from agents.lora import LLAMA_TARGET_MODULES

        targets = [*LLAMA_TARGET_MODULES, "lm_head"] if args.lora_lm_head else None
        model = add_lora(backbone, r=args.lora_r, alpha=args.lora_alpha, per_role=args.per_role_adapters,
                         target_modules=targets)
    model.eval()  # no dropout: sampling and training log-probs agree
    tokenizer = backbone.tokenizer
    trained_adapters = [a for a in adapter_names(model) if a != "answer"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate)
    sampling_gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + rank)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    answerer_name = args.answerer if args.answerer != "auto" else ("scripted" if model_name == "tiny" else "base")
    if answerer_name == "scripted":
        answerer = R.ScriptedAnswerer()
    elif answerer_name == "base":
        answerer = R.LLMAnswerer(model, tokenizer, max_prompt_tokens=args.max_prompt_tokens, prompt_style=args.prompt_style)
    else:
        from agents.registry import make_agent

        answerer = R.AgentAnswerer(make_agent(answerer_name))
    extractor = None
    if args.extractor:
        from agents.registry import make_agent

        extractor = make_agent(args.extractor)
    policy = R.LLMPolicy(model, tokenizer, max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, generator=sampling_gen,
                         prompt_style=args.prompt_style)

    state = {"update": 0, "stage": 0, "update_in_stage": 0, "tokens": 0.0}
    if args.resume:
        state = load_checkpoint(Path(args.resume), model, optimizer, np_rng, sampling_gen, trained_adapters)
        console.print(f"resumed from {args.resume} at update {state['update']} (stage {state['stage']})")
    elif args.sft_warmup_steps:
        from algos.sft import record_demonstrations, sft_progress, train_sft

        make, env = make_env_factory(args, args.stages[0])
        roles = ("manage",) if extractor is not None else ("extract", "manage")
        pairs = record_demonstrations(make, training_pool(env, args.sft_worlds), roles=roles)
        # One warm start per adapter, on the demonstrations of the roles it serves (the
        # shared layout trains its one adapter on both roles).
        by_adapter: dict[str, list[tuple[str, str]]] = {}
        for obs, target in pairs:
            by_adapter.setdefault(role_adapter(model, json.loads(obs)["role"]), []).append((obs, target))
        for adapter, adapter_pairs in by_adapter.items():
            with sft_progress(args.sft_warmup_steps, f"SFT warm start ({adapter})", console=console,
                              enabled=args.progress and rank == 0) as on_step:
                losses = train_sft(model, tokenizer, adapter_pairs, steps=args.sft_warmup_steps,
                                   learning_rate=args.sft_learning_rate, max_prompt_tokens=args.max_prompt_tokens,
                                   seed=args.seed, prompt_style=args.prompt_style, adapter=adapter, on_step=on_step,
                                   schedule=args.sft_schedule)
            console.print(f"SFT warm start of adapter {adapter!r}: {len(adapter_pairs)} demonstrations, "
                          f"loss {losses[0]:.2f} -> {losses[-1]:.2f}")
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate)

    log = MetricsLog(out, enabled=rank == 0, tensorboard=args.tensorboard)
    serving = dict(prompt_style=args.prompt_style, max_prompt_tokens=args.max_prompt_tokens,
                   max_new_tokens=args.max_new_tokens)  # recorded with the saved adapters
    if args.resume:
        log.truncate_after(state["update"])  # rows past the checkpoint are written again
    total = len(args.stages) * args.updates_per_stage
    progress = progress_bar("live", console=console, enabled=args.progress and rank == 0)
    history = []
    done_here = 0
    start_time = time.perf_counter()
    with progress:
        task = progress.add_task("LoGo-GRPO", total=total, completed=state["update"], live="")
        for stage_idx in range(state["stage"], len(args.stages)):
            horizon = args.stages[stage_idx]
            make, env = make_env_factory(args, horizon)
            pool = training_pool(env, args.num_train_worlds)
            first = state["update_in_stage"] if stage_idx == state["stage"] else 0
            for k in range(first, args.updates_per_stage):
                t0 = time.perf_counter()
                chosen = [pool[int(i)] for i in np_rng.choice(len(pool), size=args.conversations_per_update,
                                                               replace=len(pool) < args.conversations_per_update)]
                mine = chosen[rank::world]
                batch = R.collect(policy, answerer, make, mine, group_size=args.group_size,
                                  inner_fraction=args.inner_fraction, inner_n=args.inner_n,
                                  max_local_questions=args.max_local_questions, local_weight=args.local_weight,
                                  rng=np_rng, extractor=extractor)
                t1 = time.perf_counter()
                losses = ppo_update(model, batch.samples, optimizer, args, pad_id=pad_id, rng=np_rng, world=world)
                t2 = time.perf_counter()
                metrics = {**batch.stats, **losses}
                if world > 1:
                    keys = sorted(metrics)
                    vec = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
                    all_reduce_mean([vec], world)
                    metrics = dict(zip(keys, vec.tolist()))
                tokens = state.get("tokens", 0.0) + metrics.get("charts/generated_tokens", 0.0) * world
                state = {"update": state["update"] + 1, "stage": stage_idx, "update_in_stage": k + 1, "tokens": tokens}
                metrics.update({"charts/stage_sessions": horizon, "charts/rollout_seconds": t1 - t0,
                                "charts/update_seconds": t2 - t1,
                                "charts/updates_per_s": 1.0 / (t2 - t0),
                                "charts/tokens_per_s": metrics.get("charts/generated_tokens", 0.0) * world / (t1 - t0),
                                "charts/elapsed_s": time.perf_counter() - start_time,
                                "charts/cumulative_tokens": tokens})
                log.write(state["update"], metrics)
                history.append(metrics)
                progress.update(task, advance=1, description=f"stage {horizon} sessions",
                                live=f"reward {metrics.get('charts/session_reward', 0):+.3f} "
                                     f"score {metrics.get('charts/episode_score', 0):.3f} "
                                     f"kl {metrics.get('losses/kl', 0):.4f} "
                                     f"{metrics['charts/tokens_per_s']:.0f} tok/s")
                budget_spent = (args.token_budget is not None
                                and tokens >= args.token_budget * (stage_idx + 1) / len(args.stages))
                end_of_stage = k + 1 == args.updates_per_stage or budget_spent
                stopping = args.stop_after is not None and done_here + 1 >= args.stop_after
                if rank == 0 and (state["update"] % args.checkpoint_every == 0 or end_of_stage or stopping):
                    if end_of_stage:
                        state = {**state, "stage": stage_idx + 1, "update_in_stage": 0}
                    save_checkpoint(out, model, optimizer, state, np_rng, sampling_gen, trained_adapters,
                                    keep=args.keep_checkpoints)
                    if end_of_stage:
                        for adapter in trained_adapters:
                            save_adapter(model, out / f"stage-{horizon}" / adapter, adapter, **serving)
                elif end_of_stage:
                    state = {**state, "stage": stage_idx + 1, "update_in_stage": 0}
                done_here += 1
                if (args.stop_after is not None and done_here >= args.stop_after) or budget_spent:
                    break
            if args.stop_after is not None and done_here >= args.stop_after:
                console.print(f"stopping after {done_here} updates (--stop-after); continue with --resume {out}")
                break
    digest = adapter_digest(model)
    (out / f"adapter-digest-rank{rank}.txt").write_text(digest)
    if rank == 0:
        for adapter in trained_adapters:
            save_adapter(model, out / "adapter" if len(trained_adapters) == 1 else out / "adapter" / adapter, adapter,
                         **serving)
        console.print(f"done: {state['update']} updates; adapter in {out / 'adapter'}; metrics in {out / 'metrics.jsonl'}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"output_dir": str(out), "history": history, "digest": digest, "state": state}


if __name__ == "__main__":
    main()
