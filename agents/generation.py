"""Batched sampling with per-token log-probs, and their recomputation for training.

``generate`` is a hand-written decoding loop (forward with KV cache, logits processing,
sample, append) rather than ``model.generate``, so that the log-probs and masks it returns
are exactly the ones the trainer recomputes with :func:`sequence_logprobs`.

Which distribution the log-probs refer to: at temperature ``tau > 0`` a token is sampled
from softmax(logits / tau) restricted by top-k / top-p, but its recorded log-prob is
log softmax(logits / tau) -- the temperature-scaled distribution WITHOUT the top-k / top-p
truncation (as TRL does). That is the distribution ``sequence_logprobs(temperature=tau)``
recomputes, so importance ratios in PPO are exactly 1 on the first epoch. Greedy decoding
(``temperature=0``) records log softmax(logits), the untempered distribution.

With a grammar per prompt (``constraints``, :mod:`agents.constrained`) tokens outside the
grammar's mask get -inf logits before both the draw and the recorded log-prob, so the
log-probs are those of the masked, renormalised distribution; :func:`sequence_logprobs`
recomputes them given the same masks (``token_masks``, replayed from the grammar).

Shapes: B prompts, n samples per prompt, N = B * n sequences, P the padded prompt length,
T the longest completion. Sample ``i`` belongs to prompt ``i // n`` (``prompt_index``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.backbone import mixed_precision
from agents.lora import use_adapter

GREEDY = 0.0


@dataclass
class Rollout:
    """The result of :func:`generate` (all tensors on the model's device).

    Attributes:
        prompt_ids: (B, P) prompt tokens, left-padded with the pad id.
        prompt_mask: (B, P) 1 on real prompt tokens, 0 on padding.
        completion_ids: (N, T) sampled tokens, right-padded with the pad id after the
            stop token (or after ``max_new_tokens``).
        completion_mask: (N, T) 1 up to and including the stop token, 0 after it.
        logprobs: (N, T) log-prob of each sampled token under log softmax(logits /
            temperature) (see the module docstring); 0 where the mask is 0.
        texts: N decoded completions, special tokens (the stop token) removed.
        prompt_index: (N,) index of each sample's prompt (``i // num_samples``).
        num_samples: samples per prompt (n).
        temperature: the temperature the log-probs refer to (1.0 for greedy decoding).
        constraints: N grammars the samples were drawn under (None: unconstrained), see
            :mod:`agents.constrained`; ``logprobs`` are then under the masked distribution.
        finished: (N,) True where the sample ended with a stop token, False where it was
            cut off at ``max_new_tokens`` (truncated).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logprobs: torch.Tensor
    texts: list[str]
    prompt_index: torch.Tensor
    num_samples: int
    temperature: float
    constraints: list | None = None
    finished: torch.Tensor | None = None

    def sample_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids and mask repeated per sample: two (N, P) tensors."""
        return self.prompt_ids[self.prompt_index], self.prompt_mask[self.prompt_index]


def encode_prompts(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Token ids of fully rendered prompts (no special tokens added: the chat template has them)."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of strings or of token-id lists, got {prompts!r:.80}")
    if all(isinstance(p, str) for p in prompts):
        encoded = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    elif all(isinstance(p, Sequence) and not isinstance(p, str) for p in prompts):
        encoded = [[int(t) for t in p] for p in prompts]
    else:
        raise TypeError("prompts must be all strings or all token-id lists")
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"prompts {empty} are empty")
    return encoded


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists to one length: (ids, mask), both (B, P) long tensors."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, length - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, length - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only real tokens, so left padding does not shift positions."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / top-p (nucleus) set to -inf; (N, V) -> (N, V).

    The most likely token always survives, so the result is never all -inf.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass strictly before it already reaches top_p.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@functools.lru_cache(maxsize=None)
def _cache_keyword_of(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_keyword(model) -> str:
    """The ``forward`` keyword that takes the KV cache: ``cache`` in newer transformers (where
    ``past_key_values`` is deprecated, to be removed in 5.40), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_keyword_of(type(base))


def returned_cache(output):
    """The KV cache a forward pass returned, under either transformers naming."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@functools.lru_cache(maxsize=None)
def _preallocated_layer_class():
    """A transformers ``DynamicLayer`` whose keys and values live in buffers sized for the
    whole decode, so each step writes one position in place instead of concatenating (and so
    copying) the whole cache: O(T) per sequence instead of O(T^2) bytes moved. ``None`` for
    transformers versions without cache layers."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class PreallocatedLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            start, end = self.length, self.length + key_states.shape[-2]
            if end > self.key_buffer.shape[-2]:  # past the planned size: grow by doubling
                self._allocate(2 * end)
            self.key_buffer[..., start:end, :] = key_states
            self.value_buffer[..., start:end, :] = value_states
            self.length = end
            self.keys, self.values = self.key_buffer[..., :end, :], self.value_buffer[..., :end, :]
            return self.keys, self.values

        def _allocate(self, capacity: int) -> None:
            shape = (*self.keys.shape[:-2], capacity, self.keys.shape[-1])
            keys, values = self.keys.new_empty(shape), self.values.new_empty(shape)
            keys[..., : self.length, :] = self.keys
            values[..., : self.length, :] = self.values
            self.key_buffer, self.value_buffer = keys, values

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise RuntimeError("a preallocated cache cannot change its batch; repeat before preallocating")

        batch_select_indices = batch_repeat_interleave

    return PreallocatedLayer


def preallocate_cache(cache, extra_tokens: int) -> bool:
    """Turn a filled ``DynamicCache``'s layers into :func:`_preallocated_layer_class` layers with
    room for ``extra_tokens`` more positions; False (cache unchanged) where transformers'
    cache has no such layers."""
    layer_class = _preallocated_layer_class()
    layers = getattr(cache, "layers", None)
    if layer_class is None or not layers or any(type(layer).__name__ != "DynamicLayer" or not layer.is_initialized
                                                 for layer in layers):
        return False
    for layer in layers:
        layer.__class__ = layer_class
        layer.length = layer.keys.shape[-2]
        layer._allocate(layer.length + extra_tokens)
    return True


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has neither a pad token nor an eos token")
    return int(pad)


def default_stop_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos id plus the model's generation-config eos id(s)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids.update(int(i) for i in (config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]))
    return sorted(ids)


def _check_sampling(num_samples: int, max_new_tokens: int, temperature: float, top_p: float, top_k: int) -> None:
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")


def _next_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row from (N, V) float logits; return (tokens (N,), log-probs (N,))."""
    if temperature == GREEDY:
        tokens = logits.argmax(-1)
        logp = logits.log_softmax(-1)
    else:
        scaled = logits if temperature == 1.0 else logits / temperature
        logp = scaled.log_softmax(-1)
        if top_k > 0 or top_p < 1.0 or logits.shape[-1] < INVERSE_CDF_MIN_VOCAB:
            probs = filter_logits(scaled, top_k=top_k, top_p=top_p).softmax(-1)
        else:  # the same distribution without a second pass over a large vocabulary
            probs = logp.exp()
        tokens = sample_categorical(probs, generator)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


# Above this vocabulary, sample by the inverse of the cumulative distribution: on a CPU
# torch.multinomial took 83 ms per step for 64 rows of SmolLM2's 49,152 tokens, a third of a
# bf16 decode step; below it multinomial is as fast (and the tiny test model keeps its draws).
INVERSE_CDF_MIN_VOCAB = 4096


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of (N, V) probabilities (rows sum to 1): an exact categorical draw."""
    if probs.shape[-1] < INVERSE_CDF_MIN_VOCAB:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    cdf = probs.cumsum(-1)  # (N, V); fp32 rounding moves at most ~1e-6 of mass between neighbours
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=cdf.dtype, device=probs.device) * cdf[:, -1:]
    # (N,) first index whose cumulative mass exceeds u: never a token of probability 0 (a
    # grammar's masked tokens), which right=False would pick when u is exactly 0
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    overflow = tokens >= probs.shape[-1]  # u rounded up to the total mass (rare)
    return torch.where(overflow, probs.argmax(-1), tokens) if bool(overflow.any()) else tokens


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    share_prompt: bool = True,
    constraints: Sequence | None = None,
) -> Rollout:
    """Sample ``num_samples`` completions for each prompt, batched, with their log-probs.

    ``prompts`` are fully rendered prompt strings (encoded without adding special tokens)
    or token-id lists. ``temperature=0`` is greedy. Decoding of a sequence stops at the
    first token in ``stop_token_ids`` (default: :func:`default_stop_ids`) and the whole
    batch stops when every sequence has stopped or after ``max_new_tokens``. Randomness
    comes from ``generator``, else a fresh one seeded with ``seed``, else torch's global RNG.

    With ``share_prompt`` (default) each prompt is run through the model once and its KV
    cache is repeated ``num_samples`` times for decoding; ``share_prompt=False`` repeats
    the prompts instead (the naive path, same results up to float noise). The model's
    train/eval mode is left as it is (use eval mode, or no dropout, for exact log-probs).
    """
    _check_sampling(num_samples, max_new_tokens, temperature, top_p, top_k)
    if generator is not None and seed is not None:
        raise ValueError("give seed or generator, not both")
    device = next(model.parameters()).device
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    pad_id = _pad_id(tokenizer)
    stop_ids = torch.as_tensor(
        list(stop_token_ids) if stop_token_ids is not None else default_stop_ids(model, tokenizer),
        dtype=torch.long,
        device=device,
    )

    prompt_ids, prompt_mask = left_pad(encode_prompts(tokenizer, prompts), pad_id, device)
    n = num_samples
    sample_constraints = None
    if constraints is not None:
        if len(constraints) != len(prompt_ids):
            raise ValueError(f"one constraint per prompt needed: {len(constraints)} for {len(prompt_ids)} prompts")
        bound = [c.bind(tokenizer, stop_ids.tolist()) if c is not None else None for c in constraints]
        sample_constraints = [c for c in bound for _ in range(n)]
    decoder = None
    if sample_constraints is not None and any(c is not None for c in sample_constraints):
        from agents.constrained import ConstrainedDecoder

        decoder = ConstrainedDecoder(sample_constraints, tokenizer, stop_ids.tolist())
    with mixed_precision(model):
        completion_ids, completion_mask, logprobs, finished = _decode(
            model, prompt_ids, prompt_mask, n, share_prompt, max_new_tokens, decoder,
            (temperature, top_p, top_k, generator), stop_ids, pad_id)
    texts = tokenizer.batch_decode(
        [ids[m.bool()].tolist() for ids, m in zip(completion_ids, completion_mask)], skip_special_tokens=True
    )
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        logprobs=logprobs,
        texts=list(texts),
        prompt_index=torch.arange(len(prompt_ids), device=device).repeat_interleave(n),
        num_samples=n,
        temperature=1.0 if temperature == GREEDY else float(temperature),
        constraints=sample_constraints,
        finished=finished,
    )


def _decode(model, prompt_ids, prompt_mask, n, share_prompt, max_new_tokens, decoder, sampling, stop_ids, pad_id):
    """The decoding loop of :func:`generate`: (N, T) completion ids, their mask and log-probs,
    and (N,) whether each sequence reached a stop token."""
    temperature, top_p, top_k, generator = sampling
    device = prompt_ids.device
    if share_prompt or n == 1:
        out = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions_from_mask(prompt_mask),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = returned_cache(out)
        logits = out.logits[:, -1].float()
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)
    else:
        out = model(
            input_ids=prompt_ids.repeat_interleave(n, dim=0),
            attention_mask=prompt_mask.repeat_interleave(n, dim=0),
            position_ids=positions_from_mask(prompt_mask).repeat_interleave(n, dim=0),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = returned_cache(out)
        logits = out.logits[:, -1].float()
    preallocate_cache(cache, max_new_tokens)
    mask = prompt_mask.repeat_interleave(n, dim=0)  # (N, P + t)
    next_position = mask.sum(-1, keepdim=True)  # (N, 1) position of the first new token
    num_seqs = mask.shape[0]

    cache_kw = cache_keyword(model)
    finished = torch.zeros(num_seqs, dtype=torch.bool, device=device)
    tokens, logprobs, valid = [], [], []
    for step in range(max_new_tokens):
        if decoder is not None:
            logits = decoder.mask(logits, finished)
        token, logp = _next_tokens(logits, temperature, top_p, top_k, generator)
        token = token.masked_fill(finished, pad_id)
        if decoder is not None:
            decoder.advance(token, finished)
        valid.append(~finished)
        logprobs.append(logp.masked_fill(finished, 0.0))
        tokens.append(token)
        finished = finished | torch.isin(token, stop_ids)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(num_seqs, 1)], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_position + step,
            use_cache=True,
            **{cache_kw: cache},
        )
        logits = out.logits[:, -1].float()

    return torch.stack(tokens, dim=1), torch.stack(valid, dim=1).long(), torch.stack(logprobs, dim=1), finished


def logits_to_logprobs(
    logits: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor, *, with_entropy: bool,
    token_masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, T) of the completion tokens under (N, T, V) float logits (already divided
    by the temperature), and with ``with_entropy`` the entropy (N, T); 0 where masked.

    ``token_masks``: (N, T, W) int32 grammar bitmasks (:func:`agents.constrained.replay_masks`);
    the distribution is then the one renormalised over each step's allowed tokens.
    """
    allowed = None
    if token_masks is not None:
        from agents.constrained import unpack_bitmask

        allowed = unpack_bitmask(token_masks.to(logits.device), logits.shape[-1])  # (N, T, V)
        logits = logits.masked_fill(~allowed, float("-inf"))
    # Large vocabularies: one fused log-softmax + pick (cross-entropy; the fastest of log-sum-exp,
    # log_softmax + gather and cross-entropy over (N, T, vocab) on CPU, forward and backward), or
    # one log_softmax shared with the entropy. Small ones (the tiny test model) keep log-sum-exp,
    # whose last-bit rounding the committed tiny-model results were made with.
    large = logits.shape[-1] >= INVERSE_CDF_MIN_VOCAB
    if large and not with_entropy:
        flat = torch.nn.functional.cross_entropy(logits.flatten(0, 1), completion_ids.flatten(), reduction="none")
        return -flat.view_as(completion_ids) * completion_mask, None
    if large:
        logp = logits.log_softmax(-1)
        logprobs = logp.gather(-1, completion_ids[..., None]).squeeze(-1) * completion_mask  # (N, T)
    else:
        chosen = logits.gather(-1, completion_ids[..., None]).squeeze(-1)  # (N, T)
        logprobs = (chosen - torch.logsumexp(logits, dim=-1)) * completion_mask
        if not with_entropy:
            return logprobs, None
        logp = logits.log_softmax(-1)
    probs = logp.exp()
    if allowed is not None:
        logp = logp.masked_fill(~allowed, 0.0)  # masked tokens: p = 0, and 0 * -inf is NaN (also in backward)
    entropy = -(probs * logp).sum(-1) * completion_mask  # (N, T)
    return logprobs, entropy


def _chunk_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    token_masks: torch.Tensor | None = None,
    share_prompts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    shared = shared_prompt_rows(prompt_ids, prompt_mask) if share_prompts else None
    if shared is None:
        logits, _ = completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature)
    else:
        logits = shared_prompt_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature,
                                      *shared)
    return logits_to_logprobs(logits, completion_ids, completion_mask, with_entropy=with_entropy,
                              token_masks=token_masks)


def completion_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                      completion_mask: torch.Tensor, temperature: float, **forward_options):
    """One forward pass over prompt + completion (mixed precision where the model has it):
    the fp32 logits (b, T, V) that predict the completion tokens, divided by ``temperature``,
    and the model's output (e.g. its hidden states, with ``output_hidden_states=True``)."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (b, P + T)
    mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    with mixed_precision(model):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                    logits_to_keep=completion_positions(prompt_ids.shape[1], completion_ids.shape[1], ids.device),
                    **forward_options)
    return scaled_logits(out.logits, temperature), out


def shared_prompt_rows(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows that repeat a prompt: ``(first, inverse)`` with ``first`` (U,) the first row of each
    distinct prompt and ``inverse`` (N,) each row's index into ``first``; None when all N differ."""
    key = prompt_ids.masked_fill(prompt_mask == 0, -1)  # padding never equals a token
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
    if distinct.shape[0] == key.shape[0]:
        return None
    rows = torch.arange(key.shape[0], device=key.device)
    first = torch.full((distinct.shape[0],), key.shape[0], dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def shared_prompt_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                         completion_mask: torch.Tensor, temperature: float, first: torch.Tensor,
                         inverse: torch.Tensor) -> torch.Tensor:
    """:func:`completion_logits` computing each distinct prompt once (:func:`shared_prompt_rows`).

    The distinct prompts go through the model with a KV cache; the cache's rows are then
    repeated for the completions, which attend to them in a second pass. Gradients flow back
    through the repeated cache into the prompt pass, so the log-probs and their gradients are
    those of the full pass up to rounding (a group of G samples of one prompt costs one prompt
    and G completions instead of G prompts and G completions).
    """
    prompt_ids, prompt_mask = prompt_ids[first], prompt_mask[first]
    start = int((prompt_mask.sum(0) == 0).sum())  # left-padding columns no distinct prompt uses
    prompt_ids, prompt_mask = prompt_ids[:, start:], prompt_mask[:, start:]
    num_new = completion_ids.shape[1]
    with mixed_precision(model):
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions_from_mask(prompt_mask),
                    use_cache=True, logits_to_keep=1)
        last = out.logits[:, -1:][inverse]  # (N, 1, V): predicts completion token 0
        if num_new == 1:
            return scaled_logits(last, temperature)
        cache = returned_cache(out)
        cache.batch_select_indices(inverse)
        mask = torch.cat([prompt_mask[inverse], completion_mask.to(prompt_mask.dtype)], dim=1)  # (N, P + T)
        rest = model(input_ids=completion_ids, attention_mask=mask,
                     position_ids=positions_from_mask(mask)[:, prompt_mask.shape[1]:], use_cache=True,
                     logits_to_keep=torch.arange(num_new - 1, device=completion_ids.device),
                     **{cache_keyword(model): cache})
    return scaled_logits(torch.cat([last, rest.logits], dim=1), temperature)


def completion_positions(prompt_len: int, num_new: int, device=None) -> torch.Tensor:
    """``logits_to_keep`` for a forward pass over prompt + completion: the positions
    P-1 .. P+T-2, whose logits predict completion tokens 0 .. T-1.

    A tensor, not the int ``T + 1``: transformers slices the hidden states with it, and an int
    gives a non-contiguous slice that ``lm_head`` multiplies through an expanded copy of its
    (vocab x hidden) weight per sequence (on CPU, 5 s of a 16 s SmolLM2 training step); an
    index tensor gives a contiguous gather and one matrix product.
    """
    return torch.arange(prompt_len - 1, prompt_len + num_new - 1, device=device)


def scaled_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Float32 logits divided by the sampling temperature (no division, no copy at 1)."""
    logits = logits.float()
    return logits if temperature in (0, 1) else logits / temperature


def sequence_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    return_entropy: bool = False,
    token_masks: torch.Tensor | None = None,
    share_prompts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (N, T) of completions under the model as it is now (with grad).

    ``prompt_ids``/``prompt_mask`` are (N, P) left-padded (``Rollout.sample_prompts()``),
    ``completion_ids``/``completion_mask`` (N, T) right-padded. The distribution is
    log softmax(logits / temperature) (temperature 0 means 1, as for greedy rollouts).
    Masked positions hold 0. ``chunk_size`` bounds how many sequences go through the
    model at once (the (rows, T, vocab) logits are the memory peak). With
    ``return_entropy`` also returns the (N, T) entropy of that distribution (0 where masked).
    ``token_masks``: (N, T, W) grammar bitmasks of constrained samples
    (:func:`agents.constrained.replay_masks`): the distribution is then renormalised over
    each step's allowed tokens, as the sampler drew from it. With ``share_prompts`` each
    distinct prompt of a chunk goes through the model once (:func:`shared_prompt_logits`): the
    same log-probs up to rounding, for less compute where rows repeat a prompt (a group's
    samples of one state).
    """
    if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != completion_mask.shape:
        raise ValueError(
            f"ids and masks must match: prompt {tuple(prompt_ids.shape)} vs {tuple(prompt_mask.shape)}, "
            f"completion {tuple(completion_ids.shape)} vs {tuple(completion_mask.shape)}"
        )
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"one prompt row per completion needed: {prompt_ids.shape[0]} vs {completion_ids.shape[0]} "
            "(use Rollout.sample_prompts())"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    tau = 1.0 if temperature <= GREEDY else float(temperature)
    rows = prompt_ids.shape[0]
    step = chunk_size or rows
    parts = [
        _chunk_logprobs(
            model,
            prompt_ids[i : i + step],
            prompt_mask[i : i + step],
            completion_ids[i : i + step],
            completion_mask[i : i + step],
            tau,
            return_entropy,
            None if token_masks is None else token_masks[i : i + step],
            share_prompts,
        )
        for i in range(0, rows, step)
    ]
    logprobs = torch.cat([p[0] for p in parts], dim=0)
    if return_entropy:
        return logprobs, torch.cat([p[1] for p in parts], dim=0)
    return logprobs


@torch.no_grad()
def reference_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    token_masks: torch.Tensor | None = None,
    share_prompts: bool = False,
) -> torch.Tensor:
    """:func:`sequence_logprobs` under the reference policy: adapters disabled, no grad (with
    ``token_masks``, under the same grammar masks as the policy)."""
    with use_adapter(model, None):
        return sequence_logprobs(
            model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            temperature=temperature,
            chunk_size=chunk_size,
            token_masks=token_masks,
            share_prompts=share_prompts,
        )
