"""Attention for CPU decoding: SDPA for prompts, two small matrix products for one new token.

On a CPU, torch's fused SDPA kernel spends about 4 ms per layer on a decode step of 64
sequences with SmolLM2-135M's shapes (one query token, 9 query heads over 3 key/value
heads, a boolean padding mask): 57% of the step, against under 1 ms for the same attention
written as ``softmax(q k^T) v`` with two batched matrix products. :func:`decode_attention`
is that: for a single query token it groups the query heads by their key/value head (no
copy of the cache per query head) and multiplies with the cache as it lies in memory
(``k q^T`` rather than ``q k^T``, which would copy the transposed cache every step); for
anything else (prompts, training: many query tokens) it is transformers' SDPA.

:func:`agents.backbone.load_backbone` gives it to pretrained models on the CPU under the
name :data:`CPU_ATTENTION` (measured with ``python -m benchmarks.compute_speed``: SmolLM2
decoding 64 samples at a time went from 246 to about 470 tok/s in bf16, and from 250 to
279 in fp32). Results differ from SDPA's only in float rounding. The tiny test model keeps
plain SDPA, so the committed tiny-model results stay reproducible to the last digit.
"""

from __future__ import annotations

import functools

import torch

CPU_ATTENTION = "memenv_cpu_decode"


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     is_causal=None, **kwargs):
    """A transformers attention function (``AttentionInterface``): query (B, H, Q, D), key
    and value (B, KV, L, D) with KV dividing H, attention_mask None, boolean (True: attend)
    or additive, broadcastable to (B, 1, Q, L); returns (B, Q, H, D) and no weights."""
    if query.shape[2] != 1 or dropout or kwargs.get("position_bias") is not None \
            or kwargs.get("output_attentions") or kwargs.get("softcap") is not None:
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


@functools.lru_cache(maxsize=None)
def register() -> str:
    """Register :func:`decode_attention` (and SDPA's mask builder) with transformers under
    :data:`CPU_ATTENTION`, once; returns the name for ``attn_implementation``."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, decode_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION
