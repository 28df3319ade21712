"""Leaderboard rows: ``STRATEGY+ANSWERER`` specs, the synthetic world seeds they play, the
checks that refuse a row before any model loads, and the pool that builds each agent once."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from agents.baselines import ANSWER, EXTRACT, MANAGE, ScriptedAnswerer
from agents.by_role import SPEC_NAME as BY_ROLE
from agents.by_role import parse_by_role
from agents.registry import available_agents, make_agent
from memenv.constants import TRAIN_SEED_OFFSET

SCRIPTED_ANSWERER = "scripted"
DEFAULT_LLM = "llm:smollm2-135m"
# Synthetic evaluation worlds stay below the training seeds.
EVAL_SEED_LIMIT = TRAIN_SEED_OFFSET
# Strategies that extract the gold facts of info["gold"], which only synthetic worlds carry:
# on real data they store nothing.
GOLD_STRATEGIES = ("oracle", "add-all")
# Agents whose answer is memenv.scripted.scripted_answer, a reader of the synthetic worlds'
# canonical fact sentences: on real data it answers "unknown" (F1 0).
SCRIPTED_READERS = (SCRIPTED_ANSWERER, "oracle", "noop", "add-all", "full-context", "rag-turns", "add-only", "add-only-turns")


@dataclass(frozen=True)
class RowSpec:
    """One leaderboard row: a memory strategy and an answerer, both agent specs."""

    strategy: str
    answerer: str

    @property
    def label(self) -> str:
        """The row's name in tables: ``"strategy + answerer"``."""
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


def _agent_name(spec: str) -> str:
    return spec.partition(":")[0]


def _leaf_specs(spec: str) -> list[str]:
    """Every agent spec inside ``spec``: the parts of a ``by-role:`` spec (opened up in turn),
    or ``spec`` itself."""
    name, _, arg = spec.partition(":")
    return [leaf for part in parse_by_role(arg).values() for leaf in _leaf_specs(part)] if name == BY_ROLE else [spec]


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


def _limit_torch_threads(threads: int | None, spec: str) -> None:
    """``--torch-threads``, else the model's default (every core; 1 for the tiny model)."""
    if "torch" in sys.modules:
        from algos.threads import default_threads

        tiny = "tiny" in re.split(r"[:=,?&]", spec)  # any part of the spec, options after '?' included
        sys.modules["torch"].set_num_threads(threads or default_threads("tiny" if tiny else spec))


class AgentPool:
    """Agents by spec, built once: a model used as strategy, answerer and judge loads once."""

    def __init__(self, torch_threads: int | None = None) -> None:
        self.torch_threads = torch_threads
        self._agents: dict[str, Any] = {}

    def get(self, spec: str) -> Any:
        """The agent for ``spec`` (``"scripted"`` is the scripted answerer)."""
        if spec not in self._agents:
            _limit_torch_threads(self.torch_threads, spec)
            self._agents[spec] = ScriptedAnswerer() if spec == SCRIPTED_ANSWERER else make_agent(spec)
            _limit_torch_threads(self.torch_threads, spec)
        return self._agents[spec]


def adapter_records(rows: Sequence[RowSpec]) -> list[dict[str, Any]]:
    """Every LoRA adapter the rows' ``llm:`` agents load (strategy or answerer, inside
    ``by-role:`` specs too), once each, with
    what it recorded when saved (:func:`agents.lora.save_adapter`): the command that made it
    and when (None where it recorded none: adapters saved before it did, or by plain peft)."""
    from agents.llm_agent import SPEC_PREFIX, parse_spec
    from agents.lora import find_adapters, saved_adapter_info

    records: dict[str, dict[str, Any]] = {}
    for row in rows:
        for spec in _leaf_specs(row.strategy) + _leaf_specs(row.answerer):
            if not spec.startswith(SPEC_PREFIX):
                continue
            adapter = parse_spec(spec)[1]
            if adapter is None or adapter in records:
                continue
            try:
                infos = [saved_adapter_info(sub) for sub in find_adapters(adapter).values()]
            except (FileNotFoundError, ValueError):
                infos = []
            commands = list(dict.fromkeys(i["command"] for i in infos if i.get("command")))
            saved = sorted(i["saved"] for i in infos if i.get("saved"))
            records[adapter] = {"path": adapter, "commands": commands, "saved": saved[-1] if saved else None}
    return list(records.values())
