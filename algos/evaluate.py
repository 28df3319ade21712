"""Evaluation of a trained memory policy on held-out conversations.

The policy plays the manage turns (and the extract turns unless a fixed extractor is
given) with greedy decoding and the same role prompts as in training; a frozen answerer
answers every question after the last session (``qa_schedule="end"``). The score is the
mean answer F1 over all questions, overall and per question kind.

Held-out synthetic worlds are the seeds below ``algos.logo_grpo.TRAIN_SEED_OFFSET``
(training draws its worlds from seeds at or above it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"f1": self.f1, "by_kind": dict(self.by_kind), "num_questions": self.num_questions,
                "invalid_rate": self.invalid_rate, "memory_size": self.memory_size}


def check_heldout(worlds: Sequence[int]) -> list[int]:
    """The world seeds, after checking none of them is a training seed."""
    from algos.logo_grpo import TRAIN_SEED_OFFSET

    worlds = [int(w) for w in worlds]
    if not worlds:
        raise ValueError("no evaluation worlds given")
    bad = [w for w in worlds if not 0 <= w < TRAIN_SEED_OFFSET]
    if bad:
        raise ValueError(f"evaluation worlds must be seeds in [0, {TRAIN_SEED_OFFSET}) (held out from training), got {bad}")
    return worlds


def summarise(answered: Sequence[tuple[str, float]], invalid: int, policy_turns: int,
              memory_sizes: Sequence[int]) -> EvalResult:
    """Mean F1 overall and per kind of (kind, score) pairs, plus the policy's invalid-action rate."""
    by_kind: dict[str, list[float]] = {}
    for kind, score in answered:
        by_kind.setdefault(kind, []).append(float(score))
    scores = [s for _, s in answered]
    return EvalResult(f1=float(np.mean(scores)) if scores else 0.0,
                      by_kind={k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
                      num_questions=len(scores), invalid_rate=invalid / max(policy_turns, 1),
                      memory_size=float(np.mean(memory_sizes)) if memory_sizes else 0.0)


def run_episodes(policy: Any, answerer: Any, make_env, conversations: Sequence[Any], *,
                 extractor: Any | None = None) -> EvalResult:
    """Run one episode per conversation in lockstep and score the answers.

    ``policy.generate(observations)`` plays the extract/manage turns (batched), except the
    extract turns when ``extractor`` (an agent with ``act(obs, info)``) is given;
    ``answerer.answer(observations, infos)`` answers the questions.
    """
    envs, obs, infos = [], [], []
    for key in conversations:
        env = make_env()
        o, i = env.reset(options={"conversation": key})
        envs.append(env)
        obs.append(o)
        infos.append(i)
    done = [False] * len(envs)
    answered: list[tuple[str, float]] = []
    invalid = policy_turns = 0
    memory_sizes: list[int] = []
    while not all(done):
        live = [k for k in range(len(envs)) if not done[k]]
        to_policy = [k for k in live if infos[k]["role"] == "manage"
                     or (infos[k]["role"] == "extract" and extractor is None)]
        to_answer = [k for k in live if infos[k]["role"] == "answer"]
        actions: dict[int, str] = {}
        if to_policy:
            for k, gen in zip(to_policy, policy.generate([obs[k] for k in to_policy])):
                actions[k] = gen.text
        for k in live:
            if infos[k]["role"] == "extract" and extractor is not None:
                actions[k] = extractor.act(obs[k], infos[k])
        if to_answer:
            for k, text in zip(to_answer, answerer.answer([obs[k] for k in to_answer], [infos[k] for k in to_answer])):
                actions[k] = text
        for k in live:
            role = infos[k]["role"]
            o, reward, terminated, truncated, info = envs[k].step(actions[k])
            if k in to_policy:
                policy_turns += 1
                invalid += int(not info.get("valid", True) or (role != "answer" and reward < 0))
            if role == "answer" and "answered" in info:
                answered.append((info["answered"]["kind"], float(info["answered"]["score"])))
            obs[k], infos[k] = o, info
            if terminated or truncated:
                done[k] = True
                memory_sizes.append(int(info.get("episode_summary", {}).get("memory_size", 0)))
    return summarise(answered, invalid, policy_turns, memory_sizes)


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


def make_policy(model, tokenizer, *, prompt_style: str, max_new_tokens: int, max_prompt_tokens: int):
    """A greedy :class:`algos.rollouts.LLMPolicy` (temperature 0)."""
    from algos.rollouts import LLMPolicy

    return LLMPolicy(model, tokenizer, max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
                     temperature=0.0, top_p=1.0, generator=torch.Generator().manual_seed(0), prompt_style=prompt_style)


def evaluate_synthetic(model, tokenizer, *, worlds: Sequence[int], horizons: Sequence[int], prompt_style: str,
                       max_new_tokens: int, max_prompt_tokens: int, extractor: str | None = "oracle",
                       answerer: Any | None = None) -> dict[int, EvalResult]:
    """Scores on held-out synthetic worlds at each horizon (sessions per world).

    Defaults match the CPU training setup: the oracle plays the extract turns and the
    synthetic worlds' scripted reader answers.
    """
    import gymnasium as gym

    import memenv  # noqa: F401
    from agents.registry import make_agent
    from algos.rollouts import ScriptedAnswerer

    worlds = check_heldout(worlds)
    if not horizons or any(int(h) < 1 for h in horizons):
        raise ValueError(f"horizons must be positive session counts, got {list(horizons)}")
    policy = make_policy(model, tokenizer, prompt_style=prompt_style, max_new_tokens=max_new_tokens,
                         max_prompt_tokens=max_prompt_tokens)
    fixed_extractor = make_agent(extractor) if extractor else None
    answerer = answerer if answerer is not None else ScriptedAnswerer()
    out = {}
    for h in horizons:
        out[int(h)] = run_episodes(policy, answerer, lambda h=h: gym.make(BENCH_ENV, num_sessions=int(h),
                                                                          disable_env_checker=True),
                                   worlds, extractor=fixed_extractor)
    return out


def evaluate_locomo(model, tokenizer, *, data_path: str, conversations: Sequence[str] | None, prompt_style: str,
                    max_new_tokens: int, max_prompt_tokens: int) -> EvalResult:
    """LoCoMo (e.g. the dev split): the policy extracts and manages, the frozen base model answers.

    Compare a trained adapter against its zero-shot self by calling this with the adapter
    loaded and with ``adapter=None`` (:func:`load_policy_model`).
    """
    import gymnasium as gym

    import memenv  # noqa: F401
    from algos.rollouts import LLMAnswerer

    def make():
        return gym.make(LOCOMO_ENV, data_path=data_path, disable_env_checker=True)

    keys = list(conversations) if conversations else list(make().unwrapped.source.keys())
    policy = make_policy(model, tokenizer, prompt_style=prompt_style, max_new_tokens=max_new_tokens,
                         max_prompt_tokens=max_prompt_tokens)
    answerer = LLMAnswerer(model, tokenizer, max_prompt_tokens=max_prompt_tokens, prompt_style=prompt_style)
    return run_episodes(policy, answerer, make, keys, extractor=None)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m algos.evaluate --adapter runs/x/adapter``: print held-out scores as JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m algos.evaluate", description=__doc__)
    p.add_argument("--model", default="tiny")
    p.add_argument("--adapter", default=None, help="PEFT adapter directory (none: the base model)")
    p.add_argument("--worlds", type=int, default=8, help="held-out worlds: seeds 0..N-1")
    p.add_argument("--horizons", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--prompt-style", default="compact", choices=["default", "compact"])
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--extractor", default="oracle", help="fixed extract agent ('' : the policy extracts)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, tok = load_policy_model(a.model, a.adapter)
    res = evaluate_synthetic(model, tok, worlds=range(a.worlds), horizons=a.horizons, prompt_style=a.prompt_style,
                             max_new_tokens=a.max_new_tokens, max_prompt_tokens=a.max_prompt_tokens,
                             extractor=a.extractor or None)
    out = {h: r.to_dict() for h, r in res.items()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
