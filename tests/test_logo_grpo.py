"""The LoGo-GRPO command: argument checks, checkpoints and exact resume, data parallel, parameters."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from algos import logo_grpo
from algos.cli import parse_args
from algos.logo_grpo import Args
from algos.run import UserError

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY = ("--model tiny --stages 2 3 --updates-per-stage 2 --group-size 2 --conversations-per-update 1 --inner-n 2 "
        "--inner-fraction 1.0 --max-new-tokens 8 --max-prompt-tokens 1024 --ppo-epochs 1 --num-minibatches 2 "
        "--micro-batch-size 8 --answerer scripted --checkpoint-every 1 --learning-rate 1e-3 --no-progress "
        "--no-tensorboard").split()
TIMING = ("charts/rollout_seconds", "charts/update_seconds", "charts/updates_per_s", "charts/tokens_per_s", "charts/elapsed_s")


@pytest.mark.parametrize("flags,fragment", [
    (["--inner-fraction", "1.5"], "--inner-fraction"),
    (["--inner-n", "1"], "--inner-n"),
    (["--group-size", "1"], "--group-size"),
    (["--stages", "8", "0"], "--stages"),
    (["--env-kwargs", "[1]"], "--env-kwargs"),
    (["--micro-batch-size", "0"], "--micro-batch-size"),
    (["--token-budget", "0"], "--token-budget"),
    (["--stop-after", "0"], "--stop-after"),
])
def test_inconsistent_flags_fail_at_parse_time(flags, fragment, capsys):
    with pytest.raises(SystemExit):
        parse_args(Args, flags)
    assert fragment in capsys.readouterr().err


def test_every_hyper_parameter_is_a_flag_with_help():
    out = subprocess.run([sys.executable, "-m", "algos.logo_grpo", "--help"], capture_output=True, text=True, check=True).stdout
    for name in Args.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out
    assert "plain GRPO" in out and "(default: 8 16 32)" in out


def test_help_lists_the_trainers_own_options_before_the_shared_ones(capsys):
    from algos.cli import TrainerArgs, build_parser

    text = build_parser(Args).format_help()
    text = text[text.index("\noptions:"):]  # the option list, past the usage lines
    shared = text.index("Run, optimisation and checkpoint options shared by the trainers")
    assert text.index("--stages") < shared < text.index("--env ENV") < text.index("--output-dir OUTPUT_DIR")
    assert issubclass(Args, TrainerArgs) and "--inner-fraction" in text[:shared]


def test_inner_fraction_zero_is_accepted_and_means_no_local_groups():
    args = parse_args(Args, ["--inner-fraction", "0", "--inner-n", "1"])
    assert args.inner_fraction == 0.0


def test_an_env_without_fork_fails_at_once(tmp_path):
    with pytest.raises(UserError, match="no fork"):
        logo_grpo.main(["--env", "CartPole-v1", *TINY, "--output-dir", str(tmp_path / "unused")])
    assert not (tmp_path / "unused").exists()  # refused before anything was written


def strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    full = logo_grpo.main([*TINY, "--output-dir", str(tmp_path / "full")])
    part = logo_grpo.main([*TINY, "--output-dir", str(tmp_path / "cut"), "--stop-after", "3"])
    assert part["state"]["update"] == 3
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text() == "update-000003"
    rest = logo_grpo.main([*TINY, "--resume", str(tmp_path / "cut")])
    assert rest["state"]["update"] == 4 and len(rest["history"]) == 1
    assert rest["digest"] == full["digest"]
    assert strip_timing(part["history"] + rest["history"]) == strip_timing(full["history"])
    # outputs: metrics as namespaced JSON lines, per-stage and final adapters in PEFT format
    lines = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [line["update"] for line in lines] == [1, 2, 3, 4]
    assert all(k == "update" or "/" in k for line in lines for k in line)
    for folder in ("adapter", "stage-2/policy", "stage-3/policy"):
        assert (tmp_path / "full" / folder / "adapter_config.json").is_file()
    assert len(list((tmp_path / "full" / "checkpoints").glob("update-*"))) == 3  # --keep-checkpoints


def test_token_budget_ends_each_stage_when_its_share_is_spent(tmp_path):
    result = logo_grpo.main([*TINY, "--token-budget", "1", "--output-dir", str(tmp_path)])
    rows = result["history"]
    # a share of 1 token is spent by any update: one update per stage instead of --updates-per-stage 2
    assert [r["charts/stage_sessions"] for r in rows] == [2, 3]
    cumulative = [r["charts/cumulative_tokens"] for r in rows]
    assert cumulative == list(np.cumsum([r["charts/generated_tokens"] for r in rows])) and cumulative[0] > 0
    assert result["state"]["tokens"] == cumulative[-1] and result["state"]["update"] == 2
    for folder in ("stage-2/policy", "stage-3/policy", "adapter"):
        assert (tmp_path / folder / "adapter_config.json").is_file()
    # a budget larger than the updates can spend changes nothing: --updates-per-stage still ends the stages
    full = logo_grpo.main([*TINY, "--token-budget", "10000000", "--output-dir", str(tmp_path / "big")])
    assert [r["charts/stage_sessions"] for r in full["history"]] == [2, 2, 3, 3]


def test_final_adapter_loads_with_peft(tmp_path):
    from peft import PeftModel

    from agents.backbone import tiny_backbone

    logo_grpo.main([*TINY, "--output-dir", str(tmp_path), "--stages", "2", "--updates-per-stage", "1"])
    model = PeftModel.from_pretrained(tiny_backbone(seed=0).model, str(tmp_path / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_adapters(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "algos.logo_grpo", *TINY,
           "--stages", "2", "--conversations-per-update", "2", "--output-dir", str(tmp_path),
           "--no-constrained"]  # in 8 tokens a grammar forces every token: no gradient to compare
    subprocess.run(cmd, check=True, capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    digests = [(tmp_path / f"adapter-digest-rank{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["losses/grad_norm"] > 0 for m in metrics)
    # each process rolled out its own conversation, and the update used both
    assert all(m["charts/samples"] > 0 for m in metrics)


def test_per_role_warm_start_trains_each_adapter_on_its_own_role(tmp_path):
    import safetensors.torch

    out = logo_grpo.main([*TINY, "--output-dir", str(tmp_path), "--stages", "2", "--updates-per-stage", "1",
                          "--per-role-adapters", "--sft-warmup-steps", "2", "--sft-worlds", "2",
                          "--prompt-style", "compact", "--max-prompt-tokens", "256", "--learning-rate", "0"])
    assert out["state"]["update"] == 1  # an RL update with learning rate 0: only the warm start moved weights
    for role in ("extract", "manage"):
        weights = safetensors.torch.load_file(str(tmp_path / "adapter" / role / "adapter_model.safetensors"))
        # LoRA B starts at zero: a non-zero B means this adapter itself was trained
        assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k), role


def test_init_adapter_starts_every_per_role_adapter_from_the_same_weights(tmp_path):
    import safetensors.torch

    logo_grpo.main([*TINY, "--output-dir", str(tmp_path / "a"), "--stages", "2", "--updates-per-stage", "1",
                    "--sft-warmup-steps", "2", "--learning-rate", "0"])
    logo_grpo.main([*TINY, "--output-dir", str(tmp_path / "b"), "--stages", "2", "--updates-per-stage", "1",
                    "--per-role-adapters", "--init-adapter", str(tmp_path / "a" / "adapter"), "--learning-rate", "0"])
    start = safetensors.torch.load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    for role in ("extract", "manage"):
        weights = safetensors.torch.load_file(str(tmp_path / "b" / "adapter" / role / "adapter_model.safetensors"))
        assert weights.keys() == start.keys() and all(torch.equal(weights[k], start[k]) for k in start), role


def test_demo_defaults_never_override_a_flag_given_on_the_command_line():
    argv = ["--no-lora-lm-head", "--group-size", "3"]
    args = logo_grpo.apply_demo_defaults(parse_args(Args, argv), argv, has_gpu=False)
    assert args.demo and args.model == "tiny" and args.prompt_style == "compact"
    assert args.lora_lm_head is False and args.group_size == 3
    assert logo_grpo.apply_demo_defaults(parse_args(Args, ["--model", "x"]), ["--model", "x"], has_gpu=False).demo is None


# ---------------------------------------------------------------- the official Memory-R2 settings (issue 17)
def preset_args(argv=()):
    argv = ["--preset", "memory-r2", *argv]
    return logo_grpo.apply_demo_defaults(parse_args(Args, argv), argv, has_gpu=True)


def test_memory_r2_preset_sets_every_official_value_and_given_flags_win():
    args = preset_args()
    for name, value in logo_grpo.MEMORY_R2.items():
        assert getattr(args, name) == value, name
    assert (args.group_size, args.learning_rate, args.ppo_epochs, args.clip_mode, args.loss_agg) == (16, 2e-5, 2, "turn", "turn")
    assert (args.reward_timing, args.reference, args.handoff, args.local_temperature) == ("final", "stage-start", "best", 0.0)
    env = json.loads(args.env_kwargs)
    assert env == logo_grpo.MEMORY_R2_ENV and env["invalid_penalty"] == 0.0 and env["metric"] == "squad_f1"
    mine = preset_args(["--group-size", "4", "--env-kwargs", '{"metric": "f1"}'])
    assert mine.group_size == 4 and json.loads(mine.env_kwargs)["metric"] == "f1"
    assert json.loads(mine.env_kwargs)["session_chunks"] == 4
    # on a CPU the demo fills only what neither the command line nor the preset set
    demo = logo_grpo.apply_demo_defaults(parse_args(Args, ["--preset", "memory-r2"]), ["--preset", "memory-r2"],
                                         has_gpu=False)
    assert demo.model == "tiny" and demo.group_size == 16 and demo.learning_rate == 2e-5


def test_greedy_rerolls_are_warned_about_once_and_only_with_local_groups():
    """--preset memory-r2 decodes rerolls greedily: identical rerolls, zero local advantage."""
    warning = logo_grpo.greedy_rerolls_warning(preset_args())
    assert warning is not None and "--local-temperature" in warning and "\n" not in warning
    assert logo_grpo.greedy_rerolls_warning(preset_args(["--local-temperature", "1.5"])) is None
    assert logo_grpo.greedy_rerolls_warning(preset_args(["--inner-fraction", "0"])) is None  # plain GRPO: no rerolls
    assert logo_grpo.greedy_rerolls_warning(parse_args(Args, [])) is None  # default: sampled rerolls


def test_defaults_are_the_official_algorithm():
    args = parse_args(Args, [])
    assert (args.clip_mode, args.loss_agg, args.dual_clip_c, args.log_ratio_cap) == ("turn", "turn", 3.0, 3.0)
    assert (args.reward_timing, args.max_final_questions, args.local_questions) == ("final", 64, "sample")
    assert (args.reference, args.reset_optimizer, args.skip_unprobed_sessions) == ("stage-start", True, False)
    assert args.local_temperature is None  # rerolls are sampled, as the paper describes


def test_one_update_under_the_memory_r2_preset_on_the_tiny_model_with_hand_computed_rewards(tiny_backbone):
    from agents.lora import add_lora
    from algos import rollouts as R
    from algos.build import make_optimizer
    from algos.update import UpdateConfig, ppo_update
    from memenv.env import MemorySessionEnv
    from tests.helpers_env import CreditSource
    from tests.test_rollouts import KeepOrForget, KeywordReader

    args = preset_args(["--group-size", "2"])
    env_options = json.loads(args.env_kwargs)

    def make():
        return MemorySessionEnv(source=CreditSource(), **env_options)

    reader = KeywordReader()
    batch = R.collect(KeepOrForget(), reader, make, ["credit"], rng=np.random.default_rng(0),
                      **logo_grpo.collect_options(args))
    # which questions: all 3 (fewer than 64), each asked once per rollout on the final memory
    assert sorted(q for q in reader.asked[-6:]) == ["q0", "q0", "q1", "q1", "q2", "q2"]
    # session_chunks=4 splits each 2-turn session into 2 rounds; rollout 0 ADDs its facts in both,
    # so its final memory holds every fact twice: 2 * (4 + 2 + 8) = 28 tokens against 15 seen
    compression = 0.2 * (28 - 0.7 * 15) / 15
    # rollout 0: q0 (session 0) and q1 (sessions 0, 2) answered (SQuAD F1 1.0), q2 (no evidence:
    # the last session) not; session 1 uncredited -> 0; the final compression off every session
    rollout0 = [1.0 - compression, 0.0 - compression, 0.5 - compression]
    assert batch.stats["charts/session_reward"] == pytest.approx((sum(rollout0) + 0.0) / 6)
    manage = [s for s in batch.samples if not s.local and s.role == "manage"]
    assert len(manage) == 2 * 3 * 2 and all(abs(abs(s.advantage) - 2 ** -0.5) < 1e-4 for s in manage)
    model = add_lora(tiny_backbone, r=4, alpha=8)
    model.eval()
    optimizer = make_optimizer(model, args.learning_rate)
    config = UpdateConfig.from_args(args)
    assert (config.clip_mode, config.loss_agg, config.dual_clip_c, config.log_ratio_cap) == ("turn", "turn", 3.0, 3.0)
    losses = ppo_update(model, batch.samples, optimizer, config, pad_id=0, rng=np.random.default_rng(0))
    assert np.isfinite(losses["losses/loss"]) and "losses/clipfrac_dual" in losses


def test_validation_hands_on_the_best_weights_and_stops_a_stalled_stage(tmp_path):
    from safetensors.torch import load_file

    result = logo_grpo.main([*TINY, "--updates-per-stage", "3", "--val-worlds", "1", "--val-every", "1",
                             "--early-stop-patience", "1", "--output-dir", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val/score" in r]
    assert val and all(r["val/best"] >= r["val/score"] for r in val)
    per_stage = [r["charts/stage_sessions"] for r in result["history"]]
    # a validation that does not beat the stage's start ends the stage (patience 1)
    assert len(per_stage) < 6 or all(v["val/score"] > 0 for v in val)
    for horizon in (2, 3):
        best = load_file(str(tmp_path / f"stage-{horizon}-best" / "policy" / "adapter_model.safetensors"))
        handed = load_file(str(tmp_path / f"stage-{horizon}" / "policy" / "adapter_model.safetensors"))
        assert best.keys() == handed.keys() and all(torch.equal(best[k], handed[k]) for k in best)


def test_stage_start_reference_is_saved_with_checkpoints(tmp_path):
    logo_grpo.main([*TINY, "--stop-after", "1", "--output-dir", str(tmp_path)])
    ckpt = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text()
    assert (ckpt / "adapters" / "reference-policy" / "adapter_model.safetensors").is_file()
    base = tmp_path / "base"
    logo_grpo.main([*TINY, "--stop-after", "1", "--reference", "base", "--output-dir", str(base)])
    ckpt = base / "checkpoints" / (base / "checkpoints" / "latest").read_text()
    assert not (ckpt / "adapters" / "reference-policy").exists()
