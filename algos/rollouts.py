"""Rollout collection for LoGo-GRPO: global groups, forked local rerollouts, rewards.

Every environment of an update lives in one lockstep pool. At each tick, all the pool's
extract/manage turns go to the policy in one batched generation call, and all answer
turns to the (frozen) answerer in another. Global rollouts run whole conversations; a
local rerollout is a fork of one global rollout taken *before* a session, run through
that session's extract and manage turns only, and scored at once on the questions due so
far with :meth:`MemorySessionEnv.probe` (Memory-R2, arXiv 2605.21768, section 3).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from algos.advantages import group_advantages, session_group_advantages

POLICY_ROLES = ("extract", "manage")


@dataclass
class Sample:
    """One generation of the policy, with what the loss needs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    role: str
    session: int
    local: bool
    advantage: float = 0.0
    group: tuple = ()  # ("global", conversation) or ("local", conversation, session)
    ref_logprobs: list[float] | None = None  # filled by the update


@dataclass
class Generation:
    """What a policy returns for one observation."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]


class Policy(Protocol):
    def generate(self, observations: Sequence[str]) -> list[Generation]: ...


class Answerer(Protocol):
    def answer(self, observations: Sequence[str], infos: Sequence[dict]) -> list[str]: ...


@dataclass
class _Slot:
    env: Any
    obs: str
    info: dict
    group: tuple
    local: bool
    stop_session: int | None = None
    samples: list[Sample] = field(default_factory=list)
    penalty: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    compression: dict[int, float] = field(default_factory=dict)
    done: bool = False
    final_info: dict | None = None
    reward: float | None = None  # local rerollouts: their scalar reward


@dataclass
class RolloutBatch:
    """Samples with advantages, and statistics of the collection."""

    samples: list[Sample]
    stats: dict[str, float]


def _fork_state(env) -> Any:
    fork = getattr(env, "fork", None)
    if not callable(fork):
        raise TypeError(f"{type(env.unwrapped).__name__} has no fork(); LoGo-GRPO needs a forkable environment")
    return fork()


def collect(
    policy: Policy,
    answerer: Answerer,
    make_env: Callable[[], Any],
    conversations: Sequence[Any],
    *,
    group_size: int,
    inner_fraction: float,
    inner_n: int,
    max_local_questions: int,
    local_weight: float,
    rng: np.random.Generator,
    extractor: Any | None = None,
) -> RolloutBatch:
    """Run ``group_size`` rollouts per conversation plus local rerollouts; return samples with advantages.

    ``extractor``, when given, plays every extract turn (e.g. ``OracleAgent``) and those
    turns give no training samples.
    """
    slots: list[_Slot] = []
    for c, key in enumerate(conversations):
        for g in range(group_size):
            env = make_env()
            obs, info = env.reset(options={"conversation": key})
            slots.append(_Slot(env, obs, info, ("global", c), local=False))
    decided: set[tuple[int, int]] = set()
    while True:
        active = [s for s in slots if not s.done]
        if not active:
            break
        _spawn_local_rerollouts(slots, active, decided, rng, group_size, inner_fraction, inner_n)
        active = [s for s in slots if not s.done]
        to_policy = [s for s in active if s.info["role"] in POLICY_ROLES
                     and not (extractor is not None and s.info["role"] == "extract")]
        to_extractor = [s for s in active if extractor is not None and s.info["role"] == "extract"]
        to_answerer = [s for s in active if s.info["role"] == "answer"]
        actions: dict[int, str] = {}
        if to_policy:
            for slot, gen in zip(to_policy, policy.generate([s.obs for s in to_policy])):
                actions[id(slot)] = gen.text
                slot.samples.append(Sample(gen.prompt_ids, gen.completion_ids, gen.logprobs,
                                           slot.info["role"], slot.info["session"], slot.local))
        for slot in to_extractor:
            actions[id(slot)] = extractor.act(slot.obs, slot.info)
        if to_answerer:
            for slot, text in zip(to_answerer, answerer.answer([s.obs for s in to_answerer], [s.info for s in to_answerer])):
                actions[id(slot)] = text
        finished_locals = []
        for slot in active:
            role, session = slot.info["role"], slot.info["session"]
            obs, reward, terminated, truncated, info = slot.env.step(actions[id(slot)])
            if role in POLICY_ROLES:
                slot.penalty[session] += float(reward)  # 0, or the invalid-action penalty
            if role == "manage":
                slot.compression[session] = slot.env.unwrapped.compression_penalty()
            slot.obs, slot.info = obs, info
            if terminated or truncated:
                slot.done, slot.final_info = True, info
            if slot.local and role == "manage":
                slot.done = True
                finished_locals.append(slot)
        if finished_locals:
            _score_locals(finished_locals, answerer, max_local_questions)
    return _advantages(slots, len(conversations), group_size, local_weight)


def _spawn_local_rerollouts(slots, active, decided, rng, group_size, inner_fraction, inner_n) -> None:
    """At the start of a session, maybe fork one global rollout ``inner_n`` times."""
    if inner_fraction <= 0 or inner_n < 2:
        return
    by_conv: dict[int, list[_Slot]] = defaultdict(list)
    for s in active:
        if not s.local:
            by_conv[s.group[1]].append(s)
    for c, members in sorted(by_conv.items()):
        first = members[0]
        session = first.info["session"]
        if first.info["role"] != "extract" or (c, session) in decided:
            continue
        decided.add((c, session))
        # A session with no question due by its end gives every reroll the same score.
        if not first.env.unwrapped.questions_due_by(session):
            continue
        if rng.random() >= inner_fraction:
            continue
        parent = members[int(rng.integers(len(members)))]
        for _ in range(inner_n):
            child = _fork_state(parent.env)
            slots.append(_Slot(child, parent.obs, dict(parent.info), ("local", c, session), local=True,
                               stop_session=session))


def _score_locals(finished: list[_Slot], answerer: Answerer, max_local_questions: int) -> None:
    """Score each finished reroll on the (at most ``max_local_questions``) questions due so far."""
    requests: list[tuple[_Slot, int]] = []
    for slot in finished:
        env = slot.env.unwrapped
        for q in env.questions_due_by(slot.stop_session)[-max_local_questions:]:
            requests.append((slot, q))
    observations = [slot.env.unwrapped.probe(q) for slot, q in requests]
    infos = [{"role": "answer", "session": slot.stop_session} for slot, _ in requests]
    answers = answerer.answer(observations, infos) if requests else []
    scores: dict[int, list[float]] = defaultdict(list)
    for (slot, q), text in zip(requests, answers):
        scores[id(slot)].append(slot.env.unwrapped.score_answer(q, text))
    for slot in finished:
        s = slot.stop_session
        answer_score = float(np.mean(scores[id(slot)])) if scores[id(slot)] else 0.0
        slot.reward = answer_score - slot.compression.get(s, 0.0) + slot.penalty[s]


def session_rewards(slot: _Slot, num_sessions: int) -> np.ndarray:
    """Per-session rewards of a finished global rollout (Memory-R2's per-session credit).

    Session s: the mean score of the questions whose evidence lies in s (scored when they
    were asked), or the episode's mean score where no question rests on s; minus the
    compression penalty after s; plus the invalid-action penalties of s's turns.
    """
    info = slot.final_info or {}
    credit = info.get("session_credit") or [None] * num_sessions
    episode = info.get("episode_summary", {}).get("mean_score")
    fallback = float(episode) if episode is not None and episode == episode else 0.0  # NaN: no questions
    out = np.zeros(num_sessions)
    for s in range(num_sessions):
        base = credit[s] if s < len(credit) and credit[s] is not None else fallback
        out[s] = base - slot.compression.get(s, 0.0) + slot.penalty[s]
    return out


def _advantages(slots: list[_Slot], num_conversations: int, group_size: int, local_weight: float) -> RolloutBatch:
    samples: list[Sample] = []
    stats: dict[str, list[float]] = defaultdict(list)
    for c in range(num_conversations):
        members = [s for s in slots if not s.local and s.group[1] == c]
        num_sessions = members[0].env.unwrapped.conversation.num_sessions
        rewards = np.stack([session_rewards(s, num_sessions) for s in members])  # (G, S)
        adv = session_group_advantages(torch.tensor(rewards), torch.ones(rewards.shape, dtype=torch.bool))  # (G, S)
        for g, slot in enumerate(members):
            for sample in slot.samples:
                sample.advantage = float(adv[g, sample.session])
                sample.group = slot.group
                samples.append(sample)
            episode = (slot.final_info or {}).get("episode_summary", {})
            score = episode.get("mean_score", 0.0)
            stats["charts/episode_score"].append(score if score == score else 0.0)
            stats["charts/session_reward"].append(float(rewards[g].mean()))
            stats["charts/memory_size"].append(float(episode.get("memory_size", 0)))
    local_groups: dict[tuple, list[_Slot]] = defaultdict(list)
    for s in slots:
        if s.local:
            local_groups[s.group].append(s)
    for group in local_groups.values():
        rewards = torch.tensor([s.reward for s in group], dtype=torch.float64)
        adv = group_advantages(rewards, torch.zeros(len(group), dtype=torch.long))
        for slot, a in zip(group, adv.tolist()):
            for sample in slot.samples:
                sample.advantage = local_weight * a
                sample.group = slot.group
                samples.append(sample)
            stats["charts/local_reward"].append(float(slot.reward))
    policy_samples = samples
    invalid = [1.0 for s in slots for v in s.penalty.values() if v < 0]
    turns = sum(len(s.samples) for s in slots)
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out["charts/local_groups"] = float(len(local_groups))
    out["charts/samples"] = float(len(policy_samples))
    out["charts/samples_local"] = float(sum(s.local for s in policy_samples))
    out["charts/invalid_rate"] = float(len(invalid) / max(turns, 1))
    out["charts/generated_tokens"] = float(sum(len(s.completion_ids) for s in policy_samples))
    return RolloutBatch(policy_samples, out)


# ---------------------------------------------------------------------------- policies
def generations(rollout) -> list[list[Generation]]:
    """A Rollout of ``agents.generation.generate`` as, per prompt, its n generations (padding removed)."""
    out = []
    n = rollout.num_samples
    for p in range(len(rollout.prompt_ids)):
        prompt = rollout.prompt_ids[p][rollout.prompt_mask[p].bool()].tolist()
        group = []
        for j in range(p * n, (p + 1) * n):
            mask = rollout.completion_mask[j].bool()
            group.append(Generation(rollout.texts[j], prompt, rollout.completion_ids[j][mask].tolist(),
                                    rollout.logprobs[j][mask].tolist()))
        out.append(group)
    return out


class LLMPolicy:
    """Samples extract/manage actions from a (LoRA) causal LM with role prompts."""

    def __init__(self, model, tokenizer, *, max_prompt_tokens: int, max_new_tokens: int, temperature: float,
                 top_p: float, generator: torch.Generator, prompt_style: str = "default") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.prompt_style = prompt_style
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens
        self.temperature, self.top_p, self.generator = temperature, top_p, generator

    def generate(self, observations: Sequence[str]) -> list[Generation]:
        from agents.generation import generate
        from agents.lora import role_adapter, use_adapter
        from agents.prompts import render_prompt

        out: list[Generation | None] = [None] * len(observations)
        # Identical prompts (the G rollouts of a conversation at its first turn, the
        # rerolls of a forked state) are computed once and sampled n times.
        by_role: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, obs in enumerate(observations):
            role = json.loads(obs)["role"]
            prompt = render_prompt(self.tokenizer, obs, max_prompt_tokens=self.max_prompt_tokens,
                                   style=self.prompt_style)
            by_role[role][prompt].append(i)
        for role, prompts in by_role.items():
            by_count: dict[int, list[str]] = defaultdict(list)
            for prompt, idx in prompts.items():
                by_count[len(idx)].append(prompt)
            with use_adapter(self.model, role_adapter(self.model, role)):
                for n, plist in sorted(by_count.items()):
                    rollout = generate(self.model, self.tokenizer, plist, num_samples=n,
                                       max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                       top_p=self.top_p, generator=self.generator)
                    for prompt, group in zip(plist, generations(rollout)):
                        for target, gen in zip(prompts[prompt], group):
                            out[target] = gen
        return out  # type: ignore[return-value]


class ScriptedAnswerer:
    """The synthetic worlds' rule-based reader (frozen, instant)."""

    def answer(self, observations, infos):
        from memenv.scripted import scripted_answer

        out = []
        for obs in observations:
            data = json.loads(obs)
            out.append(scripted_answer(data["question"], [m["text"] for m in data.get("memories", [])]))
        return out


class LLMAnswerer:
    """A frozen LLM answer agent: the backbone with adapters disabled, greedy, memory distillation."""

    def __init__(self, model, tokenizer, *, max_prompt_tokens: int, max_new_tokens: int = 48,
                 prompt_style: str = "default") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.prompt_style = prompt_style
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens

    def answer(self, observations, infos):
        from agents.generation import generate
        from agents.lora import role_adapter, use_adapter
        from agents.prompts import parse_answer, render_prompt

        prompts = [render_prompt(self.tokenizer, o, max_prompt_tokens=self.max_prompt_tokens, style=self.prompt_style)
                   for o in observations]
        with use_adapter(self.model, role_adapter(self.model, "answer")):
            rollout = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens, temperature=0.0)
        return [parse_answer(t) for t in rollout.texts]


class AgentAnswerer:
    """Any registered agent as the answerer."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def answer(self, observations, infos):
        batch = getattr(self.agent, "act_batch", None)
        if callable(batch):
            return batch(list(observations), list(infos))
        return [self.agent.act(o, i) for o, i in zip(observations, infos)]
