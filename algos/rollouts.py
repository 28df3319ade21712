"""Rollout collection for LoGo-GRPO: global groups, forked local rerollouts, rewards.

Every environment of an update lives in one lockstep pool. At each tick, all the pool's
extract/manage turns go to the policy in one batched generation call, and all answer
turns to the (frozen) answerer in another. Global rollouts run whole conversations; a
local rerollout is a fork of one global rollout taken *before* a session, run through
that session's extract and manage turns only, and scored at once on the questions due so
far with :meth:`MemorySessionEnv.probe` (Memory-R2, arXiv 2605.21768, section 3).

When the per-session credit of a global rollout is measured (``reward_timing``):

* ``"final"`` (default, the official code: ``rema.py`` ``locomo_score`` and the reward
  assembly after it): at most ``max_final_questions`` (64) of the conversation's questions,
  drawn at random once per conversation so that every rollout of the group answers the
  same ones, are scored on the rollout's *final* memory; session s gets the mean score of
  those whose evidence lies in s (a question without evidence credits the last session),
  0 when none does, minus the *final* compression penalty, plus the invalid-action
  penalties of its own turns. Answer turns during the episode are skipped (answered with
  an empty string, no model call).
* ``"asked"`` (this library's earlier rule): every question is scored when the environment
  asks it (``qa_schedule="after_evidence"``: right after its last evidence session); a
  session no question credits gets the episode's mean score, and each session's
  compression penalty is the one after it.

Local rerolls are scored on one seeded sample of at most ``max_local_questions`` (16) of
the questions whose evidence lies in sessions up to the rerolled one, the same sample for
every reroll of a set (``local_questions="sample"``; ``"latest"``: the latest ones, as
before). Sessions with no such question are rerolled too (their rerolls differ by
compression and invalid actions) unless ``skip_unprobed_sessions``. ``local_temperature``
decodes the rerolls at another temperature than the global rollouts (0: greedy, what the
official code does by using its validation decoding settings); their log-probs are then
recomputed at the training temperature so that the PPO ratio starts at 1.

``zero_truncated`` (the official code, ``rema.py``: a truncated response scores 0): a
session in which a policy output was cut off at the token limit gets reward 0 in its global
rollout, and a reroll with such an output gets local reward 0, whatever its answers scored.
Off by default: the environment's invalid-action penalty already marks a cut-off action,
which is invalid, and grammar-constrained outputs always end within the limit.

``skip_uniform_groups`` (the official launch script's ``algorithm.filter_groups.enable``,
without its refill): samples whose group gave every member the same reward -- a session
column of a global group, or a set of local rerolls -- are left out of the update, so they
neither dilute the turn-level mean nor pull the policy through the KL and entropy terms.
Their tokens still count as generated (``charts/generated_tokens``, the token budget).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from algos.advantages import group_advantages, session_group_advantages
from algos.update import Sample, informative_samples

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
    questions: tuple[int, ...] | None = None  # local rerollouts: the questions that score them
    final_scores: dict[int, float] | None = None  # reward_timing "final": question -> score on the final memory
    truncated: set[int] = field(default_factory=set)  # sessions with a policy output cut off at the token limit


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
    reward_timing: str = "final",
    max_final_questions: int = 64,
    local_questions: str = "sample",
    skip_unprobed_sessions: bool = False,
    local_temperature: float | None = None,
    zero_truncated: bool = False,
    skip_uniform_groups: bool = False,
) -> RolloutBatch:
    """Run ``group_size`` rollouts per conversation plus local rerollouts; return samples with advantages.

    ``extractor``, when given, plays every extract turn (e.g. ``OracleAgent``) and those
    turns give no training samples. ``reward_timing``, ``max_final_questions``,
    ``local_questions``, ``skip_unprobed_sessions``, ``local_temperature``, ``zero_truncated`` and ``skip_uniform_groups``: see the
    module docstring (the defaults are the official Memory-R2 code's, except that rerolls
    are sampled at the policy's temperature, as the paper describes).
    """
    if reward_timing not in REWARD_TIMINGS:
        raise ValueError(f"reward_timing must be one of {REWARD_TIMINGS}, got {reward_timing!r}")
    if local_questions not in LOCAL_QUESTION_PICKS:
        raise ValueError(f"local_questions must be one of {LOCAL_QUESTION_PICKS}, got {local_questions!r}")
    final = reward_timing == "final"
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
        _spawn_local_rerollouts(slots, active, decided, rng, group_size, inner_fraction, inner_n,
                                max_local_questions, local_questions, skip_unprobed_sessions)
        active = [s for s in slots if not s.done]
        to_policy = [s for s in active if s.info["role"] in POLICY_ROLES
                     and not (extractor is not None and s.info["role"] == "extract")]
        to_extractor = [s for s in active if extractor is not None and s.info["role"] == "extract"]
        # "final" timing: a global rollout's answers during the episode do not count, so none is generated
        skipped = [s for s in active if s.info["role"] == "answer" and final and not s.local]
        to_answerer = [s for s in active if s.info["role"] == "answer" and not (final and not s.local)]
        actions: dict[int, str] = {id(s): "" for s in skipped}
        for batch, temperature in _by_temperature(to_policy, local_temperature):
            for slot, gen in zip(batch, _generate(policy, [s.obs for s in batch], temperature)):
                actions[id(slot)] = gen.text
                slot.samples.append(Sample(gen.prompt_ids, gen.completion_ids, gen.logprobs,
                                           slot.info["role"], slot.info["session"], slot.local,
                                           constraint=getattr(gen, "constraint", None)))
                if getattr(gen, "truncated", False):
                    slot.truncated.add(slot.info["session"])
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
            # a session ends with its (last chunk's) manage turn: the next turn is not its extract
            session_over = role == "manage" and not (info.get("role") == "extract" and info.get("session") == session)
            if slot.local and session_over:
                slot.done = True
                finished_locals.append(slot)
            last = slot.env.unwrapped.conversation.num_sessions - 1
            if final and not slot.local and session_over and session == last:
                slot.done = True  # the final memory is written; its questions are scored below
        if finished_locals:
            _score_locals(finished_locals, answerer)
    if final:
        _score_final(slots, answerer, rng, max_final_questions)
    return _advantages(slots, len(conversations), group_size, local_weight, final, zero_truncated,
                       skip_uniform_groups)


REWARD_TIMINGS = ("final", "asked")
LOCAL_QUESTION_PICKS = ("sample", "latest")


def _by_temperature(to_policy: list[_Slot], local_temperature: float | None) -> list[tuple[list[_Slot], float | None]]:
    """The policy turns in one batch, or two when the local rerolls decode at their own temperature."""
    if local_temperature is None:
        return [(to_policy, None)] if to_policy else []
    out = [([s for s in to_policy if not s.local], None), ([s for s in to_policy if s.local], local_temperature)]
    return [(batch, t) for batch, t in out if batch]


def _generate(policy: Policy, observations: list[str], temperature: float | None) -> list[Any]:
    """One generation per observation; at ``temperature``, with log-probs under the policy's own
    training temperature (:meth:`agents.sampler.RoleSampler.rescore`) when they differ."""
    if temperature is None:
        return policy.generate(observations)
    gens = policy.generate(observations, temperature=temperature)
    own = getattr(policy, "temperature", 1.0)
    # greedy decoding records untempered (temperature 1) log-probs
    if (temperature if temperature > 0 else 1.0) != (own if own > 0 else 1.0):
        gens = policy.rescore(observations, gens)
    return gens


def _spawn_local_rerollouts(slots, active, decided, rng, group_size, inner_fraction, inner_n, max_local_questions,
                            local_questions, skip_unprobed_sessions) -> None:
    """At the start of a session, maybe fork one global rollout ``inner_n`` times, with the
    questions (one pick for the whole set) that will score the rerolls."""
    if inner_fraction <= 0 or inner_n < 2:
        return
    by_conv: dict[int, list[_Slot]] = defaultdict(list)
    for s in active:
        if not s.local:
            by_conv[s.group[1]].append(s)
    for c, members in sorted(by_conv.items()):
        first = members[0]
        session = first.info["session"]
        if first.info["role"] != "extract" or first.info.get("chunk", 0) != 0 or (c, session) in decided:
            continue
        decided.add((c, session))
        due = first.env.unwrapped.questions_due_by(session)
        if skip_unprobed_sessions and not due:
            continue
        if rng.random() >= inner_fraction:
            continue
        parent = members[int(rng.integers(len(members)))]
        if len(due) <= max_local_questions:
            questions = tuple(due)
        elif local_questions == "latest":
            questions = tuple(due[-max_local_questions:])
        else:
            questions = tuple(due[i] for i in sorted(rng.choice(len(due), size=max_local_questions, replace=False)))
        for _ in range(inner_n):
            child = _fork_state(parent.env)
            slots.append(_Slot(child, parent.obs, dict(parent.info), ("local", c, session), local=True,
                               stop_session=session, questions=questions))


def _score_locals(finished: list[_Slot], answerer: Answerer) -> None:
    """Score each finished reroll on its set's questions, in one batch."""
    from memenv.probing import score_on_memory

    requests = [(slot, q) for slot in finished for q in slot.questions]
    infos = [{"role": "answer", "session": slot.stop_session} for slot, _ in requests]
    scores: dict[int, list[float]] = defaultdict(list)
    for (slot, _), score in zip(requests, score_on_memory([(slot.env, q) for slot, q in requests], answerer.answer,
                                                          infos=infos)):
        scores[id(slot)].append(score)
    for slot in finished:
        s = slot.stop_session
        answer_score = float(np.mean(scores[id(slot)])) if scores[id(slot)] else 0.0
        slot.reward = answer_score - slot.compression.get(s, 0.0) + slot.penalty[s]


def _score_final(slots: list[_Slot], answerer: Answerer, rng: np.random.Generator, max_questions: int) -> None:
    """Score every global rollout's final memory on its conversation's question sample, in one batch."""
    from memenv.probing import score_on_memory

    requests: list[tuple[_Slot, int]] = []
    by_conv: dict[int, list[_Slot]] = defaultdict(list)
    for s in slots:
        if not s.local:
            by_conv[s.group[1]].append(s)
    for c, members in sorted(by_conv.items()):
        n = len(members[0].env.unwrapped.conversation.questions)
        picked = range(n) if n <= max_questions else sorted(rng.choice(n, size=max_questions, replace=False).tolist())
        requests += [(slot, int(q)) for slot in members for q in picked]
    infos = [{"role": "answer", "session": slot.env.unwrapped.session_index} for slot, _ in requests]
    scores = score_on_memory([(slot.env, q) for slot, q in requests], answerer.answer, infos=infos)
    for s in slots:
        if not s.local:
            s.final_scores = {}
    for (slot, q), score in zip(requests, scores):
        slot.final_scores[q] = float(score)


def final_session_rewards(slot: _Slot, num_sessions: int) -> np.ndarray:
    """Per-session rewards of a global rollout under the official rule (``reward_timing="final"``).

    Session s: the mean final-memory score of the sampled questions whose evidence lies in
    s (a question without evidence credits the last session), 0 when none does; minus the
    final compression penalty; plus the invalid-action penalties of s's turns.
    """
    questions = slot.env.unwrapped.conversation.questions
    credited: list[list[float]] = [[] for _ in range(num_sessions)]
    for q, score in (slot.final_scores or {}).items():
        sessions = {s for s in questions[q].evidence if 0 <= s < num_sessions} or {num_sessions - 1}
        for s in sessions:
            credited[s].append(score)
    compression = slot.env.unwrapped.compression_penalty()
    return np.array([(float(np.mean(v)) if v else 0.0) - compression + slot.penalty[s]
                     for s, v in enumerate(credited)])


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


def _advantages(slots: list[_Slot], num_conversations: int, group_size: int, local_weight: float,
                final: bool = False, zero_truncated: bool = False, skip_uniform_groups: bool = False) -> RolloutBatch:
    samples: list[Sample] = []
    stats: dict[str, list[float]] = defaultdict(list)
    rewards_of = final_session_rewards if final else session_rewards
    for c in range(num_conversations):
        members = [s for s in slots if not s.local and s.group[1] == c]
        num_sessions = members[0].env.unwrapped.conversation.num_sessions
        rewards = np.stack([rewards_of(s, num_sessions) for s in members])  # (G, S)
        if zero_truncated:
            for g, slot in enumerate(members):
                rewards[g, sorted(slot.truncated)] = 0.0
        adv = session_group_advantages(torch.tensor(rewards), torch.ones(rewards.shape, dtype=torch.bool))  # (G, S)
        for g, slot in enumerate(members):
            for sample in slot.samples:
                sample.advantage = float(adv[g, sample.session])
                sample.reward = float(rewards[g, sample.session])
                sample.group = slot.group
                samples.append(sample)
            episode = (slot.final_info or {}).get("episode_summary", {})
            score = episode.get("mean_score", 0.0)
            if final:
                score = float(np.mean(list(slot.final_scores.values()))) if slot.final_scores else 0.0
            stats["charts/episode_score"].append(score if score == score else 0.0)
            stats["charts/session_reward"].append(float(rewards[g].mean()))
            stats["charts/memory_size"].append(float(len(slot.env.unwrapped.memory)))
    local_groups: dict[tuple, list[_Slot]] = defaultdict(list)
    for s in slots:
        if s.local:
            local_groups[s.group].append(s)
    for group in local_groups.values():
        if zero_truncated:
            for slot in group:
                slot.reward = 0.0 if slot.truncated else slot.reward
        rewards = torch.tensor([s.reward for s in group], dtype=torch.float64)
        adv = group_advantages(rewards, torch.zeros(len(group), dtype=torch.long))
        for slot, a in zip(group, adv.tolist()):
            for sample in slot.samples:
                sample.advantage = local_weight * a
                sample.reward = float(slot.reward)
                sample.group = slot.group
                samples.append(sample)
            stats["charts/local_reward"].append(float(slot.reward))
    # a global group is normalised per session, a local group's key already names its session
    informative = informative_samples(samples, key=lambda s: (s.group, s.session))
    policy_samples = informative if skip_uniform_groups else samples
    invalid = [1.0 for s in slots for v in s.penalty.values() if v < 0]
    turns = sum(len(s.samples) for s in slots)
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out["charts/local_groups"] = float(len(local_groups))
    out["charts/samples"] = float(len(policy_samples))
    out["charts/samples_local"] = float(sum(s.local for s in policy_samples))
    out["charts/invalid_rate"] = float(len(invalid) / max(turns, 1))
    out["charts/truncated_sessions"] = float(sum(len(s.truncated) for s in slots))
    out["charts/uniform_group_samples"] = float(len(samples) - len(informative))  # left out under skip_uniform_groups
    out["charts/generated_tokens"] = float(sum(len(s.completion_ids) for s in samples))
    return RolloutBatch(policy_samples, out)


class GreedyPolicy:
    """A policy decoded greedily (validation, as the official code validates)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def generate(self, observations: Sequence[str], temperature: float | None = None) -> list[Any]:
        return self.policy.generate(observations, temperature=0.0)


def validate(policy: Policy, answerer: Answerer, make_env: Callable[[], Any], conversations: Sequence[Any], *,
             extractor: Any | None = None) -> float:
    """Mean answer score of one greedy rollout per conversation, every question scored on its final memory."""
    batch = collect(GreedyPolicy(policy), answerer, make_env, conversations, group_size=1, inner_fraction=0.0,
                    inner_n=2, max_local_questions=1, local_weight=1.0, rng=np.random.default_rng(0),
                    extractor=extractor, reward_timing="final", max_final_questions=10**9)
    return float(batch.stats["charts/episode_score"])


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
