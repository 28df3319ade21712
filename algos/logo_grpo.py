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
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from algos.cli import TrainerArgs, check_agent_name, check_range, progress_bar, run_main, with_defaults
from memenv.constants import TRAIN_SEED_OFFSET  # training worlds use seeds >= it, evaluation below

PROG = "python -m algos.logo_grpo"
ANSWERER_CHOICES = ("auto", "base", "scripted")

# The CPU demo: the tiny byte-level model, compact prompts, short worlds, the oracle playing
# the extract turns, an SFT warm start, then LoGo-GRPO on the manage turns. The warm start
# decays its rate linearly (a constant 1e-2 left every sampled operation list invalid on
# some float paths) and each update takes one optimizer step (several small minibatches
# undid the warm start): see tests/test_learning.py.
CPU_DEMO = dict(model="tiny", stages=(2, 4), updates_per_stage=8, group_size=8, conversations_per_update=2,
                num_train_worlds=2, inner_n=4, max_new_tokens=128, max_prompt_tokens=256, learning_rate=1e-3,
                kl_coef=0.0, sft_warmup_steps=100, sft_learning_rate=1e-2, sft_schedule="linear", answerer="scripted",
                extractor="oracle", prompt_style="compact", lora_lm_head=True, checkpoint_every=4,
                micro_batch_size=16, ppo_epochs=1, num_minibatches=1)


@dataclass
class Args(TrainerArgs):
    stages: tuple[int, ...] = field(default=(8, 16, 32), metadata={"help": "curriculum: sessions per conversation in each stage"})
    updates_per_stage: int = field(default=50, metadata={"help": "policy updates in each stage (at most, with --token-budget)"})
    token_budget: int | None = field(default=None, metadata={"help": "generated tokens for the whole run, split evenly over the stages: a stage ends once its share is spent or after --updates-per-stage updates, whichever comes first (arms of a comparison get equal budgets)"})
    conversations_per_update: int = field(default=2, metadata={"help": "training conversations per update (across all processes)"})
    group_size: int = field(default=8, metadata={"help": "global rollouts per conversation (official: 16)"})
    inner_fraction: float = field(default=0.5, metadata={"help": "probability that a session gets local rerollouts (0: plain GRPO)"})
    inner_n: int = field(default=4, metadata={"help": "rerollouts per local group"})
    max_local_questions: int = field(default=16, metadata={"help": "questions that score one rerollout"})
    local_weight: float = field(default=1.0, metadata={"help": "weight of local advantages"})
    max_new_tokens: int = field(default=256, metadata={"help": "tokens per extract/manage action"})
    per_role_adapters: bool = field(default=False, metadata={"help": "one adapter per role instead of the shared one"})
    answerer: str = field(default="auto", metadata={"help": "frozen answer agent: 'base' (backbone, adapter off), 'scripted' (synthetic worlds' reader) or an agent name (auto: base, scripted for the tiny model)"})
    extractor: str | None = field(default=None, metadata={"help": "a fixed agent (e.g. 'oracle') plays the extract turns; they are then not trained"})
    sft_learning_rate: float | None = field(default=1e-4, metadata={"help": "learning rate of the SFT warm start on oracle demonstrations (none: --learning-rate)"})
    sft_worlds: int = field(default=16, metadata={"help": "training worlds whose oracle demonstrations the warm start imitates"})
    init_adapter: str | None = field(default=None, metadata={"help": "start from this PEFT adapter, e.g. an SFT result (with --per-role-adapters: each role's adapter starts from it)"})
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
        for name in ("updates_per_stage", "conversations_per_update", "max_new_tokens", "inner_n", "max_local_questions",
                     "sft_worlds"):
            check_range(name, getattr(self, name), low=1)
        check_agent_name("--answerer", self.answerer, special=ANSWERER_CHOICES)
        check_agent_name("--extractor", self.extractor)
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"--token-budget must be >= 1, got {self.token_budget}")
        if self.local_weight < 0:
            raise ValueError(f"--local-weight must be >= 0, got {self.local_weight}")


def apply_demo_defaults(args: Args, argv: Sequence[str], has_gpu: bool) -> Args:
    """On a CPU without --model, use the short tiny-model demo (flags given explicitly win)."""
    demo = args.demo if args.demo is not None else (not has_gpu and args.model is None)
    return with_defaults(dataclasses.replace(args, demo=True), argv, CPU_DEMO) if demo else args


# ---------------------------------------------------------------------------- environments
def make_env_factory(args: Args, num_sessions: int):
    """A factory of the training environment at ``num_sessions`` (synthetic worlds), and one instance."""
    import gymnasium as gym

    import memenv  # noqa: F401
    from algos.cli import UserError

    kwargs = json.loads(args.env_kwargs)
    try:
        probe = gym.make(args.env, **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"--env {args.env} --env-kwargs {args.env_kwargs}: {err}".splitlines()[0]) from None
    source = getattr(probe.unwrapped, "source", None)
    if source is not None and type(source).__name__ == "SyntheticSource":
        kwargs["num_sessions"] = num_sessions

    def make():
        return gym.make(args.env, disable_env_checker=True, **kwargs)

    env = make()
    if not callable(getattr(env, "fork", None)):
        raise UserError(f"--env {args.env}: the environment has no fork(); LoGo-GRPO needs forkable environments "
                        "(wrap it with memenv.ForkableWrapper or implement fork() on the env)")
    return make, env


def training_pool(env, num_worlds: int) -> list[Any]:
    """The source's conversations, or the first ``num_worlds`` synthetic training seeds."""
    source = getattr(env.unwrapped, "source", None)
    keys = source.keys() if source is not None else None
    if keys:
        return list(keys)
    return [TRAIN_SEED_OFFSET + i for i in range(num_worlds)]


# ---------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the trainer; returns ``{"output_dir", "history", "digest", "state"}``."""
    from agents.lora import adapter_names, role_adapter
    from agents.sampler import RoleSampler
    from algos import rollouts as R
    from algos.checkpoint import load_checkpoint, save_checkpoint
    from algos.run import (MetricsLog, adapter_digest, dist_info, export_adapters, open_run_dir, run_name,
                           seed_everything, start_run)
    from agents.backbone import load_tokenizer
    from algos.build import build_policy_model, check_prompt_room, make_optimizer, resolve_device, sft_warm_start
    from algos.update import UpdateConfig, mean_over_processes, ppo_update

    argv = list(sys.argv[1:] if argv is None else argv)
    has_gpu = torch.cuda.is_available()
    args, changes = start_run(Args, argv, prog=PROG, description=__doc__,
                              demo_defaults=lambda a, av: apply_demo_defaults(a, av, has_gpu and a.device != "cpu"))
    has_gpu = has_gpu and args.device != "cpu"
    rank, world = dist_info()
    if world > 1:
        torch.distributed.init_process_group("nccl" if has_gpu else "gloo")
        if args.conversations_per_update % world:
            raise SystemExit(f"--conversations-per-update {args.conversations_per_update} must divide by the "
                             f"{world} processes")
    from rich.console import Console

    console = Console(quiet=rank != 0)
    model_name = args.model or ("smollm2-135m" if has_gpu else "tiny")
    if args.demo:
        console.print("[bold]No GPU: running a short CPU demo[/] (tiny random backbone, warm-started on oracle "
                      "demonstrations; pass --model to train a real model).")
    make_first, _ = make_env_factory(args, args.stages[0])  # an env without fork() stops here, before anything is written
    run_dir = open_run_dir(args, run_name(args.env, "logo_grpo", args.seed), rank=rank, changes=changes)
    out = run_dir.path

    seed_everything(args.seed)
    np_rng = np.random.default_rng(args.seed)
    device, style = resolve_device(args, model_name, has_gpu=has_gpu, rank=rank, world=world)
    answerer_name = args.answerer if args.answerer != "auto" else ("scripted" if model_name == "tiny" else "base")
    roles = ("manage",) if args.extractor else ("extract", "manage")
    check_prompt_room(make_first, load_tokenizer(model_name), max_prompt_tokens=args.max_prompt_tokens, style=style,
                      roles=(*roles, "answer") if answerer_name == "base" else roles)
    model, tokenizer = build_policy_model(args, model_name, device=device, per_role=args.per_role_adapters,
                                          lm_head=args.lora_lm_head, init_adapter=args.init_adapter)
    trained_adapters = [a for a in adapter_names(model) if a != "answer"]
    optimizer = make_optimizer(model, args.learning_rate)
    sampling_gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + rank)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answerer = R.make_answerer(answerer_name, model=model, tokenizer=tokenizer,
                               max_prompt_tokens=args.max_prompt_tokens, prompt_style=style)
    extractor = None
    if args.extractor:
        from agents.registry import make_agent

        extractor = make_agent(args.extractor)
    policy = RoleSampler(model, tokenizer, prompt_style=style, max_prompt_tokens=args.max_prompt_tokens,
                         max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                         generator=sampling_gen, constrained=args.constrained)
    update_config = UpdateConfig.from_args(args)

    state = {"update": 0, "stage": 0, "update_in_stage": 0, "tokens": 0.0}
    if args.resume:
        state = load_checkpoint(out, model, optimizer, np_rng, sampling_gen, trained_adapters,
                                log=lambda m: console.print(m, soft_wrap=True))
        console.print(f"resumed from {out} at update {state['update']} (stage {state['stage']})")
    elif args.sft_warmup_steps:
        from algos.sft import record_demonstrations

        make, env = make_env_factory(args, args.stages[0])
        pairs = record_demonstrations(make, training_pool(env, args.sft_worlds), roles=roles)
        # One warm start per adapter, on the demonstrations of the roles it serves (the
        # shared layout trains its one adapter on both roles).
        by_adapter: dict[str, list[tuple[str, str]]] = {}
        for obs, target in pairs:
            by_adapter.setdefault(role_adapter(model, json.loads(obs)["role"]), []).append((obs, target))
        for adapter, adapter_pairs in by_adapter.items():
            sft_warm_start(model, tokenizer, adapter_pairs, args, style=style, adapter=adapter, console=console,
                           progress=args.progress and rank == 0, description=f"SFT warm start ({adapter})")
        optimizer = make_optimizer(model, args.learning_rate)

    log = MetricsLog(out, enabled=rank == 0, tensorboard=args.tensorboard)
    serving = dict(prompt_style=style, max_prompt_tokens=args.max_prompt_tokens,
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
                losses = ppo_update(model, batch.samples, optimizer, update_config, pad_id=pad_id, rng=np_rng,
                                    world=world)
                t2 = time.perf_counter()
                metrics = {**batch.stats, **losses}
                if world > 1:
                    metrics = mean_over_processes(metrics, world)
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
                if end_of_stage:
                    state = {**state, "stage": stage_idx + 1, "update_in_stage": 0}
                    if rank == 0:
                        # the stage's adapters first, then the checkpoint that marks the stage done: a
                        # kill in between resumes before the export and writes it again
                        export_adapters(model, out / f"stage-{horizon}", trained_adapters, nested=True, **serving)
                if rank == 0 and (state["update"] % args.checkpoint_every == 0 or end_of_stage or stopping):
                    save_checkpoint(out, model, optimizer, state, np_rng, sampling_gen, trained_adapters,
                                    keep=args.keep_checkpoints)
                done_here += 1
                if (args.stop_after is not None and done_here >= args.stop_after) or budget_spent:
                    break
            if args.stop_after is not None and done_here >= args.stop_after:
                console.print(f"stopping after {done_here} updates (--stop-after); continue with --resume {out}")
                break
    digest = adapter_digest(model)
    (out / f"adapter-digest-rank{rank}.txt").write_text(digest)
    if rank == 0:
        export_adapters(model, out / "adapter", trained_adapters, nested=False, **serving)
        console.print(f"done: {state['update']} updates; adapter in {out / 'adapter'}; metrics in {out / 'metrics.jsonl'}")
    if world > 1:
        # Tear down together: a rank that destroys its gloo group and exits while the other
        # still writes checkpoints aborts in gloo's teardown, and torchrun then kills the busy rank.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    log.close()
    run_dir.close()
    return {"output_dir": str(out), "history": history, "digest": digest, "state": state}


if __name__ == "__main__":
    code = run_main(main, PROG)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        # A data-parallel process leaves without running C++ static destructors: gloo's
        # teardown at interpreter exit aborted now and then ("terminate called without an
        # active exception", SIGABRT in one rank after every file was written), and torchrun
        # then reported the whole run as failed. Everything is written and closed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
