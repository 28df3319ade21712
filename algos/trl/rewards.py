"""TRL integration: answerers, scoring and the reward functions in TRL's signature (see :mod:`algos.trl`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from algos.trl.data import _policy
from algos.trl.snapshots import (
    DEFAULT_MAX_QUESTIONS,
    STATE_FIELD,
    Snapshot,
    SnapshotStore,
    _store,
)


# ---------------------------------------------------------------------------- answerers and scoring
def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or the last message of a conversational one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # typed content blocks
            return "".join(b.get("text", "") for b in content if isinstance(b, Mapping))
    raise TypeError(f"a completion is a string or a list of messages, got {type(completion).__name__}")


def make_answerer(answerer: Any) -> Any:
    """An object with ``answer(observations, infos)``: ``"scripted"`` (the synthetic worlds'
    rule-based reader), any registered agent spec (``"llm:smollm2-135m"``), or an agent
    object (``act_batch`` / ``act``), or an object that already has ``answer``."""
    from algos.rollouts import AgentAnswerer, ScriptedAnswerer

    if answerer is None or answerer == "scripted":
        return ScriptedAnswerer()
    if isinstance(answerer, str):
        from agents.registry import make_agent

        return AgentAnswerer(make_agent(answerer))
    if callable(getattr(answerer, "answer", None)):
        return answerer
    if callable(getattr(answerer, "act_batch", None)) or callable(getattr(answerer, "act", None)):
        return AgentAnswerer(answerer)
    raise TypeError(f"{type(answerer).__name__} cannot answer: give 'scripted', an agent spec, or an object with "
                    "answer(observations, infos) or act_batch(observations, infos)")


def score_due(envs: Sequence[Any], sessions: Sequence[int], answerer: Any, max_questions: int | None) -> list[float]:
    """For each env: the mean score of the answerer on the (at most ``max_questions`` latest)
    questions due by the end of its session in ``sessions``, asked of the env's current
    memory, all in one answerer batch; 0 where no question is due."""
    from memenv.probing import due_questions, score_on_memory

    requests, owner = [], []
    for k, (e, session) in enumerate(zip(envs, sessions)):
        base = e.unwrapped
        for q in due_questions(base, session, max_questions):
            requests.append((base, q))
            owner.append(k)
    totals, counts = [0.0] * len(envs), [0] * len(envs)
    for k, score in zip(owner, score_on_memory(requests, answerer.answer)):
        totals[k] += score
        counts[k] += 1
    return [t / c if c else 0.0 for t, c in zip(totals, counts)]


class _Reward:
    """Common parts of the reward functions: the store, the lazy answerer, checks."""

    __name__ = "reward"
    role: str | None = None

    def __init__(self, *, store: SnapshotStore | None = None) -> None:
        self._store = store

    @property
    def store(self) -> SnapshotStore:
        """The snapshot store (default :data:`SNAPSHOTS`)."""
        return _store(self._store)

    def _snapshots(self, state: Sequence[str] | None, completions: Sequence[Any]) -> list[Snapshot]:
        if state is None:
            raise ValueError(f"{self.__name__} needs the dataset's '{STATE_FIELD}' column (build the dataset with "
                             "algos.trl.role_dataset, and keep GRPOConfig(remove_unused_columns=False))")
        if len(state) != len(completions):
            raise ValueError(f"{self.__name__}: {len(state)} states for {len(completions)} completions")
        snaps = [self.store[k] for k in state]
        if self.role is not None:
            wrong = {s.role for s in snaps} - {self.role}
            if wrong:
                raise ValueError(f"{self.__name__} scores {self.role} turns, but the dataset holds {sorted(wrong)} "
                                 f"turns (build it with role_dataset({self.role!r}, ...))")
        return snaps


class _AnswererReward(_Reward):
    def __init__(self, *, answerer: Any = "scripted", max_questions: int | None = DEFAULT_MAX_QUESTIONS,
                 compression: bool = True, store: SnapshotStore | None = None) -> None:
        super().__init__(store=store)
        if max_questions is not None and max_questions < 1:
            raise ValueError(f"max_questions must be >= 1 or None, got {max_questions}")
        self.answerer_spec, self.max_questions, self.compression = answerer, max_questions, compression
        self._answerer = None

    @property
    def answerer(self) -> Any:
        """The answerer, built on first use."""
        if self._answerer is None:
            self._answerer = make_answerer(self.answerer_spec)
        return self._answerer

    def _session_rewards(self, forks: Sequence[Any], sessions: Sequence[int],
                         step_rewards: Sequence[float]) -> list[float]:
        """Answer score - compression penalty + step reward for each env past a session's manage turn."""
        scores = score_due(forks, sessions, self.answerer, self.max_questions)
        out = []
        for f, score, step in zip(forks, scores, step_rewards):
            penalty = f.unwrapped.compression_penalty() if self.compression else 0.0
            out.append(float(score - penalty + step))
        return out


class ManageReward(_AnswererReward):
    """Reward of a manage action, from its row's snapshot: fork it, apply the operations, score.

    ``answer score - compression penalty + step reward``: the mean score of ``answerer`` on
    the (at most ``max_questions`` latest) questions due by the end of the session, on the
    memory the action leaves; the environment's compression penalty (``compression=False``
    leaves it out); the step reward (0, or ``-INVALID_ACTION_PENALTY`` for an invalid list,
    which changes nothing). LoGo-GRPO scores its local rerollouts the same way.
    """

    __name__ = "manage_reward"
    role = "manage"

    def __call__(self, completions: Sequence[Any], state: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        snaps = self._snapshots(state, completions)
        forks, steps = [], []
        for snap, completion in zip(snaps, completions):
            fork = snap.fork()
            steps.append(float(fork.step(completion_text(completion))[1]))
            forks.append(fork)
        return self._session_rewards(forks, [s.info["session"] for s in snaps], steps)


class ExtractReward(_AnswererReward):
    """Reward of an extract action: fork the snapshot, extract, let ``manager`` (default
    ``"add-all"``, which adds every extracted fact) manage, then score as :class:`ManageReward`;
    the step reward is the extraction's (the fixed manager's own mistakes cost nothing)."""

    __name__ = "extract_reward"
    role = "extract"

    def __init__(self, *, manager: Any = "add-all", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager_spec = manager
        self._manager = None

    def __call__(self, completions: Sequence[Any], state: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        from memenv.play import act_batch_of

        snaps = self._snapshots(state, completions)
        if self._manager is None:
            self._manager = act_batch_of(_policy(self.manager_spec))
        forks, steps, observations, infos = [], [], [], []
        for snap, completion in zip(snaps, completions):
            fork = snap.fork()
            obs, reward, _, _, info = fork.step(completion_text(completion))
            forks.append(fork)
            steps.append(float(reward))
            observations.append(obs)
            infos.append(info)
        for fork, action in zip(forks, self._manager(observations, infos)):
            fork.step(action)
        return self._session_rewards(forks, [s.info["session"] for s in snaps], steps)


class AnswerReward(_Reward):
    """Reward of an answer: ``metric`` (``"f1"``, ``"em"`` or ``"bleu1"``) of the parsed short
    answer against the gold answer of the snapshot's question (no compression penalty)."""

    __name__ = "answer_reward"
    role = "answer"

    def __init__(self, *, metric: str = "f1", store: SnapshotStore | None = None) -> None:
        from memenv.scoring import get_metric

        super().__init__(store=store)
        self.metric = metric
        self._score = get_metric(metric)

    def __call__(self, completions: Sequence[Any], state: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        from memenv.parsing import parse_answer

        snaps = self._snapshots(state, completions)
        return [float(self._score(parse_answer(completion_text(c)), str(s.info.get("gold_answer", ""))))
                for s, c in zip(snaps, completions)]


class ValidAction(_Reward):
    """1.0 when the environment accepts the action at the row's snapshot (a fork is stepped),
    else 0.0; answers are always valid. A metric: give it weight 0 in ``reward_weights`` to
    log it as ``rewards/valid_action/mean`` without training on it. For session rollouts it
    is 1.0 when both the extraction and the operations were valid."""

    __name__ = "valid_action"

    def __call__(self, completions: Sequence[Any], state: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        if kwargs.get("session_valid") is not None:
            return [float(v) for v in kwargs["session_valid"]]
        out = []
        for snap, completion in zip(self._snapshots(state, completions), completions):
            if snap.role == "answer":
                out.append(1.0)
                continue
            info = snap.fork().step(completion_text(completion))[4]
            out.append(float(bool(info.get("valid", True))))
        return out


def session_reward(completions: Sequence[Any], session_reward: Sequence[float] | None = None,
                   **kwargs: Any) -> list[float]:
    """The reward :class:`SessionRollout` computed for each whole-session sample."""
    if session_reward is None:
        raise ValueError("session_reward scores samples of GRPOTrainer(rollout_func=SessionRollout(...)) only")
    return [float(r) for r in session_reward]


manage_reward = ManageReward()
"""Manage reward with the scripted reader on the default store (see :class:`ManageReward`)."""
extract_reward = ExtractReward()
"""Extract reward: add-all manages, the scripted reader answers (see :class:`ExtractReward`)."""
answer_reward = AnswerReward()
"""Answer reward, token F1 (see :class:`AnswerReward`)."""
valid_action = ValidAction()
"""Validity metric (see :class:`ValidAction`)."""
