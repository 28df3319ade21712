"""One agent per role: ``by-role:extract=oracle,manage=llm:tiny:runs/x/adapter``.

Memory-R1 trains the memory manager alone, with a fixed fact extractor, and LoGo-GRPO's
demo does the same; to evaluate such a manager where one agent plays every turn (the
leaderboard's memory strategies), this agent hands each observation to the agent named for
its role. Each part is any registry spec (``make_agent``); a role left out is an error when
the environment asks for it. Agents named twice are built once.
"""

from __future__ import annotations

from typing import Any

from memenv.scripted import load_observation, observation_role

ROLES = ("extract", "manage", "answer")
SPEC_NAME = "by-role"


def parse_by_role(arg: str | None) -> dict[str, str]:
    """``"extract=oracle,manage=llm:tiny"`` -> ``{"extract": "oracle", "manage": "llm:tiny"}``."""
    if not arg:
        raise ValueError(f"{SPEC_NAME} needs roles, e.g. '{SPEC_NAME}:extract=oracle,manage=llm:smollm2-135m'")
    specs: dict[str, str] = {}
    for part in arg.split(","):
        role, sep, spec = part.partition("=")
        role, spec = role.strip(), spec.strip()
        if not sep or not spec:
            raise ValueError(f"{SPEC_NAME}: {part!r} is not ROLE=AGENT (in {arg!r})")
        if role not in ROLES:
            raise ValueError(f"{SPEC_NAME}: unknown role {role!r}; roles are {ROLES}")
        if role in specs:
            raise ValueError(f"{SPEC_NAME}: role {role!r} is given twice")
        specs[role] = spec
    return specs


class ByRoleAgent:
    """Dispatches each observation to the agent of its role (see the module docstring).

    Args:
        agents: role -> agent (anything with ``act``; ``act_batch`` is used when present).
    """

    def __init__(self, agents: dict[str, Any], name: str | None = None) -> None:
        unknown = set(agents) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; roles are {ROLES}")
        if not agents:
            raise ValueError("ByRoleAgent needs an agent for at least one role")
        self.agents = dict(agents)
        self.name = name or f"{SPEC_NAME}:" + ",".join(
            f"{r}={getattr(a, 'name', type(a).__name__)}" for r, a in self.agents.items()
        )

    @classmethod
    def from_spec(cls, arg: str | None = None) -> ByRoleAgent:
        """Build from ``"extract=SPEC,manage=SPEC[,answer=SPEC]"``; each SPEC goes to ``make_agent``."""
        from agents.registry import make_agent

        specs = parse_by_role(arg)
        built = {spec: make_agent(spec) for spec in dict.fromkeys(specs.values())}
        return cls({role: built[spec] for role, spec in specs.items()}, name=f"{SPEC_NAME}:{arg}")

    def _agent(self, role: str) -> Any:
        if role not in self.agents:
            raise ValueError(f"{self.name} has no agent for role {role!r} (it has {sorted(self.agents)})")
        return self.agents[role]

    def act(self, obs: str, info: dict) -> str:
        """The action of this observation's role agent."""
        return self._agent(observation_role(load_observation(obs), info)).act(obs, info)

    def act_batch(self, observations: list[str], infos: list[dict]) -> list[str]:
        """Actions for many observations; each role agent gets its observations in one batch."""
        if len(observations) != len(infos):
            raise ValueError(f"got {len(observations)} observations but {len(infos)} infos")
        by_role: dict[str, list[int]] = {}
        for i, (obs, info) in enumerate(zip(observations, infos)):
            by_role.setdefault(observation_role(load_observation(obs), info), []).append(i)
        actions = [""] * len(observations)
        for role, indices in by_role.items():
            agent = self._agent(role)
            obs_part, info_part = [observations[i] for i in indices], [infos[i] for i in indices]
            if callable(getattr(agent, "act_batch", None)):
                out = list(agent.act_batch(obs_part, info_part))
            else:
                out = [agent.act(o, f) for o, f in zip(obs_part, info_part)]
            for i, action in zip(indices, out):
                actions[i] = action
        return actions
