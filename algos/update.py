"""One policy update for every trainer: PPO epochs over a batch of sampled generations.

:func:`ppo_update` takes :class:`Sample` objects (prompt tokens, completion tokens, their
sampling log-probs, an advantage or a reward) and an :class:`UpdateConfig`:

1. reference log-probs once per batch, under the reference policy (the base model with
   the adapters disabled, or the frozen copy of a role's adapter when the model holds one:
   :func:`agents.lora.snapshot_reference`), and with a value head (Memory-R1's PPO) the critic's values
   ``V(prompt)`` and the advantages ``A = r - V``;
2. ``ppo_epochs`` passes over the batch in ``num_minibatches`` shuffled minibatches, each
   accumulated over micro-batches of ``micro_batch_size`` sequences grouped by the adapter
   their role uses: the loss of :func:`algos.losses.logo_grpo_loss` (clipped surrogate per
   token or per generation -- ``clip_mode`` --, k3 KL, entropy bonus), its policy term a
   token mean or a mean over generations (``loss_agg``) and its KL and entropy terms token
   means over the whole minibatch, plus ``vf_coef`` times the value loss with a head;
3. in a data-parallel run, gradients are averaged over the processes before clipping and
   the optimizer step (every process takes every step, even with an empty minibatch).

Shapes: N sequences, P the padded prompt length (left padding), T the longest completion
(right padding).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

ADDITIVE_STATS = ("loss", "policy_loss", "kl", "entropy")
"""Loss terms whose micro-batch values are parts of the minibatch's (divided by its totals):
logged as their sum per minibatch."""


@dataclass
class Sample:
    """One generation of the policy, with what the loss needs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    role: str
    session: int
    local: bool
    advantage: float = 0.0
    group: tuple = ()  # e.g. ("global", conversation), ("local", conversation, session), ("answer", question)
    ref_logprobs: list[float] | None = None  # filled by the update
    reward: float = 0.0  # the outcome reward (PPO with a value head: the return)
    value: float = 0.0  # PPO with a value head: the critic's V(prompt) when sampled
    constraint: Any = None  # the grammar it was sampled under (agents.constrained); its masks are replayed


def informative_samples(samples: Sequence[Sample], key: Callable[[Sample], Any] = lambda s: s.group) -> list[Sample]:
    """The samples of groups whose rewards differ (DAPO's dynamic-sampling filter).

    In a group where every reward is equal, every group-relative advantage is zero: its
    samples add only the KL and entropy terms to the loss. ``key`` names a sample's group
    (LoGo-GRPO normalises its global groups per session: ``(s.group, s.session)``).
    """
    rewards: dict[Any, set[float]] = defaultdict(set)
    for s in samples:
        rewards[key(s)].add(s.reward)
    return [s for s in samples if len(rewards[key(s)]) > 1]


@dataclass(frozen=True)
class UpdateConfig:
    """The settings of one PPO update (a trainer's ``Args`` carries them as flags)."""

    ppo_epochs: int = 2
    num_minibatches: int = 4
    micro_batch_size: int = 8
    clip_eps: float = 0.2
    kl_coef: float = 0.001
    entropy_coef: float = 0.001
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    vf_coef: float = 0.1  # used with a value head only
    value_clip: float | None = None
    whiten_advantages: bool = False
    # The policy-loss granularity. These defaults are plain per-token PPO-clip with a token
    # mean (Memory-R1's PPO); LoGo-GRPO's flags default to the official Memory-R2 pair
    # (turn, turn) with the dual clip and the log-ratio cap of 3 (algos.losses).
    clip_mode: str = "token"
    loss_agg: str = "token"
    dual_clip_c: float | None = None
    log_ratio_cap: float | None = None
    # "auto": recompute the old log-probs with the training forward pass when the model is
    # not fp32. In bf16 the sampler's incremental (KV-cache) forward and the trainer's full
    # forward round differently: SmolLM2-135M's per-token log-probs differed by 0.044 nats on
    # average and 0.24 at most, so token ratios ranged 0.79-1.27 before any update, beyond
    # the clip range. Recomputed, the first epoch's ratio is exactly 1; the gap is logged as
    # losses/sampler_gap. In fp32 both agree within 1e-4 and the sampled log-probs are used.
    # The first minibatch's own first training pass (before any optimizer step) gives its old
    # log-probs, so only the other minibatches pay a separate pass (none with one minibatch).
    recompute_old_logprobs: str = "auto"
    # "auto": compute each distinct prompt of a micro-batch once (agents.generation.
    # shared_prompt_logits) when the model is not fp32, with each minibatch's samples ordered so
    # that those of one prompt share a micro-batch. The group's samples of one state repeat its
    # prompt, and prompts are most of the tokens. It rounds differently from one full pass, so
    # fp32 runs (the tiny model's committed results) keep the full pass unless "always".
    share_prompts: str = "auto"

    @classmethod
    def from_args(cls, args: Any) -> "UpdateConfig":
        """The fields of ``args`` (any object) that name an update setting."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def all_reduce_mean(tensors: Sequence[torch.Tensor], world: int) -> None:
    """Average tensors in place over the processes of a data-parallel run (no-op for one)."""
    if world > 1:
        for t in tensors:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
            t.div_(world)


def mean_over_processes(metrics: dict[str, float], world: int) -> dict[str, float]:
    """Each metric averaged over the processes that logged it (a process whose batch had no
    local group has no ``charts/local_reward``); every process gets the same dict."""
    gathered: list[list[str]] = [[] for _ in range(world)]
    torch.distributed.all_gather_object(gathered, sorted(metrics))
    keys = sorted(set().union(*gathered))
    sums = torch.tensor([[metrics.get(k, 0.0), float(k in metrics)] for k in keys], dtype=torch.float64)  # (K, 2)
    torch.distributed.all_reduce(sums, op=torch.distributed.ReduceOp.SUM)
    return {k: float(total / count) for k, (total, count) in zip(keys, sums.tolist())}


def collate(samples: Sequence[Sample], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Left-padded prompts and right-padded completions of a list of samples."""
    n = len(samples)
    p_len = max(len(s.prompt_ids) for s in samples)
    c_len = max(len(s.completion_ids) for s in samples)
    prompt_ids = torch.full((n, p_len), pad_id, dtype=torch.long)  # (N, P)
    prompt_mask = torch.zeros((n, p_len), dtype=torch.long)  # (N, P)
    completion_ids = torch.full((n, c_len), pad_id, dtype=torch.long)  # (N, T)
    completion_mask = torch.zeros((n, c_len), dtype=torch.float32)  # (N, T)
    old_logprobs = torch.zeros((n, c_len), dtype=torch.float32)  # (N, T)
    ref_logprobs = torch.zeros((n, c_len), dtype=torch.float32)  # (N, T)
    for i, s in enumerate(samples):
        prompt_ids[i, p_len - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
        prompt_mask[i, p_len - len(s.prompt_ids):] = 1
        completion_ids[i, : len(s.completion_ids)] = torch.tensor(s.completion_ids)
        completion_mask[i, : len(s.completion_ids)] = 1
        old_logprobs[i, : len(s.logprobs)] = torch.tensor(s.logprobs)
        if s.ref_logprobs is not None:
            ref_logprobs[i, : len(s.ref_logprobs)] = torch.tensor(s.ref_logprobs)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)  # (N,)
    out = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
               completion_mask=completion_mask, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs,
               advantages=advantages)
    out = {k: v.to(device) for k, v in out.items()}
    out["token_masks"] = constraint_masks(samples, c_len)  # None when no sample was constrained
    return out


def constraint_masks(samples: Sequence[Sample], length: int) -> torch.Tensor | None:
    """The grammar masks constrained samples were drawn under, replayed: (N, T, W) or None."""
    if all(s.constraint is None for s in samples):
        return None
    from agents.constrained import replay_masks

    return replay_masks([s.constraint for s in samples], [s.completion_ids for s in samples], length)


def policy_and_values(model, value_head, batch: dict[str, torch.Tensor], *, temperature: float,
                      with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward pass: per-token log-probs (N, T), entropy (N, T) and values V(prompt) (N,).

    The value reads the last layer's hidden state at the last prompt token (prompts are
    left-padded, completions right-padded, as :func:`collate` makes them).
    """
    from agents.generation import completion_logits, logits_to_logprobs
    from algos.value import last_token_hidden

    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    p_len = prompt_ids.shape[1]
    logits, out = completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature,
                                    output_hidden_states=True)  # (N, T, V)
    logprobs, entropy = logits_to_logprobs(logits, completion_ids, completion_mask, with_entropy=with_entropy,
                                           token_masks=batch.get("token_masks"))
    hidden = last_token_hidden(out.hidden_states[-1][:, :p_len], prompt_mask)  # (N, H)
    return logprobs, entropy, value_head(hidden)


def _prepare(model, samples: Sequence[Sample], config: UpdateConfig, pad_id: int, value_head,
             share: bool = False, recompute: bool = False,
             from_training: frozenset[int] = frozenset()) -> list[float]:
    """Reference log-probs, the old log-probs when ``recompute``, and (with a value head) values
    and ``A = r - V`` for every sample; returns the sampler-trainer gaps of the recomputed
    tokens. ``share``: compute repeated prompts once, as the update's training passes do.
    ``from_training``: ``id()`` of the samples whose old log-probs the update's first training
    pass gives instead (the first minibatch of the first epoch, before any optimizer step)."""
    from agents.generation import reference_logprobs, sequence_logprobs
    from agents.lora import reference_adapter, role_adapter, use_adapter
    from algos.value import outcome_advantages, whiten

    device = next(model.parameters()).device
    if share:  # as the training passes compute them, so that recomputed old log-probs round alike
        samples = by_prompt(samples)
    gaps: list[float] = []
    for i in range(0, len(samples), config.micro_batch_size):
        micro = samples[i: i + config.micro_batch_size]
        b = collate(micro, pad_id, device)
        by_reference: dict[str | None, list[int]] = {}
        for j, s in enumerate(micro):
            by_reference.setdefault(reference_adapter(model, s.role), []).append(j)
        for reference, rows in by_reference.items():
            # the base model (adapters disabled), or a frozen copy of the role's adapter
            sub = b if len(rows) == len(micro) else collate([micro[j] for j in rows], pad_id, device)
            if reference is None:
                ref = reference_logprobs(model, sub["prompt_ids"], sub["prompt_mask"], sub["completion_ids"],
                                         sub["completion_mask"], temperature=config.temperature,
                                         token_masks=sub["token_masks"], share_prompts=share).cpu()
            else:
                with torch.no_grad(), use_adapter(model, reference):
                    ref = sequence_logprobs(model, sub["prompt_ids"], sub["prompt_mask"], sub["completion_ids"],
                                            sub["completion_mask"], temperature=config.temperature,
                                            token_masks=sub["token_masks"], share_prompts=share).float().cpu()
            for k, j in enumerate(rows):
                micro[j].ref_logprobs = ref[k, : len(micro[j].completion_ids)].tolist()
        if recompute:
            by_adapter: dict[str | None, list[int]] = {}
            for j, s in enumerate(micro):
                if id(s) not in from_training:
                    by_adapter.setdefault(role_adapter(model, s.role), []).append(j)
            for adapter, rows in by_adapter.items():
                sub = collate([micro[j] for j in rows], pad_id, device)
                with torch.no_grad(), use_adapter(model, adapter):
                    old = sequence_logprobs(model, sub["prompt_ids"], sub["prompt_mask"], sub["completion_ids"],
                                            sub["completion_mask"], temperature=config.temperature,
                                            token_masks=sub["token_masks"], share_prompts=share).float().cpu()
                for k, j in enumerate(rows):
                    s = micro[j]
                    fresh = old[k, : len(s.completion_ids)].tolist()
                    gaps.extend(abs(a - b_) for a, b_ in zip(fresh, s.logprobs))
                    s.logprobs = fresh
        if value_head is not None:
            with torch.no_grad(), use_adapter(model, role_adapter(model, micro[0].role)):
                _, _, values = policy_and_values(model, value_head, b, temperature=config.temperature,
                                                 with_entropy=False)
            for j, s in enumerate(micro):
                s.value = float(values[j])
    if value_head is not None:
        adv = outcome_advantages(torch.tensor([s.reward for s in samples], dtype=torch.float32),
                                 torch.tensor([s.value for s in samples], dtype=torch.float32))
        if config.whiten_advantages:
            adv = whiten(adv)
        for s, a in zip(samples, adv.tolist()):
            s.advantage = float(a)
    return gaps


def _take_old_logprobs(group: Sequence[Sample], logp: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[float]:
    """Make a training pass's log-probs ``logp`` (N, T) the old log-probs of its samples (in
    ``batch`` and on each sample, for later epochs); returns the sampler-trainer gaps."""
    fresh = (logp.detach().float() * batch["completion_mask"]).to(batch["old_logprobs"].device)
    gaps: list[float] = []
    for k, s in enumerate(group):
        row = fresh[k, : len(s.completion_ids)].tolist()
        gaps.extend(abs(a - b) for a, b in zip(row, s.logprobs))
        s.logprobs = row
    batch["old_logprobs"] = fresh
    return gaps


def _auto_setting(model, name: str, value: str) -> bool:
    """An auto / always / never setting: auto is on when the model is not fp32."""
    if value not in ("auto", "always", "never"):
        raise ValueError(f"{name} must be auto, always or never, got {value!r}")
    if value != "auto":
        return value == "always"
    return next(model.parameters()).dtype != torch.float32 or any(
        p.dtype != torch.float32 for p in model.parameters() if not p.requires_grad)


def recompute_old_logprobs(model, config: UpdateConfig) -> bool:
    """Whether the update recomputes the old log-probs (see ``UpdateConfig.recompute_old_logprobs``)."""
    return _auto_setting(model, "recompute_old_logprobs", config.recompute_old_logprobs)


def share_prompts(model, config: UpdateConfig) -> bool:
    """Whether the update computes repeated prompts once (see ``UpdateConfig.share_prompts``)."""
    return _auto_setting(model, "share_prompts", config.share_prompts)


def by_prompt(samples: Sequence[Sample]) -> list[Sample]:
    """The samples with those of one prompt side by side, sorted by prompt length, prompt tokens,
    then completion tokens.

    Sorted, not in order of appearance, so that any order of one set of samples gives the same
    micro-batches (with one minibatch, the update's and the old log-probs' passes then round
    alike), and prompts of similar length share a micro-batch (less left padding).
    """
    return sorted(samples, key=lambda s: (len(s.prompt_ids), s.prompt_ids, s.completion_ids))


def ppo_update(model, samples: Sequence[Sample], optimizer, config: UpdateConfig, *, pad_id: int,
               rng: np.random.Generator, world: int = 1, value_head: torch.nn.Module | None = None) -> dict[str, float]:
    """PPO epochs over the batch: clipped surrogate (``config.clip_mode``, ``config.loss_agg``) + k3 KL +
    entropy (token means), plus
    ``vf_coef`` times the value loss with a ``value_head``; returns ``losses/...`` statistics.

    With a value head every sample must be of one role (the head reads that adapter's
    hidden states), and the advantages are set here to ``r - V``.
    """
    from agents.generation import sequence_logprobs
    from agents.lora import role_adapter, use_adapter
    from algos.losses import logo_grpo_loss
    from algos.value import value_loss

    samples = list(samples)
    if value_head is not None and len({s.role for s in samples}) > 1:
        raise ValueError(f"a PPO batch with a value head holds samples of one role, got {sorted({s.role for s in samples})}")
    device = next(model.parameters()).device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats: dict[str, list[float]] = defaultdict(list)
    share = value_head is None and share_prompts(model, config)  # the value head reads a full pass's states
    recompute = recompute_old_logprobs(model, config)
    first_order = rng.permutation(len(samples)) if config.ppo_epochs > 0 else None
    # Recomputed old log-probs of the first minibatch come from its own first training pass
    # (no optimizer step has been taken yet, so that pass is the old policy): one forward
    # pass fewer over 1 / num_minibatches of the batch, and the first ratio is exactly 1.
    fold = {id(samples[i]) for i in np.array_split(first_order, config.num_minibatches)[0]} \
        if recompute and first_order is not None else set()
    gaps: list[float] = []
    if samples:
        gaps = _prepare(model, samples, config, pad_id, value_head, share, recompute, frozenset(fold))
    for epoch in range(config.ppo_epochs):
        order = first_order if epoch == 0 else rng.permutation(len(samples))
        for chunk in np.array_split(order, config.num_minibatches):
            if len(chunk) == 0 and world == 1:
                continue  # fewer samples than minibatches: an empty step would still move AdamW's weights
            optimizer.zero_grad(set_to_none=True)
            minibatch = [samples[i] for i in chunk]
            if share:
                minibatch = by_prompt(minibatch)
            total_tokens = max(sum(len(s.completion_ids) for s in minibatch), 1)
            total_sequences = max(sum(1 for s in minibatch if s.completion_ids), 1)
            summed: dict[str, float] = defaultdict(float)  # micro-batch parts of the minibatch's loss terms
            for i in range(0, len(minibatch), config.micro_batch_size):
                micro = minibatch[i: i + config.micro_batch_size]
                by_adapter: dict[str | None, list[Sample]] = {}
                for s in micro:
                    by_adapter.setdefault(role_adapter(model, s.role), []).append(s)
                for adapter, group in by_adapter.items():
                    b = collate(group, pad_id, device)
                    with use_adapter(model, adapter):
                        if value_head is None:
                            logp, entropy = sequence_logprobs(model, b["prompt_ids"], b["prompt_mask"],
                                                              b["completion_ids"], b["completion_mask"],
                                                              temperature=config.temperature, return_entropy=True,
                                                              token_masks=b["token_masks"], share_prompts=share)
                        else:
                            logp, entropy, values = policy_and_values(model, value_head, b,
                                                                      temperature=config.temperature)
                    if epoch == 0 and id(group[0]) in fold:  # the first minibatch: the old policy's own pass
                        gaps.extend(_take_old_logprobs(group, logp, b))
                    # minibatch totals as divisors: the micro-batch losses add up to the minibatch's
                    loss, st = logo_grpo_loss(logp, b["old_logprobs"], b["ref_logprobs"], b["advantages"],
                                              b["completion_mask"], clip_eps=config.clip_eps, kl_coef=config.kl_coef,
                                              entropy_coef=config.entropy_coef, entropy=entropy,
                                              agg=config.loss_agg, clip_mode=config.clip_mode,
                                              dual_clip_c=config.dual_clip_c, log_ratio_cap=config.log_ratio_cap,
                                              num_sequences=total_sequences, num_tokens=total_tokens)
                    if value_head is not None:
                        old_values = torch.tensor([s.value for s in group], dtype=torch.float32, device=device)
                        returns = torch.tensor([s.reward for s in group], dtype=torch.float32, device=device)
                        v_loss, vst = value_loss(values, old_values, returns, clip_range=config.value_clip)
                        loss = loss + config.vf_coef * v_loss * len(group) / len(minibatch)
                        st = {**st, **vst}
                    loss.backward()
                    for k, v in st.items():
                        if k in ADDITIVE_STATS:
                            summed[k] += float(v)
                        else:
                            stats[k].append(float(v))
            for k, v in summed.items():
                stats[k].append(v)
            if world > 1:
                # every process must reduce the same tensors: parameters its batch did not reach get zeros
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                all_reduce_mean([p.grad for p in params], world)
            norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], config.max_grad_norm)
            stats["grad_norm"].append(float(norm))
            optimizer.step()
    if gaps:
        stats["sampler_gap"].append(float(np.mean(gaps)))
    out = {f"losses/{k}": float(np.mean(v)) for k, v in stats.items()}
    if value_head is not None and samples:
        out["charts/value_mean"] = float(np.mean([s.value for s in samples]))
    return out
