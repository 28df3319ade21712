"""The reproduction driver (benchmarks.reproduce) and held-out evaluation (algos.evaluate)."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from algos.evaluate import check_heldout, summarise  # noqa: E402
from algos.cli import parse_args  # noqa: E402
from benchmarks import reproduce as R  # noqa: E402


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    report = R.main(["--preset", "micro", "--work-dir", str(root / "runs"), "--results-dir", str(root / "results")])
    return root, report


def test_each_rl_arm_is_one_trainer_run_from_the_sft_adapter(micro):
    root, report = micro
    for r in report["runs"]:
        if r["arm"] in R.RL_ARMS:
            run = root / "runs" / r["arm"] / f"seed{r['seed']}"
            args = json.loads((run / "args.json").read_text())
            assert args["init_adapter"] == str(root / "runs" / "sft" / "seed0" / "adapter")
            assert args["token_budget"] == report["preset"]["token_budget"]
            assert not (run / "args_history.jsonl").exists()  # one call, never resumed or edited


def test_a_second_call_reuses_finished_runs_and_evaluations_and_deletes_nothing(micro, monkeypatch):
    root, report = micro
    (root / "runs" / "grpo" / "seed0" / "my-notes.txt").write_text("keep me")
    before = {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("adapter_model.safetensors")}
    assert {p.parent.name for p in (root / "runs").rglob("eval.json")} == {"seed0"}  # sft, grpo, logo
    assert len(list((root / "runs").rglob("eval.json"))) == 3

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated again although eval.json holds the result")

    monkeypatch.setattr("algos.evaluate.evaluate_synthetic", no_evaluation)
    again = R.main(["--preset", "micro", "--work-dir", str(root / "runs"), "--results-dir", str(root / "results2")])
    assert (root / "runs" / "grpo" / "seed0" / "my-notes.txt").read_text() == "keep me"
    assert {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("adapter_model.safetensors")} == before
    assert again["table"] == report["table"]


def test_the_report_records_the_environment_and_lock(micro):
    root, report = micro
    env = report["environment"]
    assert env["lock_sha256"] and env["versions"]["torch"] and env["cpu_capability"]
    assert re.search(r"Environment: (code [0-9a-f]{12}(\+changes)?; )?lock `requirements.lock` sha256", (root / "results" / "reproduce_micro.md").read_text())
    if env["cpu_model"]:  # the processor is named (bf16 speed depends on its matrix units)
        assert env["cpu_model"] in (root / "results" / "reproduce_micro.md").read_text()


def test_micro_preset_writes_table_json_and_png(micro):
    root, report = micro
    res = root / "results"
    md = (res / "reproduce_micro.md").read_text()
    assert "| grpo |" in md and "| logo |" in md and "python -m benchmarks.reproduce --preset micro" in md
    assert "SFT warm start: 2 steps at learning rate 0.01, constant schedule" in md
    data = json.loads((res / "reproduce_micro.json").read_text())
    assert set(data["table"]) == {"grpo", "logo"}
    assert (res / "reproduce_micro.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rl_arms_spend_equal_token_budgets_within_one_update(micro):
    _, report = micro
    rl = [r for r in report["runs"] if r["arm"] in R.RL_ARMS]
    assert len(rl) == 2
    budget = report["preset"]["token_budget"]
    for r in rl:
        last_update = r["curve"][-1]["tokens"] - (r["curve"][-2]["tokens"] if len(r["curve"]) > 1 else 0.0)
        # the driver stops at the first update that reaches the budget: never before, at most one update after
        assert budget <= r["tokens"] < budget + last_update + 1e-9
        assert r["updates"] == 1  # micro budget of 1 token: exactly one update
    tokens = [r["tokens"] for r in rl]
    largest_update = max(r["curve"][-1]["tokens"] for r in rl)
    assert max(tokens) - min(tokens) <= largest_update


def test_evaluation_returns_per_kind_scores_in_unit_interval(micro):
    _, report = micro
    for r in report["runs"]:
        ev = r["eval"]["2"]
        assert ev["num_questions"] > 0
        assert ev["by_kind"] and all(0.0 <= v <= 1.0 for v in ev["by_kind"].values())
        assert 0.0 <= ev["f1"] <= 1.0


def test_arms_differ_only_in_their_flag():
    assert R.arm_flags("grpo") == {"inner_fraction": 0.0}
    assert R.arm_flags("logo-perrole") == {"per_role_adapters": True}
    assert R.arm_stages("logo-nocurr", (8, 16, 32)) == (32,)
    assert R.arm_stages("logo", (8, 16, 32)) == (8, 16, 32)
    with pytest.raises(ValueError):
        R.arm_flags("sft")
    argv = R.trainer_argv(R.PRESETS["gpu"], "grpo", 3, R.Path("/sft"), R.Path("/x"))
    assert argv[argv.index("--inner-fraction") + 1] == "0.0"
    assert argv[argv.index("--stages") + 1: argv.index("--stages") + 4] == ["8", "16", "32"]
    assert argv[argv.index("--init-adapter") + 1] == "/sft"
    assert argv[argv.index("--token-budget") + 1] == str(R.PRESETS["gpu"].token_budget)
    assert "--extractor" not in argv  # the GPU preset trains the extractor too


def test_heldout_worlds_reject_training_seeds():
    assert check_heldout([0, 5]) == [0, 5]
    with pytest.raises(ValueError):
        check_heldout([1_000_000])
    with pytest.raises(ValueError):
        check_heldout([])


def test_summarise_means_per_kind():
    res = summarise([("single-hop", 1.0), ("single-hop", 0.0), ("temporal", 0.5)], invalid=1, policy_turns=4,
                    memory_sizes=[2, 4], memory_tokens=[10, 20])
    assert res.to_dict()["memory_tokens"] == 15.0
    assert res.f1 == pytest.approx(0.5)
    assert res.by_kind == {"single-hop": 0.5, "temporal": 0.5}
    assert res.invalid_rate == 0.25 and res.memory_size == 3.0


def test_aggregate_mean_and_std_over_seeds():
    runs = [{"arm": "grpo", "seed": s, "tokens": 10.0 + s, "updates": 2, "curve": [],
             "eval": {"2": {"f1": f, "invalid_rate": 0.0, "by_kind": {"temporal": f}}}} for s, f in ((0, 0.2), (1, 0.4))]
    table = R.aggregate(runs, ["grpo"], [0, 1], [2])
    mean, std = table["grpo"]["horizons"]["2"]["f1"]
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.1)
    assert table["grpo"]["tokens"][0] == pytest.approx(10.5)


def test_sft_schedule_and_name_overrides(tmp_path, capsys):
    args = parse_args(R.ReproduceArgs, ["--preset", "micro", "--sft-schedule", "linear"])
    assert R.resolve_preset(args).sft_schedule == "linear"
    assert R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "micro"])).sft_schedule == "constant"
    with pytest.raises(SystemExit) as exit_info:
        R.main(["--preset", "micro", "--name", "../x", "--work-dir", str(tmp_path), "--results-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--name must be a plain file stem, got '../x'" in capsys.readouterr().err


def test_overrides_replace_the_presets_settings():
    args = parse_args(R.ReproduceArgs, ["--preset", "micro", "--seeds", "3", "4", "--arms", "logo", "--jobs", "2",
                                        "--token-budget", "7", "--eval-worlds", "2", "--eval-horizons", "4", "8"])
    preset = R.resolve_preset(args)
    assert (preset.seeds, preset.arms, preset.jobs, preset.token_budget) == ((3, 4), ("logo",), 2, 7)
    assert (preset.eval_worlds, preset.eval_horizons) == (2, (4, 8))
    assert R.resolve_preset(parse_args(R.ReproduceArgs, [])) == R.PRESETS["cpu"]


@pytest.mark.parametrize("argv, message", [
    (["--arms", "logo", "nosuch"], "--arms: invalid choice: 'nosuch'"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--token-budget", "-1"], "--token-budget must be >= 1, got -1"),
    (["--eval-worlds", "0"], "--eval-worlds must be >= 1, got 0"),
    (["--eval-horizons", "8", "0"], "--eval-horizons takes positive session counts, got 8 0"),
    (["--seeds", "-1"], "--seeds takes seeds >= 0, got -1"),
    (["--arms", "base", "sft", "--locomo", "dev.json"], "--locomo needs the 'logo' arm"),
    (["--arms", "grpo", "--locomo", "dev.json"], "--locomo needs the 'logo' arm"),
    (["--name", ".hidden"], "--name must be a plain file stem"),
    (["--preset", "tpu"], "--preset: invalid choice: 'tpu'"),
    (["--difficulty", "extreme"], "--difficulty: invalid choice: 'extreme'"),
    (["--sft-steps", "0"], "--sft-steps must be >= 1, got 0"),
])
def test_bad_flags_are_refused_in_one_line_before_anything_runs(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(R, "run_all", lambda *a: pytest.fail("ran despite a bad flag"))
    with pytest.raises(SystemExit) as exit_info:
        R.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err, err
    assert message in err


def test_no_constrained_reaches_every_trainer_command_and_the_evaluation():
    on = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "cpu"]))
    off = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "cpu", "--no-constrained"]))
    assert on.trainer.get("constrained", True) is True and off.trainer["constrained"] is False
    argv = R.trainer_argv(off, "logo", 0, R.Path("sft"), R.Path("out"))
    assert "--no-constrained" in argv
    assert "--no-constrained" not in R.trainer_argv(on, "logo", 0, R.Path("sft"), R.Path("out"))
    assert R.PRESETS["cpu"].trainer == on.trainer  # the preset itself is left as it was


def test_smollm2_cpu_preset_code_path_end_to_end_on_the_tiny_model(tmp_path):
    """The smollm2-cpu study's code path (co-learning extractor and manager, constrained, the
    official trainer preset, equal budgets), with the tiny model and micro sizes."""
    report = R.main(["--preset", "smollm2-cpu", "--model", "tiny", "--seeds", "0", "--token-budget", "1",
                     "--eval-worlds", "1", "--eval-horizons", "2", "--sft-steps", "2",
                     "--work-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")])
    assert set(report["table"]) == {"base", "sft", "grpo", "logo"}
    for arm in ("grpo", "logo"):
        args = json.loads((tmp_path / "runs" / arm / "seed0" / "args.json").read_text())
        assert args["preset"] == "memory-r2" and args["extractor"] is None and args["constrained"] is True
        assert args["reward_timing"] == "final" and args["clip_mode"] == "turn" and args["reference"] == "stage-start"
        assert args["stages"] == [2, 4] and args["group_size"] == 4 and args["val_worlds"] == 0
        assert json.loads(args["env_kwargs"])["session_chunks"] is None
        assert args["inner_fraction"] == (0.0 if arm == "grpo" else 0.5)
    sft_losses = json.loads((tmp_path / "runs" / "sft" / "seed0" / "sft_losses.json").read_text())
    assert sft_losses["losses"]  # the warm start imitated both roles (the policy extracts too)
    rl = {r["arm"]: r for r in report["runs"] if r["arm"] in R.RL_ARMS}
    assert all(r["updates"] == 2 and r["curve"][-1]["stage_sessions"] == 4 for r in rl.values())  # both stages
    assert all(p["seconds"] > 0 for r in rl.values() for p in r["curve"])
    for r in report["runs"]:
        ev = r["eval"]["2"]
        assert ev["invalid_rate"] == 0.0  # constrained decoding: every action parses
        assert ev["memory_tokens"] >= 0 and ev["num_questions"] > 0
    md = (tmp_path / "results" / "reproduce_smollm2-cpu.md").read_text()
    assert "extractor the policy (shared extract+manage adapter)" in md and "default worlds" in md
    assert "memory tokens kept (2)" in md and "s / update" in md and "## Learning curves against generated tokens" in md
    assert "| grpo | " in md and "| logo | " in md


def test_smollm2_presets_co_learn_both_roles_and_hard_worlds_reach_training_and_evaluation():
    for name in ("smollm2-cpu", "smollm2-gpu"):
        preset = R.PRESETS[name]
        assert preset.model == "smollm2-135m" and preset.arms == ("base", "sft", "grpo", "logo")
        assert preset.trainer["extractor"] is None and preset.trainer["preset"] == "memory-r2"
        assert len(preset.seeds) >= 2
        argv = R.sft_argv(preset, 0, R.Path("o"))
        assert argv[argv.index("--roles") + 1: argv.index("--roles") + 3] == ["extract", "manage"]
    assert R.PRESETS["smollm2-cpu"].eval_horizons == (4, 8, 16) and R.PRESETS["smollm2-gpu"].stages == (8, 16, 32)
    hard = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "smollm2-cpu", "--difficulty", "hard"]))
    for argv in (R.trainer_argv(hard, "logo", 0, R.Path("s"), R.Path("o")), R.sft_argv(hard, 0, R.Path("o"))):
        assert argv[argv.index("--env") + 1] == "MemorySessionHard-v0"
    kwargs = R.eval_env_kwargs(hard)
    assert kwargs["difficulty"] == "hard" and kwargs["session_chunks"] is None and kwargs["manage_top_k"] == 25
    assert "metric" not in kwargs and "lambda_comp" not in kwargs  # evaluation keeps the benchmark's answer F1
    assert "--env" not in R.trainer_argv(R.PRESETS["cpu"], "logo", 0, R.Path("s"), R.Path("o"))
    assert R.eval_env_kwargs(R.PRESETS["cpu"]) == {}


def test_algorithm_official_drops_the_legacy_pins_and_nothing_else():
    legacy = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "cpu"]))
    official = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "cpu", "--algorithm", "official"]))
    assert all(legacy.trainer[k] == v for k, v in R.LEGACY_LOGO_GRPO.items())
    assert not set(R.LEGACY_LOGO_GRPO) & set(official.trainer)
    assert {k: v for k, v in legacy.trainer.items() if k not in R.LEGACY_LOGO_GRPO} == official.trainer
    argv = R.trainer_argv(official, "logo", 0, R.Path("sft"), R.Path("out"))
    assert "--reward-timing" not in argv and "--clip-mode" not in argv


@pytest.mark.parametrize("group", sorted(R.OFFICIAL_GROUPS))
def test_algorithm_official_group_drops_only_that_groups_pins(group):
    legacy = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "cpu"]))
    one = R.resolve_preset(parse_args(R.ReproduceArgs, ["--preset", "cpu", "--algorithm", f"official-{group}"]))
    assert set(legacy.trainer) - set(one.trainer) == set(R.OFFICIAL_GROUPS[group])
    assert all(one.trainer[k] == v for k, v in legacy.trainer.items() if k not in R.OFFICIAL_GROUPS[group])


def test_an_evaluation_is_redone_when_the_adapter_changes(micro, monkeypatch):
    root, _ = micro
    preset = R.PRESETS["micro"]
    run = root / "runs" / "logo" / "seed0"
    cached = R._evaluate(preset, run / "adapter", run / "eval.json")
    weights = next((run / "adapter").rglob("*.safetensors"))
    from safetensors.torch import load_file, save_file

    calls = []
    real = __import__("algos.evaluate", fromlist=["evaluate_synthetic"]).evaluate_synthetic
    monkeypatch.setattr("algos.evaluate.evaluate_synthetic", lambda *a, **k: calls.append(1) or real(*a, **k))
    weights.write_bytes(weights.read_bytes())  # the same bytes rewritten: the digest holds, no re-evaluation
    assert R._evaluate(preset, run / "adapter", run / "eval.json") == cached and calls == []
    tensors = load_file(str(weights))
    save_file({k: v * 1.5 for k, v in tensors.items()}, str(weights))  # a retrained adapter: a new digest
    R._evaluate(preset, run / "adapter", run / "eval.json")
    assert calls == [1]
