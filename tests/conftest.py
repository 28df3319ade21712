"""Shared pytest fixtures.

Heavy libraries (torch, transformers) are imported inside the fixtures, so test files
that do not use them stay fast to collect.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_backbone():
    """A fresh tiny random Llama + byte-level tokenizer (agents.backbone.tiny_backbone, seed 0).

    Function-scoped because LoRA wraps the model in place; building one takes ~10 ms
    once transformers is imported.
    """
    from agents.backbone import tiny_backbone as build

    return build(seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny backbone's tokenizer (stateless, so shared by the whole session)."""
    from agents.backbone import tiny_tokenizer as build

    return build()
