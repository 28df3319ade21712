"""What a committed result was made with: the lock, the library versions, the machine.

Every result table in ``benchmarks/results`` records :func:`environment` (JSON) and
:func:`markdown_line` (its table), so a number can be reproduced on the same lock and CPU
kernel path, and a difference can be traced to a version or machine change.

Results are exact only within one float path: the same code revision, the same versions, the
same thread count and the same CPU kernel family (``torch.backends.cpu.get_cpu_capability()``:
AVX2 and AVX-512 kernels round differently, and a tiny model's RL trajectory diverges from
there). A code change that only reorders float operations does the same: 8ebb510 made
``lm_head`` read its hidden states through an index tensor instead of a slice, which changes
the last bits of the logits, and one tiny-model GRPO run moved from F1 0.360 to 0.304 while
base and SFT rows stayed identical. So does the processor: torch's CPU matrix products go
through MKL, which picks its kernels by processor, and the same SFT run ends at loss 0.170 on
an Intel Xeon and 0.063 on an AMD EPYC, both "AVX512". Hence :func:`code_revision` and
:func:`cpu_model` in every record, and :func:`compare_notice` when a result is re-made.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
VLLM_LOCK = LOCK.with_name("requirements-vllm.lock")
KEY_PACKAGES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "gymnasium", "numpy",
                "stable-baselines3", "safetensors")


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    """Package -> version pinned by the lock file (empty when there is none)."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    """The processor's name and its bf16 matrix features (``amx_bf16``, ``avx512_bf16``), from
    /proc/cpuinfo (None where there is none): bf16 speed depends on them."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return platform.processor() or None
    name, flags = None, set()
    for line in info.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name is None:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    features = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{name or 'unknown'}" + (f" ({', '.join(features)})" if features else "")


def code_revision(root: Path = LOCK.parent) -> str | None:
    """The git commit the code ran at (12 hex digits), with ``+changes`` when tracked files
    other than ``benchmarks/results`` (the results themselves) differ from it; None outside a
    git checkout (an installed copy)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


def active_lock() -> Path:
    """The lock this environment was installed from: requirements-vllm.lock where vLLM is
    installed (its virtualenv pins another transformers), else requirements.lock."""
    from agents.vllm_engine import vllm_installed

    return VLLM_LOCK if vllm_installed() and VLLM_LOCK.is_file() else LOCK


def environment() -> dict[str, Any]:
    """The code revision, the lock (which one, its sha256, and every installed package that
    differs from it), key library versions, Python, the CPU kernel family and torch's thread count."""
    import torch

    lock_file = active_lock()
    pins = lock_pins(lock_file)
    differs = {}
    for name, pinned in pins.items():
        installed = _installed(name)
        if installed is None or installed.split("+")[0] != pinned.split("+")[0]:
            differs[name] = {"lock": pinned, "installed": installed}
    return {
        "code_revision": code_revision(),
        "lock": lock_file.name,
        "lock_sha256": hashlib.sha256(lock_file.read_bytes()).hexdigest()[:16] if lock_file.is_file() else None,
        "matches_lock": bool(pins) and not differs,
        "differs_from_lock": differs,
        "versions": {name: _installed(name) for name in KEY_PACKAGES},
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown_line(env: dict[str, Any] | None = None) -> str:
    """One line for a results table: lock digest (and whether the install matched it), versions, CPU path."""
    env = env or environment()
    lock = (f"lock `{env.get('lock', LOCK.name)}` sha256 {env['lock_sha256']}" + ("" if env["matches_lock"] else
            f" (installed versions differ: {', '.join(sorted(env['differs_from_lock']))})")) if env["lock_sha256"] \
        else "no lock file"
    v = env["versions"]
    revision = f"code {env['code_revision']}; " if env.get("code_revision") else ""
    return (f"Environment: {revision}{lock}; torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}; "
            f"Python {env['python']} on {env['machine']}"
            + (f" ({env['cpu_model']})" if env.get("cpu_model") else "") + f", CPU kernels {env['cpu_capability']}, "
            f"{env['torch_threads']} torch threads" + (f", GPU {env['cuda']}" if env.get("cuda") else "") + ".")


FLOAT_PATH_KEYS = ("code_revision", "lock_sha256", "versions", "cpu_model", "cpu_capability", "torch_threads", "cuda")
"""What a training result's exact numbers depend on (see the module docstring)."""


def float_path_changes(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The :data:`FLOAT_PATH_KEYS` in which two :func:`environment` records differ (a key the
    older record lacks counts as differing); empty when the float path is the same."""
    previous = previous or {}
    return [key for key in FLOAT_PATH_KEYS if key not in previous or previous[key] != current.get(key)]


def compare_notice(path: Path, current: dict[str, Any]) -> str | None:
    """One line about re-making the result at ``path`` (a JSON with an ``environment`` record):
    whether the new numbers should agree with it exactly, and if not, what changed. None when
    there is no readable previous result."""
    try:
        previous = json.loads(Path(path).read_text()).get("environment")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(previous, dict):
        return None
    changes = float_path_changes(previous, current)
    if not changes:
        return f"{path}: same code, lock, processor and threads as the previous result: its numbers should reappear exactly"
    return (f"{path}: the previous result was made with other {', '.join(changes)} "
            f"(code {previous.get('code_revision') or 'not recorded'} on {previous.get('cpu_model') or 'an unrecorded processor'}); "
            "trained numbers can differ from it by float rounding alone")


def write_report(out: Path, result: dict[str, Any], lines: list[str]) -> None:
    """``out``.json (the result) and ``out``.md (the lines), folders made; the table printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
