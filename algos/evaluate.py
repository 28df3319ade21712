"""Evaluation of a trained memory policy on held-out conversations.

The policy plays the manage turns (and the extract turns unless a fixed extractor is
given) with greedy decoding and the same role prompts as in training; a frozen answerer
answers every question after the last session (``qa_schedule="end"``). The score is the
mean answer F1 over all questions, overall and per question kind.

Held-out synthetic worlds are the seeds below ``memenv.constants.TRAIN_SEED_OFFSET``
(training draws its worlds from seeds at or above it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

PROG = "python -m algos.evaluate"
BENCH_ENV = "MemorySessionBench-v0"  # MemorySession-v0 with qa_schedule="end"
LOCOMO_ENV = "MemorySessionLoCoMo-v0"


@dataclass(frozen=True)
class EvalResult:
    """Scores of one policy on one set of conversations at one horizon."""

    f1: float
    by_kind: dict[str, float]
    num_questions: int
    invalid_rate: float
    memory_size: float
    memory_tokens: float = 0.0  # whitespace tokens in the final memory bank, mean over episodes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"f1": self.f1, "by_kind": dict(self.by_kind), "num_questions": self.num_questions,
                "invalid_rate": self.invalid_rate, "memory_size": self.memory_size,
                "memory_tokens": self.memory_tokens}


def check_heldout(worlds: Sequence[int]) -> list[int]:
    """The world seeds, after checking none of them is a training seed."""
    from memenv.constants import TRAIN_SEED_OFFSET

    worlds = [int(w) for w in worlds]
    if not worlds:
        raise ValueError("no evaluation worlds given")
    bad = [w for w in worlds if not 0 <= w < TRAIN_SEED_OFFSET]
    if bad:
        raise ValueError(f"evaluation worlds must be seeds in [0, {TRAIN_SEED_OFFSET}) (held out from training), got {bad}")
    return worlds


def summarise(answered: Sequence[tuple[str, float]], invalid: int, policy_turns: int,
              memory_sizes: Sequence[int], memory_tokens: Sequence[int] = ()) -> EvalResult:
    """Mean F1 overall and per kind of (kind, score) pairs, plus the policy's invalid-action rate."""
    by_kind: dict[str, list[float]] = {}
    for kind, score in answered:
        by_kind.setdefault(kind, []).append(float(score))
    scores = [s for _, s in answered]
    return EvalResult(f1=float(np.mean(scores)) if scores else 0.0,
                      by_kind={k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
                      num_questions=len(scores), invalid_rate=invalid / max(policy_turns, 1),
                      memory_size=float(np.mean(memory_sizes)) if memory_sizes else 0.0,
                      memory_tokens=float(np.mean(memory_tokens)) if len(memory_tokens) else 0.0)


def run_episodes(policy: Any, answerer: Any, make_env, conversations: Sequence[Any], *,
                 extractor: Any | None = None) -> EvalResult:
    """Run one episode per conversation in lockstep and score the answers.

    ``policy.generate(observations)`` plays the extract/manage turns (batched, both roles in
    one call), except the extract turns when ``extractor`` (an agent) is given;
    ``answerer.answer(observations, infos)`` answers the questions.
    """
    return run_grouped_episodes(policy, answerer, [make_env() for _ in conversations], conversations,
                                [0] * len(conversations), extractor=extractor)[0]


def run_grouped_episodes(policy: Any, answerer: Any, envs: Sequence[Any], conversations: Sequence[Any],
                         groups: Sequence[Any], *, extractor: Any | None = None) -> dict[Any, EvalResult]:
    """:func:`run_episodes` over one env per conversation, all in lockstep (one batched policy
    call per turn for every episode still running), scored per group: ``groups[k]`` names
    the group of episode ``k`` (e.g. its horizon). The envs are closed at the end."""
    from memenv.play import play

    def policy_act(observations: list[str], infos: list[dict]) -> list[str]:
        return [gen.text for gen in policy.generate(observations)]

    answered: dict[Any, list[tuple[str, float]]] = {g: [] for g in groups}
    counts = {g: {"invalid": 0, "policy_turns": 0} for g in groups}
    memory_sizes: dict[Any, list[int]] = {g: [] for g in groups}
    memory_tokens: dict[Any, list[int]] = {g: [] for g in groups}

    def on_turn(turn) -> None:
        group = groups[turn.episode]
        if turn.role == "manage" or (turn.role == "extract" and extractor is None):
            counts[group]["policy_turns"] += 1
            counts[group]["invalid"] += int(not turn.next_info.get("valid", True) or turn.reward < 0)
        if turn.role == "answer" and "answered" in turn.next_info:
            answered[group].append((turn.next_info["answered"]["kind"], float(turn.next_info["answered"]["score"])))
        if turn.done:
            summary = turn.next_info.get("episode_summary", {})
            memory_sizes[group].append(int(summary.get("memory_size", 0)))
            memory_tokens[group].append(int(summary.get("memory_tokens", 0)))

    actors = {"extract": extractor if extractor is not None else policy_act, "manage": policy_act,
              "answer": answerer.answer}
    try:
        play(list(envs), conversations, actors, on_turn=on_turn)
    finally:
        for env in envs:
            env.close()
    return {g: summarise(answered[g], counts[g]["invalid"], counts[g]["policy_turns"], memory_sizes[g],
                         memory_tokens[g]) for g in dict.fromkeys(groups)}


def load_policy_model(model_name: str, adapter: str | Path | None, *, device: str | None = None):
    """The backbone with the trained adapter(s) at ``adapter`` loaded (None: the base model).

    ``adapter`` is a PEFT directory (shared ``policy`` adapter) or a directory holding
    ``extract/`` and ``manage/`` sub-directories (one adapter per role).
    """
    from agents.backbone import load_backbone
    from agents.lora import load_adapters

    backbone = load_backbone(model_name, device=device)
    if adapter is None:
        return backbone.model, backbone.tokenizer
    model = load_adapters(backbone, adapter)
    model.eval()
    return model, backbone.tokenizer


def make_policy(model, tokenizer, *, prompt_style: str, max_new_tokens: int, max_prompt_tokens: int,
                constrained: bool = True, engine: Any | None = None):
    """A greedy :class:`agents.sampler.RoleSampler` (temperature 0); ``constrained``: under
    each observation's grammar (:mod:`agents.constrained`), as the trainers sample by default;
    ``engine``: a :class:`agents.vllm_engine.VLLMEngine` that samples instead of the hf loop."""
    from agents.sampler import RoleSampler

    return RoleSampler(model, tokenizer, prompt_style=prompt_style, max_prompt_tokens=max_prompt_tokens,
                       max_new_tokens=max_new_tokens, temperature=0.0, generator=torch.Generator().manual_seed(0),
                       constrained=constrained, engine=engine)


def evaluate_synthetic(model, tokenizer, *, worlds: Sequence[int], horizons: Sequence[int], prompt_style: str,
                       max_new_tokens: int, max_prompt_tokens: int, extractor: str | None = "oracle",
                       answerer: Any | None = None, constrained: bool = True,
                       env_kwargs: dict[str, Any] | None = None, engine: Any | None = None) -> dict[int, EvalResult]:
    """Scores on held-out synthetic worlds at each horizon (sessions per world).

    Defaults match the CPU training setup: the oracle plays the extract turns and the
    synthetic worlds' scripted reader answers. ``env_kwargs`` go to the benchmark env
    (``MemorySessionBench-v0``: questions at the end), e.g. the hard worlds' options or the
    observation settings a policy was trained under. ``engine``: see :func:`make_policy`.
    """
    import gymnasium as gym

    import memenv  # noqa: F401
    from agents.registry import make_agent
    from algos.rollouts import ScriptedAnswerer

    worlds = check_heldout(worlds)
    if not horizons or any(int(h) < 1 for h in horizons):
        raise ValueError(f"horizons must be positive session counts, got {list(horizons)}")
    policy = make_policy(model, tokenizer, prompt_style=prompt_style, max_new_tokens=max_new_tokens,
                         max_prompt_tokens=max_prompt_tokens, constrained=constrained, engine=engine)
    fixed_extractor = make_agent(extractor) if extractor else None
    answerer = answerer if answerer is not None else ScriptedAnswerer()
    # every (horizon, world) episode in one lockstep: a turn's policy call batches all the
    # episodes still running, so the calls number twice the longest horizon, not the sum
    pairs = [(int(h), w) for h in dict.fromkeys(int(h) for h in horizons) for w in worlds]
    envs = [gym.make(BENCH_ENV, **{**(env_kwargs or {}), "num_sessions": h}, disable_env_checker=True)
            for h, _ in pairs]
    return run_grouped_episodes(policy, answerer, envs, [w for _, w in pairs], [h for h, _ in pairs],
                                extractor=fixed_extractor)


def evaluate_locomo(model, tokenizer, *, data_path: str, conversations: Sequence[str] | None, prompt_style: str,
                    max_new_tokens: int, max_prompt_tokens: int, constrained: bool = True,
                    engine: Any | None = None) -> EvalResult:
    """LoCoMo (e.g. the dev split): the policy extracts and manages, the frozen base model answers.

    Compare a trained adapter against its zero-shot self by calling this with the adapter
    loaded and with ``adapter=None`` (:func:`load_policy_model`).
    """
    import gymnasium as gym

    import memenv  # noqa: F401
    from algos.rollouts import llm_answerer

    def make():
        return gym.make(LOCOMO_ENV, data_path=data_path, disable_env_checker=True)

    keys = list(conversations) if conversations else list(make().unwrapped.source.keys())
    policy = make_policy(model, tokenizer, prompt_style=prompt_style, max_new_tokens=max_new_tokens,
                         max_prompt_tokens=max_prompt_tokens, constrained=constrained, engine=engine)
    answerer = llm_answerer(model, tokenizer, max_prompt_tokens=max_prompt_tokens, prompt_style=prompt_style)
    return run_episodes(policy, answerer, make, keys, extractor=None)


@dataclass
class EvalArgs:
    model: str = field(default="tiny", metadata={"help": "backbone: 'tiny', 'smollm2-135m', a HF directory or a .gguf file"})
    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter directory, or one of per-role sub-directories (none: the base model)"})
    worlds: int = field(default=8, metadata={"help": "held-out worlds: seeds 0..N-1"})
    horizons: tuple[int, ...] = field(default=(8, 16, 32), metadata={"help": "sessions per world, one evaluation each"})
    prompt_style: str = field(default="compact", metadata={"help": "role prompts", "choices": ["default", "compact"]})
    max_new_tokens: int = field(default=128, metadata={"help": "tokens per extract/manage action"})
    max_prompt_tokens: int = field(default=256, metadata={"help": "prompts are trimmed by relevance to this many tokens"})
    extractor: str | None = field(default="oracle", metadata={"help": "fixed extract agent (none: the policy extracts)"})
    constrained: bool = field(default=True, metadata={"help": "the policy acts under each observation's grammar (agents.constrained), as the trainers sample; --no-constrained decodes freely"})
    rollout_engine: str = field(default="hf", metadata={"help": "what samples the policy: hf (the library's transformers loop) or vllm (agents.vllm_engine, the requirements-vllm.lock virtualenv; a model directory, not tiny)", "choices": ["hf", "vllm"]})

    def __post_init__(self) -> None:
        from algos.cli import check_agent_name, check_range

        for name in ("worlds", "max_new_tokens", "max_prompt_tokens"):
            check_range(name, getattr(self, name), low=1)
        if not self.horizons or any(h < 1 for h in self.horizons):
            raise ValueError(f"--horizons needs positive session counts, got {list(self.horizons)}")
        check_agent_name("--extractor", self.extractor)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m algos.evaluate --adapter runs/x/adapter``: print held-out scores as JSON."""
    from algos.cli import parse_args

    a = parse_args(EvalArgs, argv, description=__doc__, prog=PROG)
    from algos.threads import default_threads

    from agents.vllm_engine import VLLMEngine, lora_rank
    from algos.cli import check_rollout_engine

    check_rollout_engine(a.rollout_engine, a.model)
    torch.set_num_threads(default_threads(a.model))
    model, tok = load_policy_model(a.model, a.adapter)
    engine = None
    if a.rollout_engine == "vllm":
        engine = VLLMEngine.shared(a.model, max_lora_rank=max(16, lora_rank(model)),
                                   max_model_len=a.max_prompt_tokens + a.max_new_tokens + 64)
    res = evaluate_synthetic(model, tok, worlds=range(a.worlds), horizons=a.horizons, prompt_style=a.prompt_style,
                             max_new_tokens=a.max_new_tokens, max_prompt_tokens=a.max_prompt_tokens,
                             extractor=a.extractor, constrained=a.constrained, engine=engine)
    out = {h: r.to_dict() for h, r in res.items()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
