"""memenv: a Gymnasium environment for memory-augmented LLM agents.

``import memenv`` registers ``MemorySession-v0`` and its variants; it pulls in gymnasium,
numpy and immutables only (never torch or transformers).
"""

from gymnasium.envs.registration import WrapperSpec, register, registry

from memenv.constants import HARD_ANSWER_TOP_K
from memenv.env import MemorySessionEnv
from memenv.memory import MemoryBank, MemoryEntry, OpRecord
from memenv.retrieval import BM25Retriever, Retriever
from memenv.wrappers import ForkableWrapper, fork_env

__all__ = [
    "MemorySessionEnv", "MemoryBank", "MemoryEntry", "OpRecord", "Retriever", "BM25Retriever",
    "ForkableWrapper", "fork_env", "ENV_IDS",
]
__version__ = "0.1.0"

_FORKABLE = (WrapperSpec("ForkableWrapper", "memenv.wrappers:ForkableWrapper", {}),)

# Variants are the same class with other kwargs (the default horizon is 8 sessions).
_HARD = {"difficulty": "hard", "memory_budget": "world", "answer_top_k": HARD_ANSWER_TOP_K}
_VARIANTS = {
    "MemorySession-v0": {},
    "MemorySession16-v0": {"num_sessions": 16},
    "MemorySession32-v0": {"num_sessions": 32},
    "MemorySessionBench-v0": {"qa_schedule": "end"},
    # Hard synthetic worlds (history, corrections, third parties, distractor talk) under
    # each world's own memory budget.
    "MemorySessionHard-v0": _HARD,
    "MemorySessionHard16-v0": {**_HARD, "num_sessions": 16},
    "MemorySessionHard32-v0": {**_HARD, "num_sessions": 32},
}
ENV_IDS = tuple(_VARIANTS)

# LoCoMo: the benchmark protocol (questions at the end); the file comes from data_path=...
# or $MEMENV_LOCOMO_PATH.
_DATA_VARIANTS = {
    "MemorySessionLoCoMo-v0": {"source": "locomo", "qa_schedule": "end"},
    "MemorySessionLoCoMoTrain-v0": {"source": "locomo", "qa_schedule": "after_evidence"},
}

for _env_id, _kwargs in {**_VARIANTS, **_DATA_VARIANTS}.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point="memenv.env:MemorySessionEnv", kwargs=_kwargs,
                 additional_wrappers=_FORKABLE)
