"""Agents by name: a registry that third-party packages extend through entry points.

``make_agent("oracle")``, ``make_agent("llm:smollm2-135m")``,
``make_agent("llm:/path/to/model:/path/to/adapter")``,
``make_agent("by-role:extract=oracle,manage=llm:smollm2-135m")`` (one agent per role). The part after the first colon is
handed to the factory as its one string argument. Third-party packages add agents with
an entry point in the ``memenv.agents`` group::

    [project.entry-points."memenv.agents"]
    my-agent = "my_package.agents:make_my_agent"   # called as make_my_agent(arg: str | None)

Factories are imported only when their agent is made, so listing agents stays cheap.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "memenv.agents"


@runtime_checkable
class Agent(Protocol):
    """What every agent offers: one action per (observation, info), and a batched form."""

    name: str

    def act(self, obs: str, info: dict) -> str: ...

    def act_batch(self, observations: list[str], infos: list[dict]) -> list[str]: ...


# name -> "module:callable"; the callable takes the spec's argument (str or None).
_BUILTIN: dict[str, str] = {
    "oracle": "memenv.scripted:OracleAgent",
    "noop": "memenv.scripted:NoopAgent",
    "add-all": "memenv.scripted:AddAllAgent",
    "llm": "agents.llm_agent:LLMAgent.from_spec",
    "sb3-manager": "agents.sb3_agents:SB3ManagerAgent.from_spec",
    "random-manager": "agents.sb3_agents:RandomManagerAgent.from_spec",
    "rule-manager": "agents.sb3_agents:RuleManagerAgent.from_spec",
    "full-context": "agents.baselines:FullContextAgent",
    "rag-turns": "agents.baselines:RagTurnsAgent",
    "add-only": "agents.baselines:AddOnlyAgent",
    "add-only-turns": "agents.baselines:AddOnlyTurnsAgent",
    "by-role": "agents.by_role:ByRoleAgent.from_spec",
}
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register_agent(name: str, factory: Callable[..., Any] | str, *, overwrite: bool = False) -> None:
    """Add an agent factory (a callable, or a ``"module:attr"`` string) under ``name``."""
    if ":" in name or not name:
        raise ValueError(f"agent names may not be empty or contain ':' ({name!r})")
    if not overwrite and name in available_agents():
        raise ValueError(f"an agent named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTERED[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_agents() -> list[str]:
    """Every agent name: built in, registered at run time, or from installed packages."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def _load(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def make_agent(spec: str) -> Any:
    """Build the agent a spec names: ``"name"`` or ``"name:argument"``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"an agent spec is a non-empty string like 'oracle' or 'llm:smollm2-135m', got {spec!r}")
    name, sep, arg = spec.partition(":")
    if name in _REGISTERED:
        factory = _REGISTERED[name]
        factory = _load(factory) if isinstance(factory, str) else factory
    elif name in _BUILTIN:
        factory = _load(_BUILTIN[name])
    else:
        eps = _entry_points()
        if name not in eps:
            raise ValueError(f"unknown agent {name!r}; available: {', '.join(available_agents())}")
        factory = eps[name].load()
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_arg = bool(positional) or any(p.kind is p.VAR_POSITIONAL for p in params)
        needs_arg = any(p.default is p.empty for p in positional)
    except (TypeError, ValueError):
        takes_arg = needs_arg = None  # no signature to read: let the call decide
    if sep and takes_arg is False:
        raise ValueError(f"agent spec {spec!r}: {name!r} takes no argument; write it as {name!r}")
    if not sep and needs_arg:
        raise ValueError(f"agent spec {spec!r}: {name!r} needs an argument, as '{name}:ARGUMENT' "
                         "(e.g. 'llm:tiny' or 'llm:smollm2-135m')")
    agent = factory(arg) if sep else factory()
    if not callable(getattr(agent, "act", None)):
        raise TypeError(f"agent factory for {name!r} returned {type(agent).__name__}, which has no act(obs, info)")
    return agent
