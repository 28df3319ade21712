"""One loop that plays MemorySession episodes: many conversations in lockstep, batched by role.

Evaluation, leaderboards, demonstration recording and the SB3 manager's evaluation all play
episodes the same way::

    finals = play(make_env, conversations, {"extract": extractor, "manage": manager, "answer": reader},
                  on_turn=lambda turn: ...)

At each tick, the observations of the live episodes are grouped by the actor their role
maps to (several roles may share one actor, e.g. an LLM that extracts and manages: it then
gets them in ONE call), each actor answers its group with ``act_batch(observations, infos)``
(or ``act`` per observation when it has no batch form), and every episode steps once.
``on_turn`` sees every step as a :class:`Turn`; the final info of each episode is returned.
Nothing here depends on the agents package: an actor is anything with ``act_batch`` or
``act``, or a callable ``(observations, infos) -> actions``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ActBatch = Callable[[list[str], list[dict]], list[str]]


@dataclass(frozen=True)
class Turn:
    """One step of one episode."""

    episode: int  # index of the episode's conversation in the call
    role: str
    obs: str
    info: dict  # the info that came with ``obs``
    action: str
    reward: float
    next_info: dict  # the info the step returned
    done: bool


def act_batch_of(actor: Any) -> ActBatch:
    """``actor`` as a batch function: its ``act_batch``, ``act`` per observation, or itself."""
    batch = getattr(actor, "act_batch", None)
    if callable(batch):
        return batch
    act = getattr(actor, "act", None)
    if callable(act):
        return lambda observations, infos: [act(o, i) for o, i in zip(observations, infos)]
    if callable(actor):
        return actor
    raise TypeError(f"{type(actor).__name__} is no actor: it needs act_batch(observations, infos), act(obs, info) "
                    "or to be callable")


def play(envs: Callable[[], Any] | Sequence[Any], conversations: Sequence[Any], actors: Any | Mapping[str, Any], *,
         on_turn: Callable[[Turn], None] | None = None, until: Callable[[dict], bool] | None = None) -> list[dict]:
    """Play one episode per conversation in lockstep; returns each episode's last info.

    ``envs``: a factory (one env is made per conversation, and closed at the end) or one env
    per conversation (reset here, left open for the caller, e.g. to probe its memory).
    ``actors``: one actor for every role, or a mapping role -> actor (roles mapped to the
    same object are batched together). ``conversations`` are reset keys
    (``env.reset(options={"conversation": key})``). ``until(info)``: an episode stops,
    without stepping, once its info satisfies it (e.g. the first answer turn).
    """
    per_role = isinstance(actors, Mapping)
    batch_fns: dict[int, ActBatch] = {}

    def actor_for(role: str) -> Any:
        if not per_role:
            return actors
        if role not in actors:
            raise KeyError(f"no actor for role {role!r} (actors for {sorted(actors)})")
        return actors[role]

    owned = callable(envs)
    made = [envs() for _ in conversations] if owned else list(envs)
    if len(made) != len(conversations):
        raise ValueError(f"{len(made)} environments for {len(conversations)} conversations")
    observations, infos = [], []
    for env, key in zip(made, conversations):
        obs, info = env.reset(options={"conversation": key})
        observations.append(obs)
        infos.append(info)
    finals: list[dict | None] = [None] * len(made)
    while True:
        for k in range(len(made)):
            if finals[k] is None and until is not None and until(infos[k]):
                finals[k] = infos[k]
        live = [k for k in range(len(made)) if finals[k] is None]
        if not live:
            break
        groups: dict[int, list[int]] = {}
        for k in live:
            actor = actor_for(infos[k]["role"])
            batch_fns.setdefault(id(actor), act_batch_of(actor))
            groups.setdefault(id(actor), []).append(k)
        actions: dict[int, str] = {}
        for key, members in groups.items():
            chosen = batch_fns[key]([observations[k] for k in members], [infos[k] for k in members])
            if len(chosen) != len(members):
                raise ValueError(f"an actor returned {len(chosen)} actions for {len(members)} observations")
            actions.update(zip(members, chosen))
        for k in live:
            obs, reward, terminated, truncated, info = made[k].step(actions[k])
            done = bool(terminated or truncated)
            if on_turn is not None:
                on_turn(Turn(k, infos[k]["role"], observations[k], infos[k], actions[k], float(reward), info, done))
            observations[k], infos[k] = obs, info
            if done:
                finals[k] = info
    if owned:
        for env in made:
            env.close()
    return finals  # type: ignore[return-value]
