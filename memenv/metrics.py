"""Answer metrics for evaluation: token F1, exact match (two rules), BLEU-1, LoCoMo's
original F1, LLM-as-a-Judge accuracy (J), and per-kind summaries for the leaderboard.

``token_f1``, ``exact_match``, ``mem0_exact_match``, ``bleu1`` (with its tokenizer
``word_tokens``), ``squad_f1`` and ``squad_bleu1`` are those of :mod:`memenv.scoring` (the
environment's rewards), re-exported here. ``token_f1``, ``bleu1`` and ``mem0_exact_match``
are computed as the mem0 / A-Mem evaluation code behind the Mem0 and Memory-R1 tables
computes them; ``squad_f1`` and ``squad_bleu1`` as the official Memory-R2 code computes its
LoCoMo tables (SQuAD normalisation, averaged per conversation: ``summarize``'s
``conversations``); ``exact_match`` is this package's rule (equal normalised token lists). BLEU-1 needs nltk's word tokenizer, imported on first use. ``locomo_f1`` reproduces the F1 of LoCoMo's
evaluation code (snap-research/locomo, ``task_eval/evaluation.py``) and needs nltk's
Porter stemmer (``pip install nltk``). ``judge_answers`` runs any text generator as a
judge with a generous CORRECT / WRONG protocol; the result always names the judge.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from memenv.data.locomo import ADVERSARIAL_CATEGORY, LOCOMO_KINDS
from memenv.scoring import (
    bleu1,
    exact_match,
    mem0_exact_match,
    squad_bleu1,
    squad_f1,
    squad_normalize,
    token_f1,
    word_tokens,
)

__all__ = [
    "CORRECT",
    "JUDGE_PROMPT",
    "JudgeResult",
    "METRIC_RULES",
    "WRONG",
    "bleu1",
    "exact_match",
    "judge_answers",
    "judge_prompt",
    "locomo_f1",
    "locomo_normalize",
    "mem0_exact_match",
    "parse_judgement",
    "paired_bootstrap",
    "question_scores",
    "squad_bleu1",
    "squad_f1",
    "squad_normalize",
    "summarize",
    "token_f1",
    "word_tokens",
]

# --- LoCoMo's original F1 ---------------------------------------------------------------

MULTI_HOP_CATEGORY = 1
OPEN_DOMAIN_CATEGORY = 3
_CATEGORY_OF_KIND = {kind: category for category, kind in LOCOMO_KINDS.items()}
_PUNCTUATION = frozenset(string.punctuation)
# LoCoMo drops "and" together with the articles.
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
# LoCoMo's evaluation counts an adversarial answer right when it contains one of these.
ADVERSARIAL_REFUSALS = ("no information available", "not mentioned")


def locomo_normalize(text: str) -> str:
    """LoCoMo's ``normalize_answer``: drop commas, lowercase, strip punctuation, drop
    a/an/the/and, collapse whitespace."""
    text = str(text).replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


@functools.lru_cache(maxsize=1)
def _porter_stemmer() -> Any:
    try:
        from nltk.stem import PorterStemmer
    except ImportError:
        raise ImportError("locomo_f1 needs nltk's Porter stemmer: pip install nltk") from None
    # Default mode (NLTK_EXTENSIONS), as LoCoMo's evaluation code builds it.
    return PorterStemmer()


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _porter_stemmer().stem(word)


def _stemmed_f1(prediction: str, gold: str) -> float:
    """LoCoMo's ``f1_score``: F1 over multisets of Porter-stemmed normalised tokens."""
    pred = [_stem(w) for w in locomo_normalize(prediction).split()]
    ref = [_stem(w) for w in locomo_normalize(gold).split()]
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _locomo_category(kind: str | int | None) -> int | None:
    if kind is None:
        return None
    if isinstance(kind, bool) or not isinstance(kind, (int, str)):
        raise TypeError(f"kind must be a LoCoMo category number, a kind name or None, got {kind!r}")
    if isinstance(kind, int):
        if kind not in LOCOMO_KINDS:
            raise ValueError(f"unknown LoCoMo category {kind}; choose one of {sorted(LOCOMO_KINDS)}")
        return kind
    return _CATEGORY_OF_KIND.get(kind)


def locomo_f1(prediction: str, gold: str, kind: str | int | None = None) -> float:
    """F1 as LoCoMo's evaluation code computes it for a question of ``kind``.

    ``kind`` is a LoCoMo category (1-5) or kind name (``"multi-hop"``, ...); other kinds
    and None get the plain stemmed F1. Multi-hop (1): gold and prediction are split on
    commas and each gold part takes its best match among the prediction's parts; the
    score is their mean. Open-domain (3): only the gold's first ``;``-separated
    alternative counts. Adversarial (5): 1.0 when the prediction says the information is
    not available (``ADVERSARIAL_REFUSALS``), else 0.0.
    """
    prediction, gold = str(prediction), str(gold)
    category = _locomo_category(kind)
    if category == ADVERSARIAL_CATEGORY:
        lowered = prediction.lower()
        return float(any(refusal in lowered for refusal in ADVERSARIAL_REFUSALS))
    if category == OPEN_DOMAIN_CATEGORY:
        gold = gold.split(";")[0].strip()
    if category == MULTI_HOP_CATEGORY:
        predictions = [p.strip() for p in prediction.split(",")]
        golds = [g.strip() for g in gold.split(",")]
        best = [max(_stemmed_f1(p, g) for p in predictions) for g in golds]
        return sum(best) / len(best)
    return _stemmed_f1(prediction, gold)


# --- LLM-as-a-Judge ---------------------------------------------------------------------

CORRECT = "CORRECT"
WRONG = "WRONG"

JUDGE_PROMPT = (
    "You are grading an answer to a question about a long conversation between two people.\n"
    "You are given the question, the gold answer and a generated answer. "
    "Label the generated answer CORRECT or WRONG.\n\n"
    "Be generous. The gold answer is usually short; the generated answer may be longer or worded "
    "differently.\n"
    "- If the generated answer touches on the same topic as the gold answer, it is CORRECT, even "
    "with extra details or other wording.\n"
    "- For questions about time, the gold answer names a date, month, year or period. If the "
    "generated answer refers to the same time, even in another format or as a relative reference "
    '(e.g. "the week before 9 June 2023" for "early June 2023"), it is CORRECT.\n'
    "- Otherwise it is WRONG.\n\n"
    "Question: {question}\n"
    "Gold answer: {gold}\n"
    "Generated answer: {prediction}\n\n"
    "Reply with one short sentence of reasoning, then the label as JSON: "
    '{{"label": "CORRECT"}} or {{"label": "WRONG"}}.'
)

_JSON_LABEL = re.compile(
    r"""["']?label["']?\s*[:=]\s*["']?\s*(CORRECT|INCORRECT|WRONG)\b""", re.IGNORECASE
)
# Upper case only: prose such as "is not correct" must not read as a label.
_BARE_LABEL = re.compile(r"\b(CORRECT|INCORRECT|WRONG)\b")
_LABEL_OF_WORD = {"CORRECT": CORRECT, "INCORRECT": WRONG, "WRONG": WRONG}


@dataclass(frozen=True)
class JudgeResult:
    """The verdicts of one judging run.

    ``labels[i]`` is ``CORRECT`` or ``WRONG`` for item i (an unparseable completion
    counts as WRONG and in ``num_unparseable``); ``accuracy`` is J, the fraction
    CORRECT; ``judge_name`` says which model judged.
    """

    labels: tuple[str, ...]
    accuracy: float
    num_unparseable: int
    judge_name: str
    completions: tuple[str, ...]


def judge_prompt(question: str, gold: str, prediction: str) -> str:
    """The judge prompt for one item."""
    return JUDGE_PROMPT.format(question=question, gold=gold, prediction=prediction)


def parse_judgement(completion: str) -> str | None:
    """``CORRECT``, ``WRONG`` or None (unparseable) from a judge's completion.

    Looks for a ``"label": ...`` entry first, then for an upper-case CORRECT / WRONG /
    INCORRECT word, then for a completion that is only the word in any case. When several
    labels appear the last one wins (judges conclude at the end).
    """
    text = str(completion)
    found = _JSON_LABEL.findall(text) or _BARE_LABEL.findall(text)
    if found:
        return _LABEL_OF_WORD[found[-1].upper()]
    word = text.strip().strip("\"'`.!*{}[]() \n").upper()
    return _LABEL_OF_WORD.get(word)


def judge_answers(
    items: Sequence[tuple[str, str, str]],
    generate: Callable[[list[str]], list[str]],
    *,
    judge_name: str,
    batch_size: int | None = None,
) -> JudgeResult:
    """Judge ``(question, gold, prediction)`` items with ``generate`` (prompts ->
    completions, e.g. a local causal LM) and return the labels and J.

    ``batch_size`` caps how many prompts go to one ``generate`` call (default: all).
    """
    if not isinstance(judge_name, str) or not judge_name.strip():
        raise ValueError(f"judge_name must name the judging model, got {judge_name!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    items = list(items)
    if not items:
        raise ValueError("judge_answers got no items to judge")
    prompts = []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"item {index} should be (question, gold, prediction), got {item!r}")
        prompts.append(judge_prompt(*(str(part) for part in item)))
    step = batch_size or len(prompts)
    completions: list[str] = []
    for start in range(0, len(prompts), step):
        batch = prompts[start : start + step]
        out = list(generate(batch))
        if len(out) != len(batch):
            raise ValueError(f"generate returned {len(out)} completions for {len(batch)} prompts")
        completions.extend(str(text) for text in out)
    parsed = [parse_judgement(text) for text in completions]
    labels = tuple(label or WRONG for label in parsed)
    return JudgeResult(
        labels=labels,
        accuracy=sum(label == CORRECT for label in labels) / len(labels),
        num_unparseable=sum(label is None for label in parsed),
        judge_name=judge_name,
        completions=tuple(completions),
    )


# --- summaries --------------------------------------------------------------------------

# What each key of a summary measures, written into result files next to the numbers.
METRIC_RULES: dict[str, str] = {
    "f1": "token F1 of the mem0 / A-Mem evaluation code: lower-cased, .,!? replaced by spaces, "
    "whitespace tokens, F1 over the token sets",
    "bleu1": "BLEU-1 of the mem0 / A-Mem evaluation code: nltk sentence_bleu, weights (1, 0, 0, 0), "
    "smoothing method 1, over nltk word tokens of the lower-cased texts (punctuation split off)",
    "em": "exact match, this package's rule: equal normalised token lists (as for f1, in order)",
    "em_mem0": "exact match of the mem0 / A-Mem evaluation code: lower-cased strings, stripped of "
    "outer whitespace, equal (0 when either is empty)",
    "locomo_f1": "F1 of LoCoMo's task_eval/evaluation.py: Porter-stemmed normalised tokens, "
    "multi-hop and open-domain rules by category",
    "j": "LLM-as-a-Judge accuracy, the fraction of answers the judge labels CORRECT",
    "squad_f1": "F1 of the official Memory-R2 code (rema.py compute_f1): SQuAD normalisation (lower case, "
    "punctuation and a/an/the removed), F1 over the token sets",
    "squad_bleu1": "BLEU-1 of the official Memory-R2 code (rema.py compute_bleu): clipped unigram precision "
    "over SQuAD-normalised tokens times the brevity penalty, no smoothing",
}
CONVERSATION_MEAN_RULE = ("by_conversation: each metric's mean over a conversation's questions, then the mean "
                          "over conversations (the official Memory-R2 code's LoCoMo tables average per test "
                          "conversation)")


def question_scores(kind: str, prediction: str, gold: str, with_locomo: bool = True) -> dict[str, float]:
    """Every metric of one answer (``locomo_f1`` only ``with_locomo``); J is added by the judge."""
    scores = {
        "f1": token_f1(prediction, gold),
        "bleu1": bleu1(prediction, gold),
        "em": exact_match(prediction, gold),
        "em_mem0": mem0_exact_match(prediction, gold),
        "squad_f1": squad_f1(prediction, gold),
        "squad_bleu1": squad_bleu1(prediction, gold),
    }
    if with_locomo:
        scores["locomo_f1"] = locomo_f1(prediction, gold, kind)
    return scores


def _kind_order(kinds: Iterable[str]) -> list[str]:
    """LoCoMo kinds in category order, then any others alphabetically."""
    kinds = set(kinds)
    known = [kind for kind in LOCOMO_KINDS.values() if kind in kinds]
    return known + sorted(kinds - set(known))


def summarize(
    records: Iterable[tuple[str, str, str]],
    *,
    judge_labels: Sequence[str] | None = None,
    locomo: bool = True,
    conversations: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Mean metrics over ``(kind, prediction, gold)`` records, overall and per kind.

    Returns ``{"overall": {"count", "f1", "bleu1", "em", "em_mem0", "locomo_f1"[, "j"]},
    "per_kind": {kind: {...same keys...}}}``: ``em`` is :func:`exact_match` (equal
    normalised token lists), ``em_mem0`` the mem0 / A-Mem rule (lower-cased string
    equality). ``judge_labels`` (CORRECT / WRONG, one per record, e.g.
    ``JudgeResult.labels``) adds J; ``locomo=False`` leaves out ``locomo_f1`` (its Porter
    stemmer is nltk's; ``bleu1`` needs nltk's word tokenizer either way). Every record also
    gets ``squad_f1`` and ``squad_bleu1`` (the official Memory-R2 code's metrics).
    ``conversations`` (one id per record) adds ``"by_conversation"``: each metric averaged
    per conversation, then over conversations, as the Memory-R2 tables average.
    """
    records = list(records)
    if not records:
        raise ValueError("summarize got no records")
    if judge_labels is not None:
        judge_labels = list(judge_labels)
        if len(judge_labels) != len(records):
            raise ValueError(f"{len(judge_labels)} judge labels for {len(records)} records")
        bad = sorted({label for label in judge_labels if label not in (CORRECT, WRONG)})
        if bad:
            raise ValueError(f"judge labels must be {CORRECT!r} or {WRONG!r}, got {bad}")
    rows: list[tuple[str, dict[str, float]]] = []
    for index, record in enumerate(records):
        if not isinstance(record, (tuple, list)) or len(record) != 3:
            raise ValueError(f"record {index} should be (kind, prediction, gold), got {record!r}")
        kind, prediction, gold = record
        scores = question_scores(str(kind), str(prediction), str(gold), locomo)
        if judge_labels is not None:
            scores["j"] = float(judge_labels[index] == CORRECT)
        rows.append((str(kind), scores))

    def mean_of(selected: list[dict[str, float]]) -> dict[str, float]:
        summary: dict[str, float] = {"count": len(selected)}
        for name in selected[0]:
            summary[name] = sum(row[name] for row in selected) / len(selected)
        return summary

    per_kind = {
        kind: mean_of([scores for k, scores in rows if k == kind]) for kind in _kind_order(k for k, _ in rows)
    }
    summary = {"overall": mean_of([scores for _, scores in rows]), "per_kind": per_kind}
    if conversations is not None:
        conversations = list(conversations)
        if len(conversations) != len(rows):
            raise ValueError(f"{len(conversations)} conversation ids for {len(rows)} records")
        means = [mean_of([scores for (_, scores), c in zip(rows, conversations) if c == conv])
                 for conv in dict.fromkeys(conversations)]
        summary["by_conversation"] = {"count": len(means),
                                      **{name: sum(m[name] for m in means) / len(means) for name in rows[0][1]}}
    return summary


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of ``mean(a) - mean(b)`` over questions (``a[i]``, ``b[i]``: two
    systems' scores on question i): ``{"diff", "low", "high", "p_le_0", "n"}``, with the
    percentile interval at ``confidence`` and the fraction of resamples whose difference is
    <= 0 (a one-sided p-value for "a beats b"). Resampling draws questions with replacement,
    the same draw for both systems, from a seeded generator."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError(f"paired_bootstrap needs two equal-length, non-empty score lists, got {x.shape} and {y.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    d = x - y
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for long score lists
        stop = min(start + 1000, resamples)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return {"diff": float(d.mean()), "low": float(np.quantile(means, tail)), "high": float(np.quantile(means, 1 - tail)),
            "p_le_0": float((means <= 0).mean()), "n": int(len(d))}
