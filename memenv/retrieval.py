"""Retrieval of memories: a small interface and an incremental, persistent BM25.

A :class:`Retriever` is an immutable value: ``add`` and ``remove`` return a new
retriever and leave the old one untouched. The environment keeps one next to its
memory bank, so forking an environment shares the index for free, and each memory
edit updates the index in time proportional to the text's length, not the bank's size.

Why not ``bm25s`` or ``rank_bm25``: both build a static index over a fixed corpus, so
every ADD/UPDATE/DELETE would rebuild it (cost growing with the bank) and every fork
would copy it. The scoring below is the standard Okapi BM25 (Lucene's non-negative idf).
"""

from __future__ import annotations

import abc
import heapq
import math
import re
from collections import Counter
from typing import Any, Callable

import immutables

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an the and or but of to in on at for with by from as is are was were be been being am do does did "
    "i you he she it we they me him her us them my your his its our their this that these those what which "
    "who whom whose when where why how there here so than then too very can could will would shall should "
    "may might must have has had not no s t".split()
)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens without stopwords, with a light plural/possessive strip."""
    out = []
    for word in _WORD.findall(str(text).lower()):
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


class Retriever(abc.ABC):
    """Immutable document index keyed by memory id.

    Implementations must make ``add``/``remove`` return new objects without changing
    ``self``, and should keep their cost independent of the number of indexed documents
    where possible (the environment calls them on every memory edit, and forks share them).
    """

    name = "retriever"

    @abc.abstractmethod
    def add(self, doc_id: str, text: str) -> "Retriever":
        """A retriever that also indexes ``text`` under ``doc_id``."""

    @abc.abstractmethod
    def remove(self, doc_id: str) -> "Retriever":
        """A retriever without ``doc_id`` (unchanged if absent)."""

    @abc.abstractmethod
    def search(
        self, query: str, k: int, *, allowed: Callable[[str], bool] | None = None
    ) -> list[tuple[str, float]]:
        """Up to ``k`` ``(doc_id, score)`` pairs, best first, among ids ``allowed`` accepts."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of indexed documents."""

    def update(self, doc_id: str, text: str) -> "Retriever":
        """Re-index ``doc_id`` with new text."""
        return self.remove(doc_id).add(doc_id, text)


class BM25Retriever(Retriever):
    """Okapi BM25 over persistent postings (``k1``, ``b`` as in the literature)."""

    name = "bm25"
    __slots__ = ("k1", "b", "_postings", "_docs", "_total_len", "_seq")

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self._postings: immutables.Map = immutables.Map()  # term -> Map(doc_id -> tf)
        self._docs: immutables.Map = immutables.Map()  # doc_id -> (length, terms, seq)
        self._total_len = 0
        self._seq = 0  # insertion counter: ties go to the newer document

    def __len__(self) -> int:
        return len(self._docs)

    def _copy(self) -> "BM25Retriever":
        new = BM25Retriever.__new__(BM25Retriever)
        new.k1, new.b = self.k1, self.b
        new._postings, new._docs, new._total_len, new._seq = self._postings, self._docs, self._total_len, self._seq
        return new

    def add(self, doc_id: str, text: str) -> "BM25Retriever":
        new = self.remove(doc_id) if doc_id in self._docs else self._copy()
        counts = Counter(tokenize(text))
        with new._postings.mutate() as postings:
            for term, tf in counts.items():
                postings[term] = postings.get(term, immutables.Map()).set(doc_id, tf)
            new._postings = postings.finish()
        length = sum(counts.values())
        new._docs = new._docs.set(doc_id, (length, tuple(counts), new._seq))
        new._seq += 1
        new._total_len += length
        return new

    def remove(self, doc_id: str) -> "BM25Retriever":
        new = self._copy()
        doc = self._docs.get(doc_id)
        if doc is None:
            return new
        length, terms, _ = doc
        with new._postings.mutate() as postings:
            for term in terms:
                remaining = postings[term].delete(doc_id)
                if len(remaining):
                    postings[term] = remaining
                else:
                    del postings[term]
            new._postings = postings.finish()
        new._docs = new._docs.delete(doc_id)
        new._total_len -= length
        return new

    def scores(self, query: str) -> dict[str, float]:
        """BM25 score of every document sharing a term with ``query``."""
        n = len(self._docs)
        if n == 0:
            return {}
        avgdl = self._total_len / n or 1.0
        k1, b = self.k1, self.b
        docs = self._docs
        scores: dict[str, float] = {}
        # dict.fromkeys keeps the query's order: a set's order changes with PYTHONHASHSEED,
        # and so would the float sums and the ranking of ties
        for term in dict.fromkeys(tokenize(query)):
            posting = self._postings.get(term)
            if posting is None:
                continue
            df = len(posting)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            for doc_id, tf in posting.items():
                norm = tf + k1 * (1.0 - b + b * docs[doc_id][0] / avgdl)
                scores[doc_id] = scores.get(doc_id, 0.0) + idf * tf * (k1 + 1.0) / norm
        return scores

    def search(self, query, k, *, allowed=None):
        if k <= 0:
            return []
        items = self.scores(query).items()
        if allowed is not None:
            items = [(d, s) for d, s in items if allowed(d)]
        docs = self._docs
        best = heapq.nlargest(k, items, key=lambda item: (item[1], docs[item[0]][2]))
        return [(doc_id, score) for doc_id, score in best]


# Built-in retrievers by name; others come from the "memenv.retrievers" entry-point group
# (this project's own embedding retriever is one: see pyproject.toml) or register_retriever.
RETRIEVERS: dict[str, Callable[[], Retriever]] = {"bm25": BM25Retriever}
ENTRY_POINT_GROUP = "memenv.retrievers"


def register_retriever(name: str, factory: Callable[[], Retriever], *, overwrite: bool = False) -> None:
    """Make ``retriever=name`` build ``factory()`` (an empty :class:`Retriever`)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a retriever name is a non-empty string, got {name!r}")
    if name in available_retrievers() and not overwrite:
        raise ValueError(f"a retriever named {name!r} exists; pass overwrite=True to replace it")
    RETRIEVERS[name] = factory


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_retrievers() -> list[str]:
    """Every retriever name: built in, registered, or from installed packages' entry points."""
    return sorted(set(RETRIEVERS) | set(_entry_points()))


def make_retriever(spec: str | Retriever | Callable[[], Retriever]) -> Retriever:
    """An empty retriever from a registered name, an instance, or a factory."""
    if isinstance(spec, Retriever):
        if len(spec):
            raise ValueError("the retriever given to the environment must be empty; it indexes the memory itself")
        return spec
    if isinstance(spec, str):
        factory = RETRIEVERS.get(spec)
        if factory is None:
            points = _entry_points()
            if spec not in points:
                raise ValueError(f"unknown retriever {spec!r}; choose one of {available_retrievers()} or pass a "
                                 "Retriever (the 'embedding' retriever comes with the package's [train] install)")
            factory = points[spec].load()
        spec = factory
    if callable(spec):
        retriever = spec()
        if not isinstance(retriever, Retriever):
            raise TypeError(f"retriever factory returned {type(retriever).__name__}, not a memenv Retriever")
        return retriever
    raise TypeError(f"retriever must be a name, a Retriever or a factory, not {type(spec).__name__}")
