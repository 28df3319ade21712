"""Answer metrics: token F1, exact match, BLEU-1 and the SQuAD-style F1 of Memory-R2's training reward.

``token_f1`` follows the mem0 / A-Mem evaluation code that the Memory-R1 and Memory-R2
papers report: lowercase, replace ``.,!?`` by spaces, split on whitespace, F1 over the
*sets* of tokens. ``bleu1`` equals nltk's ``sentence_bleu(..., weights=(1, 0, 0, 0),
smoothing_function=SmoothingFunction().method1)`` on lowercased whitespace tokens, without
importing nltk. ``squad_f1`` is the training reward of the official Memory-R2 code
(``rema.py``, ``normalize_text`` / ``compute_f1``): lowercase, every punctuation character
removed, a/an/the removed; leaderboards keep reporting the mem0 ``token_f1``.
"""

from __future__ import annotations

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
    """1.0 when the normalised token sequences are equal, else 0.0."""
    return float(simple_tokens(prediction) == simple_tokens(gold))


def bleu1(prediction: str, gold: str) -> float:
    """Sentence BLEU-1 as nltk computes it (weights (1, 0, 0, 0), smoothing method 1)."""
    hyp = str(prediction).lower().split()
    ref = str(gold).lower().split()
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


METRICS: dict[str, Callable[[str, str], float]] = {
    "f1": token_f1,
    "em": exact_match,
    "bleu1": bleu1,
    "squad_f1": squad_f1,
}


def get_metric(name: str) -> Callable[[str, str], float]:
    """Return the metric function called ``name`` (one of ``METRICS``)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown answer metric {name!r}; choose one of {sorted(METRICS)}") from None
