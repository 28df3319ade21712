"""Leaderboard: memory strategies x answerers on synthetic worlds, LoCoMo or LongMemEval.

A row pairs a memory strategy (any registry agent, acting on the extract and manage turns)
with an answerer (``scripted`` or any registry agent); every row is scored on the same
conversations under ``qa_schedule="end"``. The command, its flags and its outputs are
described in :mod:`benchmarks.leaderboard.cli` (``python -m benchmarks.leaderboard --help``).

Modules:

* ``cli`` -- the command line (:class:`LeaderboardArgs` and its checks), the data config,
  :func:`main`.
* ``rows`` -- row specs, world seeds, the checks that refuse a row before any model
  loads, and the pool that builds each agent once.
* ``evaluation`` -- one row: the memory phase, the answers on the final memory, the scores.
* ``judge`` -- the LLM judge (J) and its control items.
* ``render`` -- the markdown document and the terminal table.
* ``rescore`` -- ``python -m benchmarks.leaderboard.rescore``: saved results scored again
  with the current metrics from their saved predictions, no model run.
"""

from benchmarks.leaderboard.cli import (DEFAULT_DATA_ROWS, DEFAULT_LOCOMO_PATHS, DEFAULT_NUM_SESSIONS,
                                        DEFAULT_SYNTHETIC_ROWS, DEFAULT_WORLDS, LOCOMO_PARTS, LOCOMO_PATH_VARIABLE,
                                        PROG, RESULTS_DIR, SOURCE_FLAGS, SOURCES, LeaderboardArgs, build_agents,
                                        build_config, main, write_results)
from benchmarks.leaderboard.evaluation import (DEFAULT_ANSWER_TOP_K, DEFAULT_BATCH_SIZE, DEFAULT_CONTEXT_TOKENS,
                                               ENV_ID, QA_SCHEDULE, EvalConfig, Progress, act_all, evaluate_row,
                                               select_questions)
from benchmarks.leaderboard.judge import (DEFAULT_JUDGE_MAX_NEW_TOKENS, JUDGE_CONTROL_QUESTIONS, judge_agreement,
                                          judge_control_items, judge_generator)
from benchmarks.leaderboard.render import LOCOMO_CATEGORY, machine_info, print_table, settings_lines, to_markdown
from benchmarks.leaderboard.rows import (DEFAULT_LLM, EVAL_SEED_LIMIT, GOLD_STRATEGIES, SCRIPTED_ANSWERER,
                                         SCRIPTED_READERS, AgentPool, RowSpec, check_rows, parse_row, parse_worlds)

__all__ = [
    "AgentPool", "DEFAULT_ANSWER_TOP_K", "DEFAULT_BATCH_SIZE", "DEFAULT_CONTEXT_TOKENS", "DEFAULT_DATA_ROWS",
    "DEFAULT_JUDGE_MAX_NEW_TOKENS", "DEFAULT_LLM", "DEFAULT_LOCOMO_PATHS", "DEFAULT_NUM_SESSIONS",
    "DEFAULT_SYNTHETIC_ROWS", "DEFAULT_WORLDS", "ENV_ID", "EVAL_SEED_LIMIT", "EvalConfig", "GOLD_STRATEGIES",
    "JUDGE_CONTROL_QUESTIONS", "LOCOMO_CATEGORY", "LOCOMO_PARTS", "LOCOMO_PATH_VARIABLE", "LeaderboardArgs", "PROG",
    "Progress", "QA_SCHEDULE", "RESULTS_DIR", "RowSpec", "SCRIPTED_ANSWERER", "SCRIPTED_READERS", "SOURCES",
    "SOURCE_FLAGS", "act_all", "build_agents", "build_config", "check_rows", "evaluate_row", "judge_agreement",
    "judge_control_items", "judge_generator", "machine_info", "main", "parse_row", "parse_worlds", "print_table",
    "select_questions", "settings_lines", "to_markdown", "write_results",
]
