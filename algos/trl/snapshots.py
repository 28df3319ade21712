"""TRL integration: settings, the optional-extra import and the snapshot store (see :mod:`algos.trl`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXTRA = "trl"
INSTALL_HINT = 'pip install -e ".[trl]"'
ROLES = ("extract", "manage", "answer")
STATE_FIELD = "state"
DEFAULT_ENV = "MemorySession-v0"
DEFAULT_MAX_QUESTIONS = 16
DEFAULT_MAX_PROMPT_TOKENS = 2048


def require(module: str):
    """Import ``module`` (``"datasets"``, ``"trl"``); ImportError in one line naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"algos.trl needs the {module} package from the [{EXTRA}] extra: {INSTALL_HINT}") from None


# ---------------------------------------------------------------------------- snapshots
@dataclass(frozen=True)
class Snapshot:
    """A stored environment state: the forked env (never stepped), its observation and info."""

    env: Any
    obs: str
    info: dict

    @property
    def role(self) -> str:
        """The role the observation asks for."""
        return self.info["role"]

    def fork(self) -> Any:
        """A new independent environment in this state (constant time)."""
        return self.env.fork()


class SnapshotStore:
    """Environment snapshots by key: what a dataset row's ``state`` column refers to.

    Keys are deterministic (environment, options, policy, world, turn), so every process
    of a multi-process run that builds the same dataset gets the same keys. A key added
    again replaces its snapshot.
    """

    def __init__(self) -> None:
        self._items: dict[str, Snapshot] = {}

    def add(self, key: str, env: Any, obs: str, info: dict) -> str:
        """Store a fork of ``env`` (the unwrapped MemorySessionEnv is forked) under ``key``."""
        base = getattr(env, "unwrapped", env)
        self._items[key] = Snapshot(base.fork(), obs, dict(info))
        return key

    def __getitem__(self, key: str) -> Snapshot:
        try:
            return self._items[key]
        except KeyError:
            raise KeyError(f"no snapshot {key!r} in this store ({len(self._items)} snapshots); build the dataset "
                           "in this process, with the store the reward functions use") from None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        """Every stored key, in insertion order."""
        return list(self._items)

    def clear(self) -> None:
        """Forget every snapshot."""
        self._items.clear()


SNAPSHOTS = SnapshotStore()
"""The process-wide store the dataset builders and reward functions use unless given another."""


def _store(store: SnapshotStore | None) -> SnapshotStore:
    return SNAPSHOTS if store is None else store
