"""Full agents whose memory manager decides one fact at a time from the features.

:class:`FeatureManagerAgent` plays any ``decide(features) -> 0..3`` through the ordinary
text protocol (gold extraction, scripted reader); :class:`RandomManagerAgent` decides at
random; :class:`SB3ManagerAgent` plays a trained stable-baselines3 policy, so benchmarks
and the leaderboard use it like any other agent
(``make_agent("sb3-manager:/path/to/model.safetensors")``, a file written by
:func:`agents.sb3_model_file.save_manager`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from agents.sb3_features import DECISIONS, SessionDecisions
from agents.sb3_model_file import load_manager_policy
from memenv.scripted import OracleAgent, load_observation


class FeatureManagerAgent:
    """A full agent whose manager decides each fact from :func:`~agents.sb3_features.fact_features`.

    ``extract``: the gold facts from ``info`` (like the oracle and add-all agents);
    ``manage``: ``decide(features) -> 0..3`` for each fact in order, turned into the ops
    JSON; ``answer``: the scripted reader.
    """

    name = "feature-manager"

    def __init__(self, decide: Callable[[np.ndarray], int], name: str | None = None) -> None:
        if not callable(decide):
            raise TypeError(f"decide must be callable, got {type(decide).__name__}")
        self._decide = decide
        self._scripted = OracleAgent()
        if name is not None:
            self.name = name

    def manage_action(self, obs: dict) -> str:
        """The manage action for a parsed manage observation."""
        session = SessionDecisions(obs)
        while not session.done:
            session.decide(int(self._decide(session.features())))
        return session.action()

    def act(self, obs: str, info: dict) -> str:
        """The action for this observation (JSON text)."""
        data = load_observation(obs)
        role = data.get("role") or (info.get("role") if isinstance(info, dict) else None)
        if role == "manage":
            return self.manage_action(data)
        return self._scripted.act(obs, info)

    def act_batch(self, observations: list[str], infos: list[dict]) -> list[str]:
        """One action per (observation, info)."""
        return [self.act(o, i) for o, i in zip(observations, infos)]


class RandomManagerAgent(FeatureManagerAgent):
    """Decides uniformly at random among ADD / UPDATE / DELETE / NOOP (seeded)."""

    name = "random-manager"

    def __init__(self, seed: int | None = 0) -> None:
        self.rng = np.random.default_rng(seed)
        super().__init__(lambda features: int(self.rng.integers(len(DECISIONS))))

    @classmethod
    def from_spec(cls, arg: str | None = None) -> "RandomManagerAgent":
        """``"random-manager"`` or ``"random-manager:<seed>"``."""
        if arg is None or arg == "":
            return cls(0)
        try:
            return cls(int(arg))
        except ValueError:
            raise ValueError(f"random-manager takes an int seed, got {arg!r}") from None


class RuleManagerAgent(FeatureManagerAgent):
    """A hand-written rule of :data:`~agents.sb3_features.HAND_WRITTEN_RULES` as a full agent:
    ``"rule-manager"`` (the feature rule), ``"rule-manager:keep-history"`` or
    ``"rule-manager:budget-keep-history"``; in a ``by-role`` spec it manages the facts
    another agent extracted (``by-role:extract=llm:smollm2-135m,manage=rule-manager``)."""

    RULES = {"feature": "feature rule", "keep-history": "keep-history rule",
             "budget-keep-history": "budget-aware keep-history rule"}

    @classmethod
    def from_spec(cls, arg: str | None = None) -> "RuleManagerAgent":
        """``"rule-manager"`` or ``"rule-manager:<rule>"`` with a rule of :attr:`RULES`."""
        from agents.sb3_features import HAND_WRITTEN_RULES

        key = arg or "feature"
        if key not in cls.RULES:
            raise ValueError(f"unknown rule {key!r} for rule-manager; choose one of {', '.join(cls.RULES)}")
        return cls(HAND_WRITTEN_RULES[cls.RULES[key]], name=f"rule-manager:{key}")


class SB3ManagerAgent(FeatureManagerAgent):
    """The manager a stable-baselines3 policy learned on
    :class:`~agents.sb3_decision_env.ManagerDecisionEnv`.

    ``model`` is anything with SB3's ``predict(obs, deterministic=...)`` (a PPO model or
    its policy); load a file written by :func:`~agents.sb3_model_file.save_manager` with
    :meth:`load` or the registry spec ``"sb3-manager:<path to model.safetensors>"``.
    """

    name = "sb3-manager"

    def __init__(self, model: Any, *, deterministic: bool = True) -> None:
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"model must have SB3's predict(obs, deterministic=...), got {type(model).__name__}")
        self.model = model
        self.deterministic = deterministic
        super().__init__(self._predict)

    def _predict(self, features: np.ndarray) -> int:
        action, _ = self.model.predict(features, deterministic=self.deterministic)
        return int(np.asarray(action).reshape(-1)[0])

    @classmethod
    def load(cls, path: str, *, deterministic: bool = True) -> "SB3ManagerAgent":
        """Load a manager saved by :func:`~agents.sb3_model_file.save_manager` (CPU); no pickle is read."""
        return cls(load_manager_policy(path), deterministic=deterministic)

    @classmethod
    def from_spec(cls, arg: str | None = None) -> "SB3ManagerAgent":
        """Registry factory: ``"sb3-manager:<path to model.safetensors>"``."""
        if not arg:
            raise ValueError("sb3-manager needs the saved model: 'sb3-manager:/path/to/model.safetensors' "
                             "(written by agents.sb3_manager.save_manager)")
        return cls.load(arg)
