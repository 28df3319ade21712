"""TRL integration: role, session and demonstration datasets on forked states (see :mod:`algos.trl`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from algos.trl.snapshots import (
    DEFAULT_ENV,
    DEFAULT_MAX_PROMPT_TOKENS,
    ROLES,
    STATE_FIELD,
    SnapshotStore,
    _store,
    require,
)
from memenv.constants import TRAIN_SEED_OFFSET


# ---------------------------------------------------------------------------- datasets
def _env_factory(env: str, env_kwargs: Mapping[str, Any] | None) -> Callable[[], Any]:
    import gymnasium as gym

    import memenv  # noqa: F401  (registers the environments)

    kwargs = dict(env_kwargs or {})

    def make():
        return gym.make(env, disable_env_checker=True, **kwargs)

    return make


def _worlds(worlds: int | Iterable[Any]) -> list[Any]:
    if isinstance(worlds, int):
        if worlds < 1:
            raise ValueError(f"worlds must be >= 1 (a count) or a list of world keys, got {worlds}")
        return [TRAIN_SEED_OFFSET + i for i in range(worlds)]
    out = list(worlds)
    if not out:
        raise ValueError("worlds is empty")
    return out


def _policy(policy: Any) -> Any:
    if policy is None:
        policy = "oracle"
    if isinstance(policy, str):
        from agents.registry import make_agent

        return make_agent(policy)
    return policy


def _policy_name(policy: Any) -> str:
    if policy is None:
        return "oracle"
    if isinstance(policy, str):
        return policy
    return f"{getattr(policy, 'name', type(policy).__name__)}@{id(policy):x}"


def _tag(env: str, env_kwargs: Mapping[str, Any] | None, policy: Any) -> str:
    text = json.dumps([env, sorted((env_kwargs or {}).items(), key=lambda kv: kv[0]), _policy_name(policy)],
                      default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


class _Recorder:
    """Wraps one env for :func:`memenv.play.play`: before each step whose state is wanted,
    the state is stored (forked) and noted."""

    def __init__(self, env: Any, world: Any, wanted: Callable[[dict], bool], record: Callable[..., None]) -> None:
        self.env, self.world, self.wanted, self.record = env, world, wanted, record
        self._obs: str = ""
        self._info: dict = {}

    def reset(self, **kwargs):
        self._obs, self._info = self.env.reset(**kwargs)
        return self._obs, self._info

    def step(self, action: str):
        if self.wanted(self._info):
            self.record(self.env, self.world, self._obs, self._info)
        out = self.env.step(action)
        self._obs, self._info = out[0], out[4]
        return out

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class _Row:
    key: str
    world: Any
    session: int
    turn: int
    role: str
    obs: str


def collect_states(roles: Sequence[str], *, env: str = DEFAULT_ENV, env_kwargs: Mapping[str, Any] | None = None,
                   worlds: int | Iterable[Any] = 8, sessions: Iterable[int] | None = None, policy: Any = None,
                   store: SnapshotStore | None = None) -> list[_Row]:
    """Play ``policy`` on each world and store a fork at every turn of ``roles`` in ``sessions``.

    Returns one row per stored state (world order, then turn order).
    """
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"roles must be among {ROLES}, got {list(roles)}")
    from memenv.play import play

    store = _store(store)
    keys = _worlds(worlds)
    wanted_sessions = None if sessions is None else set(sessions)
    if wanted_sessions is not None and not wanted_sessions:
        raise ValueError("sessions is empty")
    make = _env_factory(env, env_kwargs)
    tag = _tag(env, env_kwargs, policy)
    actor = _policy(policy)
    rows: list[_Row] = []

    def wanted(info: dict) -> bool:
        return info.get("role") in roles and (wanted_sessions is None or info.get("session") in wanted_sessions)

    def record(e: Any, world: Any, obs: str, info: dict) -> None:
        key = f"{tag}/{world}/s{info['session']}/t{info['turn']}/{info['role']}"
        store.add(key, e, obs, info)
        rows.append(_Row(key, world, int(info["session"]), int(info["turn"]), info["role"], obs))

    last = None if wanted_sessions is None else max(wanted_sessions)
    recorders = [_Recorder(make(), w, wanted, record) for w in keys]
    until = None if last is None else (lambda info: info.get("role") is None or info.get("session", 0) > last)
    try:
        play(recorders, keys, actor, until=until)
    except ValueError as err:
        raise ValueError(f"{env}: {err}".splitlines()[0]) from None
    finally:
        for r in recorders:
            r.close()
    order = {w: i for i, w in enumerate(keys)}
    rows.sort(key=lambda r: (order[r.world], r.turn))
    if not rows:
        raise ValueError(f"no {'/'.join(roles)} turns in sessions {sorted(wanted_sessions or [])} of these worlds")
    return rows


def _prompt(tokenizer, obs: str, role: str, *, conversational: bool, prompt_style: str, max_prompt_tokens: int,
            distill: bool):
    from agents.prompts import prompt_messages, render_prompt

    fn = prompt_messages if conversational else render_prompt
    return fn(tokenizer, obs, max_prompt_tokens=max_prompt_tokens, role=role, distill=distill, style=prompt_style)


def role_dataset(role: str, tokenizer, *, env: str = DEFAULT_ENV, env_kwargs: Mapping[str, Any] | None = None,
                 worlds: int | Iterable[Any] = 8, sessions: Iterable[int] | None = None, policy: Any = None,
                 conversational: bool = False, prompt_style: str = "default",
                 max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, distill: bool = True,
                 store: SnapshotStore | None = None):
    """A ``datasets.Dataset`` of ``role`` turns (``"extract"``, ``"manage"`` or ``"answer"``) for TRL.

    ``policy`` (default ``"oracle"``; any :func:`agents.registry.make_agent` spec or agent
    object) plays every turn before each sampled state, on ``worlds`` (a count of training
    worlds, seeds from ``TRAIN_SEED_OFFSET``, or a list of world keys) in ``sessions``
    (indices; None: all) of ``env`` made with ``env_kwargs``. Columns: ``prompt`` (the role
    prompt in ``prompt_style``, trimmed to ``max_prompt_tokens``: chat-templated text, or
    system/user messages with ``conversational``), ``state`` (the snapshot's key in
    ``store``, default :data:`SNAPSHOTS`), ``role``, ``world``, ``session``.
    """
    datasets = require("datasets")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    rows = collect_states([role], env=env, env_kwargs=env_kwargs, worlds=worlds, sessions=sessions, policy=policy,
                          store=store)
    prompts = [_prompt(tokenizer, r.obs, role, conversational=conversational, prompt_style=prompt_style,
                       max_prompt_tokens=max_prompt_tokens, distill=distill) for r in rows]
    return datasets.Dataset.from_dict({
        "prompt": prompts, STATE_FIELD: [r.key for r in rows], "role": [r.role for r in rows],
        "world": [str(r.world) for r in rows], "session": [r.session for r in rows],
    })


def session_dataset(tokenizer, *, env: str = DEFAULT_ENV, env_kwargs: Mapping[str, Any] | None = None,
                    worlds: int | Iterable[Any] = 8, sessions: Iterable[int] | None = None, policy: Any = None,
                    prompt_style: str = "default", max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
                    store: SnapshotStore | None = None):
    """Rows for :class:`SessionRollout`: one per session start (its extract turn).

    Like ``role_dataset("extract", conversational=True, ...)``, and every prompt message
    also carries the row's ``state`` key, the one way the rollout function gets it from TRL.
    """
    data = role_dataset("extract", tokenizer, env=env, env_kwargs=env_kwargs, worlds=worlds, sessions=sessions,
                        policy=policy, conversational=True, prompt_style=prompt_style,
                        max_prompt_tokens=max_prompt_tokens, store=store)
    return data.map(lambda row: {"prompt": [{**m, STATE_FIELD: row[STATE_FIELD]} for m in row["prompt"]]})


def demonstration_dataset(tokenizer, *, env: str = DEFAULT_ENV, env_kwargs: Mapping[str, Any] | None = None,
                          worlds: int | Iterable[Any] = 32, roles: Sequence[str] = ("extract", "manage"),
                          policy: Any = None, conversational: bool = False, prompt_style: str = "default",
                          max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, fact_indices: bool = True):
    """The policy's (default: the oracle's) actions as a prompt / completion dataset for ``SFTTrainer``.

    The demonstrations of :func:`algos.sft.record_demonstrations` (gold facts, gold
    operations referring to facts by index with ``fact_indices``), with the prompts the role
    datasets use. ``completion`` is the action text (SFTTrainer appends the end-of-sequence
    token), or an assistant message with ``conversational``.
    """
    datasets = require("datasets")
    from algos.sft import record_demonstrations

    bad = [r for r in roles if r not in ("extract", "manage")]
    if bad or not roles:
        raise ValueError(f"demonstrations cover extract and/or manage turns, got {list(roles)}")
    pairs = record_demonstrations(_env_factory(env, env_kwargs), _worlds(worlds), agent=_policy(policy),
                                  roles=tuple(roles), fact_indices=fact_indices)
    if not pairs:
        raise ValueError("the policy left no demonstrations on these worlds")
    prompts, completions, row_roles = [], [], []
    for obs, action in pairs:
        role = json.loads(obs)["role"]
        prompts.append(_prompt(tokenizer, obs, role, conversational=conversational, prompt_style=prompt_style,
                               max_prompt_tokens=max_prompt_tokens, distill=True))
        completions.append([{"role": "assistant", "content": action}] if conversational else action)
        row_roles.append(role)
    return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions, "role": row_roles})
