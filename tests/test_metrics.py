"""Tests of memenv.metrics: BLEU-1 against hand arithmetic and nltk (with the mem0 / A-Mem
tokenizer), the two exact-match rules, LoCoMo's F1, the LLM judge protocol with fake
generators, and summaries."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import warnings

import pytest

from memenv import metrics, scoring
from memenv.metrics import (
    CORRECT,
    WRONG,
    bleu1,
    word_tokens,
    judge_answers,
    locomo_f1,
    locomo_normalize,
    parse_judgement,
    summarize,
)


def test_reexports_are_the_scoring_functions():
    assert metrics.token_f1 is scoring.token_f1
    assert metrics.exact_match is scoring.exact_match
    assert metrics.bleu1 is scoring.bleu1
    assert metrics.mem0_exact_match is scoring.mem0_exact_match
    assert metrics.word_tokens is scoring.word_tokens


def test_importing_metrics_pulls_in_no_torch_and_no_nltk():
    code = "import sys, memenv.metrics; print(*(m in sys.modules for m in ('torch', 'transformers', 'nltk')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


# --- BLEU-1 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [
        # hyp the:2 cat sat on mat (6 tokens); clipped matches 2+1+0+1+1 = 5; equal lengths -> BP 1
        ("the cat sat on the mat", "the cat is on the mat", 5 / 6),
        # 2 of 2 match; hyp 2 tokens vs ref 6 -> BP = exp(1 - 6/2) = exp(-2)
        ("cat mat", "the cat is on the mat", math.exp(-2)),
        # "the" x3 clipped to its 1 reference count -> 1/3; hyp longer than ref -> BP 1
        ("the the the", "the cat", 1 / 3),
        # 1 of 3 matches, 3 vs 4 tokens -> (1/3) * exp(1 - 4/3)
        ("Paris in spring", "she visited paris twice", (1 / 3) * math.exp(1 - 4 / 3)),
        ("Paris", "paris", 1.0),  # lowercased
        ("nothing shared", "entirely different", 0.0),
        ("", "anything", 0.0),
    ],
)
def test_bleu1_by_hand(prediction, gold, expected):
    pytest.importorskip("nltk")
    assert bleu1(prediction, gold) == pytest.approx(expected, abs=1e-12)


def test_bleu1_equals_nltk_sentence_bleu_on_random_pairs():
    bleu_score = pytest.importorskip("nltk.translate.bleu_score")
    smoothing = bleu_score.SmoothingFunction().method1
    rng = random.Random(1234)
    vocab = ["the", "The", "cat", "cat.", "mat", "on", "a", "Paris", "paris,", "2023", "May", "it's", "(twice)"]
    for _ in range(1500):
        hyp = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9)))
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 9)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = bleu_score.sentence_bleu(
                [list(word_tokens(ref))], list(word_tokens(hyp)), weights=(1, 0, 0, 0), smoothing_function=smoothing
            )
        assert bleu1(hyp, ref) == pytest.approx(expected, rel=1e-9, abs=1e-12), (hyp, ref)


# --- the mem0 / A-Mem tokenizer and the perturbations of the issue ----------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("agencies.", ("agencies", ".")),
        ("Government agencies.", ("government", "agencies", ".")),
        ("Hiking, chess; painting!", ("hiking", ",", "chess", ";", "painting", "!")),
        ("It's John's dog, isn't it?", ("it", "'s", "john", "'s", "dog", ",", "is", "n't", "it", "?")),
        ('She said "hi" (twice)', ("she", "said", "``", "hi", "''", "(", "twice", ")")),
        # Punkt splits the sentences, so the inner full stop comes off as well
        ("He went home. Then he slept.", ("he", "went", "home", ".", "then", "he", "slept", ".")),
        ("7 May 2023", ("7", "may", "2023")),
        ("3.5 miles", ("3.5", "miles")),  # a decimal point is no full stop
        ("", ()),
    ],
)
def test_word_tokens_split_punctuation_off(text, tokens):
    pytest.importorskip("nltk")
    assert metrics.word_tokens(text) == tokens


def test_word_tokens_are_nltk_word_tokenize_within_a_sentence():
    nltk = pytest.importorskip("nltk")
    texts = [
        "The answer is: John plans to travel with his team on 21 August, 2023.",
        "Caroline's friends (Mel & Jon) went camping -- twice!",
        "\"Becoming Nicole\" by Amy Ellis Nutt",
        "She can't wait... maybe next year?",
        "LGBTQ+ pride parade, $20 tickets, 50% off",
    ]
    for text in texts:
        # preserve_line=True: nltk's own word tokenizer without the Punkt model download
        assert metrics.word_tokens(text) == tuple(nltk.word_tokenize(text.lower(), preserve_line=True)), text


def test_word_tokens_match_word_tokenize_with_the_english_punkt_model_when_installed():
    nltk = pytest.importorskip("nltk")
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        pytest.skip("nltk's English Punkt model (punkt_tab) is not installed")
    for text in ["He went home. Then he slept.", "Paris.", "A painting of a sunset. She loved it!"]:
        assert metrics.word_tokens(text) == tuple(nltk.word_tokenize(text.lower())), text


GOLD = "A painting of a sunset"  # tokens: a painting of a sunset (5; "a" twice)


@pytest.mark.parametrize(
    "prediction, expected",
    [
        (GOLD, 1.0),
        # truncation: 2 of 2 match; hyp 2 vs ref 5 tokens -> BP exp(1 - 5/2)
        ("A painting", math.exp(-1.5)),
        # upper case plus a full stop: a painting of a sunset . -> 5 of 6 match, hyp longer -> BP 1
        # (whitespace tokens gave 4/5: "sunset." matched nothing)
        ("A PAINTING OF A SUNSET.", 5 / 6),
        # a wrapping sentence: the answer is a painting of a sunset . -> a x2, painting, of,
        # sunset = 5 of 9 (whitespace tokens: 4/8)
        ("The answer is a painting of a sunset.", 5 / 9),
        # a wrong answer: a photo of the beach . -> a, of = 2 of 6 (whitespace tokens: 2/5)
        ("A photo of the beach.", 2 / 6),
        # punctuation in the gold answer counts too: paris vs paris . -> 1/1, BP exp(1 - 2)
        ("Paris", math.exp(-1)),
    ],
)
def test_bleu1_on_perturbed_answers_by_hand(prediction, expected):
    pytest.importorskip("nltk")
    gold = "Paris." if prediction == "Paris" else GOLD
    assert bleu1(prediction, gold) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "prediction, gold, em, em_mem0",
    [
        ("Paris", "paris", 1.0, 1.0),
        ("  Paris ", "paris", 1.0, 1.0),  # mem0 strips outer whitespace
        ("Paris.", "Paris", 1.0, 0.0),  # ours drops .,!? ; mem0 compares the strings
        ("7 May, 2023", "7 May 2023", 1.0, 0.0),
        ("New  York", "new york", 1.0, 0.0),  # ours splits on whitespace
        ("the Paris", "Paris", 0.0, 0.0),  # neither drops articles
        ("", "", 1.0, 0.0),  # mem0 scores an empty string 0
        ("", "paris", 0.0, 0.0),
    ],
)
def test_exact_match_rules(prediction, gold, em, em_mem0):
    assert metrics.exact_match(prediction, gold) == em
    assert metrics.mem0_exact_match(prediction, gold) == em_mem0


def test_bleu1_without_nltk_says_how_to_install(monkeypatch):
    scoring._nltk_tokenizers.cache_clear()
    scoring.word_tokens.cache_clear()
    for name in ("nltk", "nltk.tokenize", "nltk.tokenize.destructive", "nltk.tokenize.punkt"):
        monkeypatch.setitem(sys.modules, name, None)
    try:
        with pytest.raises(ImportError, match="pip install nltk"):
            bleu1("some words", "other words")
        with pytest.raises(ImportError, match="pip install nltk"):
            scoring.get_metric("bleu1")  # at once, before any scoring
        assert scoring.get_metric("em_mem0") is metrics.mem0_exact_match  # others need no nltk
    finally:
        scoring._nltk_tokenizers.cache_clear()
        scoring.word_tokens.cache_clear()


# --- LoCoMo's F1 ------------------------------------------------------------------------


def test_locomo_normalize():
    assert locomo_normalize("The Cat, and a dog-house!  An apple.") == "cat doghouse apple"
    assert locomo_normalize("Andrew and Anna") == "andrew anna"  # only whole words go


def test_locomo_f1_by_hand():
    pytest.importorskip("nltk")
    # pred -> she adopt two dog cat (5 stems), gold -> two cat: 2 shared; P 2/5, R 1 -> 4/7
    assert locomo_f1("She adopted two dogs and a cat", "two cats") == pytest.approx(4 / 7)
    # multisets, not sets: "very" twice in the prediction counts once; P 2/3, R 1 -> 0.8
    assert locomo_f1("very very good", "very good") == pytest.approx(0.8)
    assert metrics.token_f1("very very good", "very good") == pytest.approx(1.0)
    # stemming makes "paintings" match "painting"
    assert locomo_f1("Paintings", "painting") == 1.0
    assert locomo_f1("", "painting") == 0.0


def test_locomo_f1_multi_hop_splits_on_commas():
    pytest.importorskip("nltk")
    gold = "hiking, chess, painting"
    # each gold part takes its best prediction part: hiking 1, chess 1, painting 0 -> 2/3
    assert locomo_f1("chess, hiking", gold, "multi-hop") == pytest.approx(2 / 3)
    assert locomo_f1("chess, hiking", gold, 1) == pytest.approx(2 / 3)
    # without the multi-hop rule: pred {chess hike} vs gold {hike chess paint}: P 1, R 2/3 -> 0.8
    assert locomo_f1("chess, hiking", gold) == pytest.approx(0.8)
    # one prediction part against each gold part, e.g. "hike chess paint" vs "hike":
    # P 1/3, R 1 -> 0.5; the same for every gold part -> mean 0.5
    assert locomo_f1("hiking chess painting", gold, "multi-hop") == pytest.approx(0.5)


def test_locomo_f1_open_domain_and_adversarial_rules():
    pytest.importorskip("nltk")
    assert locomo_f1("teacher", "teacher; tutor", "open-domain") == 1.0
    assert locomo_f1("tutor", "teacher; tutor", 3) == 0.0
    assert locomo_f1("That is not mentioned anywhere.", "anything", "adversarial") == 1.0
    assert locomo_f1("No information available", "x", 5) == 1.0
    assert locomo_f1("Lisbon", "Lisbon", "adversarial") == 0.0
    # kinds outside LoCoMo get the plain F1
    assert locomo_f1("tutor", "teacher; tutor", "knowledge-update") == pytest.approx(2 / 3)


def test_locomo_f1_rejects_unknown_categories():
    with pytest.raises(ValueError, match="category 7"):
        locomo_f1("a", "b", 7)
    with pytest.raises(TypeError):
        locomo_f1("a", "b", 1.0)


def test_locomo_f1_without_nltk_says_how_to_install(monkeypatch):
    metrics._porter_stemmer.cache_clear()
    metrics._stem.cache_clear()
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.stem", None)
    try:
        with pytest.raises(ImportError, match="pip install nltk"):
            locomo_f1("some words", "other words")
    finally:
        metrics._porter_stemmer.cache_clear()
        metrics._stem.cache_clear()


# --- LLM-as-a-Judge ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, label",
    [
        ('{"label": "CORRECT"}', CORRECT),
        ('The answer matches the date. {"label": "WRONG"}', WRONG),
        ("```json\n{'label': 'correct'}\n```", CORRECT),
        ("label: Wrong", WRONG),
        ("It refers to the same month, so it is not wrong. CORRECT", CORRECT),
        ("INCORRECT", WRONG),
        ("Correct.", CORRECT),
        ("wrong", WRONG),
        ("The answer is correct in spirit", None),  # lower-case prose is not a label
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_judgement(completion, label):
    assert parse_judgement(completion) == label


ITEMS = [
    ("Where does Oskar live?", "Lisbon", "He lives in Lisbon now."),
    ("When did Mira buy the cottage?", "2019", "In 2021."),
    ("What hobby did Mira start?", "pottery", "A pottery class."),
    ("What is the parrot called?", "Pip", "Polly"),
]


def test_judge_answers_with_a_fake_judge():
    seen: list[list[str]] = []

    def fake_generate(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        # judges by whether the gold answer occurs in the generated answer
        out = []
        for prompt in prompts:
            gold = prompt.split("Gold answer: ")[1].split("\n")[0]
            generated = prompt.split("Generated answer: ")[1].split("\n")[0]
            out.append('{"label": "CORRECT"}' if gold.lower() in generated.lower() else "Reasoning... WRONG")
        return out

    result = judge_answers(ITEMS, fake_generate, judge_name="fake-substring-judge")
    assert result.labels == (CORRECT, WRONG, CORRECT, WRONG)
    assert result.accuracy == 0.5
    assert result.num_unparseable == 0
    assert result.judge_name == "fake-substring-judge"
    assert len(seen) == 1 and len(seen[0]) == 4
    prompt = seen[0][0]
    assert "Where does Oskar live?" in prompt and "CORRECT" in prompt and '"label"' in prompt
    assert "same topic" in prompt and "time" in prompt  # the generous protocol


def test_judge_answers_counts_unparseable_as_wrong_and_batches():
    calls: list[int] = []
    replies = iter(["CORRECT", "no idea", "WRONG", "???"])

    def fake_generate(prompts: list[str]) -> list[str]:
        calls.append(len(prompts))
        return [next(replies) for _ in prompts]

    result = judge_answers(ITEMS, fake_generate, judge_name="fake", batch_size=3)
    assert calls == [3, 1]
    assert result.labels == (CORRECT, WRONG, WRONG, WRONG)
    assert result.num_unparseable == 2
    assert result.accuracy == 0.25
    assert result.completions[1] == "no idea"


def test_judge_answers_rejects_bad_inputs():
    echo = lambda prompts: ["CORRECT"] * len(prompts)  # noqa: E731
    with pytest.raises(ValueError, match="judge_name"):
        judge_answers(ITEMS, echo, judge_name="")
    with pytest.raises(ValueError, match="no items"):
        judge_answers([], echo, judge_name="j")
    with pytest.raises(ValueError, match="item 0"):
        judge_answers([("only two", "parts")], echo, judge_name="j")
    with pytest.raises(ValueError, match="2 completions for 4 prompts"):
        judge_answers(ITEMS, lambda prompts: ["CORRECT"] * 2, judge_name="j")
    with pytest.raises(ValueError, match="batch_size"):
        judge_answers(ITEMS, echo, judge_name="j", batch_size=0)


# --- summaries --------------------------------------------------------------------------


def test_summarize_overall_and_per_kind():
    pytest.importorskip("nltk")
    records = [
        ("single-hop", "Lisbon", "Lisbon"),  # f1 1, bleu 1, em 1
        ("single-hop", "Porto", "Lisbon"),  # all 0
        ("multi-hop", "chess, hiking", "hiking, chess, painting"),
    ]
    summary = summarize(records, judge_labels=[CORRECT, WRONG, CORRECT])
    single = summary["per_kind"]["single-hop"]
    assert single == {"count": 2, "f1": 0.5, "bleu1": 0.5, "em": 0.5, "em_mem0": 0.5, "squad_f1": 0.5,
                      "squad_bleu1": 0.5, "locomo_f1": 0.5, "j": 0.5}
    multi = summary["per_kind"]["multi-hop"]
    # token F1 over sets: {chess hiking} vs {hiking chess painting}: P 1, R 2/3 -> 0.8
    assert multi["f1"] == pytest.approx(0.8)
    # BLEU-1: chess , hiking vs hiking , chess , painting: all 3 match ("," once of twice)
    # -> 3/3, BP exp(1 - 5/3)
    assert multi["bleu1"] == pytest.approx(math.exp(-2 / 3))
    assert multi["locomo_f1"] == pytest.approx(2 / 3)  # multi-hop rule applies by kind
    # Memory-R2's BLEU-1 drops the commas: chess hiking vs hiking chess painting -> 2/2, BP exp(1 - 3/2)
    assert multi["squad_bleu1"] == pytest.approx(math.exp(-1 / 2))
    overall = summary["overall"]
    assert overall["count"] == 3
    assert overall["f1"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert overall["j"] == pytest.approx(2 / 3)
    # LoCoMo kinds come in category order
    assert list(summary["per_kind"]) == ["multi-hop", "single-hop"]


def test_summarize_without_locomo_or_judge_and_bad_inputs():
    pytest.importorskip("nltk")  # for BLEU-1's tokenizer
    summary = summarize([("temporal", "May 2023", "7 May 2023")], locomo=False)
    assert set(summary["overall"]) == {"count", "f1", "bleu1", "em", "em_mem0", "squad_f1", "squad_bleu1"}
    assert summary["overall"]["f1"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no records"):
        summarize([])
    with pytest.raises(ValueError, match="1 judge labels for 2 records"):
        summarize([("a", "x", "x"), ("a", "y", "y")], judge_labels=[CORRECT], locomo=False)
    with pytest.raises(ValueError, match="maybe"):
        summarize([("a", "x", "x")], judge_labels=["maybe"], locomo=False)
    with pytest.raises(ValueError, match="record 0"):
        summarize([("a", "x")], locomo=False)


def test_squad_f1_matches_the_official_memory_r2_reward_by_hand():
    from memenv.metrics import squad_f1, squad_normalize

    assert squad_normalize("The cat's hat, an apple!") == "cats hat apple"
    assert squad_f1("A nurse.", "nurse") == 1.0
    # pred {lyon, france} vs gold {lyon}: P = 1/2, R = 1 -> F1 = 2/3
    assert squad_f1("Lyon, France", "the Lyon") == pytest.approx(2 / 3)
    # the official rule: common tokens as a set, precision over the token list (3 tokens)
    assert squad_f1("lyon lyon paris", "lyon") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert squad_f1("", "") == 1.0 and squad_f1("the", "a") == 1.0  # both empty once normalised
    assert squad_f1("", "nurse") == 0.0 and squad_f1("doctor", "nurse") == 0.0
