"""Rollout collection for LoGo-GRPO: global groups, forked local rerollouts, rewards.

Every environment of an update lives in one lockstep pool. At each tick, all the pool's
extract/manage turns go to the policy in one batched generation call, and all answer
turns to the (frozen) answerer in another. Global rollouts run whole conversations; a
local rerollout is a fork of one global rollout taken *before* a session, run through
that session's extract and manage turns only, and scored at once on the questions due so
far with :meth:`MemorySessionEnv.probe` (Memory-R2, arXiv 2605.21768, section 3).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from algos.advantages import group_advantages, session_group_advantages
from algos.update import Sample

POLICY_ROLES = ("extract", "manage")


class Policy(Protocol):
    """Samples one generation per observation (e.g. :class:`agents.sampler.RoleSampler`)."""

    def generate(self, observations: Sequence[str]) -> list[Any]: ...


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
                                           slot.info["role"], slot.info["session"], slot.local,
                                           constraint=getattr(gen, "constraint", None)))
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
    from memenv.probing import due_questions, score_on_memory

    requests = [(slot, q) for slot in finished for q in due_questions(slot.env, slot.stop_session,
                                                                        max_local_questions)]
    infos = [{"role": "answer", "session": slot.stop_session} for slot, _ in requests]
    scores: dict[int, list[float]] = defaultdict(list)
    for (slot, _), score in zip(requests, score_on_memory([(slot.env, q) for slot, q in requests], answerer.answer,
                                                          infos=infos)):
        scores[id(slot)].append(score)
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


# ---------------------------------------------------------------------------- answerers
class SamplerAnswerer:
    """A frozen LLM answer agent: greedy generations of a :class:`agents.sampler.RoleSampler`
    (the ``answer`` adapter, or the base model with adapters disabled), reduced to the short answer."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def answer(self, observations, infos):
        from agents.prompts import parse_answer

        return [parse_answer(group[0].text) for group in self.sampler.sample(observations, greedy=True)]


def llm_answerer(model, tokenizer, *, max_prompt_tokens: int, prompt_style: str, max_new_tokens: int = 48,
                 distill: bool = True) -> SamplerAnswerer:
    """The backbone (adapters disabled unless it holds an ``answer`` adapter) as a frozen answerer."""
    from agents.sampler import RoleSampler

    return SamplerAnswerer(RoleSampler(model, tokenizer, prompt_style=prompt_style, distill=distill,
                                       max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
                                       temperature=0.0))


class AgentAnswerer:
    """Any registered agent as the answerer."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def answer(self, observations, infos):
        batch = getattr(self.agent, "act_batch", None)
        if callable(batch):
            return batch(list(observations), list(infos))
        return [self.agent.act(o, i) for o, i in zip(observations, infos)]


def make_answerer(name: str, *, model, tokenizer, max_prompt_tokens: int, prompt_style: str) -> Answerer:
    """The frozen answerer a trainer's ``--answerer`` names: ``scripted`` (the synthetic
    worlds' reader), ``base`` (the backbone with its adapters disabled) or a registered agent."""
    if name == "scripted":
        return ScriptedAnswerer()
    if name == "base":
        return llm_answerer(model, tokenizer, max_prompt_tokens=max_prompt_tokens, prompt_style=prompt_style)
    from agents.registry import make_agent

    return AgentAnswerer(make_agent(name))


class ScriptedAnswerer(AgentAnswerer):
    """The synthetic worlds' rule-based reader (:class:`memenv.scripted.ScriptedReader`; frozen, instant)."""

    def __init__(self) -> None:
        from memenv.scripted import ScriptedReader

        super().__init__(ScriptedReader())
