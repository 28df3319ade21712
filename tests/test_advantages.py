"""Hand-computed checks of algos.advantages."""

import math

import pytest
import torch

from algos.advantages import (
    broadcast_to_tokens,
    combine_advantages,
    group_advantages,
    session_group_advantages,
)

EPS = 1e-6


def test_group_advantages_mixed_groups():
    # group 0: [1, 2, 3] -> mean 2, sample std sqrt((1 + 0 + 1) / 2) = 1
    # group 1: [5, 5]    -> all equal -> 0
    # group 2: [7]       -> singleton -> 0
    # group 9: [0, 4]    -> mean 2, sample std sqrt((4 + 4) / 1) = 2*sqrt(2)
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 7.0, 0.0, 4.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 9, 9])
    adv = group_advantages(rewards, groups)
    s2 = 2 * math.sqrt(2)
    expected = torch.tensor(
        [-1 / (1 + EPS), 0.0, 1 / (1 + EPS), 0.0, 0.0, 0.0, -2 / (s2 + EPS), 2 / (s2 + EPS)]
    )
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv, expected)
    assert adv.dtype == torch.float32


def test_group_advantages_interleaved_groups_match_contiguous():
    # same groups as above, members scattered through the batch
    rewards = torch.tensor([0.0, 1.0, 5.0, 7.0, 2.0, 4.0, 5.0, 3.0])
    groups = torch.tensor([9, 0, 1, 2, 0, 9, 1, 0])
    adv = group_advantages(rewards, groups)
    s2 = 2 * math.sqrt(2)
    expected = torch.tensor(
        [-2 / (s2 + EPS), -1 / (1 + EPS), 0.0, 0.0, 0.0, 2 / (s2 + EPS), 0.0, 1 / (1 + EPS)]
    )
    torch.testing.assert_close(adv, expected)


def test_all_equal_groups_are_exactly_zero():
    # 0.1 is not representable: a naive mean-centring leaves ~1e-17 residue, / (0 + eps) ~ 1e-11.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.7], dtype=torch.float64)
    groups = torch.tensor([3, 3, 3, 4, 4, 4, 4])
    adv = group_advantages(rewards, groups)
    assert torch.equal(adv, torch.zeros(7, dtype=torch.float64))


def test_group_advantages_without_scaling_only_centres():
    rewards = torch.tensor([1.0, 2.0, 6.0, 4.0, 4.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    adv = group_advantages(rewards, groups, scale=False)
    # group 0 mean 3 -> [-2, -1, 3]; group 1 constant -> 0
    torch.testing.assert_close(adv, torch.tensor([-2.0, -1.0, 3.0, 0.0, 0.0]))


def test_group_advantages_zero_mean_unit_sample_std_per_group():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(64, generator=gen)
    groups = torch.arange(64) % 4  # 4 groups of 16
    adv = group_advantages(rewards, groups, eps=0.0)
    for g in range(4):
        a = adv[groups == g]
        assert abs(a.mean().item()) < 1e-5
        assert abs(a.std().item() - 1.0) < 1e-5  # torch.std is the unbiased (sample) std


def test_group_advantages_rejects_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([1.0, float("nan")]), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="group_ids"):
        group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="group_ids shape"):
        group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([0, 0, 0]))
    assert group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_session_group_advantages_masked_columns():
    nan = float("nan")
    # G = 3 rollouts, S = 3 sessions
    rewards = torch.tensor(
        [
            [1.0, 0.5, nan],
            [2.0, nan, nan],
            [3.0, 0.5, 0.9],
        ]
    )
    valid = torch.tensor(
        [
            [True, True, False],
            [True, False, False],
            [True, True, True],
        ]
    )
    adv = session_group_advantages(rewards, valid)
    # session 0: [1, 2, 3] -> mean 2, std 1 -> [-1, 0, 1] / (1 + eps)
    # session 1: valid [0.5, 0.5] -> all equal -> 0; the masked entry -> 0
    # session 2: one valid entry -> 0; masked (NaN) entries -> 0
    expected = torch.tensor(
        [
            [-1 / (1 + EPS), 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [1 / (1 + EPS), 0.0, 0.0],
        ]
    )
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv, expected)


def test_session_group_advantages_each_column_separately():
    # session 0: [0, 4] -> mean 2, std 2*sqrt(2); session 1: [10, 30, 20] with row 1 masked
    rewards = torch.tensor([[0.0, 10.0], [4.0, 99.0], [4.0, 20.0]])
    valid = torch.tensor([[True, True], [True, False], [False, True]])
    adv = session_group_advantages(rewards, valid)
    s2 = 2 * math.sqrt(2)
    # session 1 valid [10, 20] -> mean 15, std sqrt((25 + 25) / 1) = 5*sqrt(2)
    s5 = 5 * math.sqrt(2)
    expected = torch.tensor(
        [[-2 / (s2 + EPS), -5 / (s5 + EPS)], [2 / (s2 + EPS), 0.0], [0.0, 5 / (s5 + EPS)]]
    )
    torch.testing.assert_close(adv, expected)


def test_session_group_advantages_all_masked_and_bad_mask():
    rewards = torch.ones(2, 3)
    assert torch.equal(
        session_group_advantages(rewards, torch.zeros(2, 3, dtype=torch.bool)), torch.zeros(2, 3)
    )
    with pytest.raises(TypeError, match="valid"):
        session_group_advantages(rewards, torch.ones(2, 3))


def test_combine_advantages_concatenates_and_weights_local():
    global_adv = torch.tensor([1.0, -1.0, 0.5])
    local_adv = torch.tensor([2.0, -2.0])
    torch.testing.assert_close(
        combine_advantages(global_adv, local_adv, local_weight=0.5),
        torch.tensor([1.0, -1.0, 0.5, 1.0, -1.0]),
    )
    torch.testing.assert_close(
        combine_advantages(global_adv, local_adv), torch.tensor([1.0, -1.0, 0.5, 2.0, -2.0])
    )
    torch.testing.assert_close(combine_advantages(global_adv, torch.zeros(0)), global_adv)
    with pytest.raises(ValueError, match="local_weight"):
        combine_advantages(global_adv, local_adv, local_weight=-1.0)


def test_broadcast_to_tokens_zeroes_padding():
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(
        broadcast_to_tokens(adv, mask), torch.tensor([[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    )
    with pytest.raises(ValueError, match="mask"):
        broadcast_to_tokens(adv, torch.ones(3, 2))
