"""Attention for CPU inference: SDPA where it is fastest, cheaper forms where it is not.

On a CPU, torch's fused SDPA kernel spends about 4 ms per layer on a decode step of 64
sequences with SmolLM2-135M's shapes (one query token, 9 query heads over 3 key/value
heads, a boolean padding mask): 57% of the step, against under 1 ms for the same attention
written as ``softmax(q k^T) v`` with two batched matrix products. :func:`cpu_attention`
does that: for a single query token it groups the query heads by their key/value head (no
copy of the cache per query head) and multiplies with the cache as it lies in memory
(``k q^T`` rather than ``q k^T``, which would copy the transposed cache every step).

Long left-padded prompts (LoCoMo answers read about 2,000 tokens) pay another way: with a
padding mask SDPA cannot use its causal kernel, so it computes every query against every
key. Without gradients and from :data:`LONG_PROMPT` tokens on, each sequence's own tokens
instead go through SDPA's causal kernel one sequence at a time (8 x 2,046 tokens: 624
against 1,177 ms per layer); shorter prompts, and anything that needs gradients, stay one
masked SDPA call, which measured faster there (16 x 500 tokens: 168 against 193 ms, and
548 against 975 ms with the backward pass).

Short keys pay a third way: the fused kernel's fixed costs dominate below a few hundred keys,
above all in its backward pass. Up to :data:`SHORT_KEYS` keys, a masked prompt or prompt +
completion pass (the trainers' log-prob and training passes: prompts of about 100-250
tokens) is written as ``softmax(q k^T) v`` too, with the query heads of one key/value head
stacked into one product. Measured on 2 AMD EPYC cores in bf16, SmolLM2's shapes, forward and
backward: 8 x 133 tokens 25.6 against 11.3 ms, 32 x 150 104 against 43 ms, 64 completion
tokens over 200 keys 37.5 against 18.0 ms; at 300 keys both are even and at 512 SDPA is 2.3x
faster, so longer keys stay with SDPA.

:func:`agents.backbone.load_backbone` gives it to pretrained models on the CPU under the
name :data:`CPU_ATTENTION` (measured with ``python -m benchmarks.compute_speed``: SmolLM2
decoding 64 samples at a time went from 246 to about 470 tok/s in bf16, and from 250 to
279 in fp32). Results differ from SDPA's only in float rounding. The tiny test model keeps
plain SDPA, so the committed tiny-model results stay reproducible to the last digit.
"""

from __future__ import annotations

import functools

import torch

CPU_ATTENTION = "memenv_cpu"
LONG_PROMPT = 1024  # tokens from which a padded, gradient-free prompt is attended one sequence at a time
SHORT_KEYS = 256  # keys up to which a many-token query is attended by two matrix products


def cpu_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                  is_causal=None, **kwargs):
    """A transformers attention function (``AttentionInterface``): a single query token, and
    many over at most :data:`SHORT_KEYS` keys, by two batched products, long padded
    gradient-free prompts one sequence at a time, the rest by SDPA. Query (B, H, Q, D), key and
    value (B, KV, L, D) with KV dividing H, attention_mask None, boolean (True: attend) or
    additive, broadcastable to (B, 1, Q, L); returns (B, Q, H, D) and no weights."""
    plain = not dropout and all(kwargs.get(name) is None for name in
                                ("position_bias", "softcap", "sliding_window")) and not kwargs.get("output_attentions")
    if plain and query.shape[2] > 1:
        rows = _padded_rows(query, key, attention_mask)
        if rows is not None:
            return _attend_rows(query, key, value, rows, scaling), None
        if key.shape[2] <= SHORT_KEYS and _short_mask_applies(query, key, attention_mask):
            causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
            return _attend_short(query, key, value, attention_mask, scaling, causal), None
    if not plain or query.shape[2] != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # (B, KV, G, D), G query heads per kv head
    scores = torch.matmul(key, grouped.transpose(-1, -2)).float()  # (B, KV, L, G)
    scores.mul_(scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:
        mask = attention_mask[..., -1:, :].transpose(-1, -2)  # (B or 1, 1, L, 1)
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))
        else:
            scores.add_(mask)
    probs = scores.softmax(dim=-2).to(value.dtype)
    out = torch.matmul(probs.transpose(-1, -2), value)  # (B, KV, G, D)
    return out.reshape(batch, 1, heads, dim), None


def _padded_rows(query, key, attention_mask) -> list[tuple[int, int]] | None:
    """Each sequence's span of real tokens ``(start, end)`` when the long-prompt path applies:
    no gradients, a prompt of at least :data:`LONG_PROMPT` tokens without a cache before it,
    and a boolean causal mask whose padding leaves one contiguous span per sequence (left
    padding, right padding or both); None otherwise."""
    length = query.shape[2]
    if length < LONG_PROMPT or key.shape[2] != length or attention_mask is None \
            or attention_mask.dtype != torch.bool or attention_mask.shape[-2] != length \
            or (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)):
        return None
    # transformers builds a decoder's mask as causal & padding; the last query sees every
    # real token, so its row is the padding mask
    real = attention_mask[:, 0, -1, :].expand(query.shape[0], length)
    starts = real.int().argmax(-1, keepdim=True)  # (B, 1) first real token (0 for a row without any)
    ends = starts + real.sum(-1, keepdim=True)
    positions = torch.arange(length, device=real.device)
    if not torch.equal(real, (positions >= starts) & (positions < ends)):
        return None  # holes inside a sequence: not a padding mask this path understands
    return [(int(a), int(c)) for a, c in zip(starts.flatten(), ends.flatten())]


def _attend_rows(query, key, value, rows, scaling):
    """Causal SDPA over each sequence's real tokens alone; (B, L, H, D), zeros at padding."""
    from torch.nn.functional import scaled_dot_product_attention

    out = query.new_zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3])
    gqa = query.shape[1] != key.shape[1]
    for row, (start, end) in enumerate(rows):
        if end > start:
            span = slice(start, end)
            attended = scaled_dot_product_attention(query[row:row + 1, :, span], key[row:row + 1, :, span],
                                                    value[row:row + 1, :, span], is_causal=True, scale=scaling,
                                                    enable_gqa=gqa)
            out[row, span] = attended[0].transpose(0, 1)
    return out


def _short_mask_applies(query, key, attention_mask) -> bool:
    """Whether :func:`_attend_short` reads this mask as SDPA does: a boolean (B or 1, 1, Q, L)
    mask, or none over as many keys as queries (SDPA's causal flag, which aligns the diagonal
    top-left: the same only for a square)."""
    if attention_mask is None:
        return query.shape[2] == key.shape[2]
    return attention_mask.dtype == torch.bool and attention_mask.dim() == 4 and attention_mask.shape[1] == 1


def _attend_short(query, key, value, attention_mask, scaling, causal: bool):
    """``softmax(q k^T) v`` with float32 scores, the G query heads of each key/value head stacked
    into one product; (B, Q, H, D). ``attention_mask``: boolean (B or 1, 1, Q, L), True
    where a query attends, or None (then causal when ``causal``). A query that sees no key
    (left padding) gets a uniform average of the values where SDPA gives zeros: no real
    token reads it, so its gradient is zero as well."""
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    grouped = query.reshape(batch, kv_heads, groups * q_len, dim)  # (B, KV, G*Q, D)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float()  # (B, KV, G*Q, L)
    scores = scores.mul(scaling if scaling is not None else dim ** -0.5).view(batch, kv_heads, groups, q_len, k_len)
    if attention_mask is None and causal:
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        if attention_mask.dim() == 4:
            attention_mask = attention_mask[:, :, None]  # (B or 1, 1, 1, Q, L)
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1).to(value.dtype).view(batch, kv_heads, groups * q_len, k_len)
    out = torch.matmul(probs, value)  # (B, KV, G*Q, D)
    return out.view(batch, heads, q_len, dim).transpose(1, 2)


@functools.lru_cache(maxsize=None)
def register() -> str:
    """Register :func:`cpu_attention` (and SDPA's mask builder) with transformers under
    :data:`CPU_ATTENTION`, once; returns the name for ``attn_implementation``."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, cpu_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION
