import math

import pytest

from memenv.retrieval import BM25Retriever, make_retriever, tokenize


def test_tokenize_drops_stopwords_and_plural_s():
    assert tokenize("Where does Alice live? She lives in Lyons!") == ["alice", "live", "live", "lyon"]


def test_bm25_scores_match_the_formula_by_hand():
    r = BM25Retriever(k1=1.5, b=0.75).add("a", "cat dog").add("b", "dog dog bird").add("c", "fish")
    # N=3, avgdl=(2+3+1)/3=2; "dog": df=2, idf=ln(1+(3-2+0.5)/(2+0.5))=ln(1.6)
    idf = math.log(1.6)
    score_a = idf * 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2 / 2))
    score_b = idf * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / 2))
    scores = r.scores("dog")
    assert scores["a"] == pytest.approx(score_a) and scores["b"] == pytest.approx(score_b)
    assert [d for d, _ in r.search("dog", 5)] == ["b", "a"]


def test_incremental_index_equals_index_built_from_scratch():
    r = BM25Retriever()
    for i in range(30):
        r = r.add(f"m{i}", f"alice moved to city{i % 7} number {i}")
    for i in range(0, 30, 3):
        r = r.remove(f"m{i}")
    r = r.update("m1", "bob bought a toyota")
    fresh = BM25Retriever()
    for i in range(30):
        if i % 3 == 0:
            continue
        fresh = fresh.add(f"m{i}", "bob bought a toyota" if i == 1 else f"alice moved to city{i % 7} number {i}")
    for query in ("alice city3", "toyota", "number 4 city4"):
        assert r.scores(query) == pytest.approx(fresh.scores(query))


def test_retrievers_are_immutable_values():
    r1 = BM25Retriever().add("m0", "alice lives in paris")
    r2 = r1.add("m1", "alice moved to lyon")
    r3 = r2.remove("m0")
    assert len(r1) == 1 and len(r2) == 2 and len(r3) == 1
    assert [d for d, _ in r1.search("alice", 5)] == ["m0"]
    assert set(d for d, _ in r2.search("alice", 5)) == {"m0", "m1"}


def test_search_respects_k_filter_and_prefers_newer_on_ties():
    r = BM25Retriever()
    for i in range(5):
        r = r.add(f"m{i}", "same words here")
    assert [d for d, _ in r.search("same", 3)] == ["m4", "m3", "m2"]
    assert [d for d, _ in r.search("same", 5, allowed=lambda d: d in ("m0", "m1"))] == ["m1", "m0"]
    assert r.search("absent", 3) == [] and r.search("same", 0) == []


def test_make_retriever_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown retriever 'nope'"):
        make_retriever("nope")
    with pytest.raises(ValueError, match="must be empty"):
        make_retriever(BM25Retriever().add("m0", "x"))
    with pytest.raises(TypeError):
        make_retriever(42)
    assert isinstance(make_retriever("bm25"), BM25Retriever)
