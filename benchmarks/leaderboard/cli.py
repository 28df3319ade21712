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

Metrics per row, overall and per question kind: token F1 and BLEU-1 as the mem0 / A-Mem
evaluation code computes them (the code behind the Mem0 and Memory-R1 tables), and as the
official Memory-R2 code computes its LoCoMo tables (R2-F1 / R2-B1: SQuAD normalisation,
averaged per conversation),
exact match by two rules (EM: equal normalised token lists; EM-mem0: the mem0 / A-Mem
lower-cased string equality), LoCoMo's own F1 (LoCoMo only), J with ``--judge
llm:<model>``; the JSON's ``metric_rules`` spells out each rule; plus memory
tokens kept at the end (whitespace tokens, mean per conversation; for full-context the
kept transcript), memory-phase seconds per conversation and answer seconds per question.
Outputs: ``<out>.md`` (with the command line, date and machine), ``<out>.json`` and a
table on the terminal. Results saved with ``--save-predictions`` can be scored again with
later metrics, without any model: ``python -m benchmarks.leaderboard.rescore --results
<out>.json`` (:mod:`benchmarks.leaderboard.rescore`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from memenv.constants import HARD_ANSWER_TOP_K
from memenv.sources import make_source

from algos.cli import UserError, check_range, parse_args
from benchmarks.leaderboard.evaluation import (DEFAULT_ANSWER_TOP_K, DEFAULT_BATCH_SIZE, DEFAULT_CONTEXT_TOKENS,
                                               QA_SCHEDULE, EvalConfig, Progress, evaluate_row, metric_rules)
from benchmarks.leaderboard.judge import (DEFAULT_JUDGE_MAX_NEW_TOKENS, JUDGE_CONTROL_QUESTIONS, judge_agreement,
                                          judge_generator)
from benchmarks.leaderboard.render import machine_info, print_table, to_markdown
from benchmarks.leaderboard.rows import (DEFAULT_LLM, EVAL_SEED_LIMIT, SCRIPTED_ANSWERER, AgentPool, RowSpec,
                                         adapter_records, check_rows, parse_row, parse_worlds)

PROG = "python -m benchmarks.leaderboard"
SOURCES = ("synthetic", "locomo", "longmemeval")
LOCOMO_PARTS = ("train", "val", "test")
DEFAULT_WORLDS = "0-9"
DEFAULT_NUM_SESSIONS = 8
DEFAULT_SYNTHETIC_ROWS = ("oracle", "add-all", "noop", "rag-turns", "add-only", "full-context")
DEFAULT_DATA_ROWS = ("rag-turns", "add-only", "full-context")
DEFAULT_LOCOMO_PATHS = ("../shared/data/locomo/locomo_dev.json",)
LOCOMO_PATH_VARIABLE = "MEMENV_LOCOMO_PATH"
RESULTS_DIR = Path("benchmarks/results")
# Flags that only mean something for some sources (field -> those sources).
SOURCE_FLAGS = {"num_sessions": ("synthetic",), "worlds": ("synthetic",), "difficulty": ("synthetic",), "data_path": ("locomo", "longmemeval"),
                "conversations": ("locomo", "longmemeval"), "split": ("locomo",), "part": ("locomo",),
                "include_adversarial": ("locomo",)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class LeaderboardArgs:
    """The leaderboard's command line.

    Flags of one source, and flags that only apply with another flag, default to None, so
    that one given where it does not apply is seen (and refused) rather than ignored. After
    the checks, the defaults they stand for are filled in where they apply
    (``num_sessions`` and ``worlds`` on synthetic worlds, ``judge_max_new_tokens`` with
    ``--judge``), so the checks pass again on the filled-in arguments.
    """

    # data
    source: str = field(default="synthetic", metadata={"help": "data source", "choices": SOURCES})
    num_sessions: int | None = field(default=None, metadata={"help": f"sessions per synthetic world (none: {DEFAULT_NUM_SESSIONS})"})
    difficulty: str | None = field(default=None, metadata={"help": "synthetic worlds: default, or hard (history and counting questions, corrections, third parties, distractor talk, each world's memory budget and the hard envs' top-48 answer retrieval, as MemorySessionHard-v0)", "choices": [None, "default", "hard"]})
    worlds: tuple[str, ...] | None = field(default=None, metadata={"help": f"synthetic world seeds: 7, 0-9 or 0,3,5; below {EVAL_SEED_LIMIT:,} (training seeds start there); left out: {DEFAULT_WORLDS}"})
    data_path: str | None = field(default=None, metadata={"help": f"LoCoMo / LongMemEval JSON file (none, for LoCoMo: ${LOCOMO_PATH_VARIABLE}, else {DEFAULT_LOCOMO_PATHS[0]} when it exists)"})
    split: str | None = field(default=None, metadata={"help": "LoCoMo split preset, e.g. memory-r2 or memory-r1 (with --part; LoCoMo only)"})
    part: str | None = field(default=None, metadata={"help": "part of --split (LoCoMo only)", "choices": LOCOMO_PARTS})
    conversations: tuple[str, ...] | None = field(default=None, metadata={"help": "explicit conversation ids: LoCoMo sample_ids (conv-43 conv-44) or LongMemEval question_ids"})
    include_adversarial: bool = field(default=False, metadata={"help": "keep LoCoMo category 5 (adversarial) questions, left out otherwise"})
    session_chunks: int | None = field(default=None, metadata={"help": "split every session into up to K consecutive chunks of turns, each its own extract + manage round (the official Memory-R2 code splits sessions into 4-6 rounds; none: one round per session)"})
    # rows
    rows: tuple[str, ...] | None = field(default=None, metadata={"help": "rows to evaluate, STRATEGY+ANSWERER, e.g. rag-turns+llm:smollm2-135m; a row without '+' uses --answerer; left out: "
                                                                         f"synthetic: {' '.join(DEFAULT_SYNTHETIC_ROWS)}; others: {' '.join(DEFAULT_DATA_ROWS)}"})
    answerer: str | None = field(default=None, metadata={"help": f"answerer of rows without '+' (none: '{SCRIPTED_ANSWERER}' on synthetic worlds, '{DEFAULT_LLM}' otherwise)"})
    # evaluation
    max_questions: int | None = field(default=None, metadata={"help": "ask at most this many questions per conversation, evenly spaced over its question list (none: all)"})
    context_tokens: int = field(default=DEFAULT_CONTEXT_TOKENS, metadata={"help": "full-context: whitespace tokens of the transcript the answerer reads, the most recent kept"})
    answer_top_k: int | None = field(default=None, metadata={"help": f"memories retrieved per speaker for each question (none: {DEFAULT_ANSWER_TOP_K}; {HARD_ANSWER_TOP_K} on hard worlds, as their envs)"})
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "answer observations per answerer call"})
    judge: str | None = field(default=None, metadata={"help": "LLM-as-a-Judge model, llm:MODEL (any local causal LM); adds J"})
    judge_max_new_tokens: int | None = field(default=None, metadata={"help": f"judge generation budget (with --judge; none: {DEFAULT_JUDGE_MAX_NEW_TOKENS})"})
    rollout_engine: str = field(default="hf", metadata={"help": "what serves the llm: agents of the rows (the judge stays on hf): hf (the library's transformers loop) or vllm (agents.vllm_engine; the requirements-vllm.lock virtualenv); the same as ?engine=vllm on each llm: spec", "choices": ["hf", "vllm"]})
    torch_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (none: every core for real models, 1 for the tiny one)"})
    # output
    out: str | None = field(default=None, metadata={"help": "output prefix: writes OUT.md and OUT.json (none: benchmarks/results/leaderboard_<source>[<sessions>])"})
    save_predictions: bool = field(default=False, metadata={"help": "store every answer (question id, kind, prediction, F1, judge label; plus question and gold answer on synthetic worlds) in the JSON"})
    save_memory: bool = field(default=False, metadata={"help": "store each conversation's final memory (id, text, speaker, session, date per entry) in the JSON, for python -m benchmarks.leaderboard.memory_diff; the texts come from the data, so do not publish it for licensed data (LoCoMo)"})
    title: str | None = field(default=None, metadata={"help": "title of the table (none: from the data)"})
    progress: bool = field(default=True, metadata={"help": "show progress: a bar on a terminal, one line per conversation in a log (--no-progress: nothing)"})

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"--source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        for name, sources in SOURCE_FLAGS.items():
            if getattr(self, name) not in (None, False) and self.source not in sources:
                raise ValueError(f"{_flag(name)} only applies to --source {' or '.join(sources)}, "
                                 f"not --source {self.source}")
        if (self.split is None) != (self.part is None):
            raise ValueError("--split and --part go together (e.g. --split memory-r2 --part train)")
        if self.conversations is not None and self.split is not None:
            raise ValueError("give either --conversations or --split/--part, not both")
        if self.judge_max_new_tokens is not None and self.judge is None:
            raise ValueError("--judge-max-new-tokens only applies with --judge")
        if self.answerer is not None and self.rows and all("+" in row for row in self.rows):
            raise ValueError("--answerer is unused: every row of --rows names its answerer after '+'")
        if self.answer_top_k is None:
            self.answer_top_k = HARD_ANSWER_TOP_K if self.difficulty == "hard" else DEFAULT_ANSWER_TOP_K
        if self.source == "synthetic":
            self.num_sessions = DEFAULT_NUM_SESSIONS if self.num_sessions is None else self.num_sessions
            self.worlds = (DEFAULT_WORLDS,) if self.worlds is None else self.worlds
        if self.judge is not None and self.judge_max_new_tokens is None:
            self.judge_max_new_tokens = DEFAULT_JUDGE_MAX_NEW_TOKENS
        for name in ("num_sessions", "judge_max_new_tokens", "max_questions", "session_chunks"):
            check_range(name, getattr(self, name), low=1, allow_none=True)
        check_range("torch_threads", self.torch_threads, low=1, allow_none=True)
        for name in ("batch_size",):
            check_range(name, getattr(self, name), low=1)
        for name in ("context_tokens", "answer_top_k"):
            check_range(name, getattr(self, name), low=0)
        if self.judge is not None and not self.judge.startswith("llm:"):
            raise ValueError(f"--judge takes an LLM spec such as 'llm:smollm2-135m', got {self.judge!r}")
        if self.worlds is not None:
            parse_worlds(self.worlds)
        check_rows(self.row_specs, self.source)

    @property
    def default_answerer(self) -> str:
        """The answerer of rows written without ``+``."""
        return self.answerer or (SCRIPTED_ANSWERER if self.source == "synthetic" else DEFAULT_LLM)

    @property
    def row_specs(self) -> list[RowSpec]:
        """The rows to evaluate (``--rows``, or the source's default rows)."""
        from agents.llm_agent import with_engine

        texts = self.rows or (DEFAULT_SYNTHETIC_ROWS if self.source == "synthetic" else DEFAULT_DATA_ROWS)
        rows = [parse_row(text, self.default_answerer) for text in texts]
        return [RowSpec(with_engine(r.strategy, self.rollout_engine), with_engine(r.answerer, self.rollout_engine))
                for r in rows]


def _user_error(message: str) -> Exception:
    """A one-line :class:`algos.cli.UserError`."""
    return UserError(message)


def _data_path(args: LeaderboardArgs) -> str:
    if args.data_path:
        return args.data_path
    if args.source == "locomo":
        if os.environ.get(LOCOMO_PATH_VARIABLE):
            return os.environ[LOCOMO_PATH_VARIABLE]
        for path in DEFAULT_LOCOMO_PATHS:
            if os.path.exists(path):
                return path
    raise ValueError(f"--source {args.source} needs --data-path (the JSON file of the data set)")


def build_config(args: LeaderboardArgs) -> tuple[EvalConfig, dict[str, Any]]:
    """The evaluation config and the settings recorded with the results (the data set is
    loaded here: ``ValueError`` or ``FileNotFoundError`` when it cannot be)."""
    settings: dict[str, Any] = {"source": args.source, "qa_schedule": QA_SCHEDULE, "max_questions": args.max_questions,
                                "context_tokens": args.context_tokens, "answer_top_k": args.answer_top_k,
                                "judge": args.judge, "locomo_metrics": args.source == "locomo",
                                "save_predictions": args.save_predictions, "save_memory": args.save_memory,
                                "session_chunks": args.session_chunks}
    if args.source == "synthetic":
        seeds = parse_worlds(args.worlds)
        difficulty = args.difficulty or "default"
        source = make_source("synthetic", num_sessions=args.num_sessions, world_seeds=seeds, difficulty=difficulty)
        settings.update(num_sessions=args.num_sessions, worlds_spec=" ".join(args.worlds), difficulty=difficulty)
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
    env_options = hard_env_options() if args.difficulty == "hard" else {}
    if args.session_chunks is not None:
        env_options["session_chunks"] = args.session_chunks
    config = EvalConfig(source=source, keys=keys, locomo_metrics=args.source == "locomo",
                        max_questions=args.max_questions, context_tokens=args.context_tokens,
                        answer_top_k=args.answer_top_k, batch_size=args.batch_size,
                        save_predictions=args.save_predictions, save_memory=args.save_memory,
                        keep_texts=args.source == "synthetic",
                        env_options=tuple(env_options.items()))
    return config, settings


def build_agents(args: LeaderboardArgs, rows: Sequence[RowSpec]
                 ) -> tuple[AgentPool, tuple[str, Callable[[list[str]], list[str]]] | None]:
    """Every agent of the rows and the judge, built before any row runs (a model that cannot
    load stops the run at once), and the judge as (name, generate)."""
    pool = AgentPool(args.torch_threads)
    specs = [*(row.strategy for row in rows), *(row.answerer for row in rows), *([args.judge] if args.judge else [])]
    for spec in dict.fromkeys(specs):
        try:
            pool.get(spec)
        except (ValueError, OSError, ImportError) as error:
            raise _user_error(f"agent {spec!r}: {error}") from None
    if not args.judge:
        return pool, None
    try:
        return pool, (args.judge, judge_generator(pool.get(args.judge), args.judge_max_new_tokens))
    except ValueError as error:
        raise _user_error(f"--judge {args.judge}: {error}") from None


def hard_env_options() -> dict[str, Any]:
    """The hard worlds' environment options beside their source (``MemorySessionHard-v0``'s:
    each world's memory budget; with ``answer_top_k`` unless the command line sets it)."""
    import gymnasium as gym

    import memenv  # noqa: F401

    kwargs = dict(gym.spec("MemorySessionHard-v0").kwargs)
    return {k: v for k, v in kwargs.items() if k not in ("difficulty", "num_sessions", "answer_top_k")}


def _default_out(args: LeaderboardArgs) -> Path:
    suffix = str(args.num_sessions) if args.source == "synthetic" else ""
    hard = "_hard" if args.difficulty == "hard" else ""
    return RESULTS_DIR / f"leaderboard_{args.source}{hard}{suffix}"


def _title(args: LeaderboardArgs, settings: dict[str, Any]) -> str:
    if args.title:
        return args.title
    if args.source == "synthetic":
        return f"{'hard ' if args.difficulty == 'hard' else ''}synthetic worlds, {args.num_sessions} sessions"
    return f"{args.source} {', '.join(map(str, settings['conversations']))}"


def write_results(results: dict[str, Any], args: LeaderboardArgs) -> tuple[Path, Path]:
    """Write ``<out>.md`` and ``<out>.json``; returns their paths."""
    out = Path(args.out) if args.out else _default_out(args)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    md_path, json_path = Path(f"{out}.md"), Path(f"{out}.json")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(to_markdown(results), encoding="utf-8")
    json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return md_path, json_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the leaderboard; returns the results written to ``<out>.json``.

    Bad or contradictory flags exit at once (status 2, one line); data or an agent that
    cannot load raises :class:`algos.run.UserError`, which :func:`algos.cli.run_main` prints
    as one line; both before any row runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(LeaderboardArgs, argv, description=__doc__, prog=PROG)
    try:
        config, settings = build_config(args)
    except (ValueError, FileNotFoundError) as error:
        raise _user_error(str(error)) from None
    rows = args.row_specs
    started = time.perf_counter()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    pool, judge = build_agents(args, rows)
    judge_controls = None
    if judge is not None:
        questions = [q for key in config.keys for q in config.source.get(key).questions]
        judge_controls = judge_agreement(judge[1], judge[0], questions, JUDGE_CONTROL_QUESTIONS, args.batch_size)
    per_row_questions = sum(config.num_selected(key) for key in config.keys)
    with Progress(len(rows) * len(config.keys), len(rows) * per_row_questions, args.progress) as progress:
        results_rows = [evaluate_row(row, config, pool, progress, judge, args.batch_size) for row in rows]
    from benchmarks.provenance import environment

    results = {
        "title": _title(args, settings),
        "command": f"{PROG} " + shlex.join(argv),
        "date": date,
        "machine": machine_info(),
        "environment": environment(),
        "total_seconds": time.perf_counter() - started,
        "settings": settings,
        "metric_rules": metric_rules(config.locomo_metrics, judge is not None),
        "judge_controls": judge_controls,
        "adapters": adapter_records(rows),
        "rows": results_rows,
    }
    md_path, json_path = write_results(results, args)
    print_table(results)
    print(f"wrote {md_path} and {json_path}")
    return results
