"""Command lines from dataclasses: every field is a flag, its ``help`` metadata the help text.

    @dataclass
    class Args:
        lr: float = field(default=1e-5, metadata={"help": "learning rate"})

    args = parse_args(Args, argv)    # --lr 3e-5 ; --help lists every field with its default

Booleans are ``--flag`` / ``--no-flag``; tuples and lists take several values
(``--stages 8 16 32``); ``X | None`` fields accept ``none``. ``__post_init__`` checks run
after parsing, and their ``ValueError`` becomes an argparse error naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import inspect
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")
# OS errors that mean "this place cannot be written", reported as one line.
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


class UserError(Exception):
    """A problem with the user's input or files, reported as one line (no traceback)."""


def print_error(prog: str, message: str) -> None:
    """``prog: error: message`` on stderr, as argparse prints its own errors."""
    print(f"{prog}: error: {message}", file=sys.stderr)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _converter(tp: Any, optional: bool):
    def convert(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        return tp(text)

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def _declaring_class(cls: type, name: str) -> type:
    """The first class in ``cls``'s MRO whose own annotations declare field ``name``."""
    return next(k for k in cls.__mro__ if name in inspect.get_annotations(k))


def _fields_own_first(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields, those ``cls`` declares itself first, then each base's in MRO order."""
    mro = list(cls.__mro__)
    return sorted(dataclasses.fields(cls), key=lambda f: mro.index(_declaring_class(cls, f.name)))


def progress_bar(*fields: str, console=None, enabled: bool = True):
    """The trainers' rich progress bar: description, bar, n/total, elapsed time, then the
    task's ``fields`` (e.g. ``"live"``: ``add_task(..., live="")``, updated as training goes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *(TextColumn(f"{{task.fields[{name}]}}") for name in fields), console=console,
                    disable=not enabled)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: message``, exit status 2),
    without the usage block: the message names the flag, and ``--help`` shows the rest."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser(cls: type, *, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field."""
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    groups: dict[type, Any] = {cls: parser}  # inherited options: one help group per base, titled by its docstring
    for f in _fields_own_first(cls):
        if not f.init:
            continue
        owner = _declaring_class(cls, f.name)
        if owner not in groups:
            groups[owner] = parser.add_argument_group((owner.__doc__ or owner.__name__).strip().splitlines()[0])
        target = groups[owner]
        flag = "--" + f.name.replace("_", "-")
        tp, optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        help_text = f"{help_text} (default: {shown})"
        if tp is bool:
            target.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            item = typing.get_args(tp)[0]
            target.add_argument(flag, dest=f.name, nargs="+", type=item, default=default, help=help_text)
            continue
        choices = f.metadata.get("choices")
        target.add_argument(flag, dest=f.name, type=_converter(tp, optional), default=default,
                            choices=choices, help=help_text)
    return parser


def parse_args(cls: type[T], argv: Sequence[str] | None = None, *, description: str | None = None,
               prog: str | None = None) -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls`` (errors exit like argparse)."""
    parser = build_parser(cls, description=description, prog=prog)
    namespace = parser.parse_args(argv)
    values = vars(namespace)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(hints[f.name])
        if typing.get_origin(tp) is tuple and isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def run_main(main: Callable[[Sequence[str] | None], Any], prog: str, argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main``; a user error (:class:`algos.run.UserError`, or a disk that
    cannot be written) is printed as ``prog: error: <one line>`` with exit status 2, not a
    traceback. Use as ``raise SystemExit(run_main(main, "python -m algos.x"))``."""
    import errno as _errno

    try:
        main(argv)
    except UserError as err:
        print_error(prog, str(err))
        return 2
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print_error(prog, f"cannot write{where}: {os.strerror(err.errno or _errno.EIO)}")
        return 2
    except Exception as err:
        if not getattr(err, "user_error", False):  # errors that mark themselves as the user's (ModelCacheError)
            raise
        print_error(prog, str(err))
        return 2
    return 0


def given_flags(args: Any, argv: Sequence[str]) -> set[str]:
    """Field names set explicitly on the command line (``--no-x`` counts as giving ``x``)."""
    names = {f.name for f in dataclasses.fields(args)}
    given = set()
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg.split("=")[0][2:].replace("-", "_")
        if name not in names and name.startswith("no_") and name[3:] in names:
            name = name[3:]
        given.add(name)
    return given


def with_defaults(args: T, argv: Sequence[str], defaults: dict[str, Any]) -> T:
    """``args`` with ``defaults`` (e.g. a demo preset) for every field the command line did not set."""
    given = given_flags(args, argv)
    return dataclasses.replace(args, **{k: v for k, v in defaults.items() if k not in given})


DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
PROMPT_STYLE_CHOICES = ("auto", "default", "compact")


def check_range(name: str, value: float | int | None, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, allow_none: bool = False) -> None:
    """``ValueError`` naming the flag when ``value`` is outside [low, high] (``low_open``: (low, high])."""
    if value is None and allow_none:
        return
    flag = "--" + name.replace("_", "-")
    if value is None or isinstance(value, bool) or value != value:
        raise ValueError(f"{flag} needs a number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{flag} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{flag} must be <= {high}, got {value}")


def check_env_id(env_id: str) -> None:
    """``ValueError`` unless ``env_id`` is a registered Gymnasium id (``module:Id`` imports the module)."""
    import gymnasium as gym

    import memenv  # noqa: F401  (registers the MemorySession ids)

    try:
        gym.spec(env_id)
    except Exception as err:  # noqa: BLE001 - gymnasium raises several error types for unknown ids
        known = sorted(i for i in gym.registry if "MemorySession" in i)
        raise ValueError(f"--env {env_id!r} is not a registered environment ({type(err).__name__}); "
                         f"this package registers {', '.join(known)}") from None


def check_agent_name(flag: str, spec: str | None, special: Sequence[str] = ()) -> None:
    """``ValueError`` unless ``spec`` is one of ``special`` or names a registered agent (nothing is built)."""
    if spec is None or spec in special:
        return
    from agents.registry import available_agents

    name = spec.partition(":")[0]
    if name not in available_agents():
        choices = ", ".join([*special, *available_agents()])
        raise ValueError(f"{flag} {spec!r}: unknown agent {name!r}; choose one of {choices}")


def check_json_object(flag: str, text: str) -> dict:
    """The JSON object ``text`` holds, or ``ValueError`` naming the flag (deep nesting included)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ValueError(f"{flag} is not JSON: {reason}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


@dataclass
class TrainerArgs:
    """Run, optimisation and checkpoint options shared by the trainers

    ``algos.logo_grpo.Args`` and ``algos.memory_r1.Args`` subclass it, add their own options
    (re-declaring a shared one where their default differs) and call
    ``super().__post_init__()`` before their own checks.
    """

    env: str = field(default="MemorySession-v0", metadata={"help": "registered env id (or module:Id) whose env offers fork()"})
    env_kwargs: str = field(default="{}", metadata={"help": "JSON object of extra gym.make keyword arguments"})
    model: str | None = field(default=None, metadata={"help": "backbone: 'smollm2-135m', 'tiny', a HF directory or .gguf (none: smollm2-135m on GPU, tiny on CPU)"})
    output_dir: str | None = field(default=None, metadata={"help": "where checkpoints, metrics and the adapter go: a new or empty directory (none: runs/<run name>)"})
    resume: str | None = field(default=None, metadata={"help": "continue the run in this directory from its newest intact checkpoint, with the settings in its args.json (flags given again must match, see --override)"})
    override: bool = field(default=False, metadata={"help": "with --resume: accept flags that differ from the run's args.json (each change is recorded in args_history.jsonl)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    num_train_worlds: int = field(default=512, metadata={"help": "size of the pool of synthetic training worlds"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the LoRA parameters"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    num_minibatches: int = field(default=4, metadata={"help": "optimizer steps per epoch"})
    micro_batch_size: int = field(default=8, metadata={"help": "sequences per forward pass (memory bound)"})
    clip_eps: float = field(default=0.2, metadata={"help": "PPO clip range"})
    kl_coef: float = field(default=0.001, metadata={"help": "k3 KL penalty to the reference policy (the base model, adapter disabled)"})
    entropy_coef: float = field(default=0.001, metadata={"help": "entropy bonus"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of training rollouts (> 0)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling, in (0, 1]"})
    constrained: bool = field(default=True, metadata={"help": "sample every action under its observation's grammar (agents.constrained: well-formed JSON over the memory ids shown), with the log-probs of the masked distribution; --no-constrained samples freely"})
    rollout_engine: str = field(default="hf", metadata={"help": "what samples the rollouts: hf (the library's transformers loop) or vllm (agents.vllm_engine: vLLM serves the backbone and the current LoRA adapter, the same grammars; the trainer recomputes the log-probs and logs the sampler gap); vllm needs the requirements-vllm.lock virtualenv", "choices": ["hf", "vllm"]})
    recompute_old_logprobs: str = field(default="auto", metadata={"help": "recompute the sampling policy's log-probs with the training forward pass (auto: when the model is not fp32, whose sampler and trainer round differently: the first epoch's ratio is then exactly 1)", "choices": ["auto", "always", "never"]})
    share_prompts: str = field(default="auto", metadata={"help": "compute each distinct prompt of a micro-batch once and the samples' completions against its repeated KV cache, in the update's forward passes (auto: when the model is not fp32; the same log-probs and gradients up to rounding, and fp32 runs keep the float path of the committed tiny-model results)", "choices": ["auto", "always", "never"]})
    max_prompt_tokens: int = field(default=2048, metadata={"help": "prompts are trimmed by relevance to this many tokens"})
    prompt_style: str = field(default="auto", metadata={"help": "role prompts: 'default' (full instructions), 'compact' (for tiny models) or 'auto' (compact for the tiny model)", "choices": PROMPT_STYLE_CHOICES})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_lm_head: bool = field(default=False, metadata={"help": "also put LoRA on the output layer (helps tiny models whose tied embeddings are frozen)"})
    sft_warmup_steps: int = field(default=0, metadata={"help": "supervised steps on demonstrations before RL"})
    sft_learning_rate: float | None = field(default=None, metadata={"help": "learning rate of the warm start (none: --learning-rate)"})
    sft_batch_size: int = field(default=8, metadata={"help": "demonstrations per supervised step"})
    sft_schedule: str = field(default="constant", metadata={"help": "learning-rate schedule of the warm start: 'constant' or 'linear' decay to 0", "choices": ["constant", "linear"]})
    checkpoint_every: int = field(default=10, metadata={"help": "checkpoint every K updates (and at --stop-after and the end)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "how many of the latest checkpoints to keep"})
    stop_after: int | None = field(default=None, metadata={"help": "leave after this many updates in this invocation (continue later with --resume)"})
    device: str | None = field(default=None, metadata={"help": "cuda / cuda:N / cpu (none: cuda when available)"})
    dtype: str = field(default="auto", metadata={"help": "model weights: float32, bfloat16, or auto: bf16 on GPU and on CPUs where it measures faster for the model (LoRA weights and optimizer state stay fp32)", "choices": DTYPES})
    num_threads: int | None = field(default=None, metadata={"help": "CPU: torch threads (none: 1 for the tiny model, whose small kernels only contend; every core otherwise)"})
    demo: bool | None = field(default=None, metadata={"help": "short CPU demo settings (none: on when no GPU and no --model)"})
    progress: bool = field(default=True, metadata={"help": "show the rich progress bar"})
    tensorboard: bool = field(default=False, metadata={"help": "also write TensorBoard events when tensorboard is installed"})

    def __post_init__(self) -> None:
        for name in ("num_train_worlds", "ppo_epochs", "num_minibatches", "micro_batch_size", "max_prompt_tokens",
                     "keep_checkpoints", "checkpoint_every", "lora_r", "sft_batch_size"):
            check_range(name, getattr(self, name), low=1)
        for name in ("learning_rate", "kl_coef", "entropy_coef", "sft_warmup_steps", "seed"):
            check_range(name, getattr(self, name), low=0)
        for name in ("clip_eps", "max_grad_norm", "temperature", "lora_alpha"):
            check_range(name, getattr(self, name), low=0, low_open=True)
        check_range("top_p", self.top_p, low=0, high=1, low_open=True)
        check_range("sft_learning_rate", self.sft_learning_rate, low=0, low_open=True, allow_none=True)
        check_range("stop_after", self.stop_after, low=1, allow_none=True)
        check_range("num_threads", self.num_threads, low=1, allow_none=True)
        if self.device is not None and not (self.device in ("cpu", "cuda") or
                                            (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.override and not self.resume:
            raise ValueError("--override only applies with --resume")
        if self.resume and self.output_dir is not None and os.path.abspath(self.output_dir) != os.path.abspath(self.resume):
            raise ValueError(f"--resume {self.resume} continues the run in its own directory; --output-dir "
                             f"{self.output_dir} must be the same directory or left out")
        check_json_object("--env-kwargs", self.env_kwargs)
        check_env_id(self.env)


def check_rollout_engine(engine: str, model_name: str) -> None:
    """``--rollout-engine`` checked before a trainer writes anything: for ``vllm``, vLLM
    importable and a model directory it serves, else a one-line :class:`UserError`."""
    from agents.vllm_engine import check_rollout_engine as check

    try:
        check(engine, model_name)
    except (ImportError, ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None


def check_model_flags(model: str | None, *, init_adapter: str | None = None, device: str | None = None,
                      flag: str = "--model") -> None:
    """:class:`algos.run.UserError` for a ``--model`` that names no model, an ``--init-adapter``
    that holds no adapter, or a ``--device`` this machine lacks -- checked before a trainer
    writes anything, so that the corrected command runs in the same directory."""
    from pathlib import Path

    from agents.backbone import SMOLLM2_ALIAS, TINY_ALIAS, cache_root, smollm2_gguf_path

    if model is not None and model != TINY_ALIAS:
        if model == SMOLLM2_ALIAS:
            if not (cache_root() / "models" / SMOLLM2_ALIAS / "config.json").is_file():
                try:
                    smollm2_gguf_path()
                except FileNotFoundError as err:
                    raise UserError(f"{flag} {model}: {err}") from None
        else:
            path = Path(model).expanduser()
            if not ((path.is_file() and path.suffix == ".gguf") or (path.is_dir() and (path / "config.json").is_file())):
                raise UserError(f"{flag} {model}: no such model; give {SMOLLM2_ALIAS!r}, {TINY_ALIAS!r}, a local "
                                "Hugging Face model directory with a config.json, or a .gguf file")
    if init_adapter is not None:
        from agents.lora import find_adapters

        try:
            find_adapters(init_adapter)
        except (FileNotFoundError, ValueError, OSError) as err:
            raise UserError(f"--init-adapter {init_adapter}: {err}".splitlines()[0]) from None
    if device is not None and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: this machine has no CUDA GPU that torch can use (give --device cpu)")
        index = int(device[5:]) if device.startswith("cuda:") else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
