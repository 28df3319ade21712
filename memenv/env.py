"""MemorySession-v0: multi-session dialogue with an editable memory bank.

Implements the episode protocol of the Memory-R2 paper (arXiv 2605.21768): per session a
fact-extraction turn and a memory-management turn, then question answering from the
memory, with rewards from answer scores and a memory compression penalty.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from memenv import constants as C
from memenv.memory import MemoryBank, count_tokens
from memenv.operations import apply_operations, gold_operations, resolve_fact_refs, validate_operations
from memenv.parsing import MAX_ACTION_CHARS, Fact, parse_answer, parse_facts, parse_operations
from memenv.retrieval import Retriever, make_retriever
from memenv.scoring import get_metric
from memenv.sources import ConversationSource, make_source
from memenv.spaces import UnicodeText
from memenv.types import Conversation

EXTRACT, MANAGE, ANSWER = "extract", "manage", "answer"


def _copy_rng(rng: np.random.Generator | None) -> np.random.Generator | None:
    """A generator in the same state (several times faster than deepcopy)."""
    if rng is None:
        return None
    bit_generator = type(rng.bit_generator)(0)
    bit_generator.state = rng.bit_generator.state
    return np.random.Generator(bit_generator)


def _copy_space(space: gym.Space) -> gym.Space:
    """A space sharing the immutable definition, with its own copy of the sampling RNG."""
    new = copy.copy(space)
    new._np_random = _copy_rng(space._np_random)
    return new


@dataclass(frozen=True)
class _ConvStats:
    """Per-conversation values computed once and shared by every fork."""

    session_tokens: tuple[int, ...]
    due: tuple[tuple[int, ...], ...]  # per session: indices of questions asked after it
    has_gold: bool
    budget: int | None  # most memory entries a manage action may leave (None: no cap)


class MemorySessionEnv(gym.Env[str, str]):
    """A multi-session conversation whose facts the agent must remember to answer questions.

    ## Description
    One episode is one conversation between two speakers: sessions 1..N in time order,
    each with a date and turns. For every session the agent acts twice — it *extracts*
    the facts worth keeping, then *manages* the memory bank with ADD / UPDATE / DELETE /
    NOOP operations — and then *answers* the questions that are due, from the memories
    the environment retrieves for it. Conversations come from a seeded synthetic world
    generator (default), LoCoMo, or LongMemEval. ``fork()`` returns an independent copy
    of the whole state in constant time.

    ## Action Space
    ``UnicodeText``: the agent's raw text. By role:

    * ``extract``: ``{"facts": ["Alice moved to Lyon on 2 May 2023.", ...]}`` (items may
      be ``{"text": ..., "speaker": ...}``; a bare list is accepted).
    * ``manage``: ``{"operations": [{"op": "ADD", "text": ...}, {"op": "UPDATE", "id": "m7",
      "text": ...}, {"op": "DELETE", "id": "m2"}, {"op": "NOOP"}]}``, applied atomically.
      ``{"op": "ADD", "fact": 0}`` (or UPDATE with ``"fact"``) takes the text of extracted
      fact 0, so small models need not copy it.
    * ``answer``: the answer text, ``{"answer": ...}``, or text ending in an ``Answer:`` line.

    Code fences, prose around the JSON and trailing commas are tolerated. An action that
    cannot be parsed, or an operation list with any invalid operation (unknown or deleted
    id, UPDATE without text, ...), changes nothing, earns ``-invalid_penalty`` (default
    ``constants.INVALID_ACTION_PENALTY`` = 0.1; the official Memory-R2 code has none: pass
    ``invalid_penalty=0``), and ``info["error"]`` says what was wrong. No string raises an
    exception.

    ## Observation Space
    ``UnicodeText``: a JSON object (structured content, not a prompt) with ``role``,
    ``session``, ``num_sessions``, ``date``, ``speakers`` and, by role: ``turns``
    (extract); ``facts`` with the ids of ``related`` memories (manage); ``question``
    (answer); plus ``memories``, a list of ``{id, text, speaker, session, date}`` records
    (related memories for manage and extract, top-k per speaker for answer, best first).

    ## Rewards
    ``extract`` and ``manage`` turns: 0, or ``-invalid_penalty`` for an invalid action. ``answer`` turns: ``score(answer, gold) - lambda_comp * max(0, memory_tokens -
    0.7 * seen_tokens) / seen_tokens`` where ``score`` is token F1 (``metric="f1"``, the mem0
    evaluation's), exact match (``"em"``: equal normalised token lists; ``"em_mem0"``: the mem0
    evaluation's lower-cased string equality), the mem0 evaluation's BLEU-1 (``"bleu1"``, needs
    nltk) or the SQuAD-style F1 the official Memory-R2 code trains on (``"squad_f1"``), and
    tokens are whitespace tokens.

    ## Chunked sessions
    ``session_chunks=K`` splits every session's turns into up to K consecutive chunks (the
    official code's ``MAX_NUM_TURNS``, 4-6; chunk size ``ceil(turns / K)``, empty chunks
    skipped) and gives each chunk its own extract and manage turn. Observations then carry
    ``chunk`` and ``num_chunks``; an extract observation also holds ``previous_turns`` (the
    session's earlier chunks) and a manage observation ``previous_operations`` (what the
    session's earlier chunks applied), as context only -- the session history the official
    code keeps in its chat. Questions and per-session credit are unchanged: they follow the
    session's last chunk. Gold annotations (``info["gold"]``) come with the first chunk;
    later chunks' gold is no facts and a NOOP.

    ## Starting State
    The first session's ``extract`` turn of a conversation drawn from the source with the
    environment's RNG, or the one named by ``reset(options={"conversation": key})`` (a
    world seed for synthetic worlds, a ``sample_id`` for LoCoMo). The memory is empty.

    ## Episode End
    Terminates after the last question (or the last session's ``manage`` turn when no
    question is left). There is no truncation inside the environment: an episode has
    exactly ``2 * num_sessions + num_questions`` steps.

    ## Arguments
    ``gym.make("MemorySession-v0", num_sessions=16, qa_schedule="end", metric="f1",
    lambda_comp=0.2, retriever="bm25")``; ``source="locomo", data_path=..., conversations=[...]``
    for LoCoMo. See ``__init__`` for every argument.

    ## Information
    Every step: ``role`` (of the returned observation), ``session``, ``turn``,
    ``memory_size``, ``memory_tokens``, ``seen_tokens``, ``conversation``. After an action:
    ``action_role``, ``valid``, ``error`` (or None), ``applied`` (manage: the operations
    applied), and for answers ``score``, ``compression_penalty`` and ``answered`` (the
    answered question's ``question_id``, ``kind``, ``question``, ``prediction``,
    ``gold_answer``). When the returned observation is a question, ``question_kind`` and
    ``gold_answer`` describe it. At extract and manage turns of a
    source with gold annotations, ``gold`` holds ``facts``, ``operations`` (resolved to
    ids of the current memory) and ``memory`` (the gold memory after the session) — for
    diagnostics and scripted agents, never in the observation. On the last step:
    ``session_credit`` (Memory-R2's per-session credit: the mean score of the questions
    whose evidence lies in each session; None where there are none) and
    ``episode_summary`` (mean score overall and per question kind; NaN without questions).
    The key is not ``episode``, which Gymnasium's ``RecordEpisodeStatistics`` and SB3's
    ``Monitor`` write.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        source: str | ConversationSource = "synthetic",
        *,
        num_sessions: int | None = None,
        world_seeds: list[int] | None = None,
        difficulty: str | None = None,
        data_path: str | None = None,
        conversations: list[str] | None = None,
        split: str | None = None,
        part: str | None = None,
        source_options: dict[str, Any] | None = None,
        qa_schedule: str = "after_evidence",
        metric: str = "f1",
        lambda_comp: float = C.DEFAULT_LAMBDA_COMP,
        retriever: str | Retriever | Callable[[], Retriever] = "bm25",
        manage_top_k: int = C.DEFAULT_MANAGE_TOP_K,
        answer_top_k: int = C.DEFAULT_ANSWER_TOP_K,
        extract_top_k: int = C.DEFAULT_EXTRACT_TOP_K,
        invalid_penalty: float = C.INVALID_ACTION_PENALTY,
        similarity_threshold: float = 0.0,
        answer_order: str = "relevance",
        session_chunks: int | None = None,
        memory_budget: int | str | None = None,
        render_mode: str | None = None,
    ) -> None:
        """Build the environment.

        Args:
            source: ``"synthetic"`` (default), ``"locomo"``, ``"longmemeval"`` or a
                :class:`~memenv.sources.ConversationSource`.
            num_sessions: sessions per synthetic world (default 8; 1 to ``constants.MAX_SESSIONS``).
            world_seeds: synthetic worlds to draw from (default: any seed).
            difficulty: synthetic worlds' difficulty, ``"default"`` or ``"hard"`` (see
                :mod:`memenv.synthetic.hard`).
            data_path: the LoCoMo / LongMemEval file.
            conversations: the conversations (LoCoMo ``sample_id`` s) to draw from (default: all).
            split: a LoCoMo split preset, ``"memory-r2"`` or ``"memory-r1"`` (with ``part``).
            part: the split's part, e.g. ``"train"``.
            source_options: any further options of the source.
            qa_schedule: ``"after_evidence"`` (questions right after their last evidence
                session; for training) or ``"end"`` (all after the last session; benchmarks).
            metric: answer score, ``"f1"``, ``"em"``, ``"em_mem0"``, ``"bleu1"`` or ``"squad_f1"``.
            lambda_comp: weight of the compression penalty (0 disables it).
            retriever: ``"bm25"``, ``"embedding"``, a Retriever or a factory of one.
            manage_top_k: related memories shown per fact in ``manage``.
            answer_top_k: memories shown per speaker in ``answer``.
            extract_top_k: related memories shown in ``extract``.
            invalid_penalty: what an invalid extract or manage action costs (>= 0; 0 is
                the official Memory-R2 code, which has no such penalty).
            similarity_threshold: a related memory shown in ``extract`` / ``manage`` needs
                at least this retriever score (official: 0.1 on cosine similarities; BM25
                scores are on another scale, so 0.1 removes little there).
            answer_order: ``"relevance"`` (each speaker's memories best first) or
                ``"session"`` (the official answer prompt: each speaker's retrieved
                memories grouped by session in time order, best first within a session).
            session_chunks: None (one extract/manage round per session) or K >= 1: up to K
                rounds per session, see "Chunked sessions".
            memory_budget: most memory entries a ``manage`` action may leave: None (no
                cap), an int, or ``"world"`` (the conversation's own budget,
                ``Conversation.extra["memory_budget"]``, which hard synthetic worlds set). A
                manage action over it is invalid: nothing is applied, ``info["error"]`` says so.
            render_mode: None or ``"ansi"``.
        """
        if qa_schedule not in C.QA_SCHEDULES:
            raise ValueError(f"qa_schedule must be one of {C.QA_SCHEDULES}, got {qa_schedule!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if not lambda_comp >= 0:
            raise ValueError(f"lambda_comp must be >= 0, got {lambda_comp}")
        for name, value in (("manage_top_k", manage_top_k), ("answer_top_k", answer_top_k), ("extract_top_k", extract_top_k)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not (isinstance(invalid_penalty, (int, float)) and 0 <= invalid_penalty < float("inf")):
            raise ValueError(f"invalid_penalty must be a finite number >= 0, got {invalid_penalty!r}")
        if not (isinstance(similarity_threshold, (int, float)) and similarity_threshold == similarity_threshold):
            raise ValueError(f"similarity_threshold must be a number, got {similarity_threshold!r}")
        if answer_order not in C.ANSWER_ORDERS:
            raise ValueError(f"answer_order must be one of {C.ANSWER_ORDERS}, got {answer_order!r}")
        if session_chunks is not None and (isinstance(session_chunks, bool) or not isinstance(session_chunks, int)
                                           or session_chunks < 1):
            raise ValueError(f"session_chunks must be None or an int >= 1, got {session_chunks!r}")
        if memory_budget is not None and memory_budget != "world" and (
                isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1):
            raise ValueError(f"memory_budget must be None, a positive int or 'world', got {memory_budget!r}")
        self.memory_budget = memory_budget
        options = dict(source_options or {})
        given = {"num_sessions": num_sessions, "world_seeds": world_seeds, "difficulty": difficulty,
                 "data_path": data_path,
                 "conversations": conversations, "split": split, "part": part}
        options.update({k: v for k, v in given.items() if v is not None})
        if source == "synthetic":
            options.setdefault("num_sessions", 8)
        self.source = make_source(source, **options)
        self.qa_schedule = qa_schedule
        self.metric_name = metric
        self._metric = get_metric(metric)
        self.lambda_comp = float(lambda_comp)
        self._empty_index = make_retriever(retriever)
        self.manage_top_k = manage_top_k
        self.answer_top_k = answer_top_k
        self.extract_top_k = extract_top_k
        self.invalid_penalty = float(invalid_penalty)
        self.similarity_threshold = float(similarity_threshold)
        self.answer_order = answer_order
        self.session_chunks = session_chunks
        self._chunk = 0
        self.render_mode = render_mode
        self.observation_space = UnicodeText(C.MAX_OBSERVATION_CHARS)
        self.action_space = UnicodeText(MAX_ACTION_CHARS)
        self._stats_cache: dict[int, tuple[Conversation, _ConvStats]] = {}
        self._conv: Conversation | None = None
        self._bank, self._index = MemoryBank(), self._empty_index
        self._phase, self._session, self._done = EXTRACT, 0, False

    # ------------------------------------------------------------------ public state --
    @property
    def memory(self) -> MemoryBank:
        """The current memory bank (an immutable value)."""
        return self._bank

    @property
    def conversation(self) -> Conversation:
        """The conversation of the current episode."""
        self._require_reset()
        return self._conv

    @property
    def role(self) -> str:
        """The role the agent acts as next: ``extract``, ``manage`` or ``answer``."""
        return self._phase

    @property
    def session_index(self) -> int:
        return self._session

    @property
    def done(self) -> bool:
        return self._done

    def set_memory(self, bank: MemoryBank) -> None:
        """Replace the memory bank (e.g. one loaded with ``MemoryBank.load``); reindexes it."""
        if not isinstance(bank, MemoryBank):
            raise TypeError(f"set_memory needs a MemoryBank, got {type(bank).__name__}")
        index = self._empty_index
        for entry in bank:
            index = index.add(entry.id, entry.text)
        self._bank, self._index = bank, index

    def fork(self) -> "MemorySessionEnv":
        """An independent environment with an identical state, in constant time.

        Memory bank, retrieval index, conversation and question queue are immutable
        values shared with the fork; only the RNG and the spaces are copied.
        """
        new = copy.copy(self)
        new._np_random = _copy_rng(self._np_random)
        new.observation_space = _copy_space(self.observation_space)
        new.action_space = _copy_space(self.action_space)
        return new

    def probe(self, question_index: int) -> str:
        """The answer observation for any question of the conversation, on the current memory.

        Changes nothing: LoGo-GRPO scores a local rerollout at once on the questions due so
        far with it. Score the answer with :meth:`score_answer`.
        """
        self._require_reset()
        questions = self._conv.questions
        if not 0 <= question_index < len(questions):
            raise IndexError(f"question index {question_index} out of range (0..{len(questions) - 1})")
        question = questions[question_index]
        obs = self._base()
        obs["role"] = ANSWER
        obs["question_id"] = question.qid
        obs["question"] = question.question
        obs["memories"] = [self._bank[i].record() for i in self._answer_memories(question.question)]
        obs["memory_size"] = len(self._bank)
        return json.dumps(obs, ensure_ascii=False)

    def score_answer(self, question_index: int, action: str) -> float:
        """The metric score of an answer action for one question (no penalty, no state change)."""
        question = self._conv.questions[question_index]
        return float(self._metric(parse_answer(action), question.answer))

    def questions_due_by(self, session: int) -> list[int]:
        """Indices of the questions whose evidence lies in sessions up to ``session``."""
        return [i for i, q in enumerate(self._conv.questions) if q.evidence and q.due_after <= session]

    # ------------------------------------------------------------------ gym API -------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        key = options.pop("conversation", None)
        if "world_seed" in options:
            key = options.pop("world_seed")
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; expected 'conversation' or 'world_seed'")
        conv = self.source.get(key) if key is not None else self.source.sample(self.np_random)
        self._conv, self._stats = self._conversation_stats(conv)
        self._session = 0
        self._chunk = 0
        self._session_ops: tuple[dict, ...] = ()
        self._phase = EXTRACT
        self._facts: tuple[Fact, ...] = ()
        self._queue: tuple[int, ...] = ()
        self._bank = MemoryBank()
        self._index = self._empty_index
        self._turn = 0
        self._seen_tokens = 0
        self._scores: tuple[tuple[int, float], ...] = ()
        self._done = False
        return self._observation(), self._info()

    def step(self, action: str):
        self._require_reset()
        if self._done:
            raise RuntimeError("the episode is over; call reset() before step()")
        role = self._phase
        info: dict[str, Any] = {"action_role": role}
        if role == EXTRACT:
            reward = self._step_extract(action, info)
        elif role == MANAGE:
            reward = self._step_manage(action, info)
        else:
            reward = self._step_answer(action, info)
        self._turn += 1
        obs = "" if self._done else self._observation()
        info.update(self._info())
        if self._done:
            info.update(self._episode_summary())
        return obs, reward, self._done, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._conv is None:
            return None
        lines = [f"{self._conv.conv_id} session {self._session + 1}/{self._conv.num_sessions} role={self._phase} "
                 f"memories={len(self._bank)} tokens={self._bank.tokens}"]
        lines += [f"  {e.id}: {e.text}" for e in self._bank]
        return "\n".join(lines)

    # ------------------------------------------------------------------ transitions ---
    def _step_extract(self, action: Any, info: dict) -> float:
        facts, error = parse_facts(action)
        info["valid"], info["error"] = error is None, error
        self._facts = tuple(facts) if error is None else ()
        info["facts"] = [f.text for f in self._facts]
        if self.session_chunks is None:
            self._seen_tokens += self._stats.session_tokens[self._session]
        else:
            start, end = self._chunk_bounds()[self._chunk]
            turns = self._conv.sessions[self._session].turns[start:end]
            self._seen_tokens += sum(count_tokens(t.text) for t in turns)
        self._phase = MANAGE
        return 0.0 if error is None else -self.invalid_penalty

    def _step_manage(self, action: Any, info: dict) -> float:
        ops, error = parse_operations(action)
        applied: list[dict] = []
        if error is None:
            ops, error = resolve_fact_refs(ops, self._facts)
        if error is None:
            error = validate_operations(ops, self._bank, self._stats.budget)
        if error is None:
            self._bank, self._index, applied = apply_operations(
                ops, self._bank, self._index, session=self._session, date=self._conv.sessions[self._session].date,
                turn=self._turn, speakers=self._conv.speakers)
        info["valid"], info["error"], info["applied"] = error is None, error, applied
        self._facts = ()
        if self.session_chunks is not None and self._chunk + 1 < len(self._chunk_bounds()):
            self._session_ops += tuple(applied)
            self._chunk += 1
            self._phase = EXTRACT
        else:
            self._chunk, self._session_ops = 0, ()
            self._after_session()
        return 0.0 if error is None else -self.invalid_penalty

    def _step_answer(self, action: Any, info: dict) -> float:
        qi, self._queue = self._queue[0], self._queue[1:]
        question = self._conv.questions[qi]
        prediction = parse_answer(action)
        score = float(self._metric(prediction, question.answer))
        penalty = self.compression_penalty()
        self._scores += ((qi, score),)
        # the answered question goes under "answered": top-level question_kind and
        # gold_answer describe the *next* observation's question
        info.update(valid=True, error=None, score=score, compression_penalty=penalty,
                    answered={"question_id": question.qid, "kind": question.kind, "question": question.question,
                              "prediction": prediction, "gold_answer": question.answer, "score": score})
        if not self._queue:
            self._advance()
        return score - penalty

    def _after_session(self) -> None:
        last = self._session == self._conv.num_sessions - 1
        if self.qa_schedule == "end":
            self._queue = tuple(range(len(self._conv.questions))) if last else ()
            if last:
                self._queue = tuple(sorted(self._queue, key=lambda i: self._conv.questions[i].due_after))
        else:
            self._queue = self._stats.due[self._session]
        if self._queue:
            self._phase = ANSWER
        else:
            self._advance()

    def _advance(self) -> None:
        if self._session >= self._conv.num_sessions - 1:
            self._done = True
            return
        self._session += 1
        self._phase = EXTRACT

    def _chunk_bounds(self) -> list[tuple[int, int]]:
        """``(start, end)`` turn ranges of the current session's chunks (one when not chunking)."""
        n = len(self._conv.sessions[self._session].turns)
        if self.session_chunks is None or n == 0:
            return [(0, n)]
        size = -(-n // self.session_chunks)  # ceiling division, as the official rollout splits
        return [(i * size, min((i + 1) * size, n)) for i in range(self.session_chunks) if i * size < n]

    def compression_penalty(self) -> float:
        """Memory-R2's compression penalty for the current memory and the sessions seen."""
        if self.lambda_comp == 0 or self._seen_tokens == 0:
            return 0.0
        excess = max(0.0, self._bank.tokens - C.COMPRESSION_RATIO * self._seen_tokens)
        return self.lambda_comp * excess / self._seen_tokens

    # ------------------------------------------------------------------ observations --
    def _base(self) -> dict:
        session = self._conv.sessions[self._session]
        return {"role": self._phase, "session": self._session, "num_sessions": self._conv.num_sessions,
                "date": session.date, "speakers": list(self._conv.speakers)}

    def _observation(self) -> str:
        obs = self._base()
        session = self._conv.sessions[self._session]
        turns = session.turns
        if self.session_chunks is not None:
            bounds = self._chunk_bounds()
            start, end = bounds[self._chunk]
            obs["chunk"], obs["num_chunks"] = self._chunk, len(bounds)
            if self._phase == EXTRACT:
                obs["previous_turns"] = [{"speaker": t.speaker, "text": t.text, "dia_id": t.dia_id}
                                         for t in turns[:start]]
            elif self._phase == MANAGE:
                obs["previous_operations"] = list(self._session_ops)
            turns = turns[start:end]
        if self._phase == EXTRACT:
            obs["turns"] = [{"speaker": t.speaker, "text": t.text, "dia_id": t.dia_id} for t in turns]
            ids = []
            if self.extract_top_k and len(self._bank):
                query = " ".join(t.text for t in turns)
                ids = self._related(query, self.extract_top_k)
            obs["memories"] = [self._bank[i].record() for i in ids]
        elif self._phase == MANAGE:
            facts, seen = [], {}
            for j, fact in enumerate(self._facts):
                related = self._related(fact.text, self.manage_top_k) if self.manage_top_k else []
                for d in related:
                    seen.setdefault(d, None)
                facts.append({"index": j, "text": fact.text, "speaker": fact.speaker, "related": related})
            obs["facts"] = facts
            obs["memories"] = [self._bank[i].record() for i in seen]
            obs["memory_size"] = len(self._bank)
            if self._stats.budget is not None:
                obs["memory_budget"] = self._stats.budget
        else:
            return self.probe(self._queue[0])
        return json.dumps(obs, ensure_ascii=False)

    def _related(self, query: str, k: int) -> list[str]:
        """Ids of the ``k`` memories most related to ``query`` scoring at least ``similarity_threshold``."""
        return [d for d, score in self._index.search(query, k) if score >= self.similarity_threshold]

    def _answer_memories(self, query: str) -> list[str]:
        """Top-k memories per speaker (and k for memories about neither), padded with recent ones;
        with ``answer_order="session"`` each speaker's are grouped by session, in time order."""
        k = self.answer_top_k
        if k == 0 or not len(self._bank):
            return []
        bank = self._bank
        groups = list(self._conv.speakers) + [None]
        chosen: list[str] = []
        for speaker in groups:
            def allowed(d: str, speaker=speaker) -> bool:
                return bank[d].speaker == speaker
            hits = [d for d, _ in self._index.search(query, k, allowed=allowed)]
            if len(hits) < k:
                # BM25 only scores memories sharing a word with the question; the rest of
                # the budget goes to the most recently written memories of that speaker.
                taken = set(hits)
                rest = [e for e in bank if e.speaker == speaker and e.id not in taken]
                rest.sort(key=lambda e: e.updated_turn, reverse=True)
                hits += [e.id for e in rest[: k - len(hits)]]
            if self.answer_order == "session":
                rank = {d: i for i, d in enumerate(hits)}
                hits.sort(key=lambda d: (bank[d].session, rank[d]))
            chosen += hits
        return chosen

    def _info(self) -> dict:
        info = {"role": self._phase if not self._done else None, "session": self._session, "turn": self._turn,
                "memory_size": len(self._bank), "memory_tokens": self._bank.tokens,
                "seen_tokens": self._seen_tokens, "conversation": self._conv.conv_id}
        if not self._done and self._phase in (EXTRACT, MANAGE) and self._stats.has_gold:
            info["gold"] = self._gold() if self._chunk == 0 else self._later_chunk_gold()
        if self.session_chunks is not None and not self._done:
            info["chunk"] = self._chunk
        if not self._done and self._phase == ANSWER:
            question = self._conv.questions[self._queue[0]]
            info["question_kind"] = question.kind
            info["gold_answer"] = question.answer
        return info

    def _gold(self) -> dict:
        """Gold facts, gold operations resolved against the current bank, gold memory."""
        session = self._conv.sessions[self._session]
        # Hard synthetic worlds list what the dialogue states apart from the gold operations
        # (a past-state text is the manager's own writing, not an extracted fact).
        stated = self._conv.extra.get("stated_facts")
        facts = ([{"text": text, "speaker": speaker} for text, speaker in stated[self._session]]
                 if stated is not None else [{"text": f.text, "speaker": f.speaker} for f in session.gold_facts])
        return {
            "facts": facts,
            "operations": gold_operations(session.gold_facts, self._bank),
            "memory": list(session.gold_memory) if session.gold_memory is not None else None,
        }

    def _later_chunk_gold(self) -> dict:
        """Gold of a session's second and later chunks: the first chunk carries the session's."""
        session = self._conv.sessions[self._session]
        return {"facts": [], "operations": [{"op": "NOOP"}],
                "memory": list(session.gold_memory) if session.gold_memory is not None else None}

    def _episode_summary(self) -> dict:
        questions = self._conv.questions
        by_session: list[list[float]] = [[] for _ in range(self._conv.num_sessions)]
        by_kind: dict[str, list[float]] = {}
        for qi, score in self._scores:
            q = questions[qi]
            for s in set(q.evidence):
                if 0 <= s < len(by_session):
                    by_session[s].append(score)
            by_kind.setdefault(q.kind, []).append(score)
        scores = [s for _, s in self._scores]
        return {
            "session_credit": [float(np.mean(v)) if v else None for v in by_session],
            "episode_summary": {
                "mean_score": float(np.mean(scores)) if scores else float("nan"),
                "num_questions": len(scores),
                "score_by_kind": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
                "memory_size": len(self._bank),
                "memory_tokens": self._bank.tokens,
            },
        }

    # ------------------------------------------------------------------ helpers -------
    def _conversation_stats(self, conv: Conversation) -> tuple[Conversation, _ConvStats]:
        cached = self._stats_cache.get(id(conv))
        if cached is not None and cached[0] is conv:
            return cached
        n = conv.num_sessions
        due: list[list[int]] = [[] for _ in range(n)]
        for i, q in enumerate(conv.questions):
            # a question without usable evidence is asked after the last session
            due[min(max(q.due_after, 0), n - 1) if q.evidence else n - 1].append(i)
        budget = self.memory_budget
        if budget == "world":
            budget = conv.extra.get("memory_budget")
            if not isinstance(budget, int):
                raise ValueError(f"memory_budget='world' needs a conversation with its own budget "
                                 f"(hard synthetic worlds); {conv.conv_id!r} has none")
        stats = _ConvStats(
            session_tokens=tuple(sum(count_tokens(t.text) for t in s.turns) for s in conv.sessions),
            due=tuple(tuple(d) for d in due),
            has_gold=any(s.gold_facts or s.gold_memory is not None for s in conv.sessions),
            budget=budget,
        )
        if len(self._stats_cache) > 64:
            self._stats_cache.clear()
        self._stats_cache[id(conv)] = (conv, stats)
        return conv, stats

    def _require_reset(self) -> None:
        if self._conv is None:
            raise RuntimeError("call reset() before using the environment")
