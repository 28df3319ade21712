"""LLM agents for MemorySession-v0: backbones, LoRA adapters, prompts, batched generation.

Importing this package is cheap (no torch, no transformers). The heavy modules load on
first use of a name below, or when imported explicitly:

* :mod:`agents.backbone` -- ``load_backbone``, ``tiny_backbone``, ``Backbone``
* :mod:`agents.lora` -- ``add_lora``, ``role_adapter``, ``use_adapter``, ``save_adapter``,
  ``load_adapter``, ``merge_for_inference``
* :mod:`agents.generation` -- ``generate``, ``Rollout``, ``sequence_logprobs``,
  ``reference_logprobs``
* :mod:`agents.prompts` -- ``render_prompt``, ``parse_answer`` (torch-free)
* :mod:`agents.llm_agent` -- ``LLMAgent``
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Backbone": "agents.backbone",
    "load_backbone": "agents.backbone",
    "tiny_backbone": "agents.backbone",
    "add_lora": "agents.lora",
    "role_adapter": "agents.lora",
    "use_adapter": "agents.lora",
    "save_adapter": "agents.lora",
    "load_adapter": "agents.lora",
    "merge_for_inference": "agents.lora",
    "generate": "agents.generation",
    "Rollout": "agents.generation",
    "sequence_logprobs": "agents.generation",
    "reference_logprobs": "agents.generation",
    "render_prompt": "agents.prompts",
    "parse_answer": "agents.prompts",
    "LLMAgent": "agents.llm_agent",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
