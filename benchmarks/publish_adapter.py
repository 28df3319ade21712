"""Copy a trained PEFT adapter into ``benchmarks/results/models`` as bf16, for committing.

    python -m benchmarks.publish_adapter runs/answer/adapter benchmarks/results/models/smollm2_answer_locomo

Floating-point tensors of ``adapter_model.safetensors`` are cast to bfloat16 (half the size;
LoRA weights lose about three decimal digits, which moves log-probabilities by far less than
sampling does); ``adapter_config.json`` and the library's ``memenv_adapter.json`` (serving
settings and the command that trained it) are copied, the latter with ``published``: the
source's sha256 and this command. The copy loads by its path alone, as
``llm:<model>:<dir>``. The destination must not exist yet (nothing is overwritten).

``--max-new-tokens`` and ``--manage-ops`` set the serving settings the copy loads with when
they should differ from those it trained under, e.g. a manager SFT'd at 256 new tokens that
must be served at 1,024 so its grammar can keep 31 facts per turn
(:func:`agents.constrained.manage_capacity`):

    python -m benchmarks.publish_adapter runs/sft/adapter benchmarks/results/models/my_manager \\
        --max-new-tokens 1024 --manage-ops ADD NOOP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from agents.backbone import file_sha256
from algos.cli import UserError, run_main

PROG = "python -m benchmarks.publish_adapter"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
SETTINGS = "memenv_adapter.json"


def publish(source: Path, target: Path, *, command: str | None = None, serve: dict[str, Any] | None = None) -> Path:
    """Write the bf16 copy of the adapter in ``source`` to the new directory ``target``
    (atomically: a temporary sibling renamed at the end); returns ``target``. ``serve``:
    serving settings (``max_new_tokens``, ``manage_ops``) that replace the recorded ones."""
    import torch
    from safetensors.torch import load_file, save_file

    source, target = Path(source), Path(target)
    for name in (WEIGHTS, CONFIG):
        if not (source / name).is_file():
            raise UserError(f"{source} is not a PEFT adapter directory: {name} is missing")
    if target.exists():
        raise UserError(f"{target} already exists; publish into a new directory")
    serve = dict(serve or {})
    unknown = sorted(set(serve) - {"max_new_tokens", "manage_ops"})
    if unknown:
        raise UserError(f"serving settings {unknown} cannot be set (max_new_tokens, manage_ops)")
    if "max_new_tokens" in serve and (not isinstance(serve["max_new_tokens"], int) or serve["max_new_tokens"] < 1):
        raise UserError(f"--max-new-tokens must be a whole number >= 1, got {serve['max_new_tokens']!r}")
    if "manage_ops" in serve:
        from agents.constrained import check_manage_ops

        try:
            serve["manage_ops"] = list(check_manage_ops(serve["manage_ops"]))
        except ValueError as err:
            raise UserError(f"--manage-ops: {err}") from None
    weights = load_file(str(source / WEIGHTS))
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{source / WEIGHTS}: non-finite values in {bad[0]} (and {len(bad) - 1} more); not published")
    cast = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(cast, str(staging / WEIGHTS), metadata={"format": "pt"})
        shutil.copyfile(source / CONFIG, staging / CONFIG)
        settings: dict[str, Any] = {}
        if (source / SETTINGS).is_file():
            settings = json.loads((source / SETTINGS).read_text(encoding="utf-8"))
        changed = {k: {"trained": settings.get(k), "served": v} for k, v in serve.items()}
        settings.update(serve)
        settings["published"] = {**({"serving_changed": changed} if changed else {}),
                                 "source_sha256": file_sha256(source / WEIGHTS), "dtype": "bfloat16", "command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        for path in staging.iterdir():
            os.chmod(path, 0o644)
        os.chmod(staging, 0o755)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: Sequence[str] | None = None) -> Path:
    """Publish; prints the sizes before and after."""
    import argparse
    import shlex
    import sys

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a PEFT adapter directory (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("target", help="a new directory for the bf16 copy")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget the copy is served with (default: the recorded one)")
    parser.add_argument("--manage-ops", nargs="+", help="manager operations the copy is served with, e.g. ADD NOOP (default: the recorded ones)")
    args = parser.parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    serve = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("manage_ops", args.manage_ops)) if v is not None}
    target = publish(Path(args.source), Path(args.target), serve=serve,
                     command=" ".join(["python -m benchmarks.publish_adapter", *map(shlex.quote, shown)]))
    before, after = (Path(args.source) / WEIGHTS).stat().st_size, (target / WEIGHTS).stat().st_size
    print(f"{target}: {after / 1e6:.1f} MB in bf16 (from {before / 1e6:.1f} MB)")
    return target


if __name__ == "__main__":
    raise SystemExit(run_main(main, PROG))
