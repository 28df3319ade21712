"""MemorySession-v0 for TRL: role datasets on forked states, rewards in TRL's signature, a session rollout.

Install the extra (the lock already holds it): ``pip install -e ".[trl]"``. Nothing here
imports TRL at import time; ``datasets`` is imported when a dataset is built, TRL only by
:class:`SessionRollout` while it generates. A missing extra is one line naming it.

* :func:`role_dataset` plays a policy (the oracle by default, or any registered agent) up to
  every extract / manage / answer turn of the chosen worlds and sessions, stores an
  ``env.fork()`` of the environment at that turn in a :class:`SnapshotStore`, and returns a
  ``datasets.Dataset`` with the role's ``prompt`` (the project's role prompt, as text through
  the tokenizer's chat template, or as conversational messages) and the ``state`` key of
  its snapshot.
* Reward functions in TRL's signature ``(completions, state, **kwargs) -> list[float]``,
  each forking the row's snapshot, so the stored state never changes and any number of
  completions are scored from the same state: :data:`manage_reward`, :data:`extract_reward`,
  :data:`answer_reward` and :data:`valid_action` (1 for a valid action, 0 otherwise: give it
  weight 0 in ``GRPOConfig(reward_weights=...)`` to log it without training on it). The
  classes (:class:`ManageReward`, ...) choose the answerer (``"scripted"``, any registered
  agent such as ``"llm:smollm2-135m"``, or an object with ``answer`` / ``act_batch``), the
  metric and the number of questions probed.
* :func:`demonstration_dataset`: the oracle's actions in TRL's prompt / completion format,
  for ``SFTTrainer`` (the same prompts as the role datasets, so the warm start and GRPO
  see identical text).
* :func:`session_dataset` and :class:`SessionRollout`: a whole session per sample for
  ``GRPOTrainer(rollout_func=...)``: the policy extracts, the environment answers with the
  manage observation (``env_mask`` 0 on those tokens), the policy manages, and
  :data:`session_reward` returns the score of the questions due after the session on the
  memory it left.

A TRL group (the ``num_generations`` completions of one row) starts from one forked
snapshot, so it is exactly LoGo-GRPO's local group; the global half (whole trajectories
compared with each other) needs :mod:`algos.logo_grpo`.

What TRL 1.16's API decides here:

* ``rollout_func(prompts, trainer)`` receives only the batch's ``prompt`` values (deep
  copies, each repeated ``num_generations`` times in a row, although TRL's docstring says
  "no duplication"); the rows' other columns reach reward functions only, after
  generation, and the trainer holds no reference to the current rows while the rollout
  runs. So the snapshot key travels inside the prompt: :func:`session_dataset` prompts are
  conversational and each message carries a ``state`` field, which chat templates ignore.
* TRL generates a sample as ONE sequence (prompt, then completion), so in a session the
  manage turn continues the extract conversation (the manage instructions and observation
  come as the next user message) and is generated with the whole conversation as its
  context, so that the training forward pass scores it in the context it was sampled in.
* The rollout generates with :func:`agents.generation.generate` on the trainer's model
  (inside TRL's ``unwrap_model_for_generation``); TRL 1.16 offers rollout functions no
  public way to generate with the trainer's own backend (vLLM or transformers), so
  ``use_vllm`` does not apply to session rollouts.
* Grammars: TRL's transformers generation takes no logits processor (it calls
  ``model.generate(generation_config=...)`` only) and its vLLM path takes one regex for
  every prompt of the run (``vllm_structured_outputs_regex``), while the project's
  grammars depend on the role and, for manage, on the memory ids of each observation. The
  hook is :class:`SessionRollout`'s ``generate_fn``, called with each turn's role and
  observations: a constrained sampler plugs in there.
"""

from algos.trl.data import (
    collect_states,
    demonstration_dataset,
    role_dataset,
    session_dataset,
)
from algos.trl.rewards import (
    AnswerReward,
    ExtractReward,
    ManageReward,
    ValidAction,
    answer_reward,
    completion_text,
    extract_reward,
    make_answerer,
    manage_reward,
    score_due,
    session_reward,
    valid_action,
)
from algos.trl.rollout import (
    SessionRollout,
    continuation_text,
    default_generate,
    state_key_of,
)
from algos.trl.snapshots import (
    DEFAULT_ENV,
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_MAX_QUESTIONS,
    EXTRA,
    INSTALL_HINT,
    ROLES,
    SNAPSHOTS,
    STATE_FIELD,
    Snapshot,
    SnapshotStore,
    require,
)

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_MAX_PROMPT_TOKENS",
    "DEFAULT_MAX_QUESTIONS",
    "EXTRA",
    "INSTALL_HINT",
    "ROLES",
    "SNAPSHOTS",
    "STATE_FIELD",
    "AnswerReward",
    "ExtractReward",
    "ManageReward",
    "SessionRollout",
    "Snapshot",
    "SnapshotStore",
    "ValidAction",
    "answer_reward",
    "collect_states",
    "completion_text",
    "continuation_text",
    "default_generate",
    "demonstration_dataset",
    "extract_reward",
    "make_answerer",
    "manage_reward",
    "require",
    "role_dataset",
    "score_due",
    "session_dataset",
    "session_reward",
    "state_key_of",
    "valid_action",
]
