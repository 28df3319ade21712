"""The prepared GPU run (benchmarks.gpu_run): its --dry-run runs every step on the CPU."""

import json

import pytest

from benchmarks import gpu_run


@pytest.mark.slow
def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    locomo = tmp_path / "locomo.json"
    locomo.write_text((__import__("pathlib").Path(__file__).parent / "fixtures" / "locomo_tiny.json").read_text())
    summary = gpu_run.main(["--dry-run", "--out", str(tmp_path / "out"), "--budget", "600", "--locomo", str(locomo)])
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["compute_speed", "logo_smoke", "memory_r1_ppo", "locomo_leaderboard", "logo_stage8"]
    assert all(s["rc"] == 0 for s in steps.values()), [(s["step"], s["rc"]) for s in summary["steps"]]
    out = tmp_path / "out"
    speed = json.loads((out / "compute_speed_cpu.json").read_text())
    assert speed["model"] == "tiny" and set(speed["decode_tok_s"]) == {"1", "16", "64"}
    assert (out / "logo_stage8" / "checkpoints" / "latest").is_file()  # the next lease resumes it
    assert json.loads((out / "summary.json").read_text())["dry_run"] is True


def test_a_step_past_its_time_is_recorded_and_the_run_goes_on(tmp_path):
    import sys

    result = gpu_run.run_step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, timeout=1)
    assert result["rc"] == "timeout" and (tmp_path / "slow.log").is_file()


def test_study_replaces_the_stage_with_the_resumable_smollm2_gpu_reproduction(tmp_path):
    from algos.cli import parse_args

    args = parse_args(gpu_run.Args, ["--study", "--out", str(tmp_path)])
    name, argv, share = gpu_run.steps(args, tmp_path)[-1]
    assert name == "study_smollm2_gpu" and share == 1.0
    assert argv[argv.index("--preset") + 1] == "smollm2-gpu"
    assert argv[argv.index("--work-dir") + 1] == str(tmp_path / "study")
    assert "logo_stage8" not in [s[0] for s in gpu_run.steps(args, tmp_path)]
    dry = gpu_run.steps(parse_args(gpu_run.Args, ["--study", "--dry-run"]), tmp_path)[-1][1]
    assert dry[dry.index("--model") + 1] == "tiny" and "--token-budget" in dry


def test_plan_prints_the_vllm_commands_without_a_gpu_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    plan = gpu_run.main(["--plan", "--rollout-engine", "vllm", "--out", str(out), "--locomo", str(tmp_path / "l.json")])
    assert plan["rollout_engine"] == "vllm" and not out.exists()
    commands = {p["step"]: p["command"] for p in plan["plan"]}
    assert list(commands) == ["compute_speed", "logo_smoke", "memory_r1_ppo", "locomo_leaderboard", "logo_stage8"]
    for step in ("logo_smoke", "memory_r1_ppo", "locomo_leaderboard", "logo_stage8"):
        assert "--rollout-engine vllm" in commands[step], commands[step]
    assert "--rollout-engine" not in commands["compute_speed"]
    assert "--device cuda" in commands["logo_smoke"]
    printed = capsys.readouterr().out
    assert all(f"{step} (" in printed and command in printed for step, command in commands.items())


def test_auto_picks_vllm_where_it_is_importable_and_the_dry_run_follows_it(monkeypatch, tmp_path):
    import importlib.util

    from algos.cli import parse_args

    real = importlib.util.find_spec
    for present in (True, False):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, present=present: (
            object() if present else None) if name == "vllm" else real(name, *a))
        assert gpu_run.resolve_engine(parse_args(gpu_run.Args, [])) == ("vllm" if present else "hf")
        dry = parse_args(gpu_run.Args, ["--dry-run"])
        assert gpu_run.resolve_engine(dry) == ("vllm" if present else "hf")
        commands = {n: a for n, a, _ in gpu_run.steps(dry, tmp_path)}
        smoke = commands["logo_smoke"]
        # vLLM cannot serve the tiny model: the vLLM dry run is SmolLM2's, on the CPU, one update
        assert smoke[smoke.index("--model") + 1] == ("smollm2-135m" if present else "tiny")
        assert smoke[smoke.index("--device") + 1] == "cpu"
        assert smoke[smoke.index("--updates-per-stage") + 1] == ("1" if present else "2")
        assert smoke[smoke.index("--rollout-engine") + 1] == ("vllm" if present else "hf")
        # --model tiny asks for the hf path even where vLLM is importable
        assert gpu_run.resolve_engine(parse_args(gpu_run.Args, ["--dry-run", "--model", "tiny"])) == "hf"
    with pytest.raises(SystemExit):  # the tiny model is hf-only: a one-line error
        gpu_run.main(["--dry-run", "--rollout-engine", "vllm", "--model", "tiny"])


def test_the_study_step_samples_with_the_chosen_engine(tmp_path):
    from algos.cli import parse_args
    from benchmarks import reproduce

    argv = gpu_run.steps(parse_args(gpu_run.Args, ["--study", "--rollout-engine", "vllm"]), tmp_path)[-1][1]
    assert argv[argv.index("--rollout-engine") + 1] == "vllm"
    args = parse_args(reproduce.ReproduceArgs, argv[argv.index("benchmarks.reproduce") + 1:])
    preset = reproduce.resolve_preset(args)
    assert preset.trainer["rollout_engine"] == "vllm"
    trainer = reproduce.trainer_argv(preset, "logo", 0, tmp_path / "a", tmp_path / "o")
    assert trainer[trainer.index("--rollout-engine") + 1] == "vllm"
    default = reproduce.resolve_preset(parse_args(reproduce.ReproduceArgs, ["--preset", "smollm2-gpu"]))
    assert "rollout_engine" not in default.trainer  # unset: the trainer's own default (hf)
