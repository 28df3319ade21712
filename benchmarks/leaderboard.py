"""Leaderboard: memory strategies x answerers on synthetic worlds, LoCoMo or LongMemEval.

A row pairs a MEMORY STRATEGY (any agent of the registry, acting on the extract and manage
turns) with an ANSWERER (``scripted`` or any registry agent, e.g. ``llm:smollm2-135m``).
Every conversation is played under the benchmark protocol (``qa_schedule="end"``: all
questions after the last session); the answerer gets the answer observation of each
question on the final memory, batched across the conversation's questions.

    python -m benchmarks.leaderboard --source synthetic --num-sessions 8 --worlds 0-9 \\
        --rows oracle+scripted add-all+scripted noop+scripted rag-turns+scripted \\
        --out benchmarks/results/leaderboard_synthetic8
    python -m benchmarks.leaderboard --source locomo \\
        --data-path ../shared/data/locomo/locomo_dev.json --split memory-r2 --part train \\
        --rows rag-turns+llm:smollm2-135m full-context+llm:smollm2-135m --max-questions 20

Rows are ``STRATEGY+ANSWERER`` (a row without ``+`` uses ``--answerer``). Built-in
strategies: ``oracle``, ``add-all`` (synthetic worlds only: they read the gold
annotations), ``noop`` (remembers nothing), ``full-context`` (the answerer reads the most recent ``--context-tokens``
whitespace tokens of the transcript instead of memories), ``rag-turns`` (every turn is a
memory, BM25 top-k per speaker), ``add-only`` (rule-based mem0-style ADD-only facts); see
``agents/baselines.py``. Any other registered agent (``llm:<model>[:<adapter>]``,
``sb3-manager:<zip>``, entry points of the ``memenv.agents`` group) works by name. The
``scripted`` answerer (and the built-in strategies, when they answer) reads only the
synthetic worlds' canonical fact sentences, so on LoCoMo and LongMemEval rows need an
LLM answerer; such rows, unknown agents and flags of another source are refused before
anything loads.

Metrics per row, overall and per question kind: token F1 (mem0 / A-Mem style), BLEU-1,
exact match, LoCoMo's own F1 (LoCoMo only), J with ``--judge llm:<model>``; plus memory
tokens kept at the end (whitespace tokens, mean per conversation; for full-context the
kept transcript), memory-phase seconds per conversation and answer seconds per question.
Outputs: ``<out>.md`` (with the command line, date and machine), ``<out>.json`` and a
table on the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym

import memenv  # noqa: F401  (registers the environments)
from memenv.data.locomo import LOCOMO_KINDS
from memenv.memory import count_tokens
from memenv.metrics import CORRECT, WRONG, judge_answers, summarize, token_f1
from memenv.parsing import parse_answer
from memenv.sources import ConversationSource, make_source

from agents.by_role import SPEC_NAME as BY_ROLE
from agents.by_role import parse_by_role
from agents.registry import available_agents, make_agent
from algos.cli import OneLineParser
from agents.baselines import ANSWER, EXTRACT, MANAGE, ScriptedAnswerer, recent_records

SOURCES = ("synthetic", "locomo", "longmemeval")
ENV_ID = "MemorySessionBench-v0"  # MemorySession-v0 with qa_schedule="end"
QA_SCHEDULE = "end"
SCRIPTED_ANSWERER = "scripted"
DEFAULT_LLM = "llm:smollm2-135m"
# Synthetic evaluation worlds stay below the training seeds (algos.logo_grpo.TRAIN_SEED_OFFSET).
EVAL_SEED_LIMIT = 1_000_000
DEFAULT_WORLDS = "0-9"
DEFAULT_NUM_SESSIONS = 8
DEFAULT_SYNTHETIC_ROWS = ("oracle", "add-all", "noop", "rag-turns", "add-only", "full-context")
DEFAULT_DATA_ROWS = ("rag-turns", "add-only", "full-context")
# 900 whitespace tokens of LoCoMo turns (dates counted) render to about 1,900 SmolLM2
# tokens with ids and dates, so the LLM agent's 2,048-token prompt keeps all of them.
DEFAULT_CONTEXT_TOKENS = 900
DEFAULT_ANSWER_TOP_K = 30  # Memory-R1 / Memory-R2: top 30 memories per speaker
DEFAULT_BATCH_SIZE = 8
DEFAULT_JUDGE_MAX_NEW_TOKENS = 64
JUDGE_CONTROL_QUESTIONS = 6  # control items (x2) that show whether J can be trusted
DEFAULT_LOCOMO_PATHS = ("../shared/data/locomo/locomo_dev.json",)
LOCOMO_PATH_VARIABLE = "MEMENV_LOCOMO_PATH"
RESULTS_DIR = Path("benchmarks/results")
# Strategies that extract the gold facts of info["gold"], which only synthetic worlds carry:
# on real data they store nothing.
GOLD_STRATEGIES = ("oracle", "add-all")
# Agents whose answer is memenv.scripted.scripted_answer, a reader of the synthetic worlds'
# canonical fact sentences: on real data it answers "unknown" (F1 0).
SCRIPTED_READERS = (SCRIPTED_ANSWERER, "oracle", "noop", "add-all", "full-context", "rag-turns", "add-only")
# Flags that only mean something for some sources (argparse dest -> those sources).
SOURCE_FLAGS = {"num_sessions": ("synthetic",), "worlds": ("synthetic",), "data_path": ("locomo", "longmemeval"),
                "conversations": ("locomo", "longmemeval"), "split": ("locomo",), "part": ("locomo",),
                "include_adversarial": ("locomo",)}
LOCOMO_CATEGORY = {kind: number for number, kind in LOCOMO_KINDS.items()}


# ------------------------------------------------------------------------------ parsing --
@dataclass(frozen=True)
class RowSpec:
    """One leaderboard row: a memory strategy and an answerer, both agent specs."""

    strategy: str
    answerer: str

    @property
    def label(self) -> str:
        return f"{self.strategy} + {self.answerer}"


def parse_row(text: str, default_answerer: str) -> RowSpec:
    """``"STRATEGY+ANSWERER"`` (or ``"STRATEGY"``, answered by ``default_answerer``)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a row is 'STRATEGY+ANSWERER' (e.g. 'rag-turns+scripted'), got {text!r}")
    strategy, sep, answerer = text.strip().partition("+")
    if not strategy or (sep and not answerer):
        raise ValueError(f"row {text!r} should be 'STRATEGY+ANSWERER' with both parts non-empty")
    return RowSpec(strategy, answerer if sep else default_answerer)


def parse_worlds(specs: Sequence[str]) -> list[int]:
    """World seeds from ``["0-9"]``, ``["0", "3", "7-8"]`` or ``["0,3,5"]`` (order kept,
    duplicates dropped); every seed must be an evaluation seed below ``EVAL_SEED_LIMIT``."""
    seeds: list[int] = []
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if match is None:
                raise ValueError(f"bad world spec {part!r}: use a seed (7), a range (0-9) or a list (0,3,5)")
            low = int(match.group(1))
            high = int(match.group(2)) if match.group(2) is not None else low
            if high < low:
                raise ValueError(f"bad world range {part!r}: the end is below the start")
            seeds.extend(range(low, high + 1))
    if not seeds:
        raise ValueError(f"no world seeds in {list(specs)!r}")
    too_big = [s for s in seeds if s >= EVAL_SEED_LIMIT]
    if too_big:
        raise ValueError(f"world seeds {too_big[:5]} are training seeds (>= {EVAL_SEED_LIMIT}); "
                         f"evaluate on seeds below {EVAL_SEED_LIMIT}")
    return list(dict.fromkeys(seeds))


def select_questions(num_questions: int, max_questions: int | None) -> list[int]:
    """Indices of the questions to ask: all, or ``max_questions`` evenly spaced over the
    conversation's question list (so every part of the list, and of its kinds, is asked)."""
    if max_questions is None or max_questions >= num_questions:
        return list(range(num_questions))
    if max_questions < 1:
        raise ValueError(f"max_questions must be >= 1, got {max_questions}")
    step = num_questions / max_questions
    return [int(i * step + step / 2) for i in range(max_questions)]


def _agent_name(spec: str) -> str:
    return spec.partition(":")[0]


def _role_specs(spec: str, roles: Sequence[str]) -> list[str]:
    """The agent specs that play ``roles`` for ``spec`` (a ``by-role:`` spec is opened up,
    every other spec plays every role itself)."""
    name, _, arg = spec.partition(":")
    if name != BY_ROLE:
        return [spec]
    parts = parse_by_role(arg)
    missing = [role for role in roles if role not in parts]
    if missing:
        raise ValueError(f"{spec!r} names no agent for {' and '.join(missing)}")
    return [leaf for role in roles for leaf in _role_specs(parts[role], (role,))]


def check_rows(rows: Sequence[RowSpec], source: str) -> None:
    """Refuse, before any agent is built, a row that names an unknown agent or that cannot
    score on ``source``: a strategy that reads gold annotations, or a scripted answerer,
    on real data (both would publish F1 0 as if it were a result)."""
    known = set(available_agents())
    for row in rows:
        if row.strategy == SCRIPTED_ANSWERER:
            raise ValueError(f"row {row.label!r}: {SCRIPTED_ANSWERER!r} is an answerer, not a memory strategy; "
                             f"write it after the '+' (e.g. rag-turns+{SCRIPTED_ANSWERER})")
        for part, spec, roles in (("strategy", row.strategy, (EXTRACT, MANAGE)), ("answerer", row.answerer, (ANSWER,))):
            try:
                leaves = [SCRIPTED_ANSWERER] if spec == SCRIPTED_ANSWERER else _role_specs(spec, roles)
            except ValueError as error:
                raise ValueError(f"row {row.label!r}: {part} {error}") from None
            for leaf in leaves:
                if spec != SCRIPTED_ANSWERER and _agent_name(leaf) not in known:
                    extra = f"'{SCRIPTED_ANSWERER}', " if part == "answerer" else ""
                    raise ValueError(f"row {row.label!r}: unknown {part} {leaf!r}; available: "
                                     f"{extra}{', '.join(sorted(known))}")
            if source == "synthetic":
                continue
            for leaf in leaves:
                name = _agent_name(leaf)
                if part == "strategy" and name in GOLD_STRATEGIES:
                    raise ValueError(
                        f"row {row.label!r}: the {name} strategy extracts the gold facts that only synthetic worlds "
                        f"annotate, so on --source {source} it stores nothing (F1 0); use rag-turns, add-only, "
                        "full-context, noop or a trained agent")
                if part == "answerer" and name in SCRIPTED_READERS:
                    raise ValueError(
                        f"row {row.label!r}: the {name} answerer only reads the synthetic worlds' canonical fact "
                        f"sentences, so on --source {source} it answers 'unknown' (F1 0); use an LLM answerer "
                        f"such as {DEFAULT_LLM}")


# ------------------------------------------------------------------------------- agents --
def _limit_torch_threads(threads: int) -> None:
    """One torch thread by default: on a shared 2-core CPU two threads spin against each other."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class AgentPool:
    """Agents by spec, built once: a model used as strategy, answerer and judge loads once."""

    def __init__(self, torch_threads: int = 1) -> None:
        self.torch_threads = torch_threads
        self._agents: dict[str, Any] = {}

    def get(self, spec: str) -> Any:
        """The agent for ``spec`` (``"scripted"`` is the scripted answerer)."""
        if spec not in self._agents:
            _limit_torch_threads(self.torch_threads)
            self._agents[spec] = ScriptedAnswerer() if spec == SCRIPTED_ANSWERER else make_agent(spec)
            _limit_torch_threads(self.torch_threads)
        return self._agents[spec]


def act_all(agent: Any, observations: list[str], infos: list[dict]) -> list[str]:
    """Actions for many observations: ``act_batch`` when the agent has it, else ``act``."""
    from memenv.play import act_batch_of

    actions = list(act_batch_of(agent)(observations, infos))
    if len(actions) != len(observations):
        raise ValueError(f"{type(agent).__name__}.act_batch returned {len(actions)} actions "
                         f"for {len(observations)} observations")
    return actions


def judge_generator(agent: Any, max_new_tokens: int) -> Callable[[list[str]], list[str]]:
    """Prompts -> greedy completions with an LLM agent's model and chat template."""
    model, tokenizer = getattr(agent, "model", None), getattr(agent, "tokenizer", None)
    if model is None or tokenizer is None:
        raise ValueError(f"the judge must be a causal-LM agent such as 'llm:smollm2-135m'; "
                         f"{type(agent).__name__} has no model and tokenizer")
    from agents.generation import generate

    def run(prompts: list[str]) -> list[str]:
        rendered = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                  add_generation_prompt=True) for p in prompts]
        return generate(model, tokenizer, rendered, max_new_tokens=max_new_tokens, temperature=0.0).texts

    return run


def judge_control_items(questions: Sequence[Any], count: int) -> list[tuple[tuple[str, str, str], str]]:
    """Control items with a known verdict, to show how far a judge can be trusted: for
    ``count`` questions evenly spaced over ``questions``, the gold answer itself (expected
    CORRECT) and the gold answer of another question with no word in common (expected
    WRONG). Questions without such a partner get only the first item."""
    items: list[tuple[tuple[str, str, str], str]] = []
    for i in select_questions(len(questions), count):
        question = questions[i]
        items.append(((question.question, question.answer, question.answer), CORRECT))
        words = set(question.answer.lower().split())
        for offset in range(1, len(questions)):
            other = questions[(i + offset) % len(questions)]
            if other.answer.strip() and not words & set(other.answer.lower().split()):
                items.append(((question.question, question.answer, other.answer), WRONG))
                break
    return items


def judge_agreement(generate: Callable[[list[str]], list[str]], name: str, questions: Sequence[Any],
                    count: int, batch_size: int | None = None) -> dict[str, Any]:
    """How often the judge gives the expected verdict on :func:`judge_control_items`."""
    controls = judge_control_items(questions, count)
    if not controls:
        return {"items": 0, "agreement": None}
    result = judge_answers([item for item, _ in controls], generate, judge_name=name, batch_size=batch_size)
    right = [label == expected for label, (_, expected) in zip(result.labels, controls)]
    correct_controls = [ok for ok, (_, expected) in zip(right, controls) if expected == CORRECT]
    wrong_controls = [ok for ok, (_, expected) in zip(right, controls) if expected == WRONG]
    return {"items": len(controls), "agreement": sum(right) / len(right),
            "gold_judged_correct": sum(correct_controls) / len(correct_controls),
            "wrong_judged_wrong": sum(wrong_controls) / len(wrong_controls) if wrong_controls else None}


# ---------------------------------------------------------------------------- evaluation --
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
    keep_texts: bool = True  # questions and gold answers with them (not for licensed data)

    def make_env(self) -> gym.Env:
        return gym.make(ENV_ID, source=self.source, qa_schedule=QA_SCHEDULE, answer_top_k=self.answer_top_k)

    def num_selected(self, key: Any) -> int:
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
        self._text = text
        if self._bar is not None:
            self._bar.update(self._conversations, description=f"conversations [{text}]"[:60])

    def conversation_done(self) -> None:
        self._done[0] += 1
        if self._bar is not None:
            self._bar.advance(self._conversations)
        elif self._plain:
            print(f"[{time.perf_counter() - self._start:7.0f} s] conversations {self._done[0]}/{self._totals[0]}, "
                  f"questions {self._done[1]}/{self._totals[1]} ({self._text})", file=sys.stderr, flush=True)

    def questions_done(self, n: int) -> None:
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
    records, predictions, conversations = [], [], []
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
                entry = {"question_id": question.qid, "kind": question.kind, "prediction": answer}
                if config.keep_texts:
                    entry.update(question=question.question, gold_answer=question.answer)
                predictions.append(entry)
            memory = env.unwrapped.memory
            conversations.append({"conversation": conv.conv_id, "questions": len(indices),
                                  "memory_size": len(memory), "memory_tokens": memory.tokens + context_kept,
                                  "seen_tokens": info["seen_tokens"]})
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
    summary = summarize(records, judge_labels=labels, locomo=config.locomo_metrics)
    for entry, (_, prediction, gold) in zip(predictions, records):
        entry["f1"] = token_f1(prediction, gold)
    n_conv, n_q = len(conversations), len(records)
    return {
        "row": row.label, "strategy": row.strategy, "answerer": row.answerer,
        "num_conversations": n_conv, "num_questions": n_q,
        "overall": summary["overall"], "per_kind": summary["per_kind"],
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


# ------------------------------------------------------------------------------- output --
def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
                            "cpu_count": os.cpu_count()}
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def _kind_label(kind: str, locomo: bool) -> str:
    if locomo and kind in LOCOMO_CATEGORY:
        return f"{LOCOMO_CATEGORY[kind]} {kind}"
    return kind


def _columns(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the leaderboard table (scores in percent)."""
    rows = results["rows"]
    locomo = results["settings"]["locomo_metrics"]
    judged = results["settings"]["judge"] is not None
    kinds = list(dict.fromkeys(k for row in rows for k in row["per_kind"]))
    header = ["row", "conv", "questions", "F1", "B1", "EM"]
    header += ["LoCoMo-F1"] if locomo else []
    header += ["J"] if judged else []
    header += [f"F1 {_kind_label(k, locomo)}" for k in kinds]
    header += ["mem tokens", "mem s/conv", "answer s/q"]
    show_invalid = any(row.get("invalid_memory_actions") for row in rows)
    header += ["invalid mem actions"] if show_invalid else []
    cells = []
    for row in rows:
        overall = row["overall"]
        line = [row["row"], str(row["num_conversations"]), str(row["num_questions"]),
                _pct(overall["f1"]), _pct(overall["bleu1"]), _pct(overall["em"])]
        line += [_pct(overall["locomo_f1"])] if locomo else []
        line += [_pct(overall["j"])] if judged else []
        line += [_pct(row["per_kind"][k]["f1"]) + f" ({row['per_kind'][k]['count']})" if k in row["per_kind"]
                 else "-" for k in kinds]
        line += [f"{row['memory_tokens_mean']:.0f}", _secs(row["memory_seconds_per_conversation"]),
                 _secs(row["answer_seconds_per_question"])]
        if show_invalid:
            line.append(f"{row['invalid_memory_actions']}/{row['memory_actions']}")
        cells.append(line)
    return header, cells


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _secs(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"


def settings_lines(results: dict[str, Any]) -> list[str]:
    """The protocol notes printed above the table."""
    s = results["settings"]
    if s["source"] == "synthetic":
        data = f"synthetic worlds, {s['num_sessions']} sessions, seeds {s['worlds_spec']} ({len(s['conversations'])} worlds)"
    else:
        data = f"{s['source']} `{s['data_path']}`, conversations {', '.join(map(str, s['conversations']))}"
    cap = ("all questions" if s["max_questions"] is None else
           f"at most {s['max_questions']} questions per conversation, evenly spaced over its question list")
    lines = [
        f"- Data: {data}.",
        f"- Protocol: qa_schedule=\"{QA_SCHEDULE}\" (every question after the last session, on the final memory); {cap}.",
        f"- Answer retrieval: the environment's BM25, top {s['answer_top_k']} memories per speaker. "
        f"`full-context` rows read the most recent {s['context_tokens']} whitespace tokens of the transcript instead.",
        "- Scores in percent: F1 = mem0-style token F1, B1 = BLEU-1, EM = exact match"
        + (", LoCoMo-F1 = LoCoMo's own stemmed F1" if s["locomo_metrics"] else "")
        + (f", J = LLM-as-a-Judge accuracy, judged by `{s['judge']}`" if s["judge"] else "") + ".",
        *([_control_line(results["judge_controls"])] if results.get("judge_controls") else []),
        "- Per-kind columns give F1 and (number of questions)"
        + ("; LoCoMo categories by LoCoMo's own numbering: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop "
           "(5 adversarial excluded unless --include-adversarial)." if s["source"] == "locomo" else "."),
        "- mem tokens: whitespace tokens kept in memory at the end, mean per conversation (full-context: the whole "
        "transcript it keeps); mem s/conv: seconds of extract/manage per conversation; answer s/q: seconds per answer"
        + ("; invalid mem actions: extract/manage actions the environment rejected (they change nothing)."
           if any(row.get("invalid_memory_actions") for row in results["rows"]) else "."),
    ]
    if s["source"] == "synthetic":
        lines.append("- The `scripted` answerer reads only the synthetic worlds' canonical fact sentences; with raw "
                     "turns or free-form facts (rag-turns, add-only, full-context) it can only answer `unknown`.")
    return lines


def _control_line(controls: dict[str, Any]) -> str:
    wrong = controls.get("wrong_judged_wrong")
    return (f"- Judge check on {controls['items']} control items: agreement {_pct(controls['agreement'])}% "
            f"(gold answer judged CORRECT {_pct(controls['gold_judged_correct'])}%, another question's answer "
            f"judged WRONG {'-' if wrong is None else _pct(wrong)}%). A judge that calls everything CORRECT "
            "makes J meaningless.")


def to_markdown(results: dict[str, Any]) -> str:
    """The leaderboard as a markdown document."""
    from benchmarks.provenance import markdown_line

    header, cells = _columns(results)
    machine = results["machine"]
    machine_text = ", ".join(f"{k}={v}" for k, v in machine.items())
    lines = [f"# Leaderboard: {results['title']}", "", "```", results["command"], "```", "",
             f"Date: {results['date']}. Machine: {machine_text}. Total time: {results['total_seconds']:.0f} s.", "",
             markdown_line(results["environment"]) if "environment" in results else "Environment: not recorded.", ""]
    lines += settings_lines(results)
    lines += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any]) -> None:
    """The leaderboard as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    header, cells = _columns(results)
    table = Table(title=f"Leaderboard: {results['title']}")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for line in cells:
        table.add_row(*line)
    console = Console()
    if not console.is_terminal:
        # a log file has no width: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 200))
    console.print(table)


# ---------------------------------------------------------------------------------- CLI --
def build_parser() -> argparse.ArgumentParser:
    """The command-line interface. Flags of one source default to None, so that one given
    with another source is seen (and refused) rather than ignored."""
    p = OneLineParser(prog="python -m benchmarks.leaderboard", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--source", choices=SOURCES, default="synthetic", help="data source (default: %(default)s)")
    data.add_argument("--num-sessions", type=int, help=f"sessions per synthetic world (default: {DEFAULT_NUM_SESSIONS})")
    data.add_argument("--worlds", nargs="+", metavar="SEEDS",
                      help=f"synthetic world seeds: 7, 0-9 or 0,3,5; below {EVAL_SEED_LIMIT:,} (training seeds "
                           f"start there) (default: {DEFAULT_WORLDS})")
    data.add_argument("--data-path", metavar="FILE", help=f"LoCoMo / LongMemEval JSON file (default for LoCoMo: ${LOCOMO_PATH_VARIABLE}, "
                                          f"else {DEFAULT_LOCOMO_PATHS[0]} when it exists)")
    data.add_argument("--split", help="LoCoMo split preset, e.g. memory-r2 or memory-r1 (with --part; LoCoMo only)")
    data.add_argument("--part", choices=("train", "val", "test"), help="part of --split (LoCoMo only)")
    data.add_argument("--conversations", nargs="+", metavar="ID",
                      help="explicit conversation ids: LoCoMo sample_ids (conv-43 conv-44) or LongMemEval question_ids")
    data.add_argument("--include-adversarial", action="store_true",
                      help="keep LoCoMo category 5 (adversarial) questions (excluded by default)")
    rows = p.add_argument_group("rows")
    rows.add_argument("--rows", nargs="+", metavar="STRATEGY+ANSWERER",
                      help="rows to evaluate, e.g. rag-turns+llm:smollm2-135m; a row without '+' uses --answerer "
                           f"(default: synthetic: {' '.join(DEFAULT_SYNTHETIC_ROWS)}; "
                           f"others: {' '.join(DEFAULT_DATA_ROWS)})")
    rows.add_argument("--answerer", metavar="SPEC", help=f"answerer of rows without '+' (default: '{SCRIPTED_ANSWERER}' on "
                                         f"synthetic worlds, '{DEFAULT_LLM}' otherwise)")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--max-questions", type=int, metavar="N", help="ask at most N questions per conversation, evenly spaced over "
                                                      "its question list (default: all)")
    ev.add_argument("--context-tokens", type=int, default=DEFAULT_CONTEXT_TOKENS, metavar="N",
                    help="full-context: whitespace tokens of the transcript the answerer reads, the most recent "
                         "kept (default: %(default)s)")
    ev.add_argument("--answer-top-k", type=int, default=DEFAULT_ANSWER_TOP_K, metavar="K",
                    help="memories retrieved per speaker for each question (default: %(default)s)")
    ev.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                    help="answer observations per answerer call (default: %(default)s)")
    ev.add_argument("--judge", metavar="llm:MODEL", help="LLM-as-a-Judge model (any local causal LM); adds J")
    ev.add_argument("--judge-max-new-tokens", type=int, metavar="N",
                    help=f"judge generation budget (with --judge; default: {DEFAULT_JUDGE_MAX_NEW_TOKENS})")
    ev.add_argument("--torch-threads", type=int, default=1, metavar="N",
                    help="torch CPU threads (default: %(default)s; more only on an idle machine)")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="PREFIX", help="output prefix: writes OUT.md and OUT.json "
                                   "(default: benchmarks/results/leaderboard_<source>[<sessions>])")
    out.add_argument("--save-predictions", action="store_true",
                     help="store every answer (question id, kind, prediction, F1, judge label; plus question and "
                          "gold answer on synthetic worlds) in the JSON")
    out.add_argument("--title", help="title of the table (default: from the data)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad values and flags that contradict each other; then fill in the defaults
    of the flags left out."""
    for name, sources in SOURCE_FLAGS.items():
        if getattr(args, name) not in (None, False) and args.source not in sources:
            p.error(f"{_flag(name)} only applies to --source {' or '.join(sources)}, not --source {args.source}")
    if (args.split is None) != (args.part is None):
        p.error("--split and --part go together (e.g. --split memory-r2 --part train)")
    if args.conversations is not None and args.split is not None:
        p.error("give either --conversations or --split/--part, not both")
    if args.judge_max_new_tokens is not None and args.judge is None:
        p.error("--judge-max-new-tokens only applies with --judge")
    if args.answerer is not None and args.rows and all("+" in row for row in args.rows):
        p.error("--answerer is unused: every row of --rows names its answerer after '+'")
    args.num_sessions = DEFAULT_NUM_SESSIONS if args.num_sessions is None else args.num_sessions
    args.worlds = [DEFAULT_WORLDS] if args.worlds is None else args.worlds
    if args.judge_max_new_tokens is None:
        args.judge_max_new_tokens = DEFAULT_JUDGE_MAX_NEW_TOKENS
    for name in ("num_sessions", "batch_size", "torch_threads", "judge_max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"{_flag(name)} must be >= 1, got {getattr(args, name)}")
    if args.max_questions is not None and args.max_questions < 1:
        p.error(f"--max-questions must be >= 1, got {args.max_questions}")
    for name in ("context_tokens", "answer_top_k"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.judge is not None and not args.judge.startswith("llm:"):
        p.error(f"--judge takes an LLM spec such as 'llm:smollm2-135m', got {args.judge!r}")


def _data_path(args: argparse.Namespace) -> str:
    if args.data_path:
        return args.data_path
    if args.source == "locomo":
        if os.environ.get(LOCOMO_PATH_VARIABLE):
            return os.environ[LOCOMO_PATH_VARIABLE]
        for path in DEFAULT_LOCOMO_PATHS:
            if os.path.exists(path):
                return path
    raise ValueError(f"--source {args.source} needs --data-path (the JSON file of the data set)")


def build_config(args: argparse.Namespace) -> tuple[EvalConfig, dict[str, Any]]:
    """The evaluation config and the settings recorded with the results."""
    settings: dict[str, Any] = {"source": args.source, "qa_schedule": QA_SCHEDULE, "max_questions": args.max_questions,
                                "context_tokens": args.context_tokens, "answer_top_k": args.answer_top_k,
                                "judge": args.judge, "locomo_metrics": args.source == "locomo",
                                "save_predictions": args.save_predictions}
    if args.source == "synthetic":
        seeds = parse_worlds(args.worlds)
        source = make_source("synthetic", num_sessions=args.num_sessions, world_seeds=seeds)
        settings.update(num_sessions=args.num_sessions, worlds_spec=" ".join(args.worlds))
    else:
        path = _data_path(args)
        options: dict[str, Any] = {"data_path": path}
        for name in ("conversations", "split", "part"):
            if getattr(args, name) is not None:
                options[name] = getattr(args, name)
        if args.source == "longmemeval" and "conversations" in options:
            options["question_ids"] = options.pop("conversations")  # an item is keyed by its question_id
        if args.include_adversarial:
            options["include_adversarial"] = True
        source = make_source(args.source, **options)
        settings.update(data_path=path, split=args.split, part=args.part,
                        include_adversarial=args.include_adversarial)
    keys = tuple(source.keys() or ())
    if not keys:
        raise ValueError(f"the {args.source} source selected no conversations")
    settings["conversations"] = list(keys)
    config = EvalConfig(source=source, keys=keys, locomo_metrics=args.source == "locomo",
                        max_questions=args.max_questions, context_tokens=args.context_tokens,
                        answer_top_k=args.answer_top_k, batch_size=args.batch_size,
                        save_predictions=args.save_predictions, keep_texts=args.source == "synthetic")
    return config, settings


def _default_out(args: argparse.Namespace) -> Path:
    suffix = str(args.num_sessions) if args.source == "synthetic" else ""
    return RESULTS_DIR / f"leaderboard_{args.source}{suffix}"


def _title(args: argparse.Namespace, settings: dict[str, Any]) -> str:
    if args.title:
        return args.title
    if args.source == "synthetic":
        return f"synthetic worlds, {args.num_sessions} sessions"
    return f"{args.source} {', '.join(map(str, settings['conversations']))}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the leaderboard; returns the results written to ``<out>.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        config, settings = build_config(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    default_answerer = args.answerer or (SCRIPTED_ANSWERER if args.source == "synthetic" else DEFAULT_LLM)
    row_texts = args.rows or (DEFAULT_SYNTHETIC_ROWS if args.source == "synthetic" else DEFAULT_DATA_ROWS)
    try:
        rows = [parse_row(text, default_answerer) for text in row_texts]
        check_rows(rows, args.source)
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    pool = AgentPool(args.torch_threads)
    # every agent is built before any row runs: a model that cannot load stops the run at once
    specs = [*(row.strategy for row in rows), *(row.answerer for row in rows), *([args.judge] if args.judge else [])]
    for spec in dict.fromkeys(specs):
        try:
            pool.get(spec)
        except (ValueError, OSError, ImportError) as error:
            parser.error(f"agent {spec!r}: {error}")
    judge = None
    if args.judge:
        try:
            judge = (args.judge, judge_generator(pool.get(args.judge), args.judge_max_new_tokens))
        except ValueError as error:
            parser.error(f"--judge {args.judge}: {error}")
    judge_controls = None
    if judge is not None:
        questions = [q for key in config.keys for q in config.source.get(key).questions]
        judge_controls = judge_agreement(judge[1], judge[0], questions, JUDGE_CONTROL_QUESTIONS, args.batch_size)
    per_row_questions = sum(config.num_selected(key) for key in config.keys)
    results_rows = []
    with Progress(len(rows) * len(config.keys), len(rows) * per_row_questions, not args.no_progress) as progress:
        for row in rows:
            results_rows.append(evaluate_row(row, config, pool, progress, judge, args.batch_size))
    from benchmarks.provenance import environment

    results = {
        "title": _title(args, settings),
        "command": "python -m benchmarks.leaderboard " + shlex.join(argv),
        "date": date,
        "machine": machine_info(),
        "environment": environment(),
        "total_seconds": time.perf_counter() - started,
        "settings": settings,
        "judge_controls": judge_controls,
        "rows": results_rows,
    }
    out = Path(args.out) if args.out else _default_out(args)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    md_path, json_path = Path(f"{out}.md"), Path(f"{out}.json")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(to_markdown(results), encoding="utf-8")
    json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(results)
    print(f"wrote {md_path} and {json_path}")
    return results


if __name__ == "__main__":
    main()
