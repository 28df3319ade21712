"""TRL integration: the whole-session ``rollout_func`` (see :mod:`algos.trl`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from algos.trl.rewards import ManageReward
from algos.trl.snapshots import (
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_MAX_QUESTIONS,
    STATE_FIELD,
    SnapshotStore,
    require,
)


# ---------------------------------------------------------------------------- session rollout
def state_key_of(prompt: Any) -> str:
    """The snapshot key a :func:`session_dataset` prompt carries."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], Mapping) and prompt[0].get(STATE_FIELD):
        return str(prompt[0][STATE_FIELD])
    raise ValueError("SessionRollout needs the prompts of algos.trl.session_dataset(...) (conversational, each "
                     f"message carrying its '{STATE_FIELD}' key)")


def default_generate(model, tokenizer, prompt_ids: list[list[int]], *, role: str, observations: list[str],
                     num_samples: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int):
    """The rollout's sampler: :func:`agents.generation.generate` (``role`` and ``observations``
    are for samplers that constrain decoding by role and observation; this one ignores them)."""
    from agents.generation import generate

    return generate(model, tokenizer, prompt_ids, num_samples=num_samples, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, top_k=top_k)


def _sequences(rollout) -> tuple[list[list[int]], list[list[float]], list[str]]:
    ids, logps = [], []
    for row_ids, row_mask, row_lp in zip(rollout.completion_ids.tolist(), rollout.completion_mask.tolist(),
                                         rollout.logprobs.tolist()):
        n = sum(row_mask)
        ids.append(row_ids[:n])
        logps.append(row_lp[:n])
    return ids, logps, list(rollout.texts)


def continuation_text(tokenizer, messages: list[dict], reply: str, next_user: str, *, replied_eos: bool) -> str:
    """The text the chat template puts after an assistant ``reply`` (as generated) up to the
    generation prompt of the next assistant turn, with the user message ``next_user`` between.

    ``replied_eos``: the generated reply ended with the eos token, which the template also
    writes; it is then not repeated.
    """
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + reply
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": next_user}],
        tokenize=False, add_generation_prompt=True)
    if not full.startswith(head):
        raise ValueError("the chat template does not render a conversation as its turns' prefix; SessionRollout "
                         "cannot continue the conversation with it")
    rest = full[len(head):]
    eos = tokenizer.eos_token or ""
    if replied_eos and eos and rest.startswith(eos):
        rest = rest[len(eos):]
    return rest


class SessionRollout:
    """``GRPOTrainer(rollout_func=SessionRollout(...))``: one whole session per sample.

    Each row of :func:`session_dataset` is a snapshot at a session's extract turn. For each
    of the row's ``num_generations`` samples the rollout forks it, samples the facts, steps
    the fork, appends the manage turn (its instructions and observation as the next user
    message; ``env_mask`` 0), samples the operations with the whole conversation as context,
    steps again, and scores the memory the session left as :class:`ManageReward` does
    (``answerer``, ``max_questions``, compression penalty, plus both turns' step rewards).
    The score goes to reward functions as the ``session_reward`` column (read it with
    :func:`session_reward`), validity as ``session_valid`` (:data:`valid_action` reads it).

    Sampling uses the trainer's ``temperature``, ``top_p``, ``top_k`` and, per turn,
    ``max_completion_length`` (or ``max_new_tokens``: one number or ``{"extract": n,
    "manage": m}``); prompts are rendered in ``prompt_style`` and trimmed to
    ``max_prompt_tokens``. ``generate_fn`` replaces the sampler (see :func:`default_generate`
    for its signature), e.g. with one that constrains decoding to each role's grammar.
    """

    __name__ = "session_rollout"

    def __init__(self, *, answerer: Any = "scripted", max_questions: int | None = DEFAULT_MAX_QUESTIONS,
                 compression: bool = True, prompt_style: str = "default",
                 max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, max_new_tokens: int | Mapping[str, int] | None = None,
                 generate_fn: Callable[..., Any] | None = None, store: SnapshotStore | None = None) -> None:
        self.scorer = ManageReward(answerer=answerer, max_questions=max_questions, compression=compression, store=store)
        self.prompt_style, self.max_prompt_tokens = prompt_style, max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.generate_fn = generate_fn or default_generate
        self.last_forks: list[Any] = []

    def _new_tokens(self, trainer, role: str) -> int:
        value = self.max_new_tokens
        if isinstance(value, Mapping):
            value = value.get(role)
        if value is None:
            value = trainer.args.max_completion_length
        if value is None or value < 1:
            raise ValueError(f"SessionRollout needs max_new_tokens or GRPOConfig(max_completion_length) >= 1 for {role}")
        return int(value)

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        trl_models = require("trl.models")
        keys = [state_key_of(p) for p in prompts]
        runs: list[tuple[str, int]] = []  # (key, count) of consecutive equal keys: TRL's groups
        for key in keys:
            if runs and runs[-1][0] == key:
                runs[-1] = (key, runs[-1][1] + 1)
            else:
                runs.append((key, 1))
        tokenizer = getattr(trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        snaps = [self.scorer.store[k] for k, _ in runs]
        if {s.role for s in snaps} != {"extract"}:
            raise ValueError("SessionRollout starts sessions at extract turns; build the dataset with session_dataset")
        from agents.prompts import prompt_messages

        sampling = dict(temperature=float(trainer.temperature), top_p=float(trainer.top_p or 1.0),
                        top_k=int(trainer.top_k or 0))
        messages = [prompt_messages(tokenizer, s.obs, max_prompt_tokens=self.max_prompt_tokens, role="extract",
                                    style=self.prompt_style) for s in snaps]
        prompt_texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompt_texts]
        eos_ids = set(getattr(trainer, "eos_token_ids", None) or [tokenizer.eos_token_id])

        owner = [g for g, (_, n) in enumerate(runs) for _ in range(n)]  # each sample's group
        args = trainer.args
        with trl_models.unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model:
            # Extract: a group shares its prompt (and its KV cache when the groups are equal in size).
            sizes = {n for _, n in runs}
            if len(sizes) == 1:
                rollout = self.generate_fn(model, tokenizer, prompt_ids, role="extract",
                                           observations=[s.obs for s in snaps], num_samples=sizes.pop(),
                                           max_new_tokens=self._new_tokens(trainer, "extract"), **sampling)
            else:
                rollout = self.generate_fn(model, tokenizer, [prompt_ids[g] for g in owner], role="extract",
                                           observations=[snaps[g].obs for g in owner], num_samples=1,
                                           max_new_tokens=self._new_tokens(trainer, "extract"), **sampling)
            ext_ids, ext_lp, ext_texts = _sequences(rollout)
            forks, valid, steps, manage_obs, env_ids = [], [], [], [], []
            for i, g in enumerate(owner):
                fork = snaps[g].fork()
                obs, reward, _, _, info = fork.step(ext_texts[i])
                forks.append(fork)
                steps.append(float(reward))
                valid.append(bool(info.get("valid", True)))
                manage_obs.append(obs)
                turn = prompt_messages(tokenizer, obs, max_prompt_tokens=self.max_prompt_tokens, role="manage",
                                       style=self.prompt_style)
                user = f"{turn[0]['content']}\n\n{turn[1]['content']}"
                text = continuation_text(tokenizer, messages[g], ext_texts[i], user,
                                         replied_eos=bool(ext_ids[i]) and ext_ids[i][-1] in eos_ids)
                env_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
            contexts = [prompt_ids[g] + ext_ids[i] + env_ids[i] for i, g in enumerate(owner)]
            rollout = self.generate_fn(model, tokenizer, contexts, role="manage", observations=manage_obs,
                                       num_samples=1, max_new_tokens=self._new_tokens(trainer, "manage"), **sampling)
            man_ids, man_lp, man_texts = _sequences(rollout)
        for i, fork in enumerate(forks):
            _, reward, _, _, info = fork.step(man_texts[i])
            steps[i] += float(reward)
            valid[i] = valid[i] and bool(info.get("valid", True))
        rewards = self.scorer._session_rewards(forks, [snaps[g].info["session"] for g in owner], steps)
        self.last_forks = forks
        return {
            "prompt_ids": [prompt_ids[g] for g in owner],
            "completion_ids": [ext_ids[i] + env_ids[i] + man_ids[i] for i in range(len(owner))],
            "logprobs": [ext_lp[i] + [0.0] * len(env_ids[i]) + man_lp[i] for i in range(len(owner))],
            "env_mask": [[1] * len(ext_ids[i]) + [0] * len(env_ids[i]) + [1] * len(man_ids[i])
                         for i in range(len(owner))],
            "session_reward": rewards,
            "session_valid": [float(v) for v in valid],
        }
