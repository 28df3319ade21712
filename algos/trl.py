"""MemorySession-v0 for TRL: role datasets on forked states, rewards in TRL's signature, a session rollout.

Install the extra (the lock already holds it): ``pip install -e ".[trl]"``. Nothing here
imports TRL at import time; ``datasets`` is imported when a dataset is built, TRL only by
:class:`SessionRollout` while it generates. A missing extra is one line naming it.

* :func:`role_dataset` plays a policy (the oracle by default, or any registered agent) up to
  every extract / manage / answer turn of the chosen worlds and sessions, stores an
  ``env.fork()`` of the environment at that turn in a :class:`SnapshotStore`, and returns a
  ``datasets.Dataset`` with the role's ``prompt`` (the project's role prompt, as text through
  the tokenizer's chat template, or as conversational messages) and the ``state`` key of
  its snapshot.
* Reward functions in TRL's signature ``(completions, state, **kwargs) -> list[float]``,
  each forking the row's snapshot, so the stored state never changes and any number of
  completions are scored from the same state: :data:`manage_reward`, :data:`extract_reward`,
  :data:`answer_reward` and :data:`valid_action` (1 for a valid action, 0 otherwise: give it
  weight 0 in ``GRPOConfig(reward_weights=...)`` to log it without training on it). The
  classes (:class:`ManageReward`, ...) choose the answerer (``"scripted"``, any registered
  agent such as ``"llm:smollm2-135m"``, or an object with ``answer`` / ``act_batch``), the
  metric and the number of questions probed.
* :func:`demonstration_dataset`: the oracle's actions in TRL's prompt / completion format,
  for ``SFTTrainer`` (the same prompts as the role datasets, so the warm start and GRPO
  see identical text).
* :func:`session_dataset` and :class:`SessionRollout`: a whole session per sample for
  ``GRPOTrainer(rollout_func=...)``: the policy extracts, the environment answers with the
  manage observation (``env_mask`` 0 on those tokens), the policy manages, and
  :data:`session_reward` returns the score of the questions due after the session on the
  memory it left.

A TRL group (the ``num_generations`` completions of one row) starts from one forked
snapshot, so it is exactly LoGo-GRPO's local group; the global half (whole trajectories
compared with each other) needs :mod:`algos.logo_grpo`.

What TRL 1.16's API decides here:

* ``rollout_func(prompts, trainer)`` receives only the batch's ``prompt`` values (deep
  copies, each repeated ``num_generations`` times in a row, although TRL's docstring says
  "no duplication"); the rows' other columns reach reward functions only, after
  generation, and the trainer holds no reference to the current rows while the rollout
  runs. So the snapshot key travels inside the prompt: :func:`session_dataset` prompts are
  conversational and each message carries a ``state`` field, which chat templates ignore.
* TRL generates a sample as ONE sequence (prompt, then completion), so in a session the
  manage turn continues the extract conversation (the manage instructions and observation
  come as the next user message) and is generated with the whole conversation as its
  context, so that the training forward pass scores it in the context it was sampled in.
* The rollout generates with :func:`agents.generation.generate` on the trainer's model
  (inside TRL's ``unwrap_model_for_generation``); TRL 1.16 offers rollout functions no
  public way to generate with the trainer's own backend (vLLM or transformers), so
  ``use_vllm`` does not apply to session rollouts.
* Grammars: TRL's transformers generation takes no logits processor (it calls
  ``model.generate(generation_config=...)`` only) and its vLLM path takes one regex for
  every prompt of the run (``vllm_structured_outputs_regex``), while the project's
  grammars depend on the role and, for manage, on the memory ids of each observation. The
  hook is :class:`SessionRollout`'s ``generate_fn``, called with each turn's role and
  observations: a constrained sampler plugs in there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memenv.constants import TRAIN_SEED_OFFSET

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


# ---------------------------------------------------------------------------- session rollout
def state_key_of(prompt: Any) -> str:
    """The snapshot key a :func:`session_dataset` prompt carries."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], Mapping) and prompt[0].get(STATE_FIELD):
        return str(prompt[0][STATE_FIELD])
    raise ValueError("SessionRollout needs the prompts of algos.trl.session_dataset(...) (conversational, each "
                     f"message carrying its '{STATE_FIELD}' key)")


def default_generate(model, tokenizer, prompt_ids: list[list[int]], *, role: str, observations: list[str],
                     num_samples: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int):
    """The rollout's sampler: :func:`agents.generation.generate` (``role`` and ``observations``
    are for samplers that constrain decoding by role and observation; this one ignores them)."""
    from agents.generation import generate

    return generate(model, tokenizer, prompt_ids, num_samples=num_samples, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, top_k=top_k)


def _sequences(rollout) -> tuple[list[list[int]], list[list[float]], list[str]]:
    ids, logps = [], []
    for row_ids, row_mask, row_lp in zip(rollout.completion_ids.tolist(), rollout.completion_mask.tolist(),
                                         rollout.logprobs.tolist()):
        n = sum(row_mask)
        ids.append(row_ids[:n])
        logps.append(row_lp[:n])
    return ids, logps, list(rollout.texts)


def continuation_text(tokenizer, messages: list[dict], reply: str, next_user: str, *, replied_eos: bool) -> str:
    """The text the chat template puts after an assistant ``reply`` (as generated) up to the
    generation prompt of the next assistant turn, with the user message ``next_user`` between.

    ``replied_eos``: the generated reply ended with the eos token, which the template also
    writes; it is then not repeated.
    """
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + reply
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": next_user}],
        tokenize=False, add_generation_prompt=True)
    if not full.startswith(head):
        raise ValueError("the chat template does not render a conversation as its turns' prefix; SessionRollout "
                         "cannot continue the conversation with it")
    rest = full[len(head):]
    eos = tokenizer.eos_token or ""
    if replied_eos and eos and rest.startswith(eos):
        rest = rest[len(eos):]
    return rest


class SessionRollout:
    """``GRPOTrainer(rollout_func=SessionRollout(...))``: one whole session per sample.

    Each row of :func:`session_dataset` is a snapshot at a session's extract turn. For each
    of the row's ``num_generations`` samples the rollout forks it, samples the facts, steps
    the fork, appends the manage turn (its instructions and observation as the next user
    message; ``env_mask`` 0), samples the operations with the whole conversation as context,
    steps again, and scores the memory the session left as :class:`ManageReward` does
    (``answerer``, ``max_questions``, compression penalty, plus both turns' step rewards).
    The score goes to reward functions as the ``session_reward`` column (read it with
    :func:`session_reward`), validity as ``session_valid`` (:data:`valid_action` reads it).

    Sampling uses the trainer's ``temperature``, ``top_p``, ``top_k`` and, per turn,
    ``max_completion_length`` (or ``max_new_tokens``: one number or ``{"extract": n,
    "manage": m}``); prompts are rendered in ``prompt_style`` and trimmed to
    ``max_prompt_tokens``. ``generate_fn`` replaces the sampler (see :func:`default_generate`
    for its signature), e.g. with one that constrains decoding to each role's grammar.
    """

    __name__ = "session_rollout"

    def __init__(self, *, answerer: Any = "scripted", max_questions: int | None = DEFAULT_MAX_QUESTIONS,
                 compression: bool = True, prompt_style: str = "default",
                 max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, max_new_tokens: int | Mapping[str, int] | None = None,
                 generate_fn: Callable[..., Any] | None = None, store: SnapshotStore | None = None) -> None:
        self.scorer = ManageReward(answerer=answerer, max_questions=max_questions, compression=compression, store=store)
        self.prompt_style, self.max_prompt_tokens = prompt_style, max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.generate_fn = generate_fn or default_generate
        self.last_forks: list[Any] = []

    def _new_tokens(self, trainer, role: str) -> int:
        value = self.max_new_tokens
        if isinstance(value, Mapping):
            value = value.get(role)
        if value is None:
            value = trainer.args.max_completion_length
        if value is None or value < 1:
            raise ValueError(f"SessionRollout needs max_new_tokens or GRPOConfig(max_completion_length) >= 1 for {role}")
        return int(value)

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        trl_models = require("trl.models")
        keys = [state_key_of(p) for p in prompts]
        runs: list[tuple[str, int]] = []  # (key, count) of consecutive equal keys: TRL's groups
        for key in keys:
            if runs and runs[-1][0] == key:
                runs[-1] = (key, runs[-1][1] + 1)
            else:
                runs.append((key, 1))
        tokenizer = getattr(trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        snaps = [self.scorer.store[k] for k, _ in runs]
        if {s.role for s in snaps} != {"extract"}:
            raise ValueError("SessionRollout starts sessions at extract turns; build the dataset with session_dataset")
        from agents.prompts import prompt_messages

        sampling = dict(temperature=float(trainer.temperature), top_p=float(trainer.top_p or 1.0),
                        top_k=int(trainer.top_k or 0))
        messages = [prompt_messages(tokenizer, s.obs, max_prompt_tokens=self.max_prompt_tokens, role="extract",
                                    style=self.prompt_style) for s in snaps]
        prompt_texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompt_texts]
        eos_ids = set(getattr(trainer, "eos_token_ids", None) or [tokenizer.eos_token_id])

        owner = [g for g, (_, n) in enumerate(runs) for _ in range(n)]  # each sample's group
        args = trainer.args
        with trl_models.unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model:
            # Extract: a group shares its prompt (and its KV cache when the groups are equal in size).
            sizes = {n for _, n in runs}
            if len(sizes) == 1:
                rollout = self.generate_fn(model, tokenizer, prompt_ids, role="extract",
                                           observations=[s.obs for s in snaps], num_samples=sizes.pop(),
                                           max_new_tokens=self._new_tokens(trainer, "extract"), **sampling)
            else:
                rollout = self.generate_fn(model, tokenizer, [prompt_ids[g] for g in owner], role="extract",
                                           observations=[snaps[g].obs for g in owner], num_samples=1,
                                           max_new_tokens=self._new_tokens(trainer, "extract"), **sampling)
            ext_ids, ext_lp, ext_texts = _sequences(rollout)
            forks, valid, steps, manage_obs, env_ids = [], [], [], [], []
            for i, g in enumerate(owner):
                fork = snaps[g].fork()
                obs, reward, _, _, info = fork.step(ext_texts[i])
                forks.append(fork)
                steps.append(float(reward))
                valid.append(bool(info.get("valid", True)))
                manage_obs.append(obs)
                turn = prompt_messages(tokenizer, obs, max_prompt_tokens=self.max_prompt_tokens, role="manage",
                                       style=self.prompt_style)
                user = f"{turn[0]['content']}\n\n{turn[1]['content']}"
                text = continuation_text(tokenizer, messages[g], ext_texts[i], user,
                                         replied_eos=bool(ext_ids[i]) and ext_ids[i][-1] in eos_ids)
                env_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
            contexts = [prompt_ids[g] + ext_ids[i] + env_ids[i] for i, g in enumerate(owner)]
            rollout = self.generate_fn(model, tokenizer, contexts, role="manage", observations=manage_obs,
                                       num_samples=1, max_new_tokens=self._new_tokens(trainer, "manage"), **sampling)
            man_ids, man_lp, man_texts = _sequences(rollout)
        for i, fork in enumerate(forks):
            _, reward, _, _, info = fork.step(man_texts[i])
            steps[i] += float(reward)
            valid[i] = valid[i] and bool(info.get("valid", True))
        rewards = self.scorer._session_rewards(forks, [snaps[g].info["session"] for g in owner], steps)
        self.last_forks = forks
        return {
            "prompt_ids": [prompt_ids[g] for g in owner],
            "completion_ids": [ext_ids[i] + env_ids[i] + man_ids[i] for i in range(len(owner))],
            "logprobs": [ext_lp[i] + [0.0] * len(env_ids[i]) + man_lp[i] for i in range(len(owner))],
            "env_mask": [[1] * len(ext_ids[i]) + [0] * len(env_ids[i]) + [1] * len(man_ids[i])
                         for i in range(len(owner))],
            "session_reward": rewards,
            "session_valid": [float(v) for v in valid],
        }
