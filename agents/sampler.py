"""One LLM sampler for every caller: role prompt -> role adapter -> batched generation.

Agents, trainers and leaderboards all turn MemorySession observations into generations the
same way, through :class:`RoleSampler`:

1. each observation is rendered into its role's prompt (:func:`agents.prompts.render_prompt`,
   with the sampler's prompt style, distillation setting and prompt budget);
2. observations of one role are generated together with that role's adapter
   (:func:`agents.lora.role_adapter`: the shared ``policy`` adapter, a per-role one, or the
   base model with adapters disabled);
3. identical prompts are computed once: ``k`` observations with the same prompt and ``n``
   samples each become one prompt sampled ``k * n`` times, sharing its KV cache (the G
   rollouts of a conversation at its first turn, the rerolls of a forked state);
4. prompts are generated in calls of at most ``batch_size`` sequences;
5. with ``constrained`` (default) each observation's output follows its grammar
   (:mod:`agents.constrained`: valid JSON facts and operations over the ids it shows, the
   answer format), and the log-probs are those of the masked distribution.

Every :class:`Generation` keeps the prompt and completion token ids and the sampling
log-probs, so a trainer can compute its loss from exactly what was sampled.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agents.prompts import MANAGE


@dataclass
class Generation:
    """One sampled completion of one observation's prompt."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    constraint: Any = None  # the agents.constrained.Constraint it was sampled under (None: none)
    truncated: bool = False  # cut off at max_new_tokens before a stop token


def generations(rollout) -> list[list[Generation]]:
    """A :class:`agents.generation.Rollout` as, per prompt, its n generations (padding removed)."""
    out = []
    n = rollout.num_samples
    for p in range(len(rollout.prompt_ids)):
        prompt = rollout.prompt_ids[p][rollout.prompt_mask[p].bool()].tolist()
        group = []
        for j in range(p * n, (p + 1) * n):
            mask = rollout.completion_mask[j].bool()
            constraint = rollout.constraints[j] if rollout.constraints is not None else None
            truncated = rollout.finished is not None and not bool(rollout.finished[j])
            group.append(Generation(rollout.texts[j], prompt, rollout.completion_ids[j][mask].tolist(),
                                    rollout.logprobs[j][mask].tolist(), constraint, truncated))
        out.append(group)
    return out


def observation_role(obs: str) -> str:
    """The role an observation asks for (its ``"role"`` field)."""
    return json.loads(obs)["role"]


class RoleSampler:
    """Samples generations for MemorySession observations with a (LoRA) causal LM.

    Args:
        model: the backbone (a ``PeftModel`` when it holds adapters).
        tokenizer: the backbone's tokenizer.
        prompt_style: ``"default"`` or ``"compact"`` role prompts.
        distill: answer prompts ask for the relevant memory ids before the answer.
        max_prompt_tokens: prompts are trimmed by relevance to this many tokens.
        max_new_tokens: the generation budget, one number or one per role.
        temperature: sampling temperature (0: greedy); ``top_p``, ``top_k``: sampling filters.
        generator: the torch generator sampling draws from.
        batch_size: at most this many sequences per generation call (None: no limit).
        constrained: sample each output under its observation's grammar (default); False
            samples freely (the environment then rejects malformed actions).
        engine: None (default) samples with the library's transformers loop; an
            :class:`agents.vllm_engine.VLLMEngine` samples with vLLM instead (same grammars,
            the log-probs recomputed by ``model``).
        manage_ops: the operations manage outputs may use (default all four; e.g.
            ``("ADD", "NOOP")``): the manage grammar offers no other, so it needs ``constrained``.
    """

    def __init__(self, model, tokenizer, *, prompt_style: str = "default", distill: bool = True,
                 max_prompt_tokens: int = 2048, max_new_tokens: int | Mapping[str, int] = 256,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, batch_size: int | None = None,
                 constrained: bool = True, engine: Any = None, manage_ops: Sequence[str] | None = None) -> None:
        from agents.constrained import check_manage_ops

        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.manage_ops = check_manage_ops(manage_ops, constrained=constrained)
        self.model, self.tokenizer = model, tokenizer
        self.prompt_style, self.distill, self.max_prompt_tokens = prompt_style, distill, max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.generator, self.batch_size = generator, batch_size
        self.constrained = constrained
        self.engine = engine
        self._warned_capacity = False  # see _warn_capacity

    def new_tokens(self, role: str) -> int:
        """The generation budget of ``role``."""
        return self.max_new_tokens[role] if isinstance(self.max_new_tokens, Mapping) else self.max_new_tokens

    def prompt(self, obs: str, role: str | None = None) -> str:
        """The rendered prompt of one observation (its own role unless ``role`` is given)."""
        from agents.prompts import render_prompt

        return render_prompt(self.tokenizer, obs, max_prompt_tokens=self.max_prompt_tokens, role=role,
                             distill=self.distill, style=self.prompt_style)

    def constraint(self, obs: str, role: str | None = None):
        """The grammar of one observation's output (None when sampling is unconstrained)."""
        if not self.constrained:
            return None
        from agents.constrained import grammar_for
        from agents.prompts import parse_observation

        parsed = parse_observation(obs)
        role = role or parsed.get("role")
        if role == MANAGE and not self._warned_capacity:
            self._warn_capacity(parsed)
        return grammar_for(parsed, role, max_new_tokens=self.new_tokens(role), distill=self.distill,
                           manage_ops=self.manage_ops)

    def _warn_capacity(self, parsed: dict) -> None:
        """Warn (once) when a manage observation holds more facts than its grammar can keep."""
        from agents.constrained import manage_capacity

        facts, budget = len(parsed.get("facts") or []), self.new_tokens(MANAGE)
        capacity = manage_capacity(facts, budget, ops=self.manage_ops)
        if facts > capacity:
            self._warned_capacity = True
            warnings.warn(f"a manage observation has {facts} facts but max_new_tokens={budget} lets the manage "
                          f"grammar write at most {capacity} fact operations, so the rest can never be kept; "
                          "raise max_new_tokens (about 27 per fact ADD)", stacklevel=3)

    def sample(self, observations: Sequence[str], *, num_samples: int = 1, greedy: bool = False,
               role: str | None = None, on_batch: Callable[[int], None] | None = None) -> list[list[Generation]]:
        """``num_samples`` generations per observation, in the observations' order.

        ``role`` renders every observation as that role (default: each its own).
        ``on_batch(k)`` is called after each generation call with the number of
        observations it served (for progress bars).
        """
        out: list[list[Generation]] = [[] for _ in observations]
        # role -> (prompt, grammar) -> observation indices
        by_role: dict[str, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, obs in enumerate(observations):
            this_role = role or observation_role(obs)
            by_role[this_role][(self.prompt(obs, this_role), self.constraint(obs, this_role))].append(i)
        temperature = 0.0 if greedy else self.temperature
        for this_role, prompts in by_role.items():
            by_count: dict[int, list[tuple]] = defaultdict(list)
            for key, indices in prompts.items():
                by_count[len(indices) * num_samples].append(key)
            for count, plist in sorted(by_count.items()):
                per_call = len(plist) if self.batch_size is None else max(1, self.batch_size // count)
                for start in range(0, len(plist), per_call):
                    chunk = plist[start: start + per_call]
                    rollout = self._generate([p for p, _ in chunk], this_role, count, temperature,
                                             constraints=[c for _, c in chunk])
                    for key, group in zip(chunk, generations(rollout)):
                        for k, target in enumerate(prompts[key]):
                            out[target] = group[k * num_samples: (k + 1) * num_samples]
                    if on_batch is not None:
                        on_batch(sum(len(prompts[p]) for p in chunk))
        return out

    def rollout(self, observations: Sequence[str], *, num_samples: int = 1, temperature: float | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None):
        """Observations of ONE role in one generation call: the full :class:`agents.generation.Rollout`
        (token ids, masks, sampling log-probs); settings not given are the sampler's."""
        from agents.prompts import ROLES

        roles = {json.loads(obs).get("role") for obs in observations}
        if len(roles) != 1 or not roles <= set(ROLES):
            raise ValueError(f"rollout() needs observations of one known role, got roles {sorted(map(str, roles))}")
        role = roles.pop()
        return self._generate([self.prompt(obs, role) for obs in observations], role, num_samples,
                              self.temperature if temperature is None else temperature, top_p, generator,
                              constraints=[self.constraint(obs, role) for obs in observations])

    def _generate(self, prompts: Sequence[str], role: str, num_samples: int, temperature: float,
                  top_p: float | None = None, generator: torch.Generator | None = None,
                  constraints: Sequence[Any] | None = None):
        from agents.generation import generate
        from agents.lora import role_adapter, use_adapter

        constraints = constraints if constraints and any(c is not None for c in constraints) else None
        if self.engine is not None:
            return self.engine.generate(self.model, self.tokenizer, list(prompts), adapter=role_adapter(self.model, role),
                                        num_samples=num_samples, max_new_tokens=self.new_tokens(role),
                                        temperature=temperature, top_p=self.top_p if top_p is None else top_p,
                                        top_k=self.top_k, generator=self.generator if generator is None else generator,
                                        constraints=constraints)
        with use_adapter(self.model, role_adapter(self.model, role)):
            return generate(self.model, self.tokenizer, list(prompts), num_samples=num_samples,
                            max_new_tokens=self.new_tokens(role), temperature=temperature,
                            top_p=self.top_p if top_p is None else top_p, top_k=self.top_k,
                            generator=self.generator if generator is None else generator,
                            constraints=constraints)

    def generate(self, observations: Sequence[str], *, temperature: float | None = None) -> list[Generation]:
        """One generation per observation (the trainers' policy interface); ``temperature``
        overrides the sampler's for this call (0: greedy)."""
        if temperature is None or temperature == self.temperature:
            return [group[0] for group in self.sample(observations)]
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        own = self.temperature
        try:
            self.temperature = temperature
            return [group[0] for group in self.sample(observations, greedy=temperature == 0)]
        finally:
            self.temperature = own

    @torch.no_grad()
    def rescore(self, observations: Sequence[str], gens: Sequence[Generation]) -> list[Generation]:
        """The generations with their log-probs recomputed under the sampler's own temperature
        (e.g. rerolls decoded greedily or at another temperature, trained at this one)."""
        from agents.generation import left_pad, sequence_logprobs
        from agents.lora import role_adapter, use_adapter

        if len(observations) != len(gens):
            raise ValueError(f"{len(observations)} observations for {len(gens)} generations")
        out = list(gens)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        by_role: dict[str, list[int]] = defaultdict(list)
        for i, obs in enumerate(observations):
            by_role[observation_role(obs)].append(i)
        for role, rows in by_role.items():
            prompt_ids, prompt_mask = left_pad([gens[i].prompt_ids for i in rows], pad, device)
            longest = max(len(gens[i].completion_ids) for i in rows)
            completion_ids = torch.full((len(rows), longest), pad, dtype=torch.long, device=device)
            completion_mask = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
            for k, i in enumerate(rows):
                n = len(gens[i].completion_ids)
                completion_ids[k, :n] = torch.tensor(gens[i].completion_ids, device=device)
                completion_mask[k, :n] = 1
            token_masks = None
            if any(gens[i].constraint is not None for i in rows):
                from agents.constrained import replay_masks

                # the masks the grammar applied at each step, so the log-probs stay those of
                # the constrained distribution the training pass recomputes
                token_masks = replay_masks([gens[i].constraint for i in rows],
                                           [gens[i].completion_ids for i in rows], longest).to(device)
            with use_adapter(self.model, role_adapter(self.model, role)):
                logp = sequence_logprobs(self.model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                         temperature=self.temperature, token_masks=token_masks).float().cpu()
            for k, i in enumerate(rows):
                g = gens[i]
                out[i] = Generation(g.text, g.prompt_ids, g.completion_ids, logp[k, : len(g.completion_ids)].tolist(),
                                    g.constraint, g.truncated)
        return out
