"""Evaluation of one leaderboard row: the memory phase of every conversation, the answers
on the final memory, and their scores (with the judge's labels when a judge is given).

Every conversation is played under the benchmark protocol (``qa_schedule="end"``: all
questions after the last session); the answerer gets the answer observation of each
selected question on the final memory, batched across the conversation's questions.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym

import memenv  # noqa: F401  (registers the environments)
from memenv.memory import count_tokens
from memenv.metrics import CONVERSATION_MEAN_RULE, METRIC_RULES, judge_answers, question_scores, summarize
from memenv.parsing import parse_answer
from memenv.sources import ConversationSource

from agents.baselines import EXTRACT, MANAGE, recent_records
from benchmarks.leaderboard.rows import AgentPool, RowSpec

ENV_ID = "MemorySessionBench-v0"  # MemorySession-v0 with qa_schedule="end"
QA_SCHEDULE = "end"
# 900 whitespace tokens of LoCoMo turns (dates counted) render to about 1,900 SmolLM2
# tokens with ids and dates, so the LLM agent's 2,048-token prompt keeps all of them.
DEFAULT_CONTEXT_TOKENS = 900
DEFAULT_ANSWER_TOP_K = 30  # Memory-R1 / Memory-R2: top 30 memories per speaker
DEFAULT_BATCH_SIZE = 8


def select_questions(num_questions: int, max_questions: int | None) -> list[int]:
    """Indices of the questions to ask: all, or ``max_questions`` evenly spaced over the
    conversation's question list (so every part of the list, and of its kinds, is asked)."""
    if max_questions is None or max_questions >= num_questions:
        return list(range(num_questions))
    if max_questions < 1:
        raise ValueError(f"max_questions must be >= 1, got {max_questions}")
    step = num_questions / max_questions
    return [int(i * step + step / 2) for i in range(max_questions)]


def metric_rules(locomo: bool, judged: bool) -> dict[str, str]:
    """The rule of every score a row reports (``memenv.metrics.METRIC_RULES``), recorded in
    the results so that a reader knows which BLEU-1 and which exact match they hold."""
    names = ["f1", "bleu1", "em", "em_mem0", "squad_f1", "squad_bleu1", *(["locomo_f1"] if locomo else []),
             *(["j"] if judged else [])]
    return {**{name: METRIC_RULES[name] for name in names}, "by_conversation": CONVERSATION_MEAN_RULE}


def act_all(agent: Any, observations: list[str], infos: list[dict]) -> list[str]:
    """Actions for many observations: ``act_batch`` when the agent has it, else ``act``."""
    from memenv.play import act_batch_of

    actions = list(act_batch_of(agent)(observations, infos))
    if len(actions) != len(observations):
        raise ValueError(f"{type(agent).__name__}.act_batch returned {len(actions)} actions "
                         f"for {len(observations)} observations")
    return actions


@dataclass(frozen=True)
class EvalConfig:
    """What every row is evaluated on, and how."""

    source: ConversationSource
    keys: tuple[Any, ...]
    locomo_metrics: bool
    max_questions: int | None = None
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    answer_top_k: int = DEFAULT_ANSWER_TOP_K
    batch_size: int = DEFAULT_BATCH_SIZE
    save_predictions: bool = False  # every answer in the JSON (large for scripted rows)
    save_memory: bool = False  # each conversation's final memory records in the JSON (texts of the data)
    keep_texts: bool = True  # questions and gold answers with them (not for licensed data)
    env_options: tuple[tuple[str, Any], ...] = ()  # more environment options, e.g. the hard worlds' memory budget

    def make_env(self) -> gym.Env:
        """A benchmark environment over this config's conversations."""
        return gym.make(ENV_ID, source=self.source, qa_schedule=QA_SCHEDULE, answer_top_k=self.answer_top_k,
                        **dict(self.env_options))

    def num_selected(self, key: Any) -> int:
        """How many questions of conversation ``key`` are asked."""
        return len(select_questions(len(self.source.get(key).questions), self.max_questions))


class Progress:
    """Conversations and questions done: a rich progress bar on a terminal, one plain line
    per finished conversation otherwise (so logs show progress), nothing when disabled."""

    def __init__(self, total_conversations: int, total_questions: int, enabled: bool) -> None:
        from rich.console import Console

        self._bar = None
        self._plain = enabled and not Console(stderr=True).is_terminal
        self._totals = (total_conversations, total_questions)
        self._done = [0, 0]
        self._text = ""
        self._start = time.perf_counter()
        if enabled and not self._plain:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self._conversations = self._bar.add_task("conversations", total=total_conversations)
            self._questions = self._bar.add_task("questions", total=total_questions)

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def status(self, text: str) -> None:
        """Show what is running now (e.g. ``"oracle + scripted: answers"``)."""
        self._text = text
        if self._bar is not None:
            self._bar.update(self._conversations, description=f"conversations [{text}]"[:60])

    def conversation_done(self) -> None:
        """Count a finished conversation (and, in a log, print a line)."""
        self._done[0] += 1
        if self._bar is not None:
            self._bar.advance(self._conversations)
        elif self._plain:
            print(f"[{time.perf_counter() - self._start:7.0f} s] conversations {self._done[0]}/{self._totals[0]}, "
                  f"questions {self._done[1]}/{self._totals[1]} ({self._text})", file=sys.stderr, flush=True)

    def questions_done(self, n: int) -> None:
        """Count ``n`` answered questions."""
        self._done[1] += n
        if self._bar is not None:
            self._bar.advance(self._questions, n)


def _memory_phase(strategy: Any, envs: list[gym.Env], keys: Sequence[Any]) -> tuple[list[dict], int, int]:
    """Play the extract / manage turns of every conversation to the end; conversations go
    in lockstep so a batched strategy (``act_batch``) acts on all of them at once.

    Returns the last info of each env, the number of memory actions and of invalid ones.
    """
    from memenv.play import play

    counts = {"taken": 0, "invalid": 0}

    def on_turn(turn) -> None:
        counts["taken"] += 1
        counts["invalid"] += not turn.next_info.get("valid", True)

    infos = play(envs, keys, strategy, on_turn=on_turn, until=lambda info: info["role"] not in (EXTRACT, MANAGE))
    return infos, counts["taken"], counts["invalid"]


def _answer_observations(env: gym.Env, strategy: Any, indices: list[int], context_tokens: int) -> tuple[list[str], int]:
    """Answer observations of the selected questions on the final memory, and the tokens
    of any context the strategy keeps itself (its records replace the memories)."""
    base = env.unwrapped
    context = shown = None
    if callable(getattr(strategy, "context_records", None)):
        context = list(strategy.context_records(base.conversation.conv_id))
        shown = recent_records(context, context_tokens)
    observations = []
    for qi in indices:
        obs = base.probe(qi)
        if context is not None:
            data = json.loads(obs)
            data["memories"] = shown
            data["memory_size"] = len(context)
            obs = json.dumps(data, ensure_ascii=False)
        observations.append(obs)
    context_tokens_kept = sum(count_tokens(str(r.get("text", ""))) for r in context or ())
    return observations, context_tokens_kept


def _answer(answerer: Any, observations: list[str], infos: list[dict], batch_size: int,
            progress: Progress) -> list[str]:
    """Answers in batches of prompts of similar length (less padding), original order kept."""
    order = sorted(range(len(observations)), key=lambda i: len(observations[i]))
    answers: list[str] = [""] * len(observations)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        actions = act_all(answerer, [observations[i] for i in chunk], [infos[i] for i in chunk])
        for i, action in zip(chunk, actions):
            answers[i] = parse_answer(action)
        progress.questions_done(len(chunk))
    return answers


def evaluate_row(row: RowSpec, config: EvalConfig, pool: AgentPool, progress: Progress,
                 judge: tuple[str, Callable[[list[str]], list[str]]] | None = None,
                 judge_batch_size: int | None = None) -> dict[str, Any]:
    """Play every conversation with the row's strategy, answer with its answerer, score."""
    strategy, answerer = pool.get(row.strategy), pool.get(row.answerer)
    batched = callable(getattr(strategy, "act_batch", None))
    groups = [list(config.keys)] if batched else [[key] for key in config.keys]
    records, predictions, conversations, asked_in = [], [], [], []
    memory_seconds = answer_seconds = 0.0
    actions_taken = invalid = 0
    for group in groups:
        progress.status(f"{row.label}: memory")
        envs = [config.make_env() for _ in group]
        start = time.perf_counter()
        infos, taken, bad = _memory_phase(strategy, envs, group)
        memory_seconds += time.perf_counter() - start
        actions_taken, invalid = actions_taken + taken, invalid + bad
        for env, key, info in zip(envs, group, infos):
            progress.status(f"{row.label}: answers")
            conv = env.unwrapped.conversation
            indices = select_questions(len(conv.questions), config.max_questions)
            start = time.perf_counter()
            observations, context_kept = _answer_observations(env, strategy, indices, config.context_tokens)
            answer_infos = [{"role": "answer", "conversation": conv.conv_id, "question_id": conv.questions[i].qid}
                            for i in indices]
            answers = _answer(answerer, observations, answer_infos, config.batch_size, progress) if indices else []
            answer_seconds += time.perf_counter() - start
            for qi, answer in zip(indices, answers):
                question = conv.questions[qi]
                records.append((question.kind, answer, question.answer))
                asked_in.append(conv.conv_id)
                entry = {"question_id": question.qid, "kind": question.kind, "prediction": answer}
                if config.keep_texts:
                    entry.update(question=question.question, gold_answer=question.answer)
                predictions.append(entry)
            memory = env.unwrapped.memory
            conversations.append({"conversation": conv.conv_id, "questions": len(indices),
                                  "memory_size": len(memory), "memory_tokens": memory.tokens + context_kept,
                                  "seen_tokens": info["seen_tokens"],
                                  **({"memory": [e.record() for e in memory]} if config.save_memory else {})})
            env.close()
            progress.conversation_done()
    if not records:
        raise ValueError(f"row {row.label!r}: the selected conversations have no questions")
    labels = None
    judge_info = None
    if judge is not None:
        progress.status(f"{row.label}: judging")
        name, generate = judge
        items = [(p.get("question") or _question_text(config, p["question_id"]), gold, p["prediction"])
                 for p, (_, _, gold) in zip(predictions, records)]
        result = judge_answers(items, generate, judge_name=name, batch_size=judge_batch_size)
        labels = result.labels
        judge_info = {"model": result.judge_name, "num_unparseable": result.num_unparseable}
        for entry, label in zip(predictions, labels):
            entry["judge"] = label
    summary = summarize(records, judge_labels=labels, locomo=config.locomo_metrics, conversations=asked_in)
    for entry, (kind, prediction, gold) in zip(predictions, records):
        entry.update(question_scores(kind, prediction, gold, config.locomo_metrics))
    n_conv, n_q = len(conversations), len(records)
    return {
        "row": row.label, "strategy": row.strategy, "answerer": row.answerer,
        "num_conversations": n_conv, "num_questions": n_q,
        "overall": summary["overall"], "per_kind": summary["per_kind"],
        "by_conversation": summary["by_conversation"],
        "memory_tokens_mean": sum(c["memory_tokens"] for c in conversations) / n_conv,
        "seen_tokens_mean": sum(c["seen_tokens"] for c in conversations) / n_conv,
        "memory_seconds_per_conversation": memory_seconds / n_conv,
        "answer_seconds_per_question": answer_seconds / n_q,
        "memory_actions": actions_taken, "invalid_memory_actions": invalid,
        "judge": judge_info, "conversations": conversations,
        **({"predictions": predictions} if config.save_predictions else {}),
    }


def _question_text(config: EvalConfig, question_id: str) -> str:
    for key in config.keys:
        for question in config.source.get(key).questions:
            if question.qid == question_id:
                return question.question
    raise KeyError(question_id)
