"""Memory-R1's rollouts: answer items on fixed memories, and manage actions scored on forks.

* answer mode: :func:`build_answer_items` builds a conversation's memory once with a fixed
  manager and turns each question into an answer observation (``probe``);
  :func:`collect_answer_batch` samples ``n`` answers per question and rewards each by EM
  (or F1) of its parsed short answer.
* manager mode: :func:`collect_manager_batch` plays conversations and, at every manage turn,
  samples ``n`` operation lists for the same state, applies each to a fork of the
  environment and scores it with the frozen answerer on the questions due so far
  (:func:`memenv.probing.score_on_memory`); the trajectory continues from the first fork.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agents.sampler import Generation, RoleSampler
from algos.cli import progress_bar
from algos.update import Sample


@dataclass(frozen=True)
class AnswerItem:
    """One question on a fixed memory bank: its answer observation and gold answer."""

    obs: str
    gold: str
    kind: str
    conversation: Any
    question_index: int


# ---------------------------------------------------------------------------- pure helpers
def answer_reward(text: str, gold: str, metric: str = "em") -> float:
    """The outcome reward of one answer-agent output: EM (or F1) of its parsed short answer."""
    from agents.prompts import parse_answer
    from memenv.scoring import get_metric

    return float(get_metric(metric)(parse_answer(text), gold))


def assign_group_advantages(samples: Sequence[Sample]) -> None:
    """GRPO: normalise rewards within each ``sample.group`` and store them as advantages."""
    from algos.advantages import group_advantages

    if not samples:
        return
    labels: dict[tuple, int] = {}
    ids = torch.tensor([labels.setdefault(s.group, len(labels)) for s in samples], dtype=torch.long)
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float64)
    for s, a in zip(samples, group_advantages(rewards, ids).tolist()):
        s.advantage = float(a)


def build_answer_items(make_env: Callable[[], Any], conversation: Any, manager: Any,
                       kinds: Sequence[str] = ()) -> list[AnswerItem]:
    """Build one conversation's memory bank with ``manager`` and return its questions' observations.

    The environment must use ``qa_schedule="end"``: the manager plays every extract and
    manage turn, then each question's answer observation comes from ``probe``.
    """
    from memenv.play import play

    env = make_env()
    play([env], [conversation], manager, until=lambda info: info.get("role") not in ("extract", "manage"))
    base = env.unwrapped
    items = []
    for i, q in enumerate(base.conversation.questions):
        if kinds and q.kind not in kinds:
            continue
        items.append(AnswerItem(base.probe(i), q.answer, q.kind, conversation, i))
    return items


# ---------------------------------------------------------------------------- collection
def collect_answer_batch(sampler: RoleSampler, items: Sequence[AnswerItem], *, n: int, metric: str,
                         algo: str) -> tuple[list[Sample], dict[str, float]]:
    """n sampled answers per question, rewarded by EM; GRPO advantages when ``algo == "grpo"``."""
    samples: list[Sample] = []
    groups = sampler.sample([it.obs for it in items], num_samples=n, role="answer")
    for q, (item, group) in enumerate(zip(items, groups)):
        for g in group:
            samples.append(Sample(g.prompt_ids, g.completion_ids, g.logprobs, role="answer", session=-1,
                                    local=False, group=("answer", q), reward=answer_reward(g.text, item.gold, metric),
                                  constraint=g.constraint))
    if algo == "grpo":
        assign_group_advantages(samples)
    rewards = [s.reward for s in samples]
    return samples, {"charts/reward": float(np.mean(rewards)) if rewards else 0.0,
                     "charts/samples": float(len(samples)),
                     "charts/generated_tokens": float(sum(len(s.completion_ids) for s in samples))}


def evaluate_answers(sampler: RoleSampler, items: Sequence[AnswerItem], metric: str, *, description: str = "eval",
                     console=None, progress: bool = False) -> float:
    """Mean reward of the greedy answers (0 for no items); a progress bar with ``progress``."""
    if not items:
        return 0.0
    bar = progress_bar(console=console, enabled=progress)
    with bar:
        task = bar.add_task(description, total=len(items))
        groups = sampler.sample([it.obs for it in items], role="answer", greedy=True,
                                on_batch=lambda k: bar.advance(task, k))
    return float(np.mean([answer_reward(g[0].text, it.gold, metric) for it, g in zip(items, groups)]))


@dataclass
class _Trajectory:
    env: Any
    obs: str
    info: dict
    index: int
    done: bool = False


def collect_manager_batch(sampler: RoleSampler, answerer: Any, make_env: Callable[[], Any], conversations: Sequence[Any],
                          *, n: int, extractor: Any | None, max_questions: int,
                          algo: str) -> tuple[list[Sample], dict[str, float]]:
    """Play the conversations; at every manage turn sample n operation lists and score each on a fork.

    Reward of a manage action: mean score of the frozen answerer on the (at most
    ``max_questions`` latest) questions due by the end of that session, on the memory the
    action leaves, plus the step reward (0, or minus the invalid-action penalty).
    ``extractor=None`` samples extract turns from the policy (not trained).
    """
    trajectories = []
    for c, key in enumerate(conversations):
        env = make_env()
        obs, info = env.reset(options={"conversation": key})
        trajectories.append(_Trajectory(env, obs, info, c))
    samples: list[Sample] = []
    stats: dict[str, list[float]] = defaultdict(list)
    while True:
        active = [t for t in trajectories if not t.done]
        if not active:
            break
        actions: dict[int, str] = {}
        extracting = [t for t in active if t.info["role"] == "extract"]
        if extractor is not None:
            for t in extracting:
                actions[id(t)] = extractor.act(t.obs, t.info)
        elif extracting:
            for t, group in zip(extracting, sampler.sample([t.obs for t in extracting], role="extract")):
                actions[id(t)] = group[0].text
        answering = [t for t in active if t.info["role"] == "answer"]
        if answering:
            for t, text in zip(answering, answerer.answer([t.obs for t in answering], [t.info for t in answering])):
                actions[id(t)] = text
        managing = [t for t in active if t.info["role"] == "manage"]
        if managing:
            _manage_step(sampler, answerer, managing, n, max_questions, samples, stats)
        for t in active:
            if id(t) not in actions:
                continue  # a manage turn: already advanced by _manage_step
            role = t.info["role"]
            obs, _, terminated, truncated, info = t.env.step(actions[id(t)])
            if role == "answer":
                stats["charts/episode_score"].append(float(info.get("score", 0.0)))
            t.obs, t.info, t.done = obs, info, terminated or truncated
    if algo == "grpo":
        assign_group_advantages(samples)
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out["charts/reward"] = float(np.mean([s.reward for s in samples])) if samples else 0.0
    out["charts/samples"] = float(len(samples))
    out["charts/generated_tokens"] = float(sum(len(s.completion_ids) for s in samples))
    return samples, out


def _manage_step(sampler, answerer, managing, n, max_questions, samples, stats) -> None:
    from memenv.probing import due_questions, score_on_memory

    groups = sampler.sample([t.obs for t in managing], num_samples=n, role="manage")
    forks: list[tuple[_Trajectory, int, Generation, Any, tuple]] = []
    requests = []
    for t, group in zip(managing, groups):
        session = t.info["session"]
        for j, gen in enumerate(group):
            fork = t.env.fork()
            stepped = fork.step(gen.text)
            key = len(forks)
            forks.append((t, session, gen, fork, stepped))
            for q in due_questions(fork, session, max_questions):
                requests.append((fork, q, key))
    scores: dict[int, list[float]] = defaultdict(list)
    for (_, _, key), score in zip(requests, score_on_memory([(f, q) for f, q, _ in requests], answerer.answer)):
        scores[key].append(score)
    first_of: dict[int, int] = {}
    for key, (t, session, gen, fork, (obs, step_reward, terminated, truncated, info)) in enumerate(forks):
        answer_score = float(np.mean(scores[key])) if scores[key] else 0.0
        reward = answer_score + float(step_reward)
        samples.append(Sample(gen.prompt_ids, gen.completion_ids, gen.logprobs, role="manage", session=session,
                                local=True, group=("manage", t.index, session), reward=reward,
                              constraint=gen.constraint))
        stats["charts/valid_rate"].append(float(bool(info.get("valid", True))))
        first_of.setdefault(id(t), key)
    for t in managing:
        _, _, _, fork, (obs, _, terminated, truncated, info) = forks[first_of[id(t)]]
        t.env, t.obs, t.info, t.done = fork, obs, info, terminated or truncated
