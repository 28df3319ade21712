"""Score a memory without changing it: ask questions of (forked) environments' current memories.

LoGo-GRPO's local rerolls, Memory-R1's manager reward and the SB3 manager's potential
reward all ask the same thing: given environments that hold some memory (usually forks
taken before or after one action), how well does a frozen answerer do on the questions due
so far? :func:`score_on_memory` answers every (environment, question) request in ONE batch
(an LLM answerer generates them together) and scores each answer with the environment's
own metric; nothing is stepped, so the environments stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

AnswerBatch = Callable[[list[str], list[dict]], list[str]]
"""Answers a batch of answer observations (with their infos), e.g. an answerer's ``answer``
method or an agent's ``act_batch``."""


def due_questions(env: Any, session: int, limit: int | None = None) -> list[int]:
    """Indices of the questions whose evidence lies in sessions up to ``session`` -- the
    ``limit`` latest of them when given."""
    due = env.unwrapped.questions_due_by(session)
    return due[-limit:] if limit is not None and limit < len(due) else due


def score_on_memory(requests: Sequence[tuple[Any, int]], answer: AnswerBatch, *,
                    infos: Sequence[dict] | None = None) -> list[float]:
    """The score of each ``(env, question index)`` request, answered on the env's current memory.

    ``answer`` gets every probe observation (``env.unwrapped.probe``) in one call, with
    ``infos`` (default ``{"role": "answer"}`` for each). Returns one score per request, in
    order (the env's metric, no penalty).
    """
    if not requests:
        return []
    observations = [env.unwrapped.probe(q) for env, q in requests]
    infos = [{"role": "answer"} for _ in requests] if infos is None else list(infos)
    texts = answer(observations, infos)
    if len(texts) != len(requests):
        raise ValueError(f"the answerer returned {len(texts)} answers for {len(requests)} questions")
    return [float(env.unwrapped.score_answer(q, text)) for (env, q), text in zip(requests, texts)]
