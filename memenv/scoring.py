"""Answer metrics: token F1, two exact matches, BLEU-1, and the SQuAD-style F1 and BLEU-1 of
the official Memory-R2 code (its training reward and its LoCoMo tables).

The mem0 / A-Mem evaluation code (mem0ai/mem0 ``evaluation/metrics/utils.py``, borrowed
from WujiangXu/AgenticMemory ``utils.py``) is what the Mem0 and Memory-R1 tables report
(the official Memory-R2 code's LoCoMo tables use ``squad_f1`` / ``squad_bleu1``, below);
three metrics here follow it:

- ``token_f1``: lowercase, replace ``.,!?`` by spaces, split on whitespace, F1 over the
  *sets* of tokens (its ``calculate_metrics`` ``f1``).
- ``bleu1``: its ``calculate_bleu_scores`` ``bleu1``: ``sentence_bleu`` with weights
  (1, 0, 0, 0) and ``SmoothingFunction().method1`` over ``nltk.word_tokenize`` tokens of
  the lower-cased texts (punctuation split off: "agencies." -> "agencies", "."); see
  :func:`word_tokens`. Needs nltk, imported on first use (``pip install nltk``); the
  BLEU arithmetic itself is done here.
- ``mem0_exact_match``: its ``exact_match``, equality of the lower-cased, stripped strings
  (0 when either string is empty).

``exact_match`` is this package's own rule: equal lists of ``token_f1``'s tokens, so
"Paris." matches "paris" (mem0's rule says no) and "new york" matches "New  York".
``squad_f1`` and ``squad_bleu1`` are the F1 and BLEU-1 of the official Memory-R2 code
(``rema.py``, ``normalize_text`` / ``compute_f1`` / ``compute_bleu``), its training reward
and the metrics of its LoCoMo tables: lowercase, every punctuation character removed,
a/an/the removed; F1 over token sets, BLEU-1 a clipped unigram precision with brevity
penalty. Its tables average them per test conversation
(:func:`memenv.metrics.summarize` ``conversations=``); leaderboards report both families.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from typing import Callable

_PUNCT_TO_SPACE = re.compile(r"[.,!?]")


def simple_tokens(text: str) -> list[str]:
    """Tokens as the mem0 evaluation code makes them."""
    return _PUNCT_TO_SPACE.sub(" ", str(text).lower()).split()


def token_f1(prediction: str, gold: str) -> float:
    """Set-based token F1 of the mem0 / A-Mem evaluation code."""
    pred, ref = set(simple_tokens(prediction)), set(simple_tokens(gold))
    common = pred & ref
    if not pred or not ref or not common:
        return 0.0
    precision = len(common) / len(pred)
    recall = len(common) / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised token lists (:func:`simple_tokens`) are equal, else 0.0."""
    return float(simple_tokens(prediction) == simple_tokens(gold))


def mem0_exact_match(prediction: str, gold: str) -> float:
    """The mem0 / A-Mem ``exact_match``: 1.0 when the lower-cased strings, stripped of outer
    whitespace, are equal; 0.0 when either string is empty."""
    prediction, gold = str(prediction), str(gold)
    if not prediction or not gold:
        return 0.0
    return float(prediction.strip().lower() == gold.strip().lower())


@functools.lru_cache(maxsize=1)
def _nltk_tokenizers() -> tuple:
    """(sentence splitter, word tokenizer) of ``nltk.word_tokenize``, built without data files."""
    try:
        from nltk.tokenize.destructive import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError:
        raise ImportError("bleu1 needs nltk's word tokenizer: pip install nltk") from None
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


@functools.lru_cache(maxsize=65536)
def word_tokens(text: str) -> tuple[str, ...]:
    """The tokens the mem0 / A-Mem BLEU code scores: ``nltk.word_tokenize(text.lower())``.

    ``word_tokenize`` splits sentences with Punkt, then runs ``NLTKWordTokenizer`` (nltk's
    improved Treebank tokenizer) on each sentence; the tokenizer splits punctuation off and
    a full stop only at the end of a sentence. Its English Punkt model is a data download
    that is not used here: the sentences come from Punkt's untrained parameters instead,
    which split at the same places except after abbreviations the English model knows
    ("dr. smith" is one sentence there and two here, so "dr." becomes "dr", ".").
    """
    sentences, words = _nltk_tokenizers()
    return tuple(token for sentence in sentences.tokenize(str(text).lower()) for token in words.tokenize(sentence))


def bleu1(prediction: str, gold: str) -> float:
    """Sentence BLEU-1 of the mem0 / A-Mem evaluation code: nltk's ``sentence_bleu`` with
    weights (1, 0, 0, 0) and smoothing method 1 over :func:`word_tokens`."""
    hyp = word_tokens(str(prediction))
    ref = word_tokens(str(gold))
    ref_counts = Counter(ref)
    clipped = sum(min(c, ref_counts[w]) for w, c in Counter(hyp).items())
    # nltk returns 0 outright when no unigram matches, so method 1's epsilon never
    # reaches the unigram precision; higher orders carry weight 0.
    if clipped == 0:
        return 0.0
    precision = clipped / len(hyp)
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * precision


_SQUAD_PUNCTUATION = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def squad_normalize(text: str) -> str:
    """SQuAD's ``normalize_answer`` as Memory-R2's reward code has it: lowercase, drop every
    ``string.punctuation`` character, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in str(text).lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def squad_f1(prediction: str, gold: str) -> float:
    """The SQuAD-style F1 Memory-R2 trains on (``rema.py`` ``compute_f1``), reproduced exactly.

    Tokens are :func:`squad_normalize`'s words. When either side has no token the score
    is 1.0 if both are empty, else 0.0. Otherwise the common tokens are counted as a *set*
    while precision and recall divide by the token *list* lengths (the official code's
    rule, so a repeated word in the prediction lowers its precision).
    """
    pred, ref = squad_normalize(prediction).split(), squad_normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = set(pred) & set(ref)
    if not common:
        return 0.0
    precision, recall = len(common) / len(pred), len(common) / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_bleu1(prediction: str, gold: str) -> float:
    """The BLEU-1 of the official Memory-R2 code's LoCoMo tables (``rema.py`` ``compute_bleu``),
    reproduced exactly: clipped unigram precision over :func:`squad_normalize`'s words times
    the brevity penalty ``exp(1 - len(gold) / len(prediction))`` when the prediction is
    shorter than the gold answer. No nltk and no smoothing: an empty prediction, or an
    empty gold answer, scores 0.

    It differs from :func:`bleu1` (mem0) in its tokens: punctuation is deleted rather than
    split off as tokens, and the articles a/an/the are dropped, so "The park." against
    "park" is 1.0 here and 1/3 under mem0's rule.
    """
    pred, ref = squad_normalize(prediction).split(), squad_normalize(gold).split()
    if not pred or not ref:
        return 0.0
    ref_counts = Counter(ref)
    clipped = sum(min(c, ref_counts[w]) for w, c in Counter(pred).items())
    brevity = 1.0 if len(pred) >= len(ref) else math.exp(1 - len(ref) / len(pred))
    return brevity * clipped / len(pred)


METRICS: dict[str, Callable[[str, str], float]] = {
    "f1": token_f1,
    "em": exact_match,
    "em_mem0": mem0_exact_match,
    "bleu1": bleu1,
    "squad_f1": squad_f1,
    "squad_bleu1": squad_bleu1,
}


def get_metric(name: str) -> Callable[[str, str], float]:
    """Return the metric function called ``name`` (one of ``METRICS``); for ``"bleu1"``
    nltk is imported here, so a missing install shows before any scoring."""
    try:
        metric = METRICS[name]
    except KeyError:
        raise ValueError(f"unknown answer metric {name!r}; choose one of {sorted(METRICS)}") from None
    if metric is bleu1:
        _nltk_tokenizers()
    return metric
