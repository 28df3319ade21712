"""An LLM agent for MemorySession-v0: one backbone, three roles, batched across envs.

``LLMAgent.from_spec("smollm2-135m")`` (or ``"llm:smollm2-135m"``, ``"tiny"``,
``"/path/to/hf_dir:/path/to/adapter"``) builds the agent the registry names ``llm:...``;
a trailing ``?constrained=false`` samples freely instead of under each observation's grammar
(:mod:`agents.constrained`, on by default: only well-formed actions over the ids shown);
``?prompt_style=compact&max_prompt_tokens=2048&max_new_tokens=128`` sets those settings
(see :func:`split_spec_options`).
Each observation is rendered into its role's prompt (:mod:`agents.prompts`), prompts of
one role are generated together (:func:`agents.generation.generate`) with that role's
adapter (:func:`agents.lora.role_adapter`), and answer outputs are reduced to the short
answer (:func:`agents.prompts.parse_answer`). Decoding is greedy by default (evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from agents.backbone import Backbone, load_backbone
from agents.constrained import check_manage_ops
from agents.generation import Rollout
from agents.lora import POLICY_ADAPTER, find_adapters, load_adapter, load_adapters, saved_adapter_info
from agents.sampler import RoleSampler
from agents.prompts import (
    ANSWER,
    COMPACT_STYLE,
    DEFAULT_STYLE,
    EXTRACT,
    MANAGE,
    ROLES,
    STYLES,
    parse_answer,
    parse_observation,
)

SPEC_PREFIX = "llm:"
# Room for a session's facts / operations as JSON; a distilled answer is ids + a few words.
DEFAULT_MAX_NEW_TOKENS = {EXTRACT: 256, MANAGE: 256, ANSWER: 64}
DEFAULT_MAX_PROMPT_TOKENS = 2048
DEFAULT_BATCH_SIZE = 16
AUTO_STYLE = "auto"


def default_prompt_style(model_name: str) -> str:
    """The prompt style the trainers use for a backbone: compact for ``tiny``, else default."""
    return COMPACT_STYLE if model_name == "tiny" else DEFAULT_STYLE


# The roles an adapter serves, by its name (see agents.lora.role_adapter).
ADAPTER_ROLES = {POLICY_ADAPTER: (EXTRACT, MANAGE), EXTRACT: (EXTRACT,), MANAGE: (MANAGE,), ANSWER: (ANSWER,)}


def adapter_settings(path: str | Path, adapter_name: str | None = None) -> dict:
    """The serving settings the adapter(s) at ``path`` recorded when saved ({} when none).

    Keys (each only when recorded): ``prompt_style``, ``distill``, ``manage_ops`` (the
    manager operations it was trained under), ``max_prompt_tokens`` (the largest recorded)
    and ``max_new_tokens`` (role -> tokens, for the roles each adapter serves).
    ``ValueError`` when the adapters of one directory disagree on the prompt style, on
    distillation or on the manager operations. ``adapter_name``: the name a single adapter is loaded
    under when it is not its saved one (its lengths then go to that name's roles).
    """
    out: dict = {}
    new_tokens: dict[str, int] = {}
    for name, sub in find_adapters(path).items():
        info = saved_adapter_info(sub)
        if "manage_ops" in info:
            info = {**info, "manage_ops": list(check_manage_ops(info["manage_ops"]))}
        for key in ("prompt_style", "distill", "manage_ops"):
            if key in info:
                if key in out and out[key] != info[key]:
                    raise ValueError(f"the adapters at {path} were trained with different {key} values "
                                     f"({out[key]!r} and {info[key]!r})")
                out[key] = info[key]
        if "max_prompt_tokens" in info:
            out["max_prompt_tokens"] = max(out.get("max_prompt_tokens", 0), int(info["max_prompt_tokens"]))
        if "max_new_tokens" in info:
            for role in ADAPTER_ROLES.get(adapter_name or name, ()):
                new_tokens[role] = int(info["max_new_tokens"])
    if new_tokens:
        out["max_new_tokens"] = new_tokens
    return out


SPEC_OPTIONS = "?"  # "<spec>?key=value&key=value"
_BOOLEANS = {"true": True, "1": True, "on": True, "yes": True, "false": False, "0": False, "off": False, "no": False}


def _bool_option(value: str) -> bool:
    if value.lower() not in _BOOLEANS:
        raise ValueError(f"must be true or false, got {value!r}")
    return _BOOLEANS[value.lower()]


MAX_TOKENS_OPTION = 1 << 20  # no prompt or generation of this library comes near a million tokens


def _positive_int_option(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_TOKENS_OPTION:
        raise ValueError(f"must be a whole number from 1 to {MAX_TOKENS_OPTION} in ASCII digits, got {value!r}")
    return int(value)


def _style_option(value: str) -> str:
    if value not in (AUTO_STYLE, *STYLES):
        raise ValueError(f"must be one of {', '.join((AUTO_STYLE, *STYLES))}, got {value!r}")
    return value


def _tokens_option(value: str) -> dict[str, int]:
    return dict.fromkeys(ROLES, _positive_int_option(value))


# The LLMAgent keyword arguments a spec may set after "?", each with the parser of its text value.
def _engine_option(value: str) -> str:
    from agents.vllm_engine import check_engine

    return check_engine(value)


SPEC_OPTION_PARSERS = {"constrained": _bool_option, "prompt_style": _style_option,
                       "max_prompt_tokens": _positive_int_option, "max_new_tokens": _tokens_option,
                       "engine": _engine_option,
                       "manage_ops": check_manage_ops}  # "ADD/NOOP": "," and "+" separate roles and rows in specs


def with_engine(spec: str, engine: str) -> str:
    """``spec`` served by ``engine`` (``hf`` / ``vllm``): ``?engine=vllm`` added to an ``llm:``
    spec that does not name an engine itself; other specs, and ``hf``, unchanged."""
    if engine == "hf" or not spec.startswith("llm:") or "engine" in split_spec_options(spec)[1]:
        return spec
    return f"{spec}{'&' if SPEC_OPTIONS in spec else SPEC_OPTIONS}engine={_engine_option(engine)}"


def split_spec_options(spec: str) -> tuple[str, dict]:
    """``"<spec>?key=value&key=value"`` -> (``"<spec>"``, LLMAgent keyword arguments); ({} without ``?``).

    Keys: ``constrained`` (true / false), ``prompt_style`` (auto / default / compact),
    ``max_prompt_tokens`` and ``max_new_tokens`` (whole numbers; ``max_new_tokens`` sets
    every role's budget), ``engine`` (hf / vllm: :mod:`agents.vllm_engine`), ``manage_ops`` (the
    manager's operations, ``/``-separated, e.g. ``ADD/NOOP``). ``ValueError`` naming the key for an unknown key or a bad value."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string, got {type(spec).__name__}")
    head, sep, tail = spec.rpartition(SPEC_OPTIONS)
    if not sep:
        return spec, {}
    options: dict = {}
    for part in tail.split("&"):
        key, eq, value = (text.strip() for text in part.partition("="))
        if key not in SPEC_OPTION_PARSERS:
            raise ValueError(f"agent spec {spec!r}: unknown option {key!r}; options are "
                             f"{', '.join(SPEC_OPTION_PARSERS)} (as ?key=value&key=value)")
        if not eq or key in options:
            raise ValueError(f"agent spec {spec!r}: option {key!r} needs one value, as {key}=VALUE")
        try:
            options[key] = SPEC_OPTION_PARSERS[key](value)
        except ValueError as error:
            raise ValueError(f"agent spec {spec!r}: {key} {error}") from None
    return head, options


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"[llm:]<model>[:<adapter dir>]"`` -> (model alias or path, adapter dir or None)."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string, got {type(spec).__name__}")
    spec, _ = split_spec_options(spec)
    rest = spec[len(SPEC_PREFIX) :] if spec.startswith(SPEC_PREFIX) else spec
    model, _, adapter = rest.partition(":")
    if not model:
        raise ValueError(f"agent spec {spec!r} names no model; expected 'llm:<model alias or path>[:<adapter dir>]'")
    return model, adapter or None


class LLMAgent:
    """Acts in MemorySession-v0 with a causal LM: extract, manage and answer by prompt.

    Args:
        backbone: the model and tokenizer; its model may hold LoRA adapters already
            (after :func:`agents.lora.add_lora` or :func:`agents.lora.load_adapter`).
        adapter_path: a PEFT adapter directory (or a directory of per-role adapter
            sub-directories) to load, frozen; see :func:`agents.lora.find_adapters`.
        adapter_name: the name the loaded adapter gets (default: the name it was saved
            under, ``"policy"`` when unrecorded); ``"policy"`` serves extract and
            manage, ``"answer"`` the answer role (see :func:`agents.lora.role_adapter`).
        max_prompt_tokens: prompts longer than this are trimmed by relevance (default: as
            recorded by the loaded adapter, else 2048).
        max_new_tokens: per-role generation budget (missing roles: as recorded by the
            adapter serving them, else the defaults).
        temperature: 0 (default) decodes greedily; > 0 samples.
        top_p: nucleus sampling filter (only used when temperature > 0).
        top_k: top-k sampling filter (only used when temperature > 0).
        distill: answer prompts ask for the relevant memory ids before the answer
            (default: as recorded by the loaded adapter, else True).
        prompt_style: ``"default"``, ``"compact"`` or ``"auto"``: the style the loaded
            adapter was trained with (recorded by :func:`agents.lora.save_adapter`), else
            compact for the ``tiny`` backbone and default otherwise.
        seed: seeds the sampling generator (ignored for greedy decoding).
        batch_size: at most this many prompts per generation call.
        constrained: sample every output under its observation's grammar (default), so
            the environment rejects none; False samples freely.
        engine: ``"hf"`` (default: the library's transformers loop) or ``"vllm"``
            (:class:`agents.vllm_engine.VLLMEngine` serves the backbone and the adapters).
        manage_ops: the operations manage outputs may use, e.g. ``("ADD", "NOOP")``
            (default: as recorded by the loaded adapter, else all four; needs ``constrained``).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        adapter_path: str | Path | None = None,
        adapter_name: str | None = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: Mapping[str, int] | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        distill: bool | None = None,
        prompt_style: str = AUTO_STYLE,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        constrained: bool = True,
        engine: str = "hf",
        manage_ops: Sequence[str] | None = None,
    ) -> None:
        unknown = set(max_new_tokens or {}) - set(ROLES)
        if unknown:
            raise ValueError(f"max_new_tokens has unknown roles {sorted(unknown)}; roles are {ROLES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if prompt_style not in (AUTO_STYLE, *STYLES):
            raise ValueError(f"prompt_style must be one of {(AUTO_STYLE, *STYLES)}, got {prompt_style!r}")
        self.backbone = backbone
        trained: dict = {}
        if adapter_path is None:
            self.model = backbone.model
        else:
            trained = adapter_settings(adapter_path, adapter_name)
            if adapter_name is None:
                self.model = load_adapters(backbone, adapter_path)
            else:
                self.model = load_adapter(backbone, adapter_path, adapter_name=adapter_name, is_trainable=False)
        self.tokenizer = backbone.tokenizer
        self.max_prompt_tokens = max_prompt_tokens or trained.get("max_prompt_tokens", DEFAULT_MAX_PROMPT_TOKENS)
        self.max_new_tokens = {**DEFAULT_MAX_NEW_TOKENS, **trained.get("max_new_tokens", {}), **(max_new_tokens or {})}
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.distill = trained.get("distill", True) if distill is None else distill
        if prompt_style == AUTO_STYLE:
            prompt_style = trained.get("prompt_style") or default_prompt_style(backbone.name)
        self.prompt_style = prompt_style
        self.batch_size = batch_size
        self.constrained = constrained
        if manage_ops is not None:
            self.manage_ops = check_manage_ops(manage_ops, constrained=constrained)
        else:  # unconstrained sampling offers every operation, whatever the adapter was trained under
            self.manage_ops = check_manage_ops(trained.get("manage_ops") if constrained else None)
        self.engine = None
        if engine != "hf":
            from agents.vllm_engine import VLLMEngine, check_engine

            check_engine(engine)
            self.engine = VLLMEngine.shared(backbone.name, max_model_len=self.max_prompt_tokens
                                            + max(self.max_new_tokens.values()) + 64)
        device = next(self.model.parameters()).device
        self._generator = torch.Generator(device=device).manual_seed(seed)
        suffix = f":{adapter_path}" if adapter_path is not None else ""
        self.name = f"{SPEC_PREFIX}{backbone.name}{suffix}"

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> LLMAgent:
        """Build from ``"[llm:]<model alias or path>[:<adapter dir>][?key=value&...]"``: default
        settings, except those the options after ``?`` set (:func:`split_spec_options`)."""
        head, options = split_spec_options(spec)
        model, adapter = parse_spec(head)
        return cls(load_backbone(model, device=device, dtype=dtype), adapter_path=adapter, **options)

    @property
    def sampler(self) -> RoleSampler:
        """The agent's settings as a :class:`agents.sampler.RoleSampler` (prompts, adapters, generation)."""
        return RoleSampler(self.model, self.tokenizer, prompt_style=self.prompt_style, distill=self.distill,
                           max_prompt_tokens=self.max_prompt_tokens, max_new_tokens=self.max_new_tokens,
                           temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                           generator=self._generator, batch_size=self.batch_size, constrained=self.constrained,
                           engine=self.engine, manage_ops=self.manage_ops)

    def prompt(self, obs: str, role: str | None = None) -> str:
        """The rendered prompt for one observation."""
        return self.sampler.prompt(obs, role)

    def sample(
        self,
        observations: Sequence[str],
        *,
        num_samples: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Generate for observations of ONE role with its adapter; the full :class:`Rollout`.

        For trainers: the rollout holds token ids, masks and sampling log-probs. Settings
        not given come from the agent.
        """
        try:
            return self.sampler.rollout(observations, num_samples=num_samples, temperature=temperature, top_p=top_p,
                                        generator=generator)
        except ValueError as err:
            raise ValueError(str(err).replace("rollout()", "sample()")) from None

    @staticmethod
    def postprocess(role: str, text: str) -> str:
        """The action for a role's generated text: the short answer for ``answer``, else the text."""
        return parse_answer(text) if role == ANSWER else text.strip()

    def act_batch(self, observations: list[str], infos: list[dict]) -> list[str]:
        """One action per observation; observations of a role are generated together."""
        if len(observations) != len(infos):
            raise ValueError(f"got {len(observations)} observations but {len(infos)} infos")
        roles = []
        for i, obs in enumerate(observations):
            role = parse_observation(obs).get("role")
            if role not in ROLES:
                raise ValueError(f"observation {i} has unknown role {role!r}; roles are {ROLES}")
            roles.append(role)
        groups = self.sampler.sample(observations)
        return [self.postprocess(role, group[0].text) for role, group in zip(roles, groups)]

    def act(self, obs: str, info: dict) -> str:
        """The action for one observation."""
        return self.act_batch([obs], [info])[0]
