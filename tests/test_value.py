"""The critic's math (algos.value) against hand-computed tensors."""

import pytest
import torch

from algos.value import (ValueHead, explained_variance, last_token_hidden, load_value_head, outcome_advantages,
                         save_value_head, value_loss, whiten)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_advantage_is_reward_minus_value_and_does_not_train_the_critic():
    values = torch.tensor([0.25, 0.5, 0.5], requires_grad=True)
    adv = outcome_advantages(torch.tensor([1.0, 0.0, 0.5]), values)
    assert torch.allclose(adv, torch.tensor([0.75, -0.5, 0.0]))
    assert not adv.requires_grad


def test_integer_rewards_give_float_advantages():
    adv = outcome_advantages(torch.tensor([1, 0]), torch.tensor([0.5, 0.5]))
    assert adv.dtype == torch.get_default_dtype() and adv.tolist() == [0.5, -0.5]


def test_plain_value_loss_and_its_gradient():
    values = torch.tensor([0.5, 1.0], requires_grad=True)
    loss, stats = value_loss(values, torch.zeros(2), torch.tensor([1.0, 0.0]))
    # 1/2 * mean((0.5 - 1)^2, (1 - 0)^2) = 1/2 * (0.25 + 1) / 2
    assert loss.item() == pytest.approx(0.3125)
    loss.backward()
    assert values.grad.tolist() == pytest.approx([-0.25, 0.5])  # (V - R) / N
    assert stats["value_clipfrac"].item() == 0.0


def test_clipped_value_loss_takes_the_larger_term_and_stops_the_clipped_gradient():
    values = torch.tensor([0.5, 1.0], requires_grad=True)
    loss, stats = value_loss(values, torch.zeros(2), torch.tensor([1.0, 0.0]), clip_range=0.2)
    # V_clip = [0.2, 0.2]; squared errors clipped [0.64, 0.04] vs unclipped [0.25, 1.0]
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert stats["value_clipfrac"].item() == pytest.approx(0.5)
    loss.backward()
    assert values.grad.tolist() == pytest.approx([0.0, 0.5])


def test_explained_variance():
    returns = torch.tensor([0.0, 1.0])
    assert explained_variance(torch.tensor([0.0, 1.0]), returns).item() == pytest.approx(1.0)
    assert explained_variance(torch.tensor([0.5, 0.5]), returns).item() == pytest.approx(0.0)
    assert explained_variance(torch.tensor([1.0, 0.0]), returns).item() == pytest.approx(-3.0)
    assert explained_variance(torch.tensor([0.3, 0.1]), torch.tensor([1.0, 1.0])).item() == 0.0


def test_whiten():
    assert whiten(torch.tensor([1.0, 3.0])).tolist() == pytest.approx([-1.0, 1.0])
    assert whiten(torch.tensor([2.0])).tolist() == [0.0]


def test_last_token_hidden_with_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    left = last_token_hidden(hidden, torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]]))
    assert torch.equal(left, hidden[:, 3])
    right = last_token_hidden(hidden, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]))
    assert torch.equal(right, torch.stack([hidden[0, 1], hidden[1, 2]]))
    with pytest.raises(ValueError, match="at least one real token"):
        last_token_hidden(hidden, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))


def test_value_head_starts_at_zero_and_round_trips(tmp_path):
    head = ValueHead(3)
    h = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    assert head(h).tolist() == [0.0, 0.0]
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, 0.0, -1.0]]))
        head.linear.bias.fill_(0.5)
    assert head(h).tolist() == pytest.approx([-1.5, 0.0])
    loaded = load_value_head(save_value_head(head, tmp_path / "vh"))
    assert torch.equal(loaded(h), head(h))


@pytest.mark.parametrize("call", [
    lambda: outcome_advantages(torch.zeros(2), torch.zeros(3)),
    lambda: outcome_advantages(torch.tensor([float("nan")]), torch.zeros(1)),
    lambda: value_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), clip_range=-0.1),
    lambda: value_loss(torch.zeros(2), torch.zeros(1), torch.zeros(2)),
    lambda: ValueHead(0),
    lambda: ValueHead(3)(torch.zeros(2, 4)),
])
def test_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
