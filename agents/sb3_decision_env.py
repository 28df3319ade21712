"""The memory manager's per-fact decision as a Gymnasium environment for stable-baselines3.

:class:`ManagerDecisionEnv` wraps a real ``MemorySession-v0``: one step per candidate
fact, ``Discrete(4)`` decisions over the features of :mod:`agents.sb3_features`. Its
class docstring describes the whole environment.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import memenv  # noqa: F401  (registers the environments)
from agents.sb3_features import DECISIONS, NUM_FEATURES, SessionDecisions
from memenv.scripted import OracleAgent, load_observation

REWARD_MODES = ("answers", "probe")


class ManagerDecisionEnv(gym.Env[np.ndarray, np.int64]):
    """The memory manager's per-fact decision as a small-vector RL problem for SB3.

    ## Description
    Drives a real ``MemorySession-v0`` (or any env id / instance whose unwrapped env is a
    :class:`~memenv.env.MemorySessionEnv`). At each session the ``extractor`` (default:
    the gold facts of the synthetic world, via :class:`~memenv.scripted.OracleAgent`)
    extracts the facts; the agent then decides about them one per step; after the last
    fact of the session the decisions go to the inner env as one ``manage`` action, and
    the questions due are answered by the scripted reader
    (:func:`~memenv.scripted.scripted_answer`). A session without facts takes one step
    whose action is ignored.

    ## Action Space
    ``Discrete(4)``: 0 ADD, 1 UPDATE the nearest memory (its text becomes the fact's),
    2 DELETE the nearest memory, 3 NOOP. UPDATE/DELETE when no memory is related does
    nothing.

    ## Observation Space
    ``Box(0, 1, (NUM_FEATURES,), float32)``, see ``FEATURE_NAMES``: placeholder flag,
    whether the fact has a date, its kind of change (one-hot: retraction, change,
    acquisition, state), whether it has a known topic, memory size, session and fact
    progress, how many nearest memories share speaker and topic; then for each of the
    ``NUM_NEAREST`` nearest memories: present, same speaker, same topic, share of the
    fact's words it contains, Jaccard overlap, duplicate text, age (sessions since
    written, over the horizon), whether it is itself a retraction text, whether it has a
    date.

    ## Rewards
    Sparse: only the decision that closes a session is rewarded. Rewards are not spread
    over the session's decisions: with PPO's discounting close to 1, spreading only
    moves the same credit by a few steps.

    * ``reward_mode="answers"`` (default): the sum of the inner env's rewards for that
      session (answer scores of the questions due, minus the compression penalty, minus
      any invalid-action penalty of the extractor), so the episode return is the inner
      env's return (less the first extract turn's penalty, which comes before any
      decision). With ``qa_schedule="after_evidence"`` each question is asked once, right
      after its evidence: damage done to a memory *after* its questions were asked is
      never punished, and a policy trained on it learns to overwrite old memories.
    * ``reward_mode="probe"``: potential-based. After session ``s`` every question due by
      ``s`` is re-asked on the current memory (``probe``, no state change) and the
      reward is the change of their summed score since the previous session. The
      return telescopes to the summed score of all questions on the final memory — the
      benchmark objective (``qa_schedule="end"``; questions without evidence sessions,
      i.e. unanswerable ones, are left out) — with credit at every session. No
      compression penalty in this mode; the extractor's invalid-action penalty, if any,
      still counts.

    ## Starting State
    The first fact of the first session of a conversation drawn by the inner env
    (``reset(seed=...)`` seeds it; ``options`` go to the inner ``reset``, e.g.
    ``{"world_seed": 7}``).

    ## Episode End
    Terminates when the inner episode does; never truncates (one conversation, a few
    dozen steps).

    ## Arguments
    ``ManagerDecisionEnv("MemorySession-v0", env_kwargs={"world_seeds": list(range(200))})``.

    ## Information
    Every step: ``session``, ``fact`` (text of the fact just decided), ``decision``,
    ``target``. On the step closing a session: ``operations`` sent, ``answer_scores``
    (answer metric of each question asked), ``session_reward``. On the last step:
    ``memory_episode`` (the inner env's ``info["episode_summary"]``: mean score overall and per
    kind) and ``session_credit`` — not ``episode``, which SB3's Monitor and
    Gymnasium's RecordEpisodeStatistics write.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: str | gym.Env = "MemorySession-v0", *, env_kwargs: dict | None = None,
                 extractor: Any = None, reward_mode: str = "answers") -> None:
        """Build the wrapper.

        Args:
            env: a registered env id (made with ``gym.make(env, **env_kwargs)``) or an
                environment whose unwrapped env is a ``MemorySessionEnv``.
            env_kwargs: arguments of ``gym.make`` when ``env`` is an id.
            extractor: any object with ``act(obs, info) -> str`` producing ``extract``
                actions; default: the gold facts (``OracleAgent``).
            reward_mode: ``"answers"`` (the inner env's rewards for the questions asked
                after the session) or ``"probe"`` (the change in the summed score of every
                question due so far, re-asked on the current memory; see Rewards).
        """
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        self.reward_mode = reward_mode
        super().__init__()
        if isinstance(env, str):
            self.inner = gym.make(env, **dict(env_kwargs or {}))
        elif isinstance(env, gym.Env):
            if env_kwargs:
                raise ValueError("env_kwargs only applies when env is an env id, not an environment instance")
            self.inner = env
        else:
            raise TypeError(f"env must be an env id or a gymnasium.Env, got {type(env).__name__}")
        base = self.inner.unwrapped
        needed = ("memory", "role") + (("probe", "score_answer", "questions_due_by") if reward_mode == "probe" else ())
        missing = [name for name in needed if not hasattr(base, name)]
        if missing:
            raise TypeError(f"{type(base).__name__} is not a MemorySessionEnv (it lacks {', '.join(missing)})")
        self.extractor = extractor if extractor is not None else OracleAgent()
        if not callable(getattr(self.extractor, "act", None)):
            raise TypeError(f"extractor must have act(obs, info), got {type(self.extractor).__name__}")
        self._reader = OracleAgent()  # its answer action is the scripted reader
        self.observation_space = spaces.Box(0.0, 1.0, shape=(NUM_FEATURES,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(DECISIONS))
        self._pending: SessionDecisions | None = None
        self._obs, self._info = "", {}
        self._done = True

    @property
    def memory(self):
        """The inner environment's memory bank."""
        return self.inner.unwrapped.memory

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs, self._info = self.inner.reset(seed=seed, options=options)
        self._done = False
        self._potential = 0.0
        self._open_session()
        return self._pending.features(), {"session": self._pending.session}

    def step(self, action):
        if self._done or self._pending is None:
            raise RuntimeError("the episode is over; call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in 0..{len(DECISIONS) - 1}, got {action!r}")
        entry = self._pending.decide(int(action))
        info: dict[str, Any] = {"session": self._pending.session, **entry}
        if not self._pending.done:
            return self._pending.features(), 0.0, False, False, info
        reward = self._close_session(info)
        if self._done:
            return np.zeros(NUM_FEATURES, dtype=np.float32), reward, True, False, info
        reward += self._open_session()
        info["session_reward"] = reward
        return self._pending.features(), reward, False, False, info

    def _open_session(self) -> float:
        """Run the extractor on the current extract turn; the manage turn becomes pending."""
        if self._info.get("role") != "extract":
            raise RuntimeError(f"expected an extract turn, the inner env is at {self._info.get('role')!r}")
        action = self.extractor.act(self._obs, self._info)
        self._obs, reward, terminated, truncated, self._info = self.inner.step(action)
        if terminated or truncated:
            raise RuntimeError("the inner env ended on an extract turn")
        self._pending = SessionDecisions(load_observation(self._obs))
        return float(reward)

    def _close_session(self, info: dict) -> float:
        """Send the session's operations, answer the questions due; the summed reward."""
        action = self._pending.action()
        info["operations"] = self._pending.operations()
        self._obs, reward, terminated, truncated, self._info = self.inner.step(action)
        total, scores = float(reward), []
        while not (terminated or truncated) and self._info.get("role") == "answer":
            answer = self._reader.act(self._obs, self._info)
            self._obs, reward, terminated, truncated, self._info = self.inner.step(answer)
            total += float(reward)
            scores.append(float(self._info.get("score", 0.0)))
        info["answer_scores"] = scores
        if self.reward_mode == "probe":
            potential = self._probe_potential(self._pending.session)
            total, self._potential = potential - self._potential, potential
        info["session_reward"] = total
        if terminated or truncated:
            self._done = True
            info["memory_episode"] = self._info.get("episode_summary")
            info["session_credit"] = self._info.get("session_credit")
        return total

    def _probe_potential(self, session: int) -> float:
        """Summed score of every question due by ``session``, answered on the current memory."""
        from memenv.probing import due_questions, score_on_memory

        def answer(observations: list[str], infos: list[dict]) -> list[str]:
            return [self._reader.act(obs, info) for obs, info in zip(observations, infos)]

        return float(sum(score_on_memory([(self.inner, q) for q in due_questions(self.inner, session)], answer)))

    def close(self) -> None:
        self.inner.close()
        super().close()
