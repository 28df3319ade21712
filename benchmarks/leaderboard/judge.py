"""The LLM judge of the leaderboard's J score, and its control items: questions whose verdict
is known (the gold answer; another question's unrelated answer) that show whether J can
be trusted."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from memenv.metrics import CORRECT, WRONG, judge_answers

from benchmarks.leaderboard.evaluation import select_questions

DEFAULT_JUDGE_MAX_NEW_TOKENS = 64
JUDGE_CONTROL_QUESTIONS = 6  # control items (x2) that show whether J can be trusted


def judge_generator(agent: Any, max_new_tokens: int) -> Callable[[list[str]], list[str]]:
    """Prompts -> greedy completions with an LLM agent's model and chat template."""
    model, tokenizer = getattr(agent, "model", None), getattr(agent, "tokenizer", None)
    if model is None or tokenizer is None:
        raise ValueError(f"the judge must be a causal-LM agent such as 'llm:smollm2-135m'; "
                         f"{type(agent).__name__} has no model and tokenizer")
    from agents.generation import generate

    def run(prompts: list[str]) -> list[str]:
        rendered = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                  add_generation_prompt=True) for p in prompts]
        return generate(model, tokenizer, rendered, max_new_tokens=max_new_tokens, temperature=0.0).texts

    return run


def judge_control_items(questions: Sequence[Any], count: int) -> list[tuple[tuple[str, str, str], str]]:
    """Control items with a known verdict, to show how far a judge can be trusted: for
    ``count`` questions evenly spaced over ``questions``, the gold answer itself (expected
    CORRECT) and the gold answer of another question with no word in common (expected
    WRONG). Questions without such a partner get only the first item."""
    items: list[tuple[tuple[str, str, str], str]] = []
    for i in select_questions(len(questions), count):
        question = questions[i]
        items.append(((question.question, question.answer, question.answer), CORRECT))
        words = set(question.answer.lower().split())
        for offset in range(1, len(questions)):
            other = questions[(i + offset) % len(questions)]
            if other.answer.strip() and not words & set(other.answer.lower().split()):
                items.append(((question.question, question.answer, other.answer), WRONG))
                break
    return items


def judge_agreement(generate: Callable[[list[str]], list[str]], name: str, questions: Sequence[Any],
                    count: int, batch_size: int | None = None) -> dict[str, Any]:
    """How often the judge gives the expected verdict on :func:`judge_control_items`."""
    controls = judge_control_items(questions, count)
    if not controls:
        return {"items": 0, "agreement": None}
    result = judge_answers([item for item, _ in controls], generate, judge_name=name, batch_size=batch_size)
    right = [label == expected for label, (_, expected) in zip(result.labels, controls)]
    correct_controls = [ok for ok, (_, expected) in zip(right, controls) if expected == CORRECT]
    wrong_controls = [ok for ok, (_, expected) in zip(right, controls) if expected == WRONG]
    return {"items": len(controls), "agreement": sum(right) / len(right),
            "gold_judged_correct": sum(correct_controls) / len(correct_controls),
            "wrong_judged_wrong": sum(wrong_controls) / len(wrong_controls) if wrong_controls else None}
