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
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


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


def build_parser(cls: type, *, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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


@dataclass
class TrainerArgs:
    """Run, optimisation and checkpoint options shared by the trainers

    ``algos.logo_grpo.Args`` and ``algos.memory_r1.Args`` subclass it, add their own options
    and call ``super().__post_init__()`` before their own checks.
    """

    env_kwargs: str = field(default="{}", metadata={"help": "JSON object of extra gym.make keyword arguments"})
    model: str | None = field(default=None, metadata={"help": "backbone: 'smollm2-135m', 'tiny', a HF directory or .gguf (none: smollm2-135m on GPU, tiny on CPU)"})
    output_dir: str | None = field(default=None, metadata={"help": "where checkpoints, metrics and the adapter go (none: runs/<run name>)"})
    resume: str | None = field(default=None, metadata={"help": "an output directory to continue from its latest checkpoint (give the same settings)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    num_train_worlds: int = field(default=512, metadata={"help": "size of the pool of synthetic training worlds"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the LoRA parameters"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    micro_batch_size: int = field(default=8, metadata={"help": "sequences per forward pass (memory bound)"})
    clip_eps: float = field(default=0.2, metadata={"help": "PPO clip range"})
    entropy_coef: float = field(default=0.001, metadata={"help": "entropy bonus"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_prompt_tokens: int = field(default=2048, metadata={"help": "prompts are trimmed by relevance to this many tokens"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    sft_schedule: str = field(default="constant", metadata={"help": "learning-rate schedule of the warm start: 'constant' or 'linear' decay to 0", "choices": ["constant", "linear"]})
    keep_checkpoints: int = field(default=3, metadata={"help": "how many of the latest checkpoints to keep"})
    stop_after: int | None = field(default=None, metadata={"help": "leave after this many updates in this invocation (continue later with --resume)"})
    device: str | None = field(default=None, metadata={"help": "cuda / cpu (none: cuda when available)"})
    dtype: str | None = field(default=None, metadata={"help": "float32 / bfloat16 (none: bf16 on GPU, fp32 on CPU)"})
    demo: bool | None = field(default=None, metadata={"help": "short CPU demo settings (none: on when no GPU and no --model)"})
    progress: bool = field(default=True, metadata={"help": "show the rich progress bar"})

    def __post_init__(self) -> None:
        for name in ("num_train_worlds", "ppo_epochs", "micro_batch_size", "max_prompt_tokens", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"--stop-after must be >= 1, got {self.stop_after}")
        try:
            kwargs = json.loads(self.env_kwargs)
        except json.JSONDecodeError as err:
            raise ValueError(f"--env-kwargs is not JSON: {err}") from None
        if not isinstance(kwargs, dict):
            raise ValueError("--env-kwargs must be a JSON object")
