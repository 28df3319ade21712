"""Group-relative advantages for LoGo-GRPO.

Memory-R2 (arXiv 2605.21768) trains the fact extractor and memory manager with
LoGo-GRPO: *global* groups are the n full-horizon rollouts of one conversation (one
reward per session), *local* groups are ``inner_n`` rerolls of one session forked from an
identical memory state. Each group is normalised on its own, as in GRPO (DeepSeekMath,
arXiv 2402.03300)::

    A_i = (r_i - mean_g(r)) / (std_g(r) + eps)

``std`` is the *sample* (unbiased, ``n - 1``) standard deviation, the same as TRL's
GRPOTrainer (``rewards.view(-1, G).std(dim=1)``, ``torch.std``'s default).

Groups whose rewards are all equal -- including singletons, where the sample std is
undefined -- get an advantage of exactly 0: they carry no preference between samples.

Local and global samples are different samples in one batch, so
``combine_advantages`` concatenates the two advantage vectors and scales the local
one by a weight ``w`` (the official code has none, i.e. ``w = 1``). This is the
LoGo-GRPO counterpart of GiGPO's ``A = A_episode + w * A_step`` (arXiv 2505.10978): in
GiGPO every step belongs to an episode group and a step group, so the two are summed
per sample; in LoGo-GRPO a reroll sample belongs to its local group only.
"""

from __future__ import annotations

import math

import torch

DEFAULT_EPS = 1e-6
"""Added to the group std, as in GRPO / Memory-R2 (``(r - mean) / (std + 1e-6)``)."""


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
    scale: bool = True,
) -> torch.Tensor:
    """Normalise rewards within each group: ``(r - mean_g) / (std_g + eps)``.

    Args:
        rewards: ``(N,)`` finite float rewards, one per sample.
        group_ids: ``(N,)`` integer group label per sample; labels need not be contiguous
            or sorted, and members of a group need not be adjacent.
        eps: added to the group's sample std before dividing.
        scale: divide by ``std + eps``. ``False`` keeps only the mean-centring (the
            Dr. GRPO variant, which avoids up-weighting low-variance groups).

    Returns:
        ``(N,)`` advantages in ``rewards``' float dtype (float32 for integer rewards).
        Samples of a group whose rewards are all equal, singletons included, get
        exactly 0.

    Raises:
        TypeError: ``group_ids`` is not an integer tensor.
        ValueError: shapes disagree, a reward is not finite, or ``eps < 0``.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_ids shape {tuple(group_ids.shape)} != rewards shape {tuple(rewards.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.dtype.is_complex or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.get_default_dtype()
    if rewards.numel() == 0:
        return torch.zeros(0, dtype=out_dtype, device=rewards.device)
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must all be finite (a NaN/inf would poison its whole group)")

    # float64 so that group sums of many float32 rewards do not drift.
    r = rewards.detach().to(torch.float64)  # (N,)
    _, inv = torch.unique(group_ids, return_inverse=True)  # (N,) in [0, K)
    num_groups = int(inv.max().item()) + 1
    zeros = torch.zeros(num_groups, dtype=torch.float64, device=r.device)  # (K,)

    count = zeros.index_add(0, inv, torch.ones_like(r))  # (K,)
    mean = zeros.index_add(0, inv, r) / count  # (K,)
    centered = r - mean[inv]  # (N,)

    # Sample (unbiased) variance; singletons are handled by the all-equal rule below.
    sq_sum = zeros.index_add(0, inv, centered * centered)  # (K,)
    std = torch.sqrt(sq_sum / (count - 1).clamp(min=1))  # (K,)

    # Exact test for constant groups: mean-centring can leave ~1e-17 residue otherwise.
    rmax = torch.full_like(zeros, -math.inf).scatter_reduce(0, inv, r, reduce="amax")  # (K,)
    rmin = torch.full_like(zeros, math.inf).scatter_reduce(0, inv, r, reduce="amin")  # (K,)
    constant = (rmax == rmin)[inv]  # (N,)

    adv = centered / (std[inv] + eps) if scale else centered  # (N,)
    adv = torch.where(constant, torch.zeros_like(adv), adv)  # (N,)
    return adv.to(out_dtype)


def session_group_advantages(
    rewards: torch.Tensor,
    valid: torch.Tensor,
    *,
    eps: float = DEFAULT_EPS,
    scale: bool = True,
) -> torch.Tensor:
    """Per-session advantages of one global group of Memory-R2 rollouts.

    A global group is G rollouts of the same conversation. Each rollout gets one reward
    per session s (the mean score of the questions whose evidence lies in session s), so
    every session column is its own group: ``rewards[:, s]`` is normalised across the
    rollouts with ``group_advantages``. The extract/manage samples of session s in
    rollout g are then trained with advantage ``out[g, s]``.

    Args:
        rewards: ``(G, S)`` float rewards; entries where ``valid`` is False are ignored
            and may hold anything, NaN included (a session with no questions has no
            score).
        valid: ``(G, S)`` bool, True where the session has a reward.
        eps: as in ``group_advantages``.
        scale: as in ``group_advantages``.

    Returns:
        ``(G, S)`` advantages; 0 where ``valid`` is False, and 0 for a whole column whose
        valid rewards are all equal or that has fewer than two valid entries.

    Raises:
        TypeError: ``valid`` is not a bool tensor.
        ValueError: shapes disagree, or a valid reward is not finite.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be 2-D (G, S), got shape {tuple(rewards.shape)}")
    if valid.shape != rewards.shape:
        raise ValueError(f"valid shape {tuple(valid.shape)} != rewards shape {tuple(rewards.shape)}")
    if valid.dtype != torch.bool:
        raise TypeError(f"valid must be a bool tensor, got dtype {valid.dtype}")
    out_dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.get_default_dtype()
    out = torch.zeros(rewards.shape, dtype=out_dtype, device=rewards.device)  # (G, S)
    rows, cols = valid.nonzero(as_tuple=True)  # (M,), (M,)
    if rows.numel() == 0:
        return out
    out[rows, cols] = group_advantages(rewards[rows, cols], cols, eps=eps, scale=scale).to(out_dtype)
    return out


def combine_advantages(
    global_adv: torch.Tensor,
    local_adv: torch.Tensor,
    local_weight: float = 1.0,
) -> torch.Tensor:
    """One advantage vector for a LoGo-GRPO batch: global samples first, then local.

    In LoGo-GRPO a sample is either from a global rollout (advantage from its global
    group) or a local reroll (advantage from its local group) -- never both -- so the
    two vectors are concatenated, not added::

        A = cat([A_global, w * A_local])   # (Ng + Nl,)

    The trainer must order its batch of samples the same way. ``w`` weights the local
    samples' policy-gradient term only: with ``w = 0`` they still enter the KL and
    entropy terms of the loss. The official Memory-R2 code uses ``w = 1``.

    Args:
        global_adv: ``(Ng,)`` advantages of the global samples.
        local_adv: ``(Nl,)`` advantages of the local samples (``Nl`` may be 0).
        local_weight: ``w >= 0``.

    Returns:
        ``(Ng + Nl,)`` in ``global_adv``'s dtype.

    Raises:
        ValueError: an input is not 1-D, or ``local_weight`` is negative or not finite.
    """
    if global_adv.dim() != 1:
        raise ValueError(f"global_adv must be 1-D, got shape {tuple(global_adv.shape)}")
    if local_adv.dim() != 1:
        raise ValueError(f"local_adv must be 1-D, got shape {tuple(local_adv.shape)}")
    if not (math.isfinite(local_weight) and local_weight >= 0):
        raise ValueError(f"local_weight must be finite and >= 0, got {local_weight}")
    local = local_weight * local_adv.to(dtype=global_adv.dtype, device=global_adv.device)  # (Nl,)
    return torch.cat([global_adv, local])  # (Ng + Nl,)


def broadcast_to_tokens(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Give every real token of sequence b the advantage ``adv[b]``; padding gets 0.

    Args:
        adv: ``(B,)`` per-sequence advantages.
        mask: ``(B, T)``; nonzero marks a real (trained) token.

    Returns:
        ``(B, T)`` in ``adv``'s dtype.

    Raises:
        ValueError: shapes disagree.
    """
    if adv.dim() != 1:
        raise ValueError(f"adv must be 1-D (B,), got shape {tuple(adv.shape)}")
    if mask.dim() != 2 or mask.shape[0] != adv.shape[0]:
        raise ValueError(f"mask must be (B, T) with B={adv.shape[0]}, got shape {tuple(mask.shape)}")
    per_token = adv[:, None].expand(mask.shape)  # (B, T)
    return torch.where(mask.bool(), per_token, torch.zeros_like(per_token))  # (B, T)
