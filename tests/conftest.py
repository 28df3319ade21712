"""Shared pytest fixtures.

Heavy libraries (torch, transformers) are imported inside the fixtures, so test files
that do not use them stay fast to collect.
"""

from __future__ import annotations

import os

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


@pytest.fixture(scope="module")
def single_torch_thread():
    """Run a test module with one torch thread, restoring the count afterwards.

    Tiny models gain nothing from more threads, and on a busy 2-core machine two
    threads spin against each other (the agent tests ran 7x slower that way).
    Use with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_addoption(parser):
    parser.addoption(
        "--sabotage", choices=("flip", "zero"), default=None,
        help="break the policy loss on purpose (flip: advantages negated; zero: advantages zeroed), to check that "
             "the learning tests (-m learning) then fail",
    )


@pytest.fixture(autouse=True)
def _sabotaged_loss(request, monkeypatch):
    """With ``--sabotage``, every call of algos.losses.logo_grpo_loss sees negated or zeroed advantages."""
    mode = request.config.getoption("--sabotage")
    if mode is None:
        return
    import algos.losses

    real = algos.losses.logo_grpo_loss

    def sabotaged(logp, old_logp, ref_logp, adv, mask, **kwargs):
        return real(logp, old_logp, ref_logp, -adv if mode == "flip" else adv * 0.0, mask, **kwargs)

    monkeypatch.setattr(algos.losses, "logo_grpo_loss", sabotaged)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``MEMENV_REQUIRE_VLLM=1`` (.ci/run's vLLM step) a skipped ``vllm`` test is a failure:
    that step must run the vLLM engine, not pass by skipping it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MEMENV_REQUIRE_VLLM") == "1" and item.get_closest_marker("vllm"):
        report.outcome = "failed"
        report.longrepr = f"skipped under MEMENV_REQUIRE_VLLM=1: {report.longrepr}"
