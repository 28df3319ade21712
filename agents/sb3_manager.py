"""Classical RL for the memory manager: one candidate fact per step, four discrete choices.

The LLM agents of this project write the whole ``manage`` action as text. Here the same
decision is cut down to what a small MLP policy (stable-baselines3 PPO) can learn: for
each extracted fact, in order, choose

    0 ADD      store the fact as a new memory
    1 UPDATE   replace the text of the fact's *nearest* memory with the fact's text
    2 DELETE   delete the nearest memory (a retraction: "Alice quit the chess club ...")
    3 NOOP     do nothing

from a fixed-size vector of hand-made features of the fact and its nearest memories
(:func:`fact_features`). :class:`ManagerDecisionEnv` wraps a real ``MemorySession-v0``
so that SB3 can train on it; :class:`SB3ManagerAgent` plays a trained policy through the
ordinary text protocol, so benchmarks and the leaderboard use it like any other agent
(``make_agent("sb3-manager:/path/to/model.safetensors")``).

Saved managers: :func:`save_manager` writes one ``.safetensors`` file, the policy's
float32 tensors plus a JSON header (net architecture, activation, feature names and
version, action count, and a marker that this project wrote it);
:func:`load_manager_policy` rebuilds SB3's ``ActorCriticPolicy`` from it. That is the
only file the ``sb3-manager`` agent opens, because neither part is pickle and opening it
cannot run code. SB3's own ``.zip`` is refused: ``PPO.load`` unpickles its ``data`` entry
(cloudpickle), so a crafted zip runs arbitrary code. So are ``torch.save`` files,
pickles, files without the marker, and files whose features, architecture or tensor
shapes do not match. To reuse a zip you trust, re-save it:
``save_manager(PPO.load(zip_path), "model.safetensors")``.

*Nearest* memory: among the memories the environment lists as related to the fact (its
BM25 top-k), the one that is about the same speaker and the same topic, with the largest
share of the fact's words — ranked by ``(same speaker and topic, same speaker, word
containment, BM25 rank)``. Topics and kinds of change come from small word lists
(:data:`TOPIC_WORDS`, :data:`CHANGE_CUES`) covering the everyday life events of the
synthetic worlds and LoCoMo-like chat ("moved", "started", "quit", "sold", "broke up",
"gave ... to a friend"); a fact about a job change ("Alice started working as a pilot")
shares no value word with the memory it replaces ("Alice works as a nurse"), so plain
BM25 would not find it.

Within one session, decisions are collected fact by fact and sent to the environment as
one ``manage`` action; a memory that an earlier fact of the same session already updated
or deleted is no longer a candidate (so the operation list is always valid), and memories
that earlier facts of the same session add are not visible yet.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import memenv  # noqa: F401  (registers the environments)
from memenv.retrieval import tokenize
from memenv.scripted import OracleAgent, load_observation

ADD, UPDATE, DELETE, NOOP = 0, 1, 2, 3
DECISIONS = ("ADD", "UPDATE", "DELETE", "NOOP")
NUM_NEAREST = 3  # nearest memories described in the features
REWARD_MODES = ("answers", "probe")

# Kinds of change, checked in this order (a retraction cue wins over a change cue).
CHANGE_CUES: dict[str, frozenset[str]] = {
    "retraction": frozenset("quit sold broke left ended gave split cancelled canceled divorced lost stopped "
                            "rid resigned dropped".split()),
    "change": frozenset("moved relocated started began switched became changed promoted".split()),
    "acquisition": frozenset("joined bought adopted travelled traveled visited saw flew got attended "
                             "purchased".split()),
    "state": frozenset("lives works is plays partner favourite favorite has owns".split()),
}
CUE_KINDS = tuple(CHANGE_CUES)
TOPIC_WORDS: dict[str, frozenset[str]] = {
    "residence": frozenset("live lives living moved relocated city home apartment".split()),
    "work": frozenset("work works working job career occupation hired employed".split()),
    "relationship": frozenset("partner dating couple broke married boyfriend girlfriend engaged "
                              "divorced".split()),
    "membership": frozenset("club joined quit member membership team".split()),
    "ownership": frozenset("bought sold car owns vehicle".split()),
    "pet": frozenset("adopted pet cat dog rabbit parrot hamster turtle puppy kitten".split()),
    "travel": frozenset("travelled traveled trip flew visited holiday vacation".split()),
    "concert": frozenset("concert gig festival".split()),
    "family": frozenset("sister brother mother father son daughter cousin".split()),
    "instrument": frozenset("plays instrument piano guitar violin cello drums flute".split()),
    "food": frozenset("food favourite favorite dish cuisine".split()),
}
_WORDS = re.compile(r"[a-z]+")
_DATE = re.compile(r"\b\d{1,2} (January|February|March|April|May|June|July|August|September|October|November"
                   r"|December) \d{4}\b|\b\d{4}-\d{2}-\d{2}\b")
# Memory size enters the features as n / (n + MEMORY_SIZE_SCALE), in [0, 1).
MEMORY_SIZE_SCALE = 16.0
# Same-speaker same-topic memories counted up to this many (list slots hold several).
MAX_SAME_TOPIC = 4

FACT_FEATURES = ("placeholder", "has_date", *(f"cue_{k}" for k in CUE_KINDS), "has_topic", "memory_size",
                 "session_progress", "fact_progress", "same_topic_count")
NEAREST_FEATURES = ("present", "same_speaker", "same_topic", "containment", "jaccard", "duplicate", "age",
                    "is_retraction", "has_date")
FEATURE_NAMES = FACT_FEATURES + tuple(f"nearest{k}_{name}" for k in range(NUM_NEAREST) for name in NEAREST_FEATURES)
NUM_FEATURES = len(FEATURE_NAMES)
_FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


# ------------------------------------------------------------------------ text cues --
def change_kind(text: str) -> str | None:
    """The kind of change a fact text reports (``"retraction"``, ``"change"``,
    ``"acquisition"``, ``"state"``), from its words; None when no cue word occurs."""
    words = set(_WORDS.findall(str(text).lower()))
    for kind, cues in CHANGE_CUES.items():
        if words & cues:
            return kind
    return None


def topics(text: str) -> frozenset[str]:
    """The life topics (residence, work, relationship, ...) a text touches."""
    words = set(_WORDS.findall(str(text).lower()))
    return frozenset(t for t, vocab in TOPIC_WORDS.items() if words & vocab)


def has_date(text: str) -> bool:
    """Whether the text holds an absolute date ("8 May 2023" or "2023-05-08")."""
    return _DATE.search(str(text)) is not None


def _normal(text: str) -> str:
    return " ".join(_WORDS.findall(str(text).lower()))


def fact_speaker(fact: dict, speakers: Sequence[str]) -> str | None:
    """The fact's speaker as given, else the first speaker named in its text."""
    given = fact.get("speaker")
    if isinstance(given, str) and given in speakers:
        return given
    text = str(fact.get("text", ""))
    found = [(text.find(s), s) for s in speakers if s and s in text]
    return min(found)[1] if found else None


# ------------------------------------------------------------------------ features --
def _nearest_block(fact_text: str, fact_tokens: set[str], fact_topics: frozenset[str], speaker: str | None,
                   record: dict, session: int, num_sessions: int) -> list[float]:
    mem_tokens = set(tokenize(record.get("text", "")))
    shared = fact_tokens & mem_tokens
    union = fact_tokens | mem_tokens
    written = record.get("session")
    age = (session - written) / max(1, num_sessions - 1) if isinstance(written, int) else 0.0
    return [
        1.0,
        float(speaker is not None and record.get("speaker") == speaker),
        float(bool(fact_topics & topics(record.get("text", "")))),
        len(shared) / len(fact_tokens) if fact_tokens else 0.0,
        len(shared) / len(union) if union else 0.0,
        float(_normal(fact_text) == _normal(record.get("text", ""))),
        min(1.0, max(0.0, age)),
        float(change_kind(record.get("text", "")) == "retraction"),
        float(has_date(record.get("text", ""))),
    ]


def rank_nearest(fact: dict, memories: dict[str, dict], speakers: Sequence[str],
                 excluded: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Ids of the fact's related memories, nearest first (see the module docstring)."""
    text = str(fact.get("text", ""))
    speaker = fact_speaker(fact, speakers)
    fact_tokens = set(tokenize(text))
    fact_topics = topics(text)
    keyed = []
    for rank, memory_id in enumerate(fact.get("related") or ()):
        record = memories.get(memory_id)
        if record is None or memory_id in excluded:
            continue
        same_speaker = speaker is not None and record.get("speaker") == speaker
        same_topic = bool(fact_topics & topics(record.get("text", "")))
        containment = len(fact_tokens & set(tokenize(record.get("text", "")))) / max(1, len(fact_tokens))
        keyed.append(((same_speaker and same_topic, same_speaker, containment, -rank), memory_id))
    keyed.sort(key=lambda item: item[0], reverse=True)
    return [memory_id for _, memory_id in keyed]


def fact_features(fact: dict, nearest: Sequence[str], memories: dict[str, dict], *, speakers: Sequence[str],
                  session: int, num_sessions: int, memory_size: int, fact_index: int, num_facts: int) -> np.ndarray:
    """The float32 feature vector (``FEATURE_NAMES``, all in [0, 1]) of one candidate fact."""
    text = str(fact.get("text", ""))
    speaker = fact_speaker(fact, speakers)
    fact_tokens = set(tokenize(text))
    fact_topics = topics(text)
    kind = change_kind(text)
    same_topic = sum(1 for m in nearest if speaker is not None and memories[m].get("speaker") == speaker
                     and fact_topics & topics(memories[m].get("text", "")))
    values = [
        0.0,
        float(has_date(text)),
        *(float(kind == k) for k in CUE_KINDS),
        float(bool(fact_topics)),
        memory_size / (memory_size + MEMORY_SIZE_SCALE),
        session / max(1, num_sessions - 1),
        fact_index / max(1, num_facts),
        min(same_topic, MAX_SAME_TOPIC) / MAX_SAME_TOPIC,
    ]
    for k in range(NUM_NEAREST):
        if k < len(nearest):
            values += _nearest_block(text, fact_tokens, fact_topics, speaker, memories[nearest[k]], session, num_sessions)
        else:
            values += [0.0] * len(NEAREST_FEATURES)
    return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)


def placeholder_features() -> np.ndarray:
    """The features of a session without any candidate fact (one step whose action is ignored)."""
    values = np.zeros(NUM_FEATURES, dtype=np.float32)
    values[FEATURE_NAMES.index("placeholder")] = 1.0
    return values


class SessionDecisions:
    """The manager's decisions for one ``manage`` observation, taken one fact at a time.

    ``features()`` describes the current fact, ``decide(d)`` records the decision for it
    and moves on, ``operations()`` is the ``manage`` action once every fact is decided.
    A session without facts has one placeholder step whose decision is ignored.
    """

    def __init__(self, obs: dict) -> None:
        if not isinstance(obs, dict) or obs.get("role") != "manage":
            raise ValueError(f"SessionDecisions needs a parsed manage observation, got {str(obs)[:80]!r}")
        facts = obs.get("facts")
        self.facts = [f for f in facts if isinstance(f, dict) and isinstance(f.get("text"), str) and f["text"].strip()] \
            if isinstance(facts, list) else []
        records = obs.get("memories")
        self.memories = {r["id"]: r for r in records if isinstance(r, dict) and isinstance(r.get("id"), str)} \
            if isinstance(records, list) else {}
        speakers = obs.get("speakers")
        self.speakers = tuple(s for s in speakers if isinstance(s, str)) if isinstance(speakers, list) else ()
        self.session = int(obs.get("session") or 0)
        self.num_sessions = int(obs.get("num_sessions") or 1)
        self.memory_size = int(obs.get("memory_size") or len(self.memories))
        self.index = 0
        self.excluded: set[str] = set()
        self.ops: list[dict] = []
        self._nearest: list[str] | None = None

    @property
    def num_steps(self) -> int:
        """Decisions this session takes: one per fact, or one placeholder."""
        return max(1, len(self.facts))

    @property
    def done(self) -> bool:
        return self.index >= self.num_steps

    def _current_nearest(self) -> list[str]:
        if self._nearest is None:
            self._nearest = rank_nearest(self.facts[self.index], self.memories, self.speakers, self.excluded)
        return self._nearest

    def features(self) -> np.ndarray:
        """Features of the fact awaiting a decision."""
        if self.done:
            raise RuntimeError("every fact of this session has been decided")
        if not self.facts:
            return placeholder_features()
        return fact_features(self.facts[self.index], self._current_nearest(), self.memories,
                             speakers=self.speakers, session=self.session, num_sessions=self.num_sessions,
                             memory_size=self.memory_size, fact_index=self.index, num_facts=len(self.facts))

    def decide(self, decision: int) -> dict:
        """Record the decision for the current fact; returns what it did."""
        if self.done:
            raise RuntimeError("every fact of this session has been decided")
        if decision not in (ADD, UPDATE, DELETE, NOOP):
            raise ValueError(f"decision must be one of 0..3 ({', '.join(DECISIONS)}), got {decision!r}")
        if not self.facts:
            self.index += 1
            return {"fact": None, "decision": "NOOP", "target": None}
        fact = self.facts[self.index]
        nearest = self._current_nearest()
        target = nearest[0] if nearest else None
        op: dict | None = None
        if decision == ADD:
            op = {"op": "ADD", "text": fact["text"]}
            speaker = fact_speaker(fact, self.speakers)
            if speaker is not None:
                op["speaker"] = speaker
        elif decision in (UPDATE, DELETE) and target is not None:
            # UPDATE / DELETE without any nearest memory does nothing (the fact is dropped)
            op = {"op": "UPDATE", "id": target, "text": fact["text"]} if decision == UPDATE else {"op": "DELETE", "id": target}
            self.excluded.add(target)
        if op is not None:
            self.ops.append(op)
        self.index += 1
        self._nearest = None
        return {"fact": fact["text"], "decision": DECISIONS[decision], "target": target if op and "id" in op else None}

    def operations(self) -> list[dict]:
        """The ``operations`` of the manage action (``[{"op": "NOOP"}]`` when empty)."""
        return list(self.ops) or [{"op": "NOOP"}]

    def action(self) -> str:
        """The manage action text."""
        return json.dumps({"operations": self.operations()}, ensure_ascii=False)


def rule_decision(features: np.ndarray) -> int:
    """A hand-written reference policy on the same features (not learned).

    NOOP for a placeholder or an exact duplicate of the nearest memory; DELETE the
    nearest for a retraction and UPDATE it for a change, when the nearest memory is
    about the same speaker and topic; ADD otherwise. On synthetic worlds with gold
    extraction it reproduces the gold operations, so it shows what the features allow.
    """
    x = np.asarray(features).reshape(-1)
    if x.shape != (NUM_FEATURES,):
        raise ValueError(f"features must have {NUM_FEATURES} values, got shape {np.asarray(features).shape}")
    f = _FEATURE_INDEX
    if x[f["placeholder"]] or x[f["nearest0_duplicate"]]:
        return NOOP
    match = x[f["nearest0_same_speaker"]] and x[f["nearest0_same_topic"]]
    if match and x[f["cue_retraction"]]:
        return DELETE
    if match and x[f["cue_change"]]:
        return UPDATE
    return ADD


# ------------------------------------------------------------------------ the env ---
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


# ------------------------------------------------------------------------ agents ----
class FeatureManagerAgent:
    """A full agent whose manager decides each fact from :func:`fact_features`.

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


class SB3ManagerAgent(FeatureManagerAgent):
    """The manager a stable-baselines3 policy learned on :class:`ManagerDecisionEnv`.

    ``model`` is anything with SB3's ``predict(obs, deterministic=...)`` (a PPO model or
    its policy); load a file written by :func:`save_manager` with :meth:`load` or the
    registry spec ``"sb3-manager:<path to model.safetensors>"``.
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
        """Load a manager saved by :func:`save_manager` (CPU); no pickle is read."""
        return cls(load_manager_policy(path), deterministic=deterministic)

    @classmethod
    def from_spec(cls, arg: str | None = None) -> "SB3ManagerAgent":
        """Registry factory: ``"sb3-manager:<path to model.safetensors>"``."""
        if not arg:
            raise ValueError("sb3-manager needs the saved model: 'sb3-manager:/path/to/model.safetensors' "
                             "(written by agents.sb3_manager.save_manager)")
        return cls.load(arg)


# ------------------------------------------------------------------ saved managers ---
# A saved manager is one safetensors file: the policy's float32 tensors, and in the
# header's metadata (under MODEL_METADATA_KEY) a JSON object that rebuilds the policy.
# Neither part is pickle, so opening a file cannot run code — unlike SB3's .zip, whose
# ``data`` entry PPO.load unpickles with cloudpickle.
MODEL_FORMAT = "memenv-sb3-manager"  # the marker: this project wrote the file
MODEL_FORMAT_VERSION = 1
MODEL_METADATA_KEY = "memenv"
# Bump when the meaning of a feature changes; names and count are checked as well.
FEATURE_VERSION = 1
# activation name in the file -> name of the torch.nn class (only these two are rebuilt)
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU"}
# Bounds on a saved net, checked before it is built (a header cannot make us allocate much).
MAX_LAYER_WIDTH = 1024
MAX_LAYERS = 4
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80


def _policy_of(model: Any):
    """The ``ActorCriticPolicy`` of a PPO model (or the policy itself); refuses other kinds."""
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = getattr(model, "policy", model)
    if type(policy) is not ActorCriticPolicy:
        raise ValueError(f"only SB3 MlpPolicy (ActorCriticPolicy) managers can be saved, got {type(policy).__name__}")
    if policy.features_extractor_class is not FlattenExtractor:
        raise ValueError(f"the manager policy must use FlattenExtractor, got {policy.features_extractor_class.__name__}")
    if tuple(policy.observation_space.shape) != (NUM_FEATURES,):
        raise ValueError(f"the manager policy must read {NUM_FEATURES} features, got {policy.observation_space.shape}")
    if not isinstance(policy.action_space, spaces.Discrete) or int(policy.action_space.n) != len(DECISIONS):
        raise ValueError(f"the manager policy must choose among {len(DECISIONS)} decisions, got {policy.action_space}")
    return policy


def _manager_header(policy: Any) -> dict:
    """The JSON that rebuilds ``policy`` (see :func:`save_manager`)."""
    import torch

    activation = next((name for name, cls_name in ACTIVATIONS.items()
                       if policy.activation_fn is getattr(torch.nn, cls_name)), None)
    if activation is None:
        raise ValueError(f"the manager policy's activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {policy.activation_fn.__name__}")
    arch = policy.net_arch
    net_arch = {"pi": list(arch.get("pi", [])), "vf": list(arch.get("vf", []))} if isinstance(arch, dict) \
        else {"pi": list(arch), "vf": list(arch)}
    return {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES), "observation_size": NUM_FEATURES, "num_actions": len(DECISIONS),
            "net_arch": net_arch, "activation": activation}


def save_manager(model: Any, path: str) -> str:
    """Save a trained manager (SB3 PPO ``MlpPolicy`` model, or its policy) for :func:`load_manager_policy`.

    Writes one ``.safetensors`` file: the policy's tensors, and in its header the net
    architecture, activation, feature names and version, and this project's format
    marker. Returns ``path``. To reuse an SB3 ``.zip`` you trust, save
    ``PPO.load(zip_path)`` with this function: the loader never opens a zip.
    """
    from safetensors.torch import save_file

    policy = _policy_of(model)
    header = _manager_header(policy)
    why = _check_header(header)  # what the loader would refuse is not written
    if why is not None:
        raise ValueError(f"cannot save this manager: {why}")
    tensors = {key: value.detach().cpu().contiguous() for key, value in policy.state_dict().items()}
    save_file(tensors, path, metadata={MODEL_METADATA_KEY: json.dumps(header)})
    return path


def _short(value: Any) -> str:
    """``repr(value)`` cut to one short line (header values come from the file)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _layer_sizes(value: Any) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_LAYERS
            and all(type(d) is int and 1 <= d <= MAX_LAYER_WIDTH for d in value))


def _check_header(header: Any) -> str | None:
    """Why a parsed header cannot be rebuilt by this code, or None when it can."""
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        return f"no {MODEL_FORMAT!r} marker in its metadata, so it was not written by save_manager"
    if header.get("format_version") != MODEL_FORMAT_VERSION:
        return f"format version {_short(header.get('format_version'))}, this code reads {MODEL_FORMAT_VERSION}"
    if header.get("feature_version") != FEATURE_VERSION or header.get("feature_names") != list(FEATURE_NAMES) \
            or header.get("observation_size") != NUM_FEATURES:
        return (f"it was trained on other features (feature version {_short(header.get('feature_version'))}, "
                f"{_short(header.get('observation_size'))} features; this code has version {FEATURE_VERSION}, "
                f"{NUM_FEATURES} features); retrain it")
    if header.get("num_actions") != len(DECISIONS):
        return f"{_short(header.get('num_actions'))} actions, the manager has {len(DECISIONS)}"
    if header.get("activation") not in ACTIVATIONS:
        return f"activation {_short(header.get('activation'))} is not one of {sorted(ACTIVATIONS)}"
    arch = header.get("net_arch")
    if not isinstance(arch, dict) or set(arch) != {"pi", "vf"} or not all(_layer_sizes(v) for v in arch.values()):
        return (f"net_arch {_short(arch)} is not {{'pi': [...], 'vf': [...]}} with at most {MAX_LAYERS} layers "
                f"of 1..{MAX_LAYER_WIDTH} units")
    return None


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def load_manager_policy(path: str):
    """The SB3 ``ActorCriticPolicy`` (CPU, eval mode) saved at ``path`` by :func:`save_manager`.

    Reads only the safetensors header (JSON) and float32 tensors — never pickle, so a
    crafted file cannot run code. Anything else is refused with a one-line
    ``ValueError`` naming the file: SB3 ``.zip`` files and ``torch.save`` files (both
    unpickled on load), pickles, files without this project's marker, and files whose
    features, architecture, tensor names, shapes or dtypes differ from what the header
    rebuilds.
    """
    import torch
    from safetensors import SafetensorError, safe_open
    from stable_baselines3.common.policies import ActorCriticPolicy

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such sb3-manager model file")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            shapes = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
            try:
                header = json.loads(metadata.get(MODEL_METADATA_KEY, "null"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: refused, its {MODEL_METADATA_KEY!r} metadata is not JSON "
                                 f"({_one_line(error)})") from None
            why = _check_header(header)
            if why is not None:
                raise ValueError(f"{path}: refused, {why}")
            with torch.random.fork_rng(devices=[]):  # building inits weights: leave the caller's RNG alone
                policy = ActorCriticPolicy(
                    spaces.Box(0.0, 1.0, shape=(NUM_FEATURES,), dtype=np.float32), spaces.Discrete(len(DECISIONS)),
                    lambda _: 0.0, net_arch=header["net_arch"],
                    activation_fn=getattr(torch.nn, ACTIVATIONS[header["activation"]]), ortho_init=False)
            expected = {key: (tuple(value.shape), "F32") for key, value in policy.state_dict().items()}
            if shapes != expected:
                raise ValueError(f"{path}: refused, its tensors do not fit the architecture in its header "
                                 f"({_shape_difference(shapes, expected)})")
            tensors = {key: f.get_tensor(key) for key in expected}
    except SafetensorError as error:
        raise ValueError(f"{path}: refused, {_not_safetensors(path, error)}") from None
    policy.load_state_dict(tensors, strict=True)
    policy.set_training_mode(False)
    return policy


def _not_safetensors(path: str, error: Exception) -> str:
    """Why a file safetensors could not open is refused, told from its first bytes.

    Only the message depends on these bytes: every file is first opened as safetensors
    (a real one may start with 0x80 or anything else: its first 8 bytes are a length).
    """
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return ("a zip archive (an SB3 .zip or torch.save file) is unpickled on load and could run code; "
                "re-save a model you trust with agents.sb3_manager.save_manager")
    if head[:1] == bytes([_PICKLE_PROTOCOL_OPCODE]):
        return "a pickle could run code on load; only save_manager's .safetensors files are read"
    return f"not a safetensors file ({_one_line(error)})"


def _shape_difference(found: dict, expected: dict) -> str:
    """The first difference (in ``expected``'s order, input layer first) between two
    ``{tensor name: (shape, dtype)}`` maps, in words."""
    missing = [key for key in expected if key not in found]
    if missing:
        return f"missing {missing[0]!r}"
    extra = sorted(set(found) - set(expected))
    if extra:
        return f"unexpected tensor {_short(extra[0])}"
    key = next(k for k in expected if found[k] != expected[k])
    (shape, dtype), (want_shape, want_dtype) = found[key], expected[key]
    return f"{key!r} is {dtype} {_short(list(shape))}, expected {want_dtype} {list(want_shape)}"
