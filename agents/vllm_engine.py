"""vLLM as the rollout engine: vLLM samples, the trainer scores.

The default engine is the library's own transformers decode loop
(:func:`agents.generation.generate`): on one CPU it is as fast as vLLM, and it is the only one
every install has. On a GPU with a 3B-7B model, vLLM's continuous batching and paged KV cache
are several times faster, and rollouts are most of an update. :class:`VLLMEngine` plugs vLLM
in behind :class:`agents.sampler.RoleSampler` (``RoleSampler(..., engine=VLLMEngine(...))``,
or ``--rollout-engine vllm`` on the trainers and ``?engine=vllm`` on an ``llm:`` agent spec):

* it serves the backbone from its Hugging Face directory (the library's converted SmolLM2
  cache for ``smollm2-135m``);
* before each generation call it checks whether the role's LoRA adapter changed since it was
  last loaded (every in-place optimizer step bumps the parameters' version counters); if so
  the adapter is saved in PEFT format under a new name, served under that name, and the prefix
  cache is reset (a reused name would serve a stale cache). A role without an adapter (the
  frozen answerer) is served by the bare backbone;
* prompts go in as token ids, ``n`` samples per prompt, under the same per-observation grammar
  as the ``hf`` engine (:mod:`agents.constrained`'s llguidance lark grammars, through vLLM's
  ``guidance`` structured-output backend);
* only the sampled token ids are kept. The log-probs are recomputed by the trainer's own
  model with its masked log-softmax (the grammar's masks replayed, as
  :meth:`agents.sampler.RoleSampler.rescore` does), so PPO ratios and KL terms see exactly the
  numbers the ``hf`` engine would give. vLLM's own log-probs of the sampled tokens are compared
  with those: :meth:`VLLMEngine.pop_stats` gives the mean and max absolute difference (the
  *sampler gap*), which the trainers log per update as ``charts/sampler_gap_mean`` / ``_max``.

Install it into its own virtualenv (``requirements-vllm.lock``; see docs/agents.md). On CPU the
engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, no ``__main__`` guard
needed) on every core (``VLLM_CPU_OMP_THREADS_BIND``), which :func:`cpu_defaults` sets when
unset.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ENGINES = ("hf", "vllm")
_ENGINES: dict[tuple, "VLLMEngine"] = {}


def check_engine(name: str) -> str:
    """``name`` when it is a rollout engine, else a one-line ``ValueError``."""
    if name not in ENGINES:
        raise ValueError(f"rollout engine must be one of {', '.join(ENGINES)}, got {name!r}")
    return name


def vllm_installed() -> bool:
    """Whether vLLM is importable in this environment (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm():
    """The ``vllm`` module, or a one-line ``ImportError`` saying how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError("the vllm rollout engine needs vLLM in this virtualenv: "
                          "pip install --no-deps -r requirements-vllm.lock -e . "
                          f"(a separate virtualenv; see docs/agents.md) [{err}]") from None
    return vllm


def cpu_defaults() -> None:
    """vLLM's CPU settings this library runs with, unless already set: the engine in this
    process, its OpenMP threads on every core (the default keeps one core for the scheduler,
    which halves decode on two cores), a KV cache of a few GiB."""
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def model_dir(name_or_path: str) -> Path:
    """The Hugging Face directory vLLM serves for a backbone name (alias, directory or .gguf)."""
    from agents import backbone as B

    if name_or_path == B.TINY_ALIAS:
        raise ValueError("the vLLM engine serves models from a directory; the tiny test model lives in memory "
                         "(and its 16-wide attention heads are below vLLM's smallest kernel): use smollm2-135m")
    if name_or_path == B.SMOLLM2_ALIAS:
        path = B.cache_root() / "models" / B.SMOLLM2_ALIAS
        return path if (path / "config.json").is_file() else B._cached_gguf_dir(B.smollm2_gguf_path(), B.SMOLLM2_ALIAS)
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return B._cached_gguf_dir(path, B._gguf_cache_name(path))
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"no model directory for {name_or_path!r} (the vLLM engine needs a Hugging Face directory)")


def check_rollout_engine(engine: str, model_name: str) -> None:
    """Before a trainer writes anything: with ``engine == "vllm"``, vLLM importable and a model
    directory it can serve (one-line errors otherwise); nothing for ``"hf"``."""
    if check_engine(engine) == "vllm":
        require_vllm()
        model_dir(model_name)


def attach(sampler, engine: str, model_name: str, *, max_lora_rank: int, max_model_len: int) -> None:
    """Serve ``sampler``'s rollouts through the process's vLLM engine when ``engine == "vllm"``."""
    if check_engine(engine) == "vllm":
        sampler.engine = VLLMEngine.shared(model_name, max_lora_rank=max_lora_rank, max_model_len=max_model_len)


def engine_stats(sampler) -> dict[str, float]:
    """The sampler gap and adapter loads since the last call ({} for the hf engine)."""
    engine = getattr(sampler, "engine", None)
    return engine.pop_stats() if engine is not None else {}


def lora_rank(model) -> int:
    """The largest LoRA rank among ``model``'s adapters (0 for a bare backbone)."""
    configs = getattr(model, "peft_config", {}) or {}
    return max((int(getattr(c, "r", 0) or 0) for c in configs.values()), default=0)


def adapter_version(model, adapter: str | None) -> tuple:
    """A key that changes whenever the adapter's weights are written in place."""
    if adapter is None:
        return ()
    from agents.lora import adapter_parameters

    return tuple((id(p), p._version) for p in adapter_parameters(model, adapter))


class VLLMEngine:
    """One vLLM engine serving one backbone and the trainer's current LoRA adapters.

    Args:
        model_name: a backbone name as :func:`agents.backbone.load_backbone` takes it.
        dtype: ``"bfloat16"`` (default) or ``"float32"``.
        max_lora_rank: the largest adapter rank it can serve.
        max_model_len: prompt + completion tokens per sequence.
        seed: the engine's seed (each request also gets its own, drawn from the caller's
            generator, so a seeded run repeats).
        **engine_kwargs: passed on to ``vllm.LLM``.

    Use :meth:`shared` to get one engine per process and settings (vLLM engines are heavy).
    In process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the CPU default here) two engines can
    serve side by side, but one that is dropped tears down vLLM's process-wide parallel state,
    and every other engine then fails with "pipeline model parallel group is not initialized";
    :meth:`shared` keeps every engine it builds alive for the process, so build them through it.
    """

    def __init__(self, model_name: str, *, dtype: str = "bfloat16", max_lora_rank: int = 16,
                 max_model_len: int = 4096, seed: int = 0, **engine_kwargs: Any) -> None:
        require_vllm()
        cpu_defaults()
        from vllm import LLM

        self.path = model_dir(model_name)
        options = dict(dtype=dtype, enable_lora=True, max_lora_rank=max_lora_rank, max_model_len=max_model_len,
                       structured_outputs_config={"backend": "guidance"}, seed=seed, enable_prefix_caching=True,
                       logprobs_mode="processed_logprobs")
        options.update(engine_kwargs)
        self.llm = LLM(model=str(self.path), **options)
        self._adapters: dict[str, tuple[tuple, Any]] = {}  # adapter -> (version key, LoRARequest)
        self._next_id = 1
        self._dir = tempfile.TemporaryDirectory(prefix="memenv-vllm-")
        self._gap_sum = 0.0
        self._gap_max = 0.0
        self._gap_tokens = 0
        self.adapter_loads = 0

    @classmethod
    def shared(cls, model_name: str, **kwargs: Any) -> "VLLMEngine":
        """The process's engine for these settings, built on first use; an engine already built
        with a rank and sequence length at least these (and the other settings equal) is reused."""
        rank, length = kwargs.pop("max_lora_rank", 16), kwargs.pop("max_model_len", 4096)
        rest = (model_name, tuple(sorted(kwargs.items())))
        for (name, others, have_rank, have_length), engine in _ENGINES.items():
            if (name, others) == rest and have_rank >= rank and have_length >= length:
                return engine  # one engine serves every request it has room for
        engine = cls(model_name, max_lora_rank=rank, max_model_len=length, **kwargs)
        _ENGINES[(*rest, rank, length)] = engine
        return engine

    # ------------------------------------------------------------------ adapters
    def lora_request(self, model, adapter: str | None):
        """The LoRA request serving ``adapter``'s current weights (None: the bare backbone);
        a changed adapter is saved and served under a new name, the prefix cache reset."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        from agents.lora import save_adapter

        version = adapter_version(model, adapter)
        known = self._adapters.get(adapter)
        if known is not None and known[0] == version:
            return known[1]
        lora_id = self._next_id
        self._next_id += 1
        path = save_adapter(model, Path(self._dir.name) / f"{adapter}-{lora_id}", adapter)
        request = LoRARequest(f"{adapter}-{lora_id}", lora_id, str(path))
        if known is not None:
            self.llm.llm_engine.remove_lora(known[1].lora_int_id)
        self.llm.reset_prefix_cache()
        self._adapters[adapter] = (version, request)
        self.adapter_loads += 1
        return request

    # ------------------------------------------------------------------ sampling
    def sample_ids(self, prompt_ids: Sequence[Sequence[int]], *, num_samples: int, max_new_tokens: int,
                   temperature: float, top_p: float = 1.0, top_k: int = 0, stop_ids: Sequence[int] = (),
                   constraints: Sequence[Any] | None = None, lora_request=None,
                   generator: torch.Generator | None = None,
                   ignore_eos: bool = False) -> list[list[tuple[list[int], list[float], bool]]]:
        """Per prompt, ``num_samples`` (token ids, vLLM's log-probs, finished with a stop token);
        ``ignore_eos`` makes every sample ``max_new_tokens`` long (for benchmarks)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        params = []
        for i in range(len(prompt_ids)):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
            grammar = constraints[i] if constraints is not None else None
            params.append(SamplingParams(
                n=num_samples, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k) if top_k else -1,
                max_tokens=int(max_new_tokens), stop_token_ids=list(stop_ids), logprobs=0, seed=seed,
                skip_special_tokens=False, ignore_eos=ignore_eos,
                structured_outputs=StructuredOutputsParams(grammar=grammar.lark) if grammar is not None else None))
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], params,
                                    lora_request=lora_request, use_tqdm=False)
        result = []
        for out in outputs:
            group = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                lps = [float(d[t].logprob) if d and t in d else float("nan") for t, d in zip(ids, c.logprobs or [])]
                group.append((ids, lps, c.finish_reason == "stop"))
            result.append(group)
        return result

    def generate(self, model, tokenizer, prompts: Sequence[str], *, adapter: str | None, num_samples: int,
                 max_new_tokens: int, temperature: float, top_p: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, constraints: Sequence[Any] | None = None):
        """What :func:`agents.generation.generate` returns -- an :class:`agents.generation.Rollout`
        -- sampled by vLLM with ``adapter``'s current weights, the log-probs recomputed by ``model``."""
        from agents.generation import GREEDY, Rollout, default_stop_ids, encode_prompts, left_pad

        device = next(model.parameters()).device
        stop_ids = default_stop_ids(model, tokenizer)
        bound = None
        if constraints is not None and any(c is not None for c in constraints):
            bound = [c.bind(tokenizer, stop_ids) if c is not None else None for c in constraints]
        encoded = encode_prompts(tokenizer, prompts)
        groups = self.sample_ids(encoded, num_samples=num_samples, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=top_p, top_k=top_k, stop_ids=stop_ids,
                                 constraints=bound, lora_request=self.lora_request(model, adapter),
                                 generator=generator)
        samples = [s for g in groups for s in g]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        longest = max(1, max(len(ids) for ids, _, _ in samples))
        completion_ids = torch.full((len(samples), longest), pad, dtype=torch.long, device=device)
        completion_mask = torch.zeros((len(samples), longest), dtype=torch.long, device=device)
        for k, (ids, _, _) in enumerate(samples):
            completion_ids[k, : len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
            completion_mask[k, : len(ids)] = 1
        prompt_ids, prompt_mask = left_pad(encoded, pad, device)
        prompt_index = torch.arange(len(encoded), device=device).repeat_interleave(num_samples)
        sample_constraints = [c for c in bound for _ in range(num_samples)] if bound is not None else None
        scored_at = 1.0 if temperature == GREEDY else float(temperature)
        logprobs = self.recompute(model, adapter, prompt_ids[prompt_index], prompt_mask[prompt_index],
                                  completion_ids, completion_mask, sample_constraints, scored_at)
        if temperature != GREEDY:  # greedy log-probs are untempered (as the hf engine records them)
            self._record_gap(logprobs, completion_mask, [lp for _, lp, _ in samples])
        texts = tokenizer.batch_decode([ids for ids, _, _ in samples], skip_special_tokens=True)
        return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                       completion_mask=completion_mask, logprobs=logprobs * completion_mask, texts=list(texts),
                       prompt_index=prompt_index, num_samples=num_samples, temperature=scored_at,
                       constraints=sample_constraints,
                       finished=torch.tensor([f for _, _, f in samples], dtype=torch.bool, device=device))

    @torch.no_grad()
    def recompute(self, model, adapter: str | None, prompt_ids, prompt_mask, completion_ids, completion_mask,
                  constraints, temperature: float) -> torch.Tensor:
        """The trainer's log-probs of the sampled tokens: its masked log-softmax, the grammar's
        masks replayed over the sampled tokens."""
        from agents.generation import sequence_logprobs
        from agents.lora import use_adapter

        token_masks = None
        if constraints is not None:
            from agents.constrained import replay_masks

            lengths = completion_mask.sum(dim=1).tolist()
            token_masks = replay_masks(constraints, [row[:n].tolist() for row, n in zip(completion_ids, lengths)],
                                       completion_ids.shape[1]).to(completion_ids.device)
        with use_adapter(model, adapter):
            return sequence_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                     temperature=temperature, token_masks=token_masks).float()

    # ------------------------------------------------------------------ the sampler gap
    def _record_gap(self, logprobs: torch.Tensor, mask: torch.Tensor, engine_lps: Sequence[Sequence[float]]) -> None:
        for k, lps in enumerate(engine_lps):
            n = int(mask[k].sum())
            if not n or len(lps) < n:
                continue
            diff = (logprobs[k, :n].cpu() - torch.tensor(lps[:n])).abs()
            diff = diff[torch.isfinite(diff)]
            self._gap_sum += float(diff.sum())
            self._gap_tokens += int(diff.numel())
            self._gap_max = max(self._gap_max, float(diff.max()) if diff.numel() else 0.0)

    def pop_stats(self) -> dict[str, float]:
        """The sampler gap since the last call (mean and max |vLLM log-prob - trainer log-prob|
        over sampled tokens), and the adapter loads; empty when nothing was sampled."""
        stats: dict[str, float] = {}
        if self._gap_tokens:
            stats = {"charts/sampler_gap_mean": self._gap_sum / self._gap_tokens,
                     "charts/sampler_gap_max": self._gap_max}
        stats["charts/adapter_loads"] = float(self.adapter_loads)
        self._gap_sum, self._gap_max, self._gap_tokens = 0.0, 0.0, 0
        return stats
