"""LoGo-GRPO: local-global group relative policy optimisation for memory agents.

Implements the trainer of Memory-R2 (arXiv 2605.21768, section 3): the fact extractor and
the memory manager share one LoRA adapter (told apart by role prompts) and one reward.

* Global groups: ``group_size`` rollouts of each training conversation over the whole
  horizon; per-session rewards (Memory-R2's credit) normalised across the group.
* Local groups: before a session, with probability ``inner_fraction``, one global rollout
  is forked (``env.fork()``) and the session rerolled ``inner_n`` times from the identical
  memory state; each reroll is scored at once on the questions due so far and normalised
  within its reroll set. ``--inner-fraction 0`` is plain trajectory-level GRPO.
* One PPO-clip objective over global and local samples -- by default the official code's
  turn level: one ratio per generation (capped log-ratio, dual clip), each generation
  weighted equally --, k3 KL to the reference (the adapter as it was when the stage
  started, a frozen copy; ``--reference base``: the base model), entropy bonus, gradient
  clipping.
* Curriculum: stages of 8, 16 and 32 sessions, each warm-started from the previous one,
  with a fresh optimizer per stage; with ``--val-worlds`` the stage hands on its best
  checkpoint on held-out worlds and stops early when validation stalls.
* ``--preset memory-r2`` sets every value of the official Memory-R2 code at once
  (``MEMORY_R2``; the table in docs/training.md lists them beside this library's defaults).

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

from algos.cli import (TrainerArgs, check_agent_name, check_json_object, check_range, progress_bar, run_main,
                       with_defaults)
from memenv.constants import TRAIN_SEED_OFFSET  # training worlds use seeds >= it, evaluation below
from agents.constrained import check_manage_ops
from memenv.parsing import OPS

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


# The official Memory-R2 settings (github.com/ahmedehabb/Memory-R2: the launch script
# scripts/vllm_clients/vllm_client_standalone.sh, the verl config and reward manager).
# Learning rate: the official 2e-6 is for full fine-tuning; LoRA's best rate is about ten
# times full fine-tuning's (Thinking Machines, "LoRA Without Regret", 2025), so 2e-5.
MEMORY_R2 = dict(
    stages=(8, 16, 32), updates_per_stage=10, group_size=16, inner_fraction=0.5, inner_n=4, local_weight=1.0,
    max_local_questions=16, local_questions="sample", skip_unprobed_sessions=False, local_temperature=0.0,
    zero_truncated=True, skip_uniform_groups=True,
    reward_timing="final", max_final_questions=64, learning_rate=2e-5, ppo_epochs=2, clip_eps=0.2,
    clip_mode="turn", loss_agg="turn", dual_clip_c=3.0, log_ratio_cap=3.0, kl_coef=0.001, entropy_coef=0.001,
    max_grad_norm=1.0, temperature=1.0, top_p=1.0, reference="stage-start", reset_optimizer=True, handoff="best",
    val_worlds=4, val_every=5, early_stop_patience=3,
    # One training conversation per update (data.train_batch_size = NUM_TRAIN_CONVS = 1) and
    # ppo_mini_batch_size 16 prompts (x n rollouts), which holds that whole batch: one optimizer
    # step per PPO epoch over every global and local generation of the update.
    conversations_per_update=1, num_minibatches=1,
)
MEMORY_R2_ENV = dict(invalid_penalty=0.0, metric="squad_f1", lambda_comp=0.2, manage_top_k=25, answer_top_k=30,
                     similarity_threshold=0.1, answer_order="session", session_chunks=4)
"""Environment options of the preset, merged under ``--env-kwargs`` (the command line wins)."""
PRESETS = {"memory-r2": (MEMORY_R2, MEMORY_R2_ENV)}


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
    manage_ops: tuple[str, ...] = field(default=OPS, metadata={"help": "the operations the manager may use: its grammar offers no other (e.g. ADD NOOP: an add-only memory whose contents are learned; needs --constrained); recorded with the saved adapters, which are then served the same way"})
    per_role_adapters: bool = field(default=False, metadata={"help": "one adapter per role instead of the shared one"})
    answerer: str = field(default="auto", metadata={"help": "frozen answer agent: 'base' (backbone, adapter off), 'scripted' (synthetic worlds' reader) or an agent name (auto: base, scripted for the tiny model)"})
    extractor: str | None = field(default=None, metadata={"help": "a fixed agent (e.g. 'oracle') plays the extract turns; they are then not trained"})
    sft_learning_rate: float | None = field(default=1e-4, metadata={"help": "learning rate of the SFT warm start on oracle demonstrations (none: --learning-rate)"})
    sft_worlds: int = field(default=16, metadata={"help": "training worlds whose oracle demonstrations the warm start imitates"})
    init_adapter: str | None = field(default=None, metadata={"help": "start from this PEFT adapter, e.g. an SFT result (with --per-role-adapters: each role's adapter starts from it)"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard events when tensorboard is installed"})
    preset: str | None = field(default=None, metadata={"help": "memory-r2: every setting of the official Memory-R2 code at once (flags given explicitly win; see the table in docs/training.md)", "choices": [None, *PRESETS]})
    # the policy loss (algos.losses)
    clip_mode: str = field(default="turn", metadata={"help": "PPO ratio per generation (turn: exp of the mean token log-ratio, the official code) or per token (PPO/GRPO's usual)", "choices": ["token", "turn"]})
    loss_agg: str = field(default="turn", metadata={"help": "policy loss averaged over generations (turn: each weighs the same, the official code; long manage outputs do not dominate) or over tokens", "choices": ["token", "turn"]})
    dual_clip_c: float | None = field(default=3.0, metadata={"help": "dual clip: a negative-advantage sample loses at most -A*c, bounding what one stale sample can do (official 3; none: off)"})
    log_ratio_cap: float | None = field(default=3.0, metadata={"help": "cap on the log-ratio before exp, against overflow on stale samples (official 3; none: off)"})
    # the rewards (algos.rollouts)
    reward_timing: str = field(default="final", metadata={"help": "final: sampled questions scored on the final memory, 0 for uncredited sessions, final compression (the official code); asked: each question scored when asked, uncredited sessions get the episode mean (this library's earlier rule)", "choices": ["final", "asked"]})
    max_final_questions: int = field(default=64, metadata={"help": "with --reward-timing final: questions (one random draw per conversation, shared by its group) scored on each final memory"})
    local_questions: str = field(default="sample", metadata={"help": "which of the due questions score a reroll set when there are more than --max-local-questions: one seeded random sample for the set (official) or the latest ones", "choices": ["sample", "latest"]})
    skip_unprobed_sessions: bool = field(default=False, metadata={"help": "no local rerolls for a session with no question due by its end (their rerolls then differ only by compression and invalid actions)"})
    zero_truncated: bool = field(default=False, metadata={"help": "reward 0 for a session (global rollout) or a reroll in which a policy output was cut off at --max-new-tokens (official: a truncated response scores 0); off by default: the cut-off action is invalid and already penalised, and constrained outputs always end in time"})
    skip_uniform_groups: bool = field(default=False, metadata={"help": "leave samples whose group's rewards all tie (a session of the global group, or a reroll set) out of the update (official: filter_groups, which also refills the batch; not done here); off by default: they carry no advantage, only KL and entropy"})
    local_temperature: float | None = field(default=None, metadata={"help": "decoding temperature of the local rerolls (none: --temperature, sampling as the paper describes; 0: greedy, what the official code's validation settings do; greedy rerolls of one state are identical, so their advantage is 0 and the trainer warns)"})
    # the curriculum hand-off
    reference: str = field(default="stage-start", metadata={"help": "KL reference: the adapter as the stage started (a frozen copy; official) or the base model with the adapter disabled", "choices": ["stage-start", "base"]})
    reset_optimizer: bool = field(default=True, metadata={"help": "a fresh AdamW state at each curriculum stage (official: each stage is a new run)"})
    val_worlds: int = field(default=0, metadata={"help": "held-out synthetic worlds to validate on between updates (greedy rollouts, final-memory answer score; 0: no validation)"})
    val_env_kwargs: str | None = field(default=None, metadata={"help": "JSON object merged over --env-kwargs for the validation env (e.g. other LoCoMo conversations); its conversations are the validation set"})
    val_every: int = field(default=5, metadata={"help": "validate every K updates of a stage (and at its start and end)"})
    early_stop_patience: int = field(default=3, metadata={"help": "end a stage after this many validations without a new best (0: never)"})
    handoff: str = field(default="best", metadata={"help": "with validation: the next stage starts from the stage's best validated weights (official) or its last", "choices": ["best", "last"]})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("max_final_questions", self.max_final_questions, low=1)
        check_range("local_temperature", self.local_temperature, low=0, allow_none=True)
        check_range("dual_clip_c", self.dual_clip_c, low=1, low_open=True, allow_none=True)
        check_range("log_ratio_cap", self.log_ratio_cap, low=0, allow_none=True)
        for name in ("val_worlds", "early_stop_patience"):
            check_range(name, getattr(self, name), low=0)
        check_range("val_every", self.val_every, low=1)
        self.manage_ops = check_manage_ops(self.manage_ops)
        if self.manage_ops != OPS and not self.constrained:
            raise ValueError(f"--manage-ops {' '.join(self.manage_ops)} needs --constrained: only the manage grammar keeps "
                             "the other operations out")
        if self.val_env_kwargs is not None:
            check_json_object("--val-env-kwargs", self.val_env_kwargs)
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


def apply_preset(args: Args, argv: Sequence[str]) -> tuple[Args, list[str]]:
    """``--preset``'s values for every flag not given, its environment options merged under
    ``--env-kwargs``; returns the arguments and ``argv`` with the preset's flags marked as given."""
    if args.preset is None:
        return args, list(argv)
    values, env_options = PRESETS[args.preset]
    args = with_defaults(args, argv, values)
    env_kwargs = {**env_options, **json.loads(args.env_kwargs)}
    args = dataclasses.replace(args, env_kwargs=json.dumps(env_kwargs, sort_keys=True))
    return args, [*argv, *("--" + k.replace("_", "-") for k in values)]


def apply_demo_defaults(args: Args, argv: Sequence[str], has_gpu: bool) -> Args:
    """``--preset`` first; then on a CPU without --model, the short tiny-model demo (flags
    given explicitly, or set by the preset, win)."""
    args, argv = apply_preset(args, argv)
    demo = args.demo if args.demo is not None else (not has_gpu and args.model is None)
    return with_defaults(dataclasses.replace(args, demo=True), argv, CPU_DEMO) if demo else args


def collect_options(args: Args) -> dict[str, Any]:
    """The keyword arguments of :func:`algos.rollouts.collect` that the flags set."""
    return dict(group_size=args.group_size, inner_fraction=args.inner_fraction, inner_n=args.inner_n,
                max_local_questions=args.max_local_questions, local_weight=args.local_weight,
                reward_timing=args.reward_timing, max_final_questions=args.max_final_questions,
                local_questions=args.local_questions, skip_unprobed_sessions=args.skip_unprobed_sessions,
                local_temperature=args.local_temperature, zero_truncated=args.zero_truncated,
                skip_uniform_groups=args.skip_uniform_groups)


# ---------------------------------------------------------------------------- environments
def takes_num_sessions(source: Any) -> bool:
    """Whether a conversation source is built with ``num_sessions`` (synthetic worlds' length,
    LoCoMo's first sessions), so that the curriculum's stages set it."""
    import inspect

    return "num_sessions" in inspect.signature(type(source).__init__).parameters


def make_env_factory(args: Args, num_sessions: int):
    """A factory of the training environment at ``num_sessions`` sessions per conversation
    (synthetic worlds of that length; LoCoMo's first ``num_sessions`` sessions), and one instance."""
    import gymnasium as gym

    import memenv  # noqa: F401
    from algos.cli import UserError

    kwargs = json.loads(args.env_kwargs)
    try:
        probe = gym.make(args.env, **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"--env {args.env} --env-kwargs {args.env_kwargs}: {err}".splitlines()[0]) from None
    source = getattr(probe.unwrapped, "source", None)
    if source is not None and takes_num_sessions(source):
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


def greedy_rerolls_warning(args: Args) -> str | None:
    """One line when the local rerolls decode greedily (``--local-temperature 0``, as
    ``--preset memory-r2`` sets it): rerolls of one forked state are then identical (up to
    the backend's numerical noise), every reroll set ties, and its tokens teach nothing."""
    if args.inner_fraction > 0 and args.local_temperature == 0:
        return ("warning: --local-temperature 0 decodes the local rerolls greedily, so the rerolls of one state are "
                "identical and their local advantage is 0 (charts/samples_local stays 0); pass --local-temperature T "
                "(e.g. the --temperature) for local groups that explore")
    return None


def check_validation_source(args: Args, env) -> None:
    """Refuse ``--val-worlds`` (synthetic worlds; ``--preset memory-r2`` sets 4) when the
    training ``env`` reads a dataset source such as LoCoMo and no ``--val-env-kwargs`` names
    its validation conversations: called with the first stage's env, before the run
    directory is written, so a corrected command can reuse ``--output-dir``."""
    from algos.cli import UserError

    if args.val_worlds == 0 or args.val_env_kwargs is not None:
        return
    source = getattr(env.unwrapped, "source", None)
    keys = source.keys() if source is not None else None
    if keys:
        raise UserError(f"--val-worlds {args.val_worlds} draws synthetic worlds, but --env-kwargs names a dataset "
                        f"source ({', '.join(map(str, keys))}); validate on its conversations with "
                        "--val-env-kwargs (e.g. '{\"part\": \"val\"}'), or pass --val-worlds 0")


def validation_set(args: Args, num_sessions: int) -> tuple[Any, list[Any]] | None:
    """The validation environment factory and conversations at ``num_sessions``, or None
    without validation: ``--val-env-kwargs``' source's conversations, else ``--val-worlds``
    held-out synthetic worlds (seeds from ``memenv.constants.VALIDATION_SEED_OFFSET``;
    :func:`check_validation_source` has refused those on a dataset source)."""
    from memenv.constants import VALIDATION_SEED_OFFSET

    if args.val_worlds == 0 and args.val_env_kwargs is None:
        return None
    merged = {**json.loads(args.env_kwargs), **json.loads(args.val_env_kwargs or "{}")}
    make, env = make_env_factory(dataclasses.replace(args, env_kwargs=json.dumps(merged)), num_sessions)
    source = getattr(env.unwrapped, "source", None)
    keys = source.keys() if source is not None else None
    if keys and args.val_env_kwargs is not None:
        return make, list(keys)
    return make, [VALIDATION_SEED_OFFSET + i for i in range(max(args.val_worlds, 1))]


def adapter_weights(model, adapters: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of the adapters' weights (PEFT state dicts)."""
    from peft import get_peft_model_state_dict

    return {a: {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=a).items()}
            for a in adapters}


def read_adapter_weights(folder, adapters: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The weights :func:`algos.run.export_adapters` wrote into ``folder/<adapter>/``."""
    from safetensors.torch import load_file

    return {a: load_file(str(folder / a / "adapter_model.safetensors")) for a in adapters}


def load_adapter_weights(model, weights: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put copied adapter weights back into the model."""
    from peft import set_peft_model_state_dict

    for adapter, state in weights.items():
        set_peft_model_state_dict(model, state, adapter_name=adapter)


# ---------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the trainer; returns ``{"output_dir", "history", "digest", "state"}``."""
    from agents.lora import adapter_names, role_adapter, snapshot_reference
    from agents.sampler import RoleSampler
    from algos import rollouts as R
    from algos.checkpoint import load_checkpoint, save_checkpoint
    from algos.run import (MetricsLog, adapter_digest, check_finite, dist_info, export_adapters, open_run_dir, run_name,
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
    if (warning := greedy_rerolls_warning(args)) is not None:
        console.print(warning, style="yellow", soft_wrap=True)
    model_name = args.model or ("smollm2-135m" if has_gpu else "tiny")
    if args.demo:
        console.print("[bold]No GPU: running a short CPU demo[/] (tiny random backbone, warm-started on oracle "
                      "demonstrations; pass --model to train a real model).")
    from algos.cli import check_model_flags

    check_model_flags(model_name, init_adapter=args.init_adapter, device=args.device)  # before anything is written
    make_first, first_env = make_env_factory(args, args.stages[0])  # an env without fork() stops here, before anything is written
    check_validation_source(args, first_env)  # as does --val-worlds on a dataset source
    from agents.vllm_engine import attach, engine_stats
    from algos.cli import check_rollout_engine

    check_rollout_engine(args.rollout_engine, model_name)  # before anything is written
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
    # frozen reference copies exist from the start so that a checkpoint can restore them
    references = snapshot_reference(model, trained_adapters) if args.reference == "stage-start" else []
    saved_adapters = [*trained_adapters, *references]
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
                         generator=sampling_gen, constrained=args.constrained, manage_ops=args.manage_ops)
    attach(policy, args.rollout_engine, model_name, max_lora_rank=args.lora_r,
           max_model_len=args.max_prompt_tokens + args.max_new_tokens + 64)
    update_config = UpdateConfig.from_args(args)

    state = {"update": 0, "stage": 0, "update_in_stage": 0, "tokens": 0.0}
    if args.resume:
        state = load_checkpoint(out, model, optimizer, np_rng, sampling_gen, saved_adapters,
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
                   max_new_tokens=args.max_new_tokens, manage_ops=args.manage_ops)  # recorded with the saved adapters
    if args.resume:
        log.truncate_after(state["update"])  # rows past the checkpoint are written again
    total = len(args.stages) * args.updates_per_stage
    progress = progress_bar("live", console=console, enabled=args.progress and rank == 0)
    history = []
    done_here = 0
    val: dict[str, Any] = state.get("val") or {}
    best_weights = None
    start_time = time.perf_counter()
    with progress:
        task = progress.add_task("LoGo-GRPO", total=total, completed=state["update"], live="")
        for stage_idx in range(state["stage"], len(args.stages)):
            horizon = args.stages[stage_idx]
            make, env = make_env_factory(args, horizon)
            pool = training_pool(env, args.num_train_worlds)
            first = state["update_in_stage"] if stage_idx == state["stage"] else 0
            validation = validation_set(args, horizon)
            best_dir = out / f"stage-{horizon}-best"
            if first == 0:
                # the stage's hand-off: its start is the KL reference, the optimizer starts afresh
                if references:
                    snapshot_reference(model, trained_adapters)
                if args.reset_optimizer:
                    optimizer = make_optimizer(model, args.learning_rate)
                if validation is not None:
                    score = R.validate(policy, answerer, validation[0], validation[1], extractor=extractor)
                    val = {"best": score, "best_update": state["update"], "stalled": 0}
                    best_weights = adapter_weights(model, trained_adapters)
                    if rank == 0:
                        export_adapters(model, best_dir, trained_adapters, nested=True, **serving)
                    console.print(f"stage {horizon}: validation score {score:.3f} at its start")
            elif validation is not None:
                val = state.get("val") or {"best": float("-inf"), "best_update": state["update"], "stalled": 0}
                best_weights = read_adapter_weights(best_dir, trained_adapters) if best_dir.is_dir() else None
            early_stop = False
            for k in range(first, args.updates_per_stage):
                t0 = time.perf_counter()
                chosen = [pool[int(i)] for i in np_rng.choice(len(pool), size=args.conversations_per_update,
                                                               replace=len(pool) < args.conversations_per_update)]
                mine = chosen[rank::world]
                batch = R.collect(policy, answerer, make, mine, rng=np_rng, extractor=extractor,
                                  **collect_options(args))
                t1 = time.perf_counter()
                losses = ppo_update(model, batch.samples, optimizer, update_config, pad_id=pad_id, rng=np_rng,
                                    world=world)
                check_finite(model, losses, state["update"] + 1, out)
                t2 = time.perf_counter()
                metrics = {**batch.stats, **losses, **engine_stats(policy)}
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
                if validation is not None and ((k + 1) % args.val_every == 0 or end_of_stage):
                    score = R.validate(policy, answerer, validation[0], validation[1], extractor=extractor)
                    if score > val["best"]:
                        val = {"best": score, "best_update": state["update"], "stalled": 0}
                        best_weights = adapter_weights(model, trained_adapters)
                        if rank == 0:
                            export_adapters(model, best_dir, trained_adapters, nested=True, **serving)
                    else:
                        val = {**val, "stalled": val["stalled"] + 1}
                    early_stop = 0 < args.early_stop_patience <= val["stalled"]
                    end_of_stage = end_of_stage or early_stop
                    log.write(state["update"], {"val/score": score, "val/best": val["best"]})
                    if early_stop:
                        console.print(f"stage {horizon}: no better validation score in {val['stalled']} checks; "
                                      f"ending the stage (best {val['best']:.3f} at update {val['best_update']})")
                if end_of_stage and validation is not None and args.handoff == "best" and best_weights is not None:
                    load_adapter_weights(model, best_weights)
                stopping = args.stop_after is not None and done_here + 1 >= args.stop_after
                if end_of_stage:
                    state = {**state, "stage": stage_idx + 1, "update_in_stage": 0}
                    if rank == 0:
                        # the stage's adapters first, then the checkpoint that marks the stage done: a
                        # kill in between resumes before the export and writes it again
                        export_adapters(model, out / f"stage-{horizon}", trained_adapters, nested=True, **serving)
                if rank == 0 and (state["update"] % args.checkpoint_every == 0 or end_of_stage or stopping):
                    save_checkpoint(out, model, optimizer, {**state, "val": val}, np_rng, sampling_gen,
                                    saved_adapters, keep=args.keep_checkpoints, serving=serving)
                done_here += 1
                if (args.stop_after is not None and done_here >= args.stop_after) or budget_spent or early_stop:
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
