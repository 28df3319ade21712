"""A learned value head (critic) and PPO's advantage math for single-turn outcome rewards.

Memory-R1 (arXiv 2508.19828) trains its memory manager and answer agent with PPO as well
as GRPO. Each action there is one generation scored by one outcome reward (exact match of
an answer), so the episode is a single step: no bootstrapping and no GAE are needed, and
the value of a state is simply the expected reward of the prompt::

    V(prompt)   = w . h_last + b          # h_last: backbone's last hidden state at the
                                          # last prompt token
    A           = r - V_old(prompt)       # advantage (V_old: the value when sampled)
    L_value     = 1/2 (V - r)^2           # or PPO's clipped form, see ``value_loss``

Every function here is pure (tensors in, tensors out) except :class:`ValueHead` and its
save/load helpers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head.json"
DEFAULT_VALUE_CLIP = 0.2
"""Clip range of the value update (as the policy's clip range, TRL's ``cliprange_value``)."""
WHITEN_EPS = 1e-8


class ValueHead(torch.nn.Module):
    """``V(h) = w . h + b``: one linear layer from the backbone's hidden size to a scalar.

    Initialised to zero, so the first advantages equal the rewards and the critic starts
    without an opinion. Kept in float32 whatever the backbone's dtype (the hidden state is
    upcast), so bf16 rounding does not quantise the value estimates.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.hidden_size = hidden_size
        self.linear = torch.nn.Linear(hidden_size, 1, dtype=torch.float32)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, H)`` hidden states -> ``(B,)`` values."""
        if hidden.dim() != 2 or hidden.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden must be (B, {self.hidden_size}), got shape {tuple(hidden.shape)}")
        return self.linear(hidden.float()).squeeze(-1)


def save_value_head(head: ValueHead, path: str | Path) -> Path:
    """Write the head's weights (safetensors) and hidden size (JSON) into directory ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path / VALUE_HEAD_WEIGHTS))
    (path / VALUE_HEAD_CONFIG).write_text(json.dumps({"hidden_size": head.hidden_size}))
    return path


def load_value_head(path: str | Path, device: str | torch.device | None = None) -> ValueHead:
    """Read a head written by :func:`save_value_head`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / VALUE_HEAD_CONFIG).is_file():
        raise FileNotFoundError(f"no value head at {path} (missing {VALUE_HEAD_CONFIG})")
    head = ValueHead(int(json.loads((path / VALUE_HEAD_CONFIG).read_text())["hidden_size"]))
    head.load_state_dict(load_file(str(path / VALUE_HEAD_WEIGHTS)))
    return head.to(device) if device is not None else head


def last_token_hidden(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden state at each row's last real token.

    Args:
        hidden: ``(B, L, H)`` hidden states.
        mask: ``(B, L)``; nonzero on real tokens. Left or right padding both work: the
            position taken is the last nonzero one of the row.

    Returns:
        ``(B, H)``.

    Raises:
        ValueError: shapes disagree or a row has no real token.
    """
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(f"hidden must be (B, L, H) and mask (B, L); got {tuple(hidden.shape)} and {tuple(mask.shape)}")
    keep = mask.bool()
    if not bool(keep.any(dim=1).all()):
        raise ValueError("every row needs at least one real token")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(keep)  # (B, L)
    last = torch.where(keep, positions, torch.full_like(positions, -1)).max(dim=1).values  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)


def outcome_advantages(rewards: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """PPO advantages of single-step episodes: ``A = r - V`` (values detached).

    With one action per episode the discounted return is the reward itself, so GAE with
    any lambda reduces to this.

    Args:
        rewards: ``(N,)`` finite rewards.
        values: ``(N,)`` the critic's values of the prompts when they were sampled.

    Returns:
        ``(N,)`` in ``rewards``' float dtype.
    """
    if rewards.dim() != 1 or values.shape != rewards.shape:
        raise ValueError(f"rewards and values must both be (N,), got {tuple(rewards.shape)} and {tuple(values.shape)}")
    if not bool(torch.isfinite(rewards).all()) or not bool(torch.isfinite(values).all()):
        raise ValueError("rewards and values must be finite")
    dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.get_default_dtype()
    return (rewards.to(dtype) - values.detach().to(dtype))


def whiten(x: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` over the batch (population std); fewer than 2 entries -> zeros.

    Optional batch normalisation of PPO advantages (TRL's ``whiten_rewards`` style).
    """
    if x.dim() != 1:
        raise ValueError(f"x must be 1-D, got shape {tuple(x.shape)}")
    if x.numel() < 2:
        return torch.zeros_like(x)
    centred = x - x.mean()
    return centred / (centred.pow(2).mean().sqrt() + eps)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    *,
    clip_range: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's loss: ``mean(1/2 (V - R)^2)``, or PPO's clipped form.

    Clipped (``clip_range`` = c)::

        V_clip = V_old + clamp(V - V_old, -c, c)
        L = mean(1/2 max((V - R)^2, (V_clip - R)^2))

    Args:
        values: ``(N,)`` current values (with grad).
        old_values: ``(N,)`` values when the batch was sampled (only used when clipping).
        returns: ``(N,)`` targets; here the rewards.
        clip_range: None (plain MSE) or c > 0.

    Returns:
        ``(loss, stats)`` with stats ``value_loss``, ``value_clipfrac`` (share of entries
        where the clipped term was larger) and ``explained_variance``, detached.
    """
    if values.dim() != 1 or old_values.shape != values.shape or returns.shape != values.shape:
        raise ValueError(f"values, old_values and returns must all be (N,), got {tuple(values.shape)}, "
                         f"{tuple(old_values.shape)}, {tuple(returns.shape)}")
    if clip_range is not None and not (clip_range > 0 and math.isfinite(clip_range)):
        raise ValueError(f"clip_range must be None or a positive number, got {clip_range}")
    returns = returns.to(values.dtype)
    old_values = old_values.detach().to(values.dtype)
    unclipped = (values - returns) ** 2  # (N,)
    if clip_range is None:
        per_item = unclipped
        clipfrac = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)  # (N,)
        clipped = (clipped_values - returns) ** 2  # (N,)
        per_item = torch.maximum(unclipped, clipped)
        clipfrac = (clipped > unclipped).float().mean()
    loss = 0.5 * per_item.mean() if values.numel() else values.sum() * 0.0
    stats = {"value_loss": loss.detach(), "value_clipfrac": clipfrac.detach(),
             "explained_variance": explained_variance(values.detach(), returns.detach())}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """``1 - Var(R - V) / Var(R)``: 1 for a perfect critic, 0 for a constant one; 0 when Var(R) = 0."""
    if values.shape != returns.shape:
        raise ValueError(f"values {tuple(values.shape)} and returns {tuple(returns.shape)} differ")
    var_r = returns.var(unbiased=False) if returns.numel() else returns.new_zeros(())
    if returns.numel() == 0 or float(var_r) == 0.0:
        return returns.new_zeros(())
    return 1.0 - (returns - values).var(unbiased=False) / var_r
