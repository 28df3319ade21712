"""Hand-computed checks of algos.losses."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algos.losses import (
    aggregate,
    clipped_surrogate,
    entropy_from_logits,
    k3_kl,
    logo_grpo_loss,
    masked_mean,
)

LN2 = math.log(2.0)


def _surrogate_case(ratio: float, adv: float):
    """One token with the given ratio r = exp(logp - old_logp) and advantage."""
    old = torch.tensor([[-1.0]])
    logp = (old + math.log(ratio)).requires_grad_(True)
    loss, stats = clipped_surrogate(logp, old, torch.tensor([adv]), torch.ones(1, 1), clip_eps=0.2)
    loss.sum().backward()
    return loss.item(), logp.grad.item(), stats


@pytest.mark.parametrize(
    "ratio, adv, expected_loss, clipped",
    [
        # inside the clip range: -r*A, gradient -r*A (d r / d logp = r)
        (1.1, 2.0, -1.1 * 2.0, False),
        (0.9, -1.0, 0.9, False),
        # r > 1 + eps, A > 0: min(1.5*2 = 3, 1.2*2 = 2.4) = 2.4 -> clipped branch
        (1.5, 2.0, -2.4, True),
        # r > 1 + eps, A < 0: min(-1.5, -1.2) = -1.5 -> unclipped branch, still trains
        (1.5, -1.0, 1.5, False),
        # r < 1 - eps, A < 0: min(-0.5, -0.8) = -0.8 -> clipped branch
        (0.5, -1.0, 0.8, True),
        # r < 1 - eps, A > 0: min(0.5*2 = 1, 0.8*2 = 1.6) = 1 -> unclipped branch
        (0.5, 2.0, -1.0, False),
    ],
)
def test_clipped_surrogate_branches(ratio, adv, expected_loss, clipped):
    loss, grad, stats = _surrogate_case(ratio, adv)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    if clipped:
        assert grad == 0.0
        assert stats["clipfrac"].item() == 1.0
    else:
        assert grad == pytest.approx(-ratio * adv, rel=1e-5)
        assert stats["clipfrac"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(ratio, rel=1e-5)
    # approx_kl (k3 old vs new) = (r - 1) - log r ; k1 = -log r
    assert stats["approx_kl"].item() == pytest.approx((ratio - 1) - math.log(ratio), abs=1e-6)
    assert stats["approx_kl_k1"].item() == pytest.approx(-math.log(ratio), abs=1e-6)


def test_clipped_surrogate_batch_stats_and_padding():
    # ratios row 0: [1.5, 1.0, pad], row 1: [0.5, 1.1, pad]; adv (B,) = [2, -1]
    old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.5, 1.0, 1.0], [0.5, 1.1, 1.0]]))
    logp[:, 2] = 80.0  # garbage at padding: exp(80 - 0) overflows float32
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    per_tok, stats = clipped_surrogate(logp, old, torch.tensor([2.0, -1.0]), mask)
    # [-min(3, 2.4), -min(2, 2), 0], [-min(-0.5, -0.8), -min(-1.1, -1.1), 0]
    torch.testing.assert_close(per_tok, torch.tensor([[-2.4, -2.0, 0.0], [0.8, 1.1, 0.0]]))
    # clipped tokens: (0, 0) high, (1, 0) low -> 2 of 4 real tokens
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["clipfrac_high"].item() == pytest.approx(0.25)
    assert stats["clipfrac_low"].item() == pytest.approx(0.25)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 1.0 + 0.5 + 1.1) / 4, rel=1e-6)
    # per-token (B, T) advantages give the same result as (B,)
    per_tok2, _ = clipped_surrogate(
        logp, old, torch.tensor([[2.0, 2.0, 9.0], [-1.0, -1.0, 9.0]]), mask
    )
    torch.testing.assert_close(per_tok2, per_tok)


def test_k3_known_values():
    # d = ref - logp: 0 -> 0; ln 2 -> 2 - ln2 - 1; ln 0.5 -> 0.5 - ln 0.5 - 1 = ln2 - 0.5
    logp = torch.tensor([[-1.0, -2.0, -1.0]])
    ref = torch.tensor([[-1.0, -2.0 + LN2, -1.0 - LN2]])
    torch.testing.assert_close(
        k3_kl(logp, ref), torch.tensor([[0.0, 1.0 - LN2, LN2 - 0.5]]), rtol=1e-5, atol=1e-6
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-30, 0, allow_nan=False, width=32), st.floats(-30, 0, allow_nan=False, width=32)
        ),
        min_size=1,
        max_size=16,
    )
)
def test_k3_is_non_negative_and_finite(pairs):
    logp = torch.tensor([[p for p, _ in pairs]])
    ref = torch.tensor([[r for _, r in pairs]])
    kl = k3_kl(logp, ref)
    assert torch.isfinite(kl).all()
    assert (kl >= 0).all()


def test_k3_tiny_differences_stay_non_negative():
    logp = torch.full((1, 1000), -3.0)
    ref = logp + torch.linspace(-1e-4, 1e-4, 1000)
    assert (k3_kl(logp, ref) >= 0).all()


def test_entropy_from_logits():
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0], [5.0, -math.inf, -math.inf, -math.inf]]], requires_grad=True
    )
    ent = entropy_from_logits(logits)
    # uniform over 4 -> ln 4; all mass on one token -> 0
    torch.testing.assert_close(ent, torch.tensor([[math.log(4.0), 0.0]]))
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # two tokens with p = [0.75, 0.25]
    two = torch.log(torch.tensor([[[0.75, 0.25]]]))
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_from_logits(two).item() == pytest.approx(expected, rel=1e-5)


def test_masked_mean_and_aggregation_modes():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, float("nan")], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    # token: (1 + 2 + 3 + 4) / 4 = 2.5
    assert aggregate(x, mask, "token").item() == pytest.approx(2.5)
    # sequence: row means [2, 4], empty row skipped -> 3
    assert aggregate(x, mask, "sequence").item() == pytest.approx(3.0)
    # per-row masked mean, empty row -> 0
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([2.0, 4.0, 0.0]))
    with pytest.raises(ValueError, match="aggregation mode"):
        aggregate(x, mask, "mean")


def test_all_zero_mask_gives_zero_not_nan():
    x = torch.randn(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3)
    for mode in ("token", "sequence"):
        out = aggregate(x, mask, mode)
        assert out.item() == 0.0
        out.backward()
        assert torch.equal(x.grad, torch.zeros(2, 3))
        x.grad = None
    assert masked_mean(x, mask).item() == 0.0


def _example_2x3():
    """2x3 batch: row 0 has 2 real tokens, row 1 has 3."""
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    old = torch.tensor([[-1.0, -2.0, -1.0], [-0.5, -1.5, -2.0]])
    ratio = torch.tensor([[1.0, 1.5, 1.0], [0.5, 1.1, 1.0]])
    logp = old + torch.log(ratio)
    logp[0, 2] = -math.inf  # padding garbage
    d = torch.tensor([[0.0, LN2, 0.0], [0.0, 0.0, -LN2]])  # d = ref - logp
    ref = torch.log(ratio) + old + d
    adv = torch.tensor([2.0, -1.0])
    entropy = torch.tensor([[1.0, 2.0, 9.0], [0.5, 0.5, 1.0]])
    return logp.detach().requires_grad_(True), old, ref, adv, mask, entropy


def test_logo_grpo_loss_hand_computed_token_mode():
    logp, old, ref, adv, mask, entropy = _example_2x3()
    loss, stats = logo_grpo_loss(
        logp, old, ref, adv, mask, kl_coef=0.1, entropy_coef=0.01, entropy=entropy, agg="token"
    )
    # surrogate: -2 (r=1, A=2), -2.4 (clipped 1.2*2), 0.8 (clipped -0.8), 1.1, 1  -> sum -1.5
    # k3: (1 - ln2) + (ln2 - 0.5) = 0.5 ; entropy: 1 + 2 + 0.5 + 0.5 + 1 = 5
    # loss = (-1.5 + 0.1 * 0.5 - 0.01 * 5) / 5 = -0.3
    assert loss.item() == pytest.approx(-0.3, rel=1e-5)
    assert stats["policy_loss"].item() == pytest.approx(-1.5 / 5, rel=1e-5)
    assert stats["kl"].item() == pytest.approx(0.5 / 5, rel=1e-5)
    assert stats["entropy"].item() == pytest.approx(1.0, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(2 / 5)


def test_logo_grpo_loss_hand_computed_sequence_mode():
    logp, old, ref, adv, mask, entropy = _example_2x3()
    loss, _ = logo_grpo_loss(
        logp, old, ref, adv, mask, kl_coef=0.1, entropy_coef=0.01, entropy=entropy, agg="sequence"
    )
    row0 = ((-2.0 - 0.01 * 1.0) + (-2.4 + 0.1 * (1 - LN2) - 0.01 * 2.0)) / 2
    row1 = ((0.8 - 0.005) + (1.1 - 0.005) + (1.0 + 0.1 * (LN2 - 0.5) - 0.01 * 1.0)) / 3
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_logo_grpo_loss_gradient_flows_to_logp():
    logp, old, ref, adv, mask, entropy = _example_2x3()
    loss, _ = logo_grpo_loss(logp, old, ref, adv, mask, kl_coef=0.1, agg="token")
    loss.backward()
    g = logp.grad
    assert torch.isfinite(g).all()
    n = 5.0
    # d/dlogp of -r*A is -r*A (unclipped); of k3 is kl_coef * (1 - exp(d)); clipped -> 0
    expected = torch.tensor(
        [
            [(-1.0 * 2.0 + 0.1 * 0.0) / n, (0.0 + 0.1 * (1 - 2.0)) / n, 0.0],
            [(0.0 + 0.0) / n, (1.1 + 0.0) / n, (1.0 + 0.1 * (1 - 0.5)) / n],
        ]
    )
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-6)


def test_logo_grpo_loss_entropy_grad_and_rejects_bad_inputs():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    logp_all = torch.log_softmax(logits, -1)
    tokens = torch.tensor([[0, 1, 2], [3, 4, 0]])
    logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
    mask = torch.ones(2, 3)
    loss, _ = logo_grpo_loss(
        logp, logp.detach(), logp.detach(), torch.zeros(2), mask,
        entropy=entropy_from_logits(logits), entropy_coef=0.5,
    )
    loss.backward()
    # advantages and KL are 0, so the only gradient is the entropy bonus
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="aggregation mode"):
        logo_grpo_loss(logp, logp, logp, torch.zeros(2), mask, agg="tokens")
    with pytest.raises(ValueError, match="adv"):
        logo_grpo_loss(logp, logp, logp, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="mask"):
        logo_grpo_loss(logp, logp, logp, torch.zeros(2), torch.ones(2, 4))


# ---------------------------------------------------------------- turn-level loss (official Memory-R2)
def _rows(log_ratios, pad_to=3):
    """old_logp = -1 everywhere, logp = old + the given per-token log-ratios, right padding."""
    b = len(log_ratios)
    old = torch.full((b, pad_to), -1.0)
    logp = old.clone()
    mask = torch.zeros(b, pad_to)
    for i, row in enumerate(log_ratios):
        logp[i, : len(row)] += torch.tensor(row)
        mask[i, : len(row)] = 1
    logp[mask == 0] = -math.inf  # padding may hold anything
    return logp.requires_grad_(True), old, mask


def test_turn_ratio_is_exp_of_the_mean_token_log_ratio_with_clip_and_dual_clip_by_hand():
    from algos.losses import turn_clipped_surrogate

    logp, old, mask = _rows([[0.1, 0.3], [math.log(0.5)] * 3, [math.log(4.0)], [0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0, -2.0, 1.0])
    loss, stats = turn_clipped_surrogate(logp, old, adv, mask, clip_eps=0.2, dual_clip_c=3.0, log_ratio_cap=3.0)
    # row 0: r = e^0.2 = 1.221 > 1.2, A > 0 -> -1.2 * 1 (clipped)
    # row 1: r = 0.5 < 0.8, A < 0      -> -min(-0.5, -0.8) = 0.8 (clipped)
    # row 2: r = 4, A = -2             -> PPO gives 8, the dual clip caps it at -A * 3 = 6
    # row 3: r = 1, A = 1              -> -1
    assert loss.tolist() == pytest.approx([-1.2, 0.8, 6.0, -1.0])
    assert stats["clipfrac"].item() == pytest.approx(2 / 4) and stats["clipfrac_dual"].item() == pytest.approx(1 / 4)
    assert stats["ratio_mean"].item() == pytest.approx((math.exp(0.2) + 0.5 + 4 + 1) / 4)
    loss.sum().backward()
    # only row 3 passes a gradient: d(-A r)/d logp_t = -A * r / len = -0.5 for each of its 2 tokens
    assert logp.grad[3, :2].tolist() == pytest.approx([-0.5, -0.5])
    assert torch.all(logp.grad[:3] == 0)


def test_turn_log_ratio_is_capped_at_3_before_exp():
    from algos.losses import turn_clipped_surrogate

    logp, old, mask = _rows([[5.0, 5.0]])
    capped, st = turn_clipped_surrogate(logp, old, torch.tensor([-1.0]), mask, dual_clip_c=None, log_ratio_cap=3.0)
    uncapped, _ = turn_clipped_surrogate(logp, old, torch.tensor([-1.0]), mask, dual_clip_c=None, log_ratio_cap=None)
    # A = -1 and r > 1 + eps: the loss is r itself, e^3 with the cap and e^5 without
    assert capped.item() == pytest.approx(math.exp(3.0)) and uncapped.item() == pytest.approx(math.exp(5.0))
    assert st["log_ratio_capped"].item() == 1.0


def test_token_mode_dual_clip_and_cap_by_hand():
    logp, old, mask = _rows([[math.log(4.0), 5.0]], pad_to=2)
    loss, st = clipped_surrogate(logp, old, torch.tensor([-2.0]), mask, 0.2, dual_clip_c=3.0, log_ratio_cap=3.0)
    # token 0: PPO 8 -> dual clip 6; token 1: log-ratio 5 capped at 3, r = e^3, PPO 2 e^3 -> dual clip 6
    assert loss[0].tolist() == pytest.approx([6.0, 6.0]) and st["clipfrac_dual"].item() == 1.0
    plain, _ = clipped_surrogate(logp, old, torch.tensor([-2.0]), mask, 0.2)
    assert plain[0].tolist() == pytest.approx([8.0, 2 * math.exp(5.0)])


def test_turn_aggregation_weighs_every_generation_equally_and_token_aggregation_by_length():
    logp, old, mask = _rows([[0.1, 0.3], [math.log(0.5)] * 3, [math.log(4.0)]])
    adv = torch.tensor([1.0, -1.0, -2.0])
    common = dict(clip_eps=0.2, kl_coef=0.0, clip_mode="turn", dual_clip_c=3.0, log_ratio_cap=3.0)
    turn, _ = logo_grpo_loss(logp, old, old, adv, mask, agg="turn", **common)
    token, _ = logo_grpo_loss(logp, old, old, adv, mask, agg="token", **common)
    assert turn.item() == pytest.approx((-1.2 + 0.8 + 6.0) / 3)  # lengths 2, 3, 1 do not matter
    assert token.item() == pytest.approx((-1.2 * 2 + 0.8 * 3 + 6.0 * 1) / 6)
    # per-token ratios, generations weighted equally: row means of the token losses
    tok_turn, _ = logo_grpo_loss(logp, old, old, adv, mask, agg="turn", clip_eps=0.2, kl_coef=0.0)
    r0 = (-min(math.exp(0.1), 1.2) - min(math.exp(0.3), 1.2)) / 2
    assert tok_turn.item() == pytest.approx((r0 + 0.8 + 8.0) / 3)


def test_turn_aggregation_keeps_kl_and_entropy_as_token_means():
    logp, old, mask = _rows([[0.0, 0.0], [0.0, 0.0, 0.0], [0.0]])
    ref = logp.detach().clone()
    ref[0, :2] += LN2  # k3 = e^ln2 - ln2 - 1 = 1 - ln2 on row 0's two tokens, 0 elsewhere
    entropy = mask * 2.0
    loss, st = logo_grpo_loss(logp, old, ref, torch.zeros(3), mask, agg="turn", clip_mode="turn", kl_coef=0.5,
                              entropy_coef=0.1, entropy=entropy, dual_clip_c=3.0, log_ratio_cap=3.0)
    assert st["kl"].item() == pytest.approx(2 * (1 - LN2) / 6)
    assert loss.item() == pytest.approx(0.5 * 2 * (1 - LN2) / 6 - 0.1 * 2.0)


def test_micro_batch_losses_with_minibatch_divisors_add_up_to_the_whole_batch_loss():
    logp, old, mask = _rows([[0.1, 0.3], [math.log(0.5)] * 3, [math.log(4.0)], [0.2]])
    ref = old - 0.3
    adv = torch.tensor([1.0, -1.0, -2.0, 0.5])
    for clip_mode in ("token", "turn"):
        for agg in ("token", "turn", "sequence"):
            kw = dict(clip_mode=clip_mode, agg=agg, kl_coef=0.1, dual_clip_c=3.0, log_ratio_cap=3.0)
            whole, _ = logo_grpo_loss(logp, old, ref, adv, mask, **kw)
            parts = sum(logo_grpo_loss(logp[i:i + 2], old[i:i + 2], ref[i:i + 2], adv[i:i + 2], mask[i:i + 2],
                                       num_sequences=4, num_tokens=7, **kw)[0] for i in (0, 2))
            assert parts.item() == pytest.approx(whole.item()), (clip_mode, agg)


def test_unknown_clip_mode_and_bad_clip_settings_are_refused():
    logp, old, mask = _rows([[0.0]])
    with pytest.raises(ValueError, match="clip mode"):
        logo_grpo_loss(logp, old, old, torch.zeros(1), mask, clip_mode="sentence")
    with pytest.raises(ValueError, match="dual_clip_c"):
        logo_grpo_loss(logp, old, old, torch.zeros(1), mask, dual_clip_c=0.5)
