"""Tests for algos.evaluate: every horizon in one lockstep gives each horizon's own scores."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_lockstep_over_horizons_scores_each_horizon_as_alone(tiny_backbone):
    """evaluate_synthetic batches the (horizon, world) episodes of every horizon together; each
    horizon's result must equal that horizon evaluated on its own (same greedy policy)."""
    import memenv  # noqa: F401
    from agents.lora import adapter_parameters, add_lora
    from algos.evaluate import BENCH_ENV, evaluate_synthetic, make_policy, run_episodes
    from algos.rollouts import ScriptedAnswerer

    model = add_lora(tiny_backbone, r=4)
    with torch.no_grad():
        for p in adapter_parameters(model, "policy"):
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    settings = dict(prompt_style="compact", max_new_tokens=48, max_prompt_tokens=512)
    together = evaluate_synthetic(model, tiny_backbone.tokenizer, worlds=[0, 1], horizons=[2, 3], extractor=None,
                                  **settings)
    assert sorted(together) == [2, 3]
    for h in (2, 3):
        alone = run_episodes(make_policy(model, tiny_backbone.tokenizer, **settings), ScriptedAnswerer(),
                             lambda h=h: gym.make(BENCH_ENV, num_sessions=h, disable_env_checker=True), [0, 1])
        assert together[h].to_dict() == alone.to_dict()
    assert together[2].to_dict() != together[3].to_dict()  # so a mix-up of the groups would show
