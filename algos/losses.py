"""The LoGo-GRPO policy loss: PPO-clip surrogate + k3 KL to the reference - entropy bonus.

Memory-R2 (arXiv 2605.21768) trains local and global samples with one PPO-clip
objective (clip 0.2), a low-variance ("k3") KL penalty to the reference policy
(coefficient 0.001) and an entropy bonus (0.001); the objective itself is GRPO's
(DeepSeekMath, arXiv 2402.03300). Per token, with ``r = exp(logp - old_logp)``::

    L_t = -min(r * A, clip(r, 1 - eps, 1 + eps) * A)           # PPO-clip surrogate
          + kl_coef * (exp(ref - logp) - (ref - logp) - 1)     # k3 KL, >= 0
          - entropy_coef * H_t                                 # entropy bonus

then averaged over the real tokens (``mask``) by ``aggregate``. Every function takes
``(B, T)`` per-token tensors; padding positions may hold anything (even ``-inf``) and
never produce NaN values or gradients.

Stats are returned as detached 0-d tensors so that logging does not force a device
sync on every micro-batch; call ``.item()`` when logging.
"""

from __future__ import annotations

import torch

DEFAULT_CLIP_EPS = 0.2
"""PPO clip range of Memory-R2 / GRPO."""

DEFAULT_KL_COEF = 0.001
"""Memory-R2's KL coefficient (low-variance KL)."""

DEFAULT_ENTROPY_COEF = 0.001
"""Memory-R2's entropy bonus coefficient."""

KL_LOG_RATIO_CLAMP = 20.0
"""|ref - logp| is clamped here before ``exp`` (as verl's ``low_var_kl``) so that one
wildly off-policy token cannot overflow to inf; exp(20) ~ 5e8 is still finite in fp16/bf16."""

AGG_TOKEN = "token"
"""Sum over every real token of the batch / number of real tokens (DAPO)."""

AGG_SEQUENCE = "sequence"
"""Mean over each sequence's tokens, then mean over non-empty sequences (original GRPO)."""

AGG_MODES = (AGG_TOKEN, AGG_SEQUENCE)


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} shape {tuple(a.shape)} != {name_b} shape {tuple(b.shape)}")


def _check_2d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (B, T), got shape {tuple(x.shape)}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is nonzero.

    Args:
        x: any shape.
        mask: same shape as ``x``; nonzero marks positions that count.
        dim: reduce this dimension only; ``None`` reduces everything to a scalar.

    Returns:
        The masked mean; 0 (not NaN) wherever no position counts. Values of ``x`` at
        masked-out positions are never read, so they may be inf or NaN.

    Raises:
        ValueError: shapes disagree.
    """
    _check_same_shape("x", x, "mask", mask)
    keep = mask.bool()
    masked = torch.where(keep, x, torch.zeros_like(x))
    if dim is None:
        return masked.sum() / keep.sum().clamp(min=1)
    return masked.sum(dim) / keep.sum(dim).clamp(min=1)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = AGG_TOKEN) -> torch.Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar.

    Modes:
        ``"token"``: ``sum_{b,t} m x / sum_{b,t} m`` -- every token weighs the same, so
            long sequences weigh more (DAPO, TRL's ``"dapo"``-style).
        ``"sequence"``: mean over each sequence's real tokens, then mean over the
            sequences that have at least one real token -- every sequence weighs the same
            (original GRPO). All-padding rows are skipped, not counted as 0.

    Returns:
        A 0-d tensor; 0 when the mask is all zero (gradient still connected, and zero).

    Raises:
        ValueError: unknown ``mode`` or bad shapes.
    """
    _check_2d("per_token", per_token)
    _check_same_shape("per_token", per_token, "mask", mask)
    if mode == AGG_TOKEN:
        return masked_mean(per_token, mask)
    if mode == AGG_SEQUENCE:
        seq_mean = masked_mean(per_token, mask, dim=-1)  # (B,)
        non_empty = mask.bool().any(dim=-1)  # (B,)
        return masked_mean(seq_mean, non_empty)
    raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGG_MODES}")


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): ``exp(d) - d - 1`` with ``d = ref - logp``.

    Unbiased for the sampled tokens, always >= 0, low variance (Schulman's "k3"; GRPO
    eq. 4). ``d`` is clamped to ``+-KL_LOG_RATIO_CLAMP`` before ``exp``.

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the current policy.
        ref_logp: ``(B, T)`` the same under the reference policy.

    Returns:
        ``(B, T)`` non-negative per-token KL (no masking: use ``aggregate``).

    Raises:
        ValueError: shapes disagree.
    """
    _check_same_shape("logp", logp, "ref_logp", ref_logp)
    d = (ref_logp - logp).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)  # (B, T)
    # expm1(d) - d is accurate for tiny d where exp(d) - 1 cancels; the clamp removes
    # the last rounding below 0.
    return (torch.expm1(d) - d).clamp(min=0.0)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at every position.

    Args:
        logits: ``(B, T, V)``; ``-inf`` entries (banned tokens) are allowed.

    Returns:
        ``(B, T)`` entropy in nats, float32 or wider (bf16 logits are upcast).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be 3-D (B, T, V), got shape {tuple(logits.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    p = logp.exp()  # (B, T, V)
    # 0 * log 0 = 0; filling logp (not the product) keeps the backward pass NaN-free.
    logp_safe = logp.masked_fill(torch.isneginf(logp), 0.0)  # (B, T, V)
    return -(p * logp_safe).sum(dim=-1)  # (B, T)


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = DEFAULT_CLIP_EPS,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate per token: ``-min(r * A, clip(r, 1 - eps, 1 + eps) * A)``.

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the policy being trained.
        old_logp: ``(B, T)`` the same under the policy that sampled them (no grad needed).
        adv: ``(B,)`` per-sequence or ``(B, T)`` per-token advantages.
        mask: ``(B, T)``; nonzero marks real (trained) tokens.
        clip_eps: clip range ``eps > 0``.

    Returns:
        ``per_token_loss`` ``(B, T)``, 0 at padding; and detached stats over real tokens:
        ``clipfrac`` (share of tokens whose gradient the clip zeroes:
        ``r > 1+eps, A > 0`` or ``r < 1-eps, A < 0``, TRL's definition), ``clipfrac_low``,
        ``clipfrac_high``, ``approx_kl`` (k3 between old and new: ``(r - 1) - log r``,
        CleanRL's), ``approx_kl_k1`` (``-log r``) and ``ratio_mean``.

    Raises:
        ValueError: bad shapes or ``clip_eps <= 0``.
    """
    _check_2d("logp", logp)
    _check_same_shape("logp", logp, "old_logp", old_logp)
    _check_same_shape("logp", logp, "mask", mask)
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        adv_t = adv[:, None].expand_as(logp)  # (B, T)
    elif adv.shape == logp.shape:
        adv_t = adv  # (B, T)
    else:
        raise ValueError(f"adv must be (B,) or (B, T) for logp {tuple(logp.shape)}, got {tuple(adv.shape)}")

    keep = mask.bool()  # (B, T)
    # Zero the log-ratio at padding *before* exp: garbage there must not become inf/NaN.
    log_ratio = torch.where(keep, logp - old_logp, torch.zeros_like(logp))  # (B, T)
    adv_t = torch.where(keep, adv_t, torch.zeros_like(adv_t))  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    clipped_ratio = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)  # (B, T)
    per_token_loss = -torch.min(ratio * adv_t, clipped_ratio * adv_t)  # (B, T)

    with torch.no_grad():
        is_low = (ratio < 1.0 - clip_eps) & (adv_t < 0)  # (B, T)
        is_high = (ratio > 1.0 + clip_eps) & (adv_t > 0)  # (B, T)
        fmask = keep.to(ratio.dtype)
        stats = {
            "clipfrac": masked_mean((is_low | is_high).to(ratio.dtype), fmask),
            "clipfrac_low": masked_mean(is_low.to(ratio.dtype), fmask),
            "clipfrac_high": masked_mean(is_high.to(ratio.dtype), fmask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, fmask),
            "approx_kl_k1": masked_mean(-log_ratio, fmask),
            "ratio_mean": masked_mean(ratio, fmask),
        }
    return per_token_loss, {k: v.detach() for k, v in stats.items()}


def logo_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = DEFAULT_CLIP_EPS,
    kl_coef: float = DEFAULT_KL_COEF,
    entropy_coef: float = DEFAULT_ENTROPY_COEF,
    entropy: torch.Tensor | None = None,
    agg: str = AGG_TOKEN,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The LoGo-GRPO loss of one (micro-)batch of local and global samples.

    ``loss = aggregate(surrogate + kl_coef * k3(logp, ref_logp) - entropy_coef * entropy)``

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the policy being trained
            (carries the gradient).
        old_logp: ``(B, T)`` under the sampling policy.
        ref_logp: ``(B, T)`` under the reference policy (with LoRA: the base model with
            the adapter disabled).
        adv: ``(B,)`` or ``(B, T)`` advantages, e.g. from ``combine_advantages``.
        mask: ``(B, T)``; nonzero marks trained tokens.
        clip_eps, kl_coef, entropy_coef: as in Memory-R2 by default.
        entropy: ``(B, T)`` per-token entropy (e.g. ``entropy_from_logits``), with grad
            if the bonus should train. ``None`` omits the entropy term whatever
            ``entropy_coef`` is (the caller chose not to compute it).
        agg: ``"token"`` or ``"sequence"``, see ``aggregate``.

    Returns:
        ``(loss, stats)``: a 0-d loss and detached stats -- those of ``clipped_surrogate``
        plus ``loss``, ``policy_loss``, ``kl`` (aggregated k3 to the reference) and, if
        given, ``entropy``; all aggregated with the same ``agg``.

    Raises:
        ValueError: bad shapes, unknown ``agg``, or a negative coefficient.
    """
    _check_2d("logp", logp)
    _check_same_shape("logp", logp, "ref_logp", ref_logp)
    if kl_coef < 0 or entropy_coef < 0:
        raise ValueError(f"kl_coef and entropy_coef must be >= 0, got {kl_coef}, {entropy_coef}")
    if agg not in AGG_MODES:
        raise ValueError(f"unknown aggregation mode {agg!r}; expected one of {AGG_MODES}")
    policy_tok, stats = clipped_surrogate(logp, old_logp, adv, mask, clip_eps)  # (B, T)
    keep = mask.bool()  # (B, T)
    # Padding may hold -inf log-probs: feed k3 zeros there so it stays finite.
    zeros = torch.zeros_like(logp)
    kl_tok = k3_kl(torch.where(keep, logp, zeros), torch.where(keep, ref_logp, zeros))  # (B, T)
    total_tok = policy_tok + kl_coef * kl_tok  # (B, T)
    if entropy is not None:
        _check_same_shape("entropy", entropy, "logp", logp)
        entropy = torch.where(keep, entropy, torch.zeros_like(entropy))  # (B, T)
        total_tok = total_tok - entropy_coef * entropy  # (B, T)

    loss = aggregate(total_tok, mask, agg)
    with torch.no_grad():
        stats["loss"] = loss.detach()
        stats["policy_loss"] = aggregate(policy_tok, mask, agg).detach()
        stats["kl"] = aggregate(kl_tok, mask, agg).detach()
        if entropy is not None:
            stats["entropy"] = aggregate(entropy, mask, agg).detach()
    return loss, stats
