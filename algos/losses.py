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

Turn level (the official Memory-R2 launch script: ``clip_mode=turn``, ``agg_mode=turn``;
verl fork ``rema_trainer/ppo/core_algos.py``). A row of the batch is one generation (one
extract or manage turn) and gets ONE ratio, ``r_b = exp(min(mean_t(logp - old_logp),
log_ratio_cap))``, with the log-ratio cap 3 (so ``r_b <= e^3``)::

    L_b = max(-A_b r_b, -A_b clip(r_b, 1 - eps, 1 + eps))        # PPO-clip
    L_b = min(L_b, -A_b c)            where A_b < 0               # dual clip, c = 3

and the policy loss is the mean of ``L_b`` over the generations (each weighted equally,
``--loss-agg turn``), while the KL and entropy terms stay token means. Token-level
clipping (``--clip-mode token``) takes the same steps per token.

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

AGG_TURN = "turn"
"""The official ``agg_mode=turn``: the policy term is a mean over generations (each one
weighs the same, however long), the KL and entropy terms are token means."""

AGG_MODES = (AGG_TOKEN, AGG_SEQUENCE, AGG_TURN)

CLIP_TOKEN = "token"
"""One ratio per token (PPO, GRPO, TRL)."""

CLIP_TURN = "turn"
"""One ratio per generation: exp of the mean token log-ratio (official ``clip_mode=turn``)."""

CLIP_MODES = (CLIP_TOKEN, CLIP_TURN)

DEFAULT_DUAL_CLIP_C = 3.0
"""Dual-clip bound for negative advantages: the loss of a sample with ``A < 0`` is at most
``-A * c`` however large its ratio grows (verl ``clip_ratio_c``)."""

DEFAULT_LOG_RATIO_CAP = 3.0
"""Upper cap on the (token or turn) log-ratio before ``exp`` (verl ``log_ratio_clip_c``)."""


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
    *,
    dual_clip_c: float | None = None,
    log_ratio_cap: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate per token: ``-min(r * A, clip(r, 1 - eps, 1 + eps) * A)``.

    With ``log_ratio_cap`` the log-ratio is capped from above before ``exp``; with
    ``dual_clip_c`` (> 1) a token with ``A < 0`` loses at most ``-A * c`` (dual clip).
    Both default to off (plain PPO-clip).

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the policy being trained.
        old_logp: ``(B, T)`` the same under the policy that sampled them (no grad needed).
        adv: ``(B,)`` per-sequence or ``(B, T)`` per-token advantages.
        mask: ``(B, T)``; nonzero marks real (trained) tokens.
        clip_eps: clip range ``eps > 0``.
        dual_clip_c: None or ``c > 1``.
        log_ratio_cap: None or ``>= 0``.

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
    _check_clip_settings(clip_eps, dual_clip_c, log_ratio_cap)
    adv_t = _per_token_advantages(adv, logp)  # (B, T)

    keep = mask.bool()  # (B, T)
    # Zero the log-ratio at padding *before* exp: garbage there must not become inf/NaN.
    log_ratio = torch.where(keep, logp - old_logp, torch.zeros_like(logp))  # (B, T)
    adv_t = torch.where(keep, adv_t, torch.zeros_like(adv_t))  # (B, T)
    capped = log_ratio if log_ratio_cap is None else log_ratio.clamp(max=log_ratio_cap)  # (B, T)
    ratio = torch.exp(capped)  # (B, T)
    per_token_loss, is_low, is_high, is_dual = _clip_objective(ratio, adv_t, clip_eps, dual_clip_c)  # (B, T)

    with torch.no_grad():
        fmask = keep.to(ratio.dtype)
        stats = {
            "clipfrac": masked_mean((is_low | is_high).to(ratio.dtype), fmask),
            "clipfrac_low": masked_mean(is_low.to(ratio.dtype), fmask),
            "clipfrac_high": masked_mean(is_high.to(ratio.dtype), fmask),
            "approx_kl": masked_mean((torch.exp(log_ratio) - 1.0) - log_ratio, fmask),
            "approx_kl_k1": masked_mean(-log_ratio, fmask),
            "ratio_mean": masked_mean(ratio, fmask),
        }
        if dual_clip_c is not None:
            stats["clipfrac_dual"] = masked_mean(is_dual.to(ratio.dtype), fmask)
        if log_ratio_cap is not None:
            stats["log_ratio_capped"] = masked_mean((log_ratio > log_ratio_cap).to(ratio.dtype), fmask)
    return per_token_loss, {k: v.detach() for k, v in stats.items()}


def _check_clip_settings(clip_eps: float, dual_clip_c: float | None, log_ratio_cap: float | None) -> None:
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if dual_clip_c is not None and not dual_clip_c > 1:
        raise ValueError(f"dual_clip_c must be > 1 (or None), got {dual_clip_c}")
    if log_ratio_cap is not None and not log_ratio_cap >= 0:
        raise ValueError(f"log_ratio_cap must be >= 0 (or None), got {log_ratio_cap}")


def _per_token_advantages(adv: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        return adv[:, None].expand_as(logp)  # (B, T)
    if adv.shape == logp.shape:
        return adv  # (B, T)
    raise ValueError(f"adv must be (B,) or (B, T) for logp {tuple(logp.shape)}, got {tuple(adv.shape)}")


def _clip_objective(ratio: torch.Tensor, adv: torch.Tensor, clip_eps: float, dual_clip_c: float | None):
    """PPO-clip (and dual-clip) loss of ratios and advantages of any one shape, with the masks
    of where the clip (low / high) and the dual clip zero the gradient."""
    clipped_ratio = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    loss = -torch.min(ratio * adv, clipped_ratio * adv)
    with torch.no_grad():
        is_low = (ratio < 1.0 - clip_eps) & (adv < 0)
        is_high = (ratio > 1.0 + clip_eps) & (adv > 0)
        is_dual = torch.zeros_like(is_low)
    if dual_clip_c is not None:
        bound = -adv * dual_clip_c
        negative = adv < 0
        with torch.no_grad():
            is_dual = negative & (loss > bound)
        loss = torch.where(negative, torch.min(loss, bound), loss)
    return loss, is_low, is_high, is_dual


def turn_clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = DEFAULT_CLIP_EPS,
    *,
    dual_clip_c: float | None = DEFAULT_DUAL_CLIP_C,
    log_ratio_cap: float | None = DEFAULT_LOG_RATIO_CAP,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official turn-level surrogate: one ratio and one loss per generation (row).

    ``r_b = exp(min(mean_t log(pi / pi_old), log_ratio_cap))`` over row b's real tokens,
    ``A_b`` the row's mean advantage, then PPO-clip with ``clip_eps`` and, for ``A_b < 0``,
    the dual clip ``min(., -A_b * dual_clip_c)`` (``core_algos.py`` ``clip_mode == 'turn'``).

    Args:
        logp: ``(B, T)`` as in :func:`clipped_surrogate`.
        old_logp: ``(B, T)`` as in :func:`clipped_surrogate`.
        mask: ``(B, T)`` as in :func:`clipped_surrogate`.
        adv: ``(B,)`` or ``(B, T)`` advantages.
        clip_eps: as in :func:`clipped_surrogate`.
        dual_clip_c: as in :func:`clipped_surrogate` (here on by default, as in the
            official code).
        log_ratio_cap: as in :func:`clipped_surrogate` (here a cap of 3 by default, as
            in the official code).

    Returns:
        ``per_sequence_loss`` ``(B,)`` (0 for an all-padding row) and detached stats over
        the non-empty rows: ``clipfrac`` (``clipfrac_low``, ``clipfrac_high``),
        ``clipfrac_dual``, ``log_ratio_capped``, ``ratio_mean``, and over real tokens
        ``approx_kl`` and ``approx_kl_k1`` as in :func:`clipped_surrogate`.
    """
    _check_2d("logp", logp)
    _check_same_shape("logp", logp, "old_logp", old_logp)
    _check_same_shape("logp", logp, "mask", mask)
    _check_clip_settings(clip_eps, dual_clip_c, log_ratio_cap)
    adv_t = _per_token_advantages(adv, logp)  # (B, T)
    keep = mask.bool()  # (B, T)
    non_empty = keep.any(dim=-1)  # (B,)
    log_ratio = torch.where(keep, logp - old_logp, torch.zeros_like(logp))  # (B, T)
    turn_log_ratio = masked_mean(log_ratio, keep, dim=-1)  # (B,)
    turn_adv = masked_mean(torch.where(keep, adv_t, torch.zeros_like(adv_t)), keep, dim=-1).to(logp.dtype)  # (B,)
    capped = turn_log_ratio if log_ratio_cap is None else turn_log_ratio.clamp(max=log_ratio_cap)  # (B,)
    ratio = torch.exp(capped)  # (B,)
    loss, is_low, is_high, is_dual = _clip_objective(ratio, turn_adv, clip_eps, dual_clip_c)  # (B,)
    loss = torch.where(non_empty, loss, torch.zeros_like(loss))  # (B,)
    with torch.no_grad():
        rows = non_empty.to(ratio.dtype)
        fmask = keep.to(ratio.dtype)
        stats = {
            "clipfrac": masked_mean((is_low | is_high).to(ratio.dtype), rows),
            "clipfrac_low": masked_mean(is_low.to(ratio.dtype), rows),
            "clipfrac_high": masked_mean(is_high.to(ratio.dtype), rows),
            "clipfrac_dual": masked_mean(is_dual.to(ratio.dtype), rows),
            "log_ratio_capped": masked_mean((turn_log_ratio > (log_ratio_cap if log_ratio_cap is not None
                                                               else float("inf"))).to(ratio.dtype), rows),
            "ratio_mean": masked_mean(ratio, rows),
            "approx_kl": masked_mean((torch.exp(log_ratio) - 1.0) - log_ratio, fmask),
            "approx_kl_k1": masked_mean(-log_ratio, fmask),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


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
    clip_mode: str = CLIP_TOKEN,
    dual_clip_c: float | None = None,
    log_ratio_cap: float | None = None,
    num_sequences: float | None = None,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The LoGo-GRPO loss of one (micro-)batch of local and global samples.

    ``loss = policy + kl_coef * KL - entropy_coef * entropy``, where

    * ``policy`` is the PPO-clip surrogate, per token (``clip_mode="token"``,
      :func:`clipped_surrogate`) or per generation (``"turn"``,
      :func:`turn_clipped_surrogate`), aggregated as ``agg`` says: ``"token"`` -- a token
      mean (a turn-level row's loss counts once per token); ``"turn"`` or ``"sequence"``
      -- a mean over generations, each weighing the same;
    * ``KL`` (k3 to the reference) and ``entropy`` are token means, except with
      ``agg="sequence"`` (original GRPO: each term a mean of per-sequence means).

    ``num_sequences`` / ``num_tokens``: the divisors of those means. By default this
    micro-batch's own non-empty rows and real tokens; a caller accumulating micro-batches
    passes the minibatch's totals so that the micro-batch losses add up to the
    minibatch's loss exactly.

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the policy being trained
            (carries the gradient).
        old_logp: ``(B, T)`` under the sampling policy.
        ref_logp: ``(B, T)`` under the reference policy (with LoRA: the base model with
            the adapter disabled, or a frozen copy of the adapter).
        adv: ``(B,)`` or ``(B, T)`` advantages, e.g. from ``combine_advantages``.
        mask: ``(B, T)``; nonzero marks trained tokens.
        clip_eps: the PPO clip range (Memory-R2's by default).
        kl_coef: weight of the KL term (Memory-R2's by default).
        entropy_coef: weight of the entropy bonus (Memory-R2's by default).
        entropy: ``(B, T)`` per-token entropy (e.g. ``entropy_from_logits``), with grad
            if the bonus should train. ``None`` omits the entropy term whatever
            ``entropy_coef`` is (the caller chose not to compute it).
        agg: ``"token"``, ``"turn"`` or ``"sequence"``.
        clip_mode: ``"token"`` or ``"turn"``.
        dual_clip_c: see :func:`clipped_surrogate` (None: off).
        log_ratio_cap: see :func:`clipped_surrogate` (None: off).

    Returns:
        ``(loss, stats)``: a 0-d loss and detached stats -- those of the surrogate plus
        ``loss``, ``policy_loss``, ``kl`` and, if given, ``entropy``.

    Raises:
        ValueError: bad shapes, unknown ``agg`` or ``clip_mode``, or a negative coefficient.
    """
    _check_2d("logp", logp)
    _check_same_shape("logp", logp, "ref_logp", ref_logp)
    if kl_coef < 0 or entropy_coef < 0:
        raise ValueError(f"kl_coef and entropy_coef must be >= 0, got {kl_coef}, {entropy_coef}")
    if agg not in AGG_MODES:
        raise ValueError(f"unknown aggregation mode {agg!r}; expected one of {AGG_MODES}")
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"unknown clip mode {clip_mode!r}; expected one of {CLIP_MODES}")
    keep = mask.bool()  # (B, T)
    fkeep = keep.to(logp.dtype)  # (B, T)
    lengths = fkeep.sum(dim=-1)  # (B,)
    n_seq = float(num_sequences) if num_sequences is not None else float(keep.any(dim=-1).sum())
    n_tok = float(num_tokens) if num_tokens is not None else float(lengths.sum())
    n_seq, n_tok = max(n_seq, 1.0), max(n_tok, 1.0)

    def token_mean(per_token: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, per_token, torch.zeros_like(per_token)).sum() / n_tok

    def sequence_mean(per_token: torch.Tensor) -> torch.Tensor:
        return masked_mean(per_token, keep, dim=-1).sum() / n_seq

    if clip_mode == CLIP_TOKEN and agg == AGG_TOKEN:
        # one token mean of the summed terms: the same float operations as before the turn modes existed
        policy_tok, stats = clipped_surrogate(logp, old_logp, adv, mask, clip_eps, dual_clip_c=dual_clip_c,
                                              log_ratio_cap=log_ratio_cap)  # (B, T)
        zeros = torch.zeros_like(logp)
        kl_tok = k3_kl(torch.where(keep, logp, zeros), torch.where(keep, ref_logp, zeros))  # (B, T)
        total_tok = policy_tok + kl_coef * kl_tok  # (B, T)
        if entropy is not None:
            _check_same_shape("entropy", entropy, "logp", logp)
            entropy = torch.where(keep, entropy, torch.zeros_like(entropy))  # (B, T)
            total_tok = total_tok - entropy_coef * entropy  # (B, T)
        share = float(keep.sum()) / n_tok  # this micro-batch's share of the tokens
        loss = aggregate(total_tok, mask, AGG_TOKEN)
        loss = loss if num_tokens is None else loss * float(keep.sum()) / n_tok
        with torch.no_grad():
            stats["loss"] = loss.detach()
            stats["policy_loss"] = aggregate(policy_tok, mask, AGG_TOKEN).detach() * share
            stats["kl"] = aggregate(kl_tok, mask, AGG_TOKEN).detach() * share
            if entropy is not None:
                stats["entropy"] = aggregate(entropy, mask, AGG_TOKEN).detach() * share
        return loss, stats
    if clip_mode == CLIP_TURN:
        policy_seq, stats = turn_clipped_surrogate(logp, old_logp, adv, mask, clip_eps, dual_clip_c=dual_clip_c,
                                                   log_ratio_cap=log_ratio_cap)  # (B,)
        policy = (policy_seq * lengths).sum() / n_tok if agg == AGG_TOKEN else policy_seq.sum() / n_seq
    else:
        policy_tok, stats = clipped_surrogate(logp, old_logp, adv, mask, clip_eps, dual_clip_c=dual_clip_c,
                                              log_ratio_cap=log_ratio_cap)  # (B, T)
        policy = token_mean(policy_tok) if agg == AGG_TOKEN else sequence_mean(policy_tok)
    side_mean = sequence_mean if agg == AGG_SEQUENCE else token_mean
    # Padding may hold -inf log-probs: feed k3 zeros there so it stays finite.
    zeros = torch.zeros_like(logp)
    kl_tok = k3_kl(torch.where(keep, logp, zeros), torch.where(keep, ref_logp, zeros))  # (B, T)
    kl = side_mean(kl_tok)
    loss = policy + kl_coef * kl
    if entropy is not None:
        _check_same_shape("entropy", entropy, "logp", logp)
        entropy = torch.where(keep, entropy, torch.zeros_like(entropy))  # (B, T)
        ent = side_mean(entropy)
        loss = loss - entropy_coef * ent
    with torch.no_grad():
        stats["loss"] = loss.detach()
        stats["policy_loss"] = policy.detach()
        stats["kl"] = kl.detach()
        if entropy is not None:
            stats["entropy"] = ent.detach()
    return loss, stats
