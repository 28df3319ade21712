"""Classical RL for the memory manager: one candidate fact per step, four discrete choices.

The LLM agents of this project write the whole ``manage`` action as text. Here the same
decision is cut down to what a small MLP policy (stable-baselines3 PPO) can learn: for
each extracted fact, in order, ADD it, UPDATE or DELETE its nearest memory, or NOOP,
from a fixed-size vector of hand-made features. The parts live in their own modules;
this one re-exports their public names, so ``from agents.sb3_manager import ...`` keeps
working:

* :mod:`agents.sb3_features` — the decisions, the text cues and features of a fact and
  its nearest memories, :class:`SessionDecisions` (one session's decisions as a
  ``manage`` action) and the hand-written rules (:func:`rule_decision` and the others
  of ``HAND_WRITTEN_RULES``);
* :mod:`agents.sb3_decision_env` — :class:`ManagerDecisionEnv`, the Gymnasium
  environment SB3 trains on (a real ``MemorySession-v0`` inside);
* :mod:`agents.sb3_agents` — :class:`FeatureManagerAgent`, :class:`RandomManagerAgent`
  and :class:`SB3ManagerAgent`, which play a decision rule, random decisions or a
  trained policy through the ordinary text protocol
  (``make_agent("sb3-manager:/path/to/model.safetensors")``);
* :mod:`agents.sb3_model_file` — :func:`save_manager` and :func:`load_manager_policy`,
  the pickle-free ``.safetensors`` file of a trained manager.
"""

from __future__ import annotations

from agents.sb3_agents import FeatureManagerAgent, RandomManagerAgent, SB3ManagerAgent
from agents.sb3_decision_env import REWARD_MODES, ManagerDecisionEnv
from agents.sb3_features import (
    ADD,
    CHANGE_CUES,
    CUE_KINDS,
    DECISIONS,
    DELETE,
    FACT_FEATURES,
    FEATURE_NAMES,
    FEATURE_VERSION,
    MAX_SAME_TOPIC,
    MEMORY_SIZE_SCALE,
    NEAREST_FEATURES,
    NOOP,
    NUM_FEATURES,
    NUM_NEAREST,
    TOPIC_WORDS,
    UPDATE,
    SessionDecisions,
    change_kind,
    fact_features,
    fact_speaker,
    has_date,
    placeholder_features,
    rank_nearest,
    rule_decision,
    keep_history_decision,
    budget_keep_history_decision,
    BUDGET_RULE_MEMORIES,
    HAND_WRITTEN_RULES,
    topics,
)
from agents.sb3_model_file import (
    ACTIVATIONS,
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    MODEL_METADATA_KEY,
    load_manager_policy,
    save_manager,
)

__all__ = [
    # agents.sb3_features
    "ADD", "UPDATE", "DELETE", "NOOP", "DECISIONS", "NUM_NEAREST", "CHANGE_CUES", "CUE_KINDS", "TOPIC_WORDS",
    "MEMORY_SIZE_SCALE", "MAX_SAME_TOPIC", "FACT_FEATURES", "NEAREST_FEATURES", "FEATURE_NAMES", "NUM_FEATURES",
    "FEATURE_VERSION", "change_kind", "topics", "has_date", "fact_speaker", "rank_nearest", "fact_features",
    "placeholder_features", "SessionDecisions", "rule_decision", "keep_history_decision",
    "budget_keep_history_decision", "BUDGET_RULE_MEMORIES", "HAND_WRITTEN_RULES",
    # agents.sb3_decision_env
    "REWARD_MODES", "ManagerDecisionEnv",
    # agents.sb3_agents
    "FeatureManagerAgent", "RandomManagerAgent", "SB3ManagerAgent",
    # agents.sb3_model_file
    "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "MODEL_METADATA_KEY", "ACTIVATIONS", "MAX_LAYER_WIDTH", "MAX_LAYERS",
    "save_manager", "load_manager_policy",
]
