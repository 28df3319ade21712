"""What a trainer builds before its loop: device and threads, the LoRA model, its optimizer,
and the supervised warm start -- once, for every trainer."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from algos.cli import check_model_flags  # noqa: F401  (also importable from here, as before)
from algos.threads import default_threads  # noqa: F401  (also importable from here, as before)


def resolve_device(args: Any, model_name: str, *, has_gpu: bool, rank: int = 0, world: int = 1) -> tuple[str, str]:
    """The device (``cuda:<local rank>`` in a data-parallel GPU run) and prompt style of a run;
    sets the CPU thread count (``--num-threads``, else :func:`default_threads`)."""
    from agents.llm_agent import default_prompt_style

    device = args.device or ("cuda" if has_gpu else "cpu")
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    if device == "cpu":
        torch.set_num_threads(args.num_threads or default_threads(model_name))
    style = args.prompt_style if args.prompt_style != "auto" else default_prompt_style(model_name)
    return device, style


def build_policy_model(args: Any, model_name: str, *, device: str, per_role: bool = False, lm_head: bool = False,
                       init_adapter: str | None = None, names: Sequence[str] | None = None):
    """The backbone with trainable LoRA adapters (``--lora-r``, ``--lora-alpha``), or with the
    adapter at ``init_adapter`` loaded trainable as each of them; in eval mode (no dropout: sampling and
    training log-probs agree). Returns ``(model, tokenizer)``."""
    from agents.backbone import load_backbone
    from agents.lora import LLAMA_TARGET_MODULES, POLICY_ADAPTER, add_lora, load_adapter
    from agents.prompts import EXTRACT, MANAGE

    backbone = load_backbone(model_name, device=device, dtype=args.dtype)
    if init_adapter:
        # every trained adapter starts from the given one (per-role: the same weights in each role)
        model = backbone
        for name in names or ((EXTRACT, MANAGE) if per_role else (POLICY_ADAPTER,)):
            model = load_adapter(model, init_adapter, adapter_name=name, is_trainable=True)
    else:
        targets = [*LLAMA_TARGET_MODULES, "lm_head"] if lm_head else None
        model = add_lora(backbone, r=args.lora_r, alpha=args.lora_alpha, per_role=per_role, target_modules=targets,
                         names=names)
    model.eval()
    return model, backbone.tokenizer


def make_optimizer(model, learning_rate: float, extra: Sequence[dict] = ()) -> torch.optim.Optimizer:
    """AdamW over the model's trainable (LoRA) parameters, plus ``extra`` parameter groups
    (e.g. a value head with its own learning rate)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": learning_rate}, *extra]
    return torch.optim.AdamW(groups)


def sft_warm_start(model, tokenizer, pairs: Sequence[tuple[str, str]], args: Any, *, style: str,
                   adapter: str | None, console, progress: bool, description: str = "SFT warm start",
                   distill: bool = True) -> list[float]:
    """``--sft-warmup-steps`` supervised steps on (observation, action) pairs into ``adapter``
    (``--sft-learning-rate``, else ``--learning-rate``; ``--sft-schedule``), with a progress bar."""
    from algos.sft import sft_progress, train_sft

    with sft_progress(args.sft_warmup_steps, description, console=console, enabled=progress) as on_step:
        losses = train_sft(model, tokenizer, pairs, steps=args.sft_warmup_steps, batch_size=args.sft_batch_size,
                           learning_rate=args.sft_learning_rate or args.learning_rate,
                           max_prompt_tokens=args.max_prompt_tokens, seed=args.seed, prompt_style=style,
                           distill=distill, adapter=adapter, on_step=on_step, schedule=args.sft_schedule)
    console.print(f"{description}: {len(pairs)} demonstrations, loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    return losses


def check_prompt_room(make_env, tokenizer, *, max_prompt_tokens: int, style: str, roles: Sequence[str],
                      distill: bool = True, flag: str = "--max-prompt-tokens") -> None:
    """:class:`algos.run.UserError` when ``max_prompt_tokens`` cannot hold even the minimal
    prompt (every droppable record removed) of one of ``roles`` -- checked on the first
    observations of each role in one episode of ``make_env()``, played by the oracle
    (other agents for non-synthetic sources), before any model is loaded."""
    from agents.prompts import render_prompt
    from algos.cli import UserError
    from memenv.scripted import NoopAgent, OracleAgent

    env = make_env()
    obs, info = env.reset()
    synthetic = type(getattr(env.unwrapped, "source", None)).__name__ == "SyntheticSource"
    agent = OracleAgent() if synthetic else NoopAgent()
    seen: dict[str, str] = {}
    done = False
    while not done and set(roles) - set(seen):
        seen.setdefault(info["role"], obs)
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        done = terminated or truncated
    for role in roles:
        if role not in seen:
            continue
        try:
            render_prompt(tokenizer, seen[role], max_prompt_tokens=max_prompt_tokens, distill=distill, style=style)
        except ValueError as err:
            raise UserError(f"{flag} {max_prompt_tokens} is too small: {err}") from None


