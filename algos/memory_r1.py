"""Memory-R1: a memory manager and an answer agent trained separately with outcome rewards.

Memory-R1 (arXiv 2508.19828) trains two agents, one at a time, each by PPO or by GRPO,
with exact match (EM) of answers as the only reward:

* ``--mode answer``: the answer agent. The memory bank is held FIXED: it is built once per
  conversation by a given manager (``--manager``: any registry agent; default the
  ``oracle`` of the synthetic worlds) running the environment with ``qa_schedule="end"``
  through every extract / manage turn; the answer observations of every question then
  come from ``env.unwrapped.probe(i)`` (top ``--answer-top-k`` memories per speaker, 30 by
  default as in the paper). The agent distils the memories (lists the relevant ids) and
  answers in a few words; reward = EM (or token F1 with ``--metric f1``) of the parsed
  answer. Trained into a LoRA adapter named ``"answer"`` (the only adapter of the model).
* ``--mode manager``: the memory manager. Sessions are played in order
  (``qa_schedule="after_evidence"``); extract turns by a fixed extractor (default
  ``oracle``; ``policy`` samples them from the same adapter, untrained). At each manage
  turn the policy samples ``--group-size`` operation lists for the same state; each is
  applied to a fork of the environment (``env.fork()``) and scored at once by the FROZEN
  answer agent (``--answerer``) on the questions due so far (``probe``), as LoGo-GRPO's
  local groups. Reward = mean EM over those questions, minus the environment's penalty for
  an invalid operation list. The trajectory continues from the first sample's fork.
  Trained into the LoRA adapter ``"policy"``.

``--algo grpo``: n samples per state, advantages normalised within the group
(:func:`algos.advantages.group_advantages`), PPO-clip loss with k3 KL to the reference
(the base model, adapter disabled) -- :func:`algos.update.ppo_update`.
``--algo ppo``: a learned critic (:class:`algos.value.ValueHead`, a linear layer on the
backbone's last hidden state at the last prompt token, trained alongside the LoRA
parameters through the shared backbone); one sample per state by default, advantage
``A = r - V(prompt)``, value loss MSE (``--value-clip`` for the clipped form).

Data: ``--source synthetic`` trains on worlds with seeds >= 1,000,000 and evaluates on
seeds below; ``--source locomo --data-path locomo10.json --split memory-r1`` trains on
conv-26, evaluates on conv-30 (152 / 81 / 1307 questions train / val / test on the full
file, category 5 excluded; the counts are printed at start).

    python -m algos.memory_r1 --mode answer --algo grpo                  # CPU: short tiny demo
    python -m algos.memory_r1 --mode manager --algo ppo --model smollm2-135m

Outputs in ``--output-dir``: ``metrics.jsonl`` (namespaced metrics per update; ``eval/``
rows at update 0 and at the end), ``adapter/`` (PEFT format, loadable as
``llm:<model>:<dir>/adapter``), ``sft_adapter/`` (the warm start, with
``--sft-warmup-steps``), ``value_head/`` (PPO), ``args.json``, and ``checkpoints/``
(adapter, value head, optimizer and RNG states, written atomically every
``--checkpoint-every`` updates and at ``--stop-after``). ``--resume <dir>`` continues a run
exactly where its latest checkpoint left it: the same adapter and metrics as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from algos.cli import TrainerArgs, check_agent_name, check_range, progress_bar, run_main, with_defaults
from algos.memory_r1_rollouts import (AnswerItem, answer_reward, assign_group_advantages,  # noqa: F401
                                      build_answer_items, collect_answer_batch, collect_manager_batch,
                                      evaluate_answers)
from algos.update import informative_samples
from algos.cli import UserError

PROG = "python -m algos.memory_r1"

MODES = ("answer", "manager")
ALGOS = ("grpo", "ppo")
METRICS = ("em", "f1")
SOURCES = ("synthetic", "locomo")
EXTRACTOR_POLICY = "policy"
ANSWER_ADAPTER = "answer"
GRPO_DEFAULT_GROUP = 8
PPO_DEFAULT_GROUP = 1
DEFAULT_NEW_TOKENS = {"answer": 64, "manager": 256}
# The paper's question counts of its LoCoMo split (full locomo10.json, category 5 excluded).
PAPER_QUESTION_COUNTS = {"memory-r1": {"train": 152, "val": 81, "test": 1307}}
CPU_DEMO = dict(model="tiny", updates=4, questions_per_update=8, conversations_per_update=1, num_sessions=4,
                max_new_tokens=24, max_prompt_tokens=1024, learning_rate=1e-3, sft_warmup_steps=30,
                micro_batch_size=16, answer_top_k=5, eval_worlds=2)
# Manager mode: a byte-level operation list needs ~40-120 tokens, and the warm start needs
# more steps at a higher rate before any sampled list is valid (as LoGo-GRPO's demo).
# The tiny model memorises its demonstrations but does not generalise to unseen worlds, so
# RL runs on worlds the warm start saw (valid rate ~0 on the 512-world pool), with LoRA on the
# output layer and a linearly decaying warm start, as LoGo-GRPO's demo.
CPU_DEMO_MANAGER = {**CPU_DEMO, "updates": 8, "max_new_tokens": 128, "max_prompt_tokens": 256,
                    "sft_warmup_steps": 100, "sft_learning_rate": 1e-2, "sft_schedule": "linear",
                    "num_train_worlds": 4, "lora_lm_head": True}


@dataclass
class Args(TrainerArgs):
    mode: str = field(default="answer", metadata={"help": "which agent to train: 'answer' (bank fixed) or 'manager' (answerer frozen)", "choices": MODES})
    algo: str = field(default="grpo", metadata={"help": "'grpo' (group-relative advantages) or 'ppo' (learned value head)", "choices": ALGOS})
    source: str = field(default="synthetic", metadata={"help": "'synthetic' worlds or 'locomo' (needs --data-path)", "choices": SOURCES})
    data_path: str | None = field(default=None, metadata={"help": "LoCoMo file (locomo10.json) for --source locomo"})
    split: str = field(default="memory-r1", metadata={"help": "LoCoMo split preset: train on its 'train' part, evaluate on 'val'"})
    num_sessions: int = field(default=8, metadata={"help": "sessions per synthetic world"})
    updates: int = field(default=50, metadata={"help": "policy updates"})
    questions_per_update: int = field(default=16, metadata={"help": "answer mode: questions (states) per update"})
    conversations_per_update: int = field(default=2, metadata={"help": "conversations drawn per update (answer mode: the questions come from them)"})
    eval_worlds: int = field(default=0, metadata={"help": "answer mode: greedy evaluation at start and end on this many eval worlds (locomo: the val part; 0: off)"})
    group_size: int | None = field(default=None, metadata={"help": "samples per state (none: 8 for grpo, 1 for ppo)"})
    manager: str = field(default="oracle", metadata={"help": "answer mode: the agent that builds the fixed memory banks (registry name, e.g. oracle, add-all, llm:...)"})
    extractor: str = field(default="oracle", metadata={"help": "manager mode: fixed extractor (registry name) or 'policy' (sampled from the adapter, not trained)"})
    answerer: str = field(default="auto", metadata={"help": "manager mode: frozen answer agent: 'scripted', 'base' (backbone, adapter off) or an agent name (auto: scripted on synthetic, base on locomo)"})
    metric: str = field(default="em", metadata={"help": "reward: exact match 'em' (Memory-R1) or token 'f1'", "choices": METRICS})
    question_kinds: tuple[str, ...] = field(default=(), metadata={"help": "answer mode: train only on questions of these kinds (empty: all)"})
    max_questions: int = field(default=16, metadata={"help": "manager mode: latest due questions that score one manage action"})
    answer_top_k: int = field(default=30, metadata={"help": "memories retrieved per speaker for an answer (the paper: 30)"})
    distill: bool = field(default=True, metadata={"help": "answer prompts ask for the relevant memory ids before the answer (memory distillation)"})
    value_learning_rate: float | None = field(default=None, metadata={"help": "AdamW learning rate of the value head (none: --learning-rate)"})
    vf_coef: float = field(default=0.1, metadata={"help": "ppo: weight of the value loss"})
    value_clip: float | None = field(default=None, metadata={"help": "ppo: clip range of the value update (none: plain MSE)"})
    whiten_advantages: bool = field(default=False, metadata={"help": "ppo: normalise r - V over the batch"})
    num_minibatches: int = field(default=2, metadata={"help": "optimizer steps per epoch"})
    generation_batch_size: int = field(default=64, metadata={"help": "sequences per generation call"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "tokens per action (none: 64 answer, 256 manager)"})
    sft_warmup_steps: int = field(default=0, metadata={"help": "supervised steps before RL (answer: gold answers; manager: oracle operations)"})
    skip_uniform_groups: bool = field(default=False, metadata={"help": "grpo: leave groups whose rewards are all equal (zero advantage) out of the update, as DAPO's dynamic sampling does; saves their forward and backward passes"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, choices in (("mode", MODES), ("algo", ALGOS), ("metric", METRICS), ("source", SOURCES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {choices}, got {getattr(self, name)!r}")
        if self.group_size is not None:
            check_range("group_size", self.group_size, low=1)
            if self.algo == "grpo" and self.group_size < 2:
                raise ValueError("--group-size must be >= 2 for grpo (a group of one has no advantage)")
        for name in ("updates", "questions_per_update", "conversations_per_update", "generation_batch_size",
                     "max_questions", "num_sessions"):
            check_range(name, getattr(self, name), low=1)
        for name in ("eval_worlds", "answer_top_k", "vf_coef"):
            check_range(name, getattr(self, name), low=0)
        check_range("max_new_tokens", self.max_new_tokens, low=1, allow_none=True)
        check_range("value_clip", self.value_clip, low=0, low_open=True, allow_none=True)
        check_range("value_learning_rate", self.value_learning_rate, low=0, low_open=True, allow_none=True)
        check_agent_name("--manager", self.manager)
        check_agent_name("--extractor", self.extractor, special=(EXTRACTOR_POLICY,))
        check_agent_name("--answerer", self.answerer, special=("auto", "scripted", "base"))
        if self.source == "locomo" and not self.data_path:
            raise ValueError("--source locomo needs --data-path (the LoCoMo json file)")

    @property
    def n(self) -> int:
        """Samples per state."""
        if self.group_size is not None:
            return self.group_size
        return GRPO_DEFAULT_GROUP if self.algo == "grpo" else PPO_DEFAULT_GROUP

    @property
    def new_tokens(self) -> int:
        """Generation budget per action."""
        return self.max_new_tokens or DEFAULT_NEW_TOKENS[self.mode]


def split_question_counts(data_path: str, split: str) -> dict[str, int | None]:
    """Questions (category 5 excluded) in each part of a LoCoMo split preset; None where the
    file lacks that part's conversations."""
    from memenv.data.locomo import SPLITS, load_locomo, question_counts

    if split not in SPLITS:
        raise ValueError(f"unknown LoCoMo split {split!r}; choose one of {sorted(SPLITS)}")
    counts: dict[str, int | None] = {}
    for part in SPLITS[split]:
        try:
            counts[part] = sum(question_counts(load_locomo(data_path, split=split, part=part)).values())
        except ValueError:
            counts[part] = None
    return counts


def format_split_counts(split: str, counts: dict[str, int | None]) -> str:
    """One line: ``memory-r1 questions: train 152, val 81, test 1307`` (+ the paper's counts)."""
    shown = ", ".join(f"{part} {'missing from the file' if n is None else n}" for part, n in counts.items())
    paper = PAPER_QUESTION_COUNTS.get(split)
    note = f" (paper: {', '.join(f'{p} {n}' for p, n in paper.items())})" if paper else ""
    return f"LoCoMo split {split} questions: {shown}{note}"


# ---------------------------------------------------------------------------- envs and data
def make_env_factory(args: Args, *, part: str | None, qa_schedule: str) -> Callable[[], Any]:
    """A factory of the training (``part="train"``) or evaluation (``"val"``) environment."""
    import gymnasium as gym

    import memenv  # noqa: F401

    kwargs = json.loads(args.env_kwargs)
    kwargs.update(qa_schedule=qa_schedule, metric=args.metric, answer_top_k=args.answer_top_k)
    if args.source == "locomo":
        kwargs.update(source="locomo", data_path=args.data_path, split=args.split, part=part)
    else:
        kwargs.setdefault("num_sessions", args.num_sessions)

    def make():
        return gym.make(args.env, disable_env_checker=True, **kwargs)

    return make


def conversation_pool(args: Args, make_env: Callable[[], Any], *, train: bool) -> list[Any]:
    """Conversation keys: LoCoMo sample_ids of the part, or synthetic seeds (train >= 1e6, eval < 1e6)."""
    from memenv.constants import TRAIN_SEED_OFFSET

    if args.source == "locomo":
        return list(make_env().unwrapped.source.keys())
    if train:
        return [TRAIN_SEED_OFFSET + i for i in range(args.num_train_worlds)]
    return list(range(args.eval_worlds))


# ---------------------------------------------------------------------------- warm start
def answer_target(gold: str) -> str:
    """The supervised answer-agent output for a gold answer (no Relevant line: gold ids are unknown)."""
    return f"Answer: {gold}"


# ---------------------------------------------------------------------------- main
def apply_demo_defaults(args: Args, argv: Sequence[str], has_gpu: bool) -> Args:
    """On a CPU without --model, use the short tiny-model demo (flags given explicitly win)."""
    demo = args.demo if args.demo is not None else (not has_gpu and args.model is None)
    preset = CPU_DEMO_MANAGER if args.mode == "manager" else CPU_DEMO
    return with_defaults(dataclasses.replace(args, demo=True), argv, preset) if demo else args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the trainer; returns ``{"output_dir", "history", "eval", "state"}``."""
    from agents.backbone import load_tokenizer
    from agents.lora import POLICY_ADAPTER, role_adapter
    from agents.registry import make_agent
    from agents.sampler import RoleSampler
    from algos.build import build_policy_model, check_prompt_room, make_optimizer, resolve_device, sft_warm_start
    from algos.rollouts import make_answerer
    from algos.checkpoint import load_checkpoint, save_checkpoint
    from algos.run import MetricsLog, check_finite, export_adapters, open_run_dir, run_name, seed_everything, start_run
    from algos.update import UpdateConfig, ppo_update
    from algos.value import ValueHead, save_value_head

    argv = list(sys.argv[1:] if argv is None else argv)
    has_gpu = torch.cuda.is_available()
    args, changes = start_run(Args, argv, prog=PROG, description=__doc__,
                              demo_defaults=lambda a, av: apply_demo_defaults(a, av, has_gpu and a.device != "cpu"))
    has_gpu = has_gpu and args.device != "cpu"
    from rich.console import Console

    console = Console()
    model_name = args.model or ("smollm2-135m" if has_gpu else "tiny")
    if args.demo:
        console.print("[bold]No GPU: running a short CPU demo[/] (tiny random backbone; pass --model to train a real one).")
    from algos.cli import check_model_flags

    check_model_flags(model_name, init_adapter=getattr(args, "init_adapter", None), device=args.device)
    from agents.vllm_engine import attach, engine_stats
    from algos.cli import check_rollout_engine

    check_rollout_engine(args.rollout_engine, model_name)  # before anything is written
    run_dir = open_run_dir(args, run_name("memory_r1", args.mode, args.algo, args.seed), changes=changes)
    out = run_dir.path
    if args.source == "locomo":
        console.print(format_split_counts(args.split, split_question_counts(args.data_path, args.split)))

    seed_everything(args.seed)
    np_rng = np.random.default_rng(args.seed)
    device, style = resolve_device(args, model_name, has_gpu=has_gpu)
    train_part = "train" if args.source == "locomo" else None
    qa_schedule = "end" if args.mode == "answer" else "after_evidence"
    make_train = make_env_factory(args, part=train_part, qa_schedule=qa_schedule)
    roles = ("answer",) if args.mode == "answer" else ("manage",) if args.extractor != EXTRACTOR_POLICY else (
        "extract", "manage")
    check_prompt_room(make_train, load_tokenizer(model_name), max_prompt_tokens=args.max_prompt_tokens, style=style,
                      roles=roles, distill=args.distill)
    adapter = ANSWER_ADAPTER if args.mode == "answer" else POLICY_ADAPTER
    model, tokenizer = build_policy_model(args, model_name, device=device, names=(adapter,), lm_head=args.lora_lm_head)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator = torch.Generator(device=device).manual_seed(args.seed)
    sampler = RoleSampler(model, tokenizer, prompt_style=style, distill=args.distill,
                          max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.new_tokens,
                          temperature=args.temperature, top_p=args.top_p, generator=generator,
                          batch_size=args.generation_batch_size, constrained=args.constrained)
    attach(sampler, args.rollout_engine, model_name, max_lora_rank=args.lora_r,
           max_model_len=args.max_prompt_tokens + args.new_tokens + 64)
    role = "answer" if args.mode == "answer" else "manage"
    serving = dict(prompt_style=style, max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.new_tokens,
                   distill=args.distill if args.mode == "answer" else None)  # recorded with the saved adapters

    pool = conversation_pool(args, make_train, train=True)
    items_cache: dict[Any, list[AnswerItem]] = {}
    bank_builder = make_agent(args.manager) if args.mode == "answer" else None

    def items_of(key) -> list[AnswerItem]:
        if key not in items_cache:
            items_cache[key] = build_answer_items(make_train, key, bank_builder, args.question_kinds)
        return items_cache[key]

    eval_items: list[AnswerItem] = []
    if args.mode == "answer" and args.eval_worlds > 0:
        make_eval = make_env_factory(args, part="val" if args.source == "locomo" else None, qa_schedule="end")
        for key in conversation_pool(args, make_eval, train=False):
            eval_items += build_answer_items(make_eval, key, bank_builder, args.question_kinds)

    extractor = None
    answerer = None
    if args.mode == "manager":
        extractor = None if args.extractor == EXTRACTOR_POLICY else make_agent(args.extractor)
        answerer_name = args.answerer if args.answerer != "auto" else ("scripted" if args.source == "synthetic"
                                                                       else "base")
        answerer = make_answerer(answerer_name, model=model, tokenizer=tokenizer,
                                 max_prompt_tokens=args.max_prompt_tokens, prompt_style=style)

    if args.sft_warmup_steps and not args.resume:
        if args.mode == "answer":
            warm_keys = pool[: max(args.conversations_per_update, min(len(pool), 32))]
            pairs = [(it.obs, answer_target(it.gold)) for key in warm_keys for it in items_of(key)]
        else:
            from algos.sft import record_demonstrations

            pairs = record_demonstrations(make_train, pool[: min(len(pool), 32)], roles=("manage",))
        sft_warm_start(model, tokenizer, pairs, args, style=style, adapter=role_adapter(model, role),
                       console=console, progress=args.progress, distill=args.distill)
        export_adapters(model, out / "sft_adapter", (adapter,), nested=False, **serving)
        console.print(f"SFT warm-start adapter in {out / 'sft_adapter'}")

    value_head = None
    extra_groups = []
    if args.algo == "ppo":
        value_head = ValueHead(model.config.hidden_size).to(device)
        extra_groups.append({"params": list(value_head.parameters()),
                             "lr": args.value_learning_rate or args.learning_rate})
    optimizer = make_optimizer(model, args.learning_rate, extra_groups)
    modules = {"value_head": value_head} if value_head is not None else {}
    update_config = UpdateConfig.from_args(args)

    log = MetricsLog(out, enabled=True, tensorboard=args.tensorboard)
    state: dict[str, Any] = {"update": 0, "evals": {}}
    if args.resume:
        state = load_checkpoint(out, model, optimizer, np_rng, generator, (adapter,), modules=modules,
                                log=lambda m: console.print(m, soft_wrap=True))
        log.truncate_after(state["update"])  # rows past the checkpoint are written again
        console.print(f"resumed from {out} at update {state['update']}")
    evals: dict[str, float] = dict(state["evals"])
    if eval_items and "before" not in evals:
        evals["before"] = evaluate_answers(sampler, eval_items, args.metric, description="eval (start)",
                                           console=console, progress=args.progress)
        log.write(0, {"eval/score": evals["before"], "eval/questions": float(len(eval_items))})
    progress = progress_bar("live", console=console, enabled=args.progress)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with progress:
        task = progress.add_task(f"Memory-R1 {args.mode} {args.algo}", total=args.updates,
                                 completed=state["update"], live="")
        done_here = 0
        for update in range(state["update"] + 1, args.updates + 1):
            t0 = time.perf_counter()
            keys = [pool[int(i)] for i in np_rng.choice(len(pool), size=min(args.conversations_per_update, len(pool)),
                                                         replace=False)]
            if args.mode == "answer":
                candidates = [it for key in keys for it in items_of(key)]
                if not candidates:
                    raise UserError("no training questions (check --question-kinds and the data)")
                chosen = np_rng.choice(len(candidates), size=min(args.questions_per_update, len(candidates)),
                                       replace=False)
                samples, stats = collect_answer_batch(sampler, [candidates[int(i)] for i in chosen], n=args.n,
                                                      metric=args.metric, algo=args.algo)
            else:
                samples, stats = collect_manager_batch(sampler, answerer, make_train, keys, n=args.n,
                                                       extractor=extractor, max_questions=args.max_questions,
                                                       algo=args.algo)
            t1 = time.perf_counter()
            trained = informative_samples(samples) if args.skip_uniform_groups and args.algo == "grpo" else samples
            stats["charts/trained_samples"] = float(len(trained))
            losses = ppo_update(model, trained, optimizer, update_config, pad_id=pad_id, rng=np_rng,
                                value_head=value_head) if trained else {}
            check_finite(model, losses, update, out)
            t2 = time.perf_counter()
            advantages = [abs(s.advantage) for s in samples]
            metrics = {**stats, **losses, "charts/nonzero_advantage_rate": float(np.mean([a > 0 for a in advantages]))
                       if advantages else 0.0, "charts/rollout_seconds": t1 - t0, "charts/update_seconds": t2 - t1,
                       "charts/tokens_per_s": stats.get("charts/generated_tokens", 0.0) / max(t1 - t0, 1e-9),
                       "charts/elapsed_s": time.perf_counter() - start, **engine_stats(sampler)}
            log.write(update, metrics)
            history.append(metrics)
            progress.update(task, advance=1, live=f"reward {metrics.get('charts/reward', 0):.3f} "
                                                  f"kl {metrics.get('losses/kl', 0):.4f}")
            done_here += 1
            state = {"update": update, "evals": dict(evals)}
            stopping = args.stop_after is not None and done_here >= args.stop_after
            if update % args.checkpoint_every == 0 or stopping or update == args.updates:
                save_checkpoint(out, model, optimizer, state, np_rng, generator, (adapter,),
                                keep=args.keep_checkpoints, modules=modules)
            if stopping and update < args.updates:
                console.print(f"stopping after {done_here} updates (--stop-after); continue with --resume {out}")
                break
    finished = state["update"] == args.updates
    if eval_items and finished and "after" not in evals:
        evals["after"] = evaluate_answers(sampler, eval_items, args.metric, description="eval (end)",
                                          console=console, progress=args.progress)
        log.write(args.updates, {"eval/score": evals["after"], "eval/questions": float(len(eval_items))})
        state = {"update": state["update"], "evals": dict(evals)}  # a resumed finished run keeps this row once
        save_checkpoint(out, model, optimizer, state, np_rng, generator, (adapter,), keep=args.keep_checkpoints,
                        modules=modules)
    if "after" in evals:
        console.print(f"eval {args.metric}: {evals['before']:.3f} -> {evals['after']:.3f} on {len(eval_items)} questions")
    export_adapters(model, out / "adapter", (adapter,), nested=False, **serving)
    if value_head is not None:
        save_value_head(value_head, out / "value_head")
    console.print(f"{'done' if finished else 'stopped'}: {state['update']} of {args.updates} updates; adapter in "
                  f"{out / 'adapter'}; metrics in {out / 'metrics.jsonl'}")
    log.close()
    run_dir.close()
    return {"output_dir": str(out), "history": history, "eval": evals, "state": state,
            "model": model, "value_head": value_head, "sampler": sampler}


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
