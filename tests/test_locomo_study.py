"""benchmarks.locomo_study: its commands parse in the trainers, finished runs are reused only
with the same settings, and the report renders (no model runs here)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agents.constrained import manage_capacity
from algos import logo_grpo, sft
from algos.cli import UserError, parse_args
from benchmarks import locomo_study as study


def args(**kw):
    return study.StudyArgs(**kw)


def saved_args(argv):
    """What the trainer writes to args.json: the flags with --preset's values filled in."""
    parsed, _ = logo_grpo.apply_preset(parse_args(logo_grpo.Args, argv, prog="t"), argv)
    return json.loads(json.dumps(dataclasses.asdict(parsed)))


def test_commands_parse_in_the_trainers_with_the_study_settings(tmp_path):
    a = args(data_path="x.json", stages=(4, 8), group_size=4, learning_rate=1e-4)
    logo = parse_args(logo_grpo.Args, study.rl_argv(a, "logo", 1, tmp_path / "sft", tmp_path / "out"), prog="t")
    grpo = parse_args(logo_grpo.Args, study.rl_argv(a, "grpo", 1, tmp_path / "sft", tmp_path / "out"), prog="t")
    assert logo.inner_fraction == 0.5 and grpo.inner_fraction == 0.0
    assert logo.local_temperature == logo.temperature == 1.0  # sampled rerolls, not the preset's greedy ones
    assert logo_grpo.greedy_rerolls_warning(logo) is None
    assert logo.token_budget == grpo.token_budget == a.token_budget  # equal budgets for the two arms
    assert logo.stages == (4, 8) and logo.seed == 1 and logo.group_size == 4
    env = json.loads(logo.env_kwargs)
    assert env["part"] == "train" and env["split"] == "memory-r2" and env["session_chunks"] == 4
    assert json.loads(logo.val_env_kwargs) == {"part": "val"}
    teacher = parse_args(sft.SFTArgs, study.sft_argv(a, tmp_path / "sft"), prog="t")
    assert teacher.teacher == "add-only" and teacher.source == "locomo" and teacher.part == "train"
    row = study.row_argv(a, "add-only", tmp_path / "row")
    assert row[row.index("--part") + 1] == "val" and "--save-predictions" in row and "--save-memory" in row


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    a = args(data_path="x.json")
    out = tmp_path / "grpo"
    argv = study.rl_argv(a, "grpo", 0, tmp_path / "sft", out)
    (out / "adapter").mkdir(parents=True)
    (out / "args.json").write_text(json.dumps(saved_args(argv)))
    assert study.train("algos.logo_grpo", argv, out, tmp_path / "log")["status"] == "reused"
    other = study.rl_argv(dataclasses.replace(a, learning_rate=3e-4), "grpo", 0, tmp_path / "sft", out)
    with pytest.raises(UserError, match="learning_rate"):
        study.train("algos.logo_grpo", other, out, tmp_path / "log")


def test_a_failing_step_is_one_line_naming_its_log(tmp_path):
    with pytest.raises(UserError, match="exit status 2; see"):
        study.run_module("algos.sft", ["--roles", "answer"], tmp_path / "logs" / "x.log")
    assert "$ python -m algos.sft --roles answer" in (tmp_path / "logs" / "x.log").read_text()


def test_report_renders_probe_runs_and_rows(tmp_path):
    metrics = [{"update": 1, "charts/session_reward": 0.1, "charts/cumulative_tokens": 100},
               {"update": 1, "val/score": 0.2}, {"update": 2, "charts/session_reward": 0.2, "charts/cumulative_tokens": 210}]
    png = study.plot([{"arm": "logo", "seed": 0, "metrics": metrics}], tmp_path / "c.png")
    assert png.stat().st_size > 1000
    md = study.to_markdown({
        "title": "T", "environment": {"cpu": "cpu", "code": "abc"}, "commands": ["python -m benchmarks.locomo_study"],
        "probe": [{"learning_rate": 1e-4, "group_size": 4, "rewards": [0.1, 0.2], "episode_f1": [0.3, None],
                   "seconds_per_update": [50, 70], "generated_tokens": 900}],
        "runs": [{"arm": "logo", "seed": 0, "status": "trained", "updates": 2, "tokens": 210, "best_val": 0.2,
                  "seconds": 99}],
        "rows": [{"name": "sft", "f1": 0.21, "bleu1": 0.2, "em": 0.1, "locomo_f1": 0.22, "r2_f1": 0.2, "r2_bleu1": 0.19,
                  "per_kind_f1": {"temporal": 0.3}, "memory_tokens": 100, "memory_seconds": 5, "file": "f.json"}]})
    assert "| 0.0001 | 4 | 0.100, 0.200 | 0.300 | 60 | 900 |" in md
    assert "| logo | 0 | trained | 2 | 210 | 0.2 | 99 |" in md
    assert "| sft | 21.0 | - | 20.0 | 10.0 | 22.0 | 20.0 | 19.0 | 30.0 | 100 | 5 | `f.json` |" in md
    md = study.to_markdown({"title": "T", "environment": {}, "commands": [], "rows": [
        {"name": "grpo", "f1": 0.21, "bleu1": 0.2, "em": 0.1, "locomo_f1": 0.22, "r2_f1": 0.2, "r2_bleu1": 0.19,
         "per_kind_f1": {}, "memory_tokens": 100, "memory_seconds": 5, "file": "f.json",
         "vs_add_only": {"diff": -0.0298, "low": -0.0687, "high": 0.006, "n": 123}}]})
    assert "| grpo | 21.0 | -3.0 [-6.9, +0.6] | 20.0 |" in md


def test_bad_study_flags_are_refused():
    with pytest.raises(ValueError, match="--arms"):
        args(arms=("ppo",))
    with pytest.raises(ValueError, match="--stages"):
        args(stages=(0,))


def test_no_rl_trains_the_teacher_and_scores_the_start_only(tmp_path, monkeypatch):
    data = tmp_path / "locomo.json"
    data.write_text("[]")
    trained, scored = [], []
    monkeypatch.setattr(study, "train", lambda module, argv, out, log: trained.append(module) or {"status": "reused"})
    monkeypatch.setattr(study, "evaluate", lambda a, name, strategy, root, adapter: scored.append(name) or {
        "name": name, "f1": 0.2, "bleu1": 0.2, "em": 0.1, "locomo_f1": 0.2, "r2_f1": 0.2, "r2_bleu1": 0.2,
        "per_kind_f1": {}, "memory_tokens": 1, "memory_seconds": 1, "file": "f.json"})
    monkeypatch.setattr(study, "against", lambda file, baseline: {"diff": 0.0, "low": 0.0, "high": 0.0, "n": 1})
    out = study.main(["--data-path", str(data), "--work-dir", str(tmp_path / "w"), "--no-rl"])
    assert trained == ["algos.sft"] and out["runs"] == []
    assert scored == ["add-only", "zero-shot", "sft"]
    assert (tmp_path / "w" / "study.md").is_file()


def test_manager_only_commands_train_the_add_noop_manager_over_add_only(tmp_path):
    a = args(data_path="x.json", manager_only=True)
    assert a.stages == study.MANAGER_STAGES and a.token_budget == study.MANAGER_BUDGET
    assert args(data_path="x.json").stages == study.FULL_STAGES  # the full agent's defaults stay
    parsed = {arm: parse_args(logo_grpo.Args, study.rl_argv(a, arm, 1, tmp_path / "init", tmp_path / arm), prog="t")
              for arm in study.ARMS}
    logo, grpo = parsed["logo"], parsed["grpo"]
    for run in (logo, grpo):
        assert run.extractor == "add-only" and run.manage_ops == ("ADD", "NOOP")
        assert run.temperature == 1.5 and run.kl_coef == 0.05 and run.init_adapter == str(tmp_path / "init")
        assert run.token_budget == study.MANAGER_BUDGET and run.stages == (2,) and run.handoff == "best"
        assert json.loads(run.val_env_kwargs) == {"part": "val"} and run.val_every == 4
    assert logo.inner_fraction == 0.5 and grpo.inner_fraction == 0.0
    assert logo.local_temperature == logo.temperature  # sampled rerolls
    assert logo_grpo.greedy_rerolls_warning(logo) is None
    assert study.run_dir(a, tmp_path, "grpo", 1) == tmp_path / "grpo_addnoop" / "seed1"
    assert study.manager_strategy("llm:m:x") == "by-role:extract=add-only,manage=llm:m:x"


def test_a_run_under_way_goes_first_and_resumes_only_with_its_settings(tmp_path, monkeypatch):
    a = args(data_path="x.json", manager_only=True)
    assert study.run_order(a, tmp_path) == [(0, "logo"), (0, "grpo"), (1, "logo"), (1, "grpo")]
    out = study.run_dir(a, tmp_path, "grpo", 0)
    (out / "checkpoints" / "latest").mkdir(parents=True)
    argv = study.rl_argv(a, "grpo", 0, tmp_path / "init", out)
    (out / "args.json").write_text(json.dumps(saved_args(argv)))
    assert study.run_order(a, tmp_path)[0] == (0, "grpo")
    calls = []
    monkeypatch.setattr(study, "run_module", lambda module, argv, log: calls.append(argv) or 1.0)
    assert study.train("algos.logo_grpo", argv, out, tmp_path / "log")["status"] == "resumed"
    assert calls == [["--resume", str(out), "--no-progress"]]
    other = study.rl_argv(dataclasses.replace(a, learning_rate=3e-4), "grpo", 0, tmp_path / "init", out)
    with pytest.raises(UserError, match="learning_rate"):
        study.train("algos.logo_grpo", other, out, tmp_path / "log")
    assert len(calls) == 1  # refused before anything ran


def leaderboard_file(path, f1s):
    path.write_text(json.dumps({"rows": [{"row": path.stem, "predictions": [
        {"question_id": f"q{i}", "f1": v} for i, v in enumerate(f1s)]}]}))
    return str(path)


def test_against_is_the_paired_f1_difference_with_its_interval(tmp_path):
    base = leaderboard_file(tmp_path / "b.json", [0.0, 0.5, 1.0, 0.5])
    better = leaderboard_file(tmp_path / "a.json", [0.5, 1.0, 1.0, 1.0])
    out = study.against(better, base)
    assert out["diff"] == pytest.approx(0.375) and out["n"] == 4
    assert 0 < out["low"] <= out["diff"] <= out["high"] <= 0.5


def test_manager_only_study_scores_each_manager_behind_add_only(tmp_path, monkeypatch):
    data = tmp_path / "locomo.json"
    data.write_text("[]")
    init = tmp_path / "sft_adapter"
    init.mkdir()
    (init / "adapter_config.json").write_text("{}")
    trained, scored = [], []

    def fake_train(module, argv, out, log):
        trained.append((module, out))
        (out / "adapter").mkdir(parents=True, exist_ok=True)
        return {"status": "trained", "seconds": 1.0}

    def fake_evaluate(a, name, strategy, root, adapter):
        scored.append((name, strategy))
        return {"name": name, "f1": 0.2, "bleu1": 0.2, "em": 0.1, "locomo_f1": 0.2, "r2_f1": 0.2, "r2_bleu1": 0.2,
                "per_kind_f1": {}, "memory_tokens": 1, "memory_seconds": 1, "file": f"{name}.json"}

    monkeypatch.setattr(study, "train", fake_train)
    monkeypatch.setattr(study, "evaluate", fake_evaluate)
    monkeypatch.setattr(study, "against", lambda file, baseline: {"diff": 0.01, "low": -0.01, "high": 0.03, "n": 1,
                                                                     "file": file, "baseline": baseline})
    out = study.main(["--data-path", str(data), "--work-dir", str(tmp_path / "w"), "--manager-only",
                      "--init-adapter", str(init), "--seeds", "0", "--arms", "grpo"])
    assert trained == [("algos.logo_grpo", tmp_path / "w" / "grpo_addnoop" / "seed0")]  # no SFT: --init-adapter
    names = [name for name, _ in scored]
    assert names == ["add-only", "zero-shot-manager", "sft-manager", "grpo_addnoop-seed0"]
    strategies = dict(scored)
    assert strategies["sft-manager"] == f"by-role:extract=add-only,manage={study.manager_spec('smollm2-135m', init)}"
    assert "max_new_tokens=1024" in strategies["sft-manager"]
    assert strategies["grpo_addnoop-seed0"].startswith("by-role:extract=add-only,manage=llm:smollm2-135m:")
    assert "manage_ops=ADD/NOOP" in strategies["zero-shot-manager"]
    assert "vs_add_only" not in out["rows"][0]
    assert [(r["vs_add_only"]["file"], r["vs_add_only"]["baseline"]) for r in out["rows"][1:]] == [
        (f"{n}.json", "add-only.json") for n in names[1:]]
    assert "| grpo_addnoop-seed0 | 20.0 | +1.0 [-1.0, +3.0] |" in (tmp_path / "w" / "study.md").read_text()
    with pytest.raises(UserError, match="--init-adapter"):
        study.main(["--data-path", str(data), "--work-dir", str(tmp_path / "w2"), "--init-adapter", str(tmp_path)])


def test_candidates_add_only_turns_train_and_score_the_manager_over_facts_and_turns(tmp_path, monkeypatch):
    a = args(data_path="x.json", manager_only=True, candidates="add-only-turns")
    run = parse_args(logo_grpo.Args, study.rl_argv(a, "grpo", 0, tmp_path / "init", tmp_path / "o"), prog="t")
    assert run.extractor == "add-only-turns" and run.manage_ops == ("ADD", "NOOP")
    # the largest round of the training conversations offers 31 candidates (add-only's facts and
    # the round's turns); the budget lets the manager keep every one of them
    assert manage_capacity(31, run.max_new_tokens, ops=run.manage_ops) >= 31
    assert study.run_dir(a, tmp_path, "logo", 1) == tmp_path / "logo_addnoop_turns" / "seed1"
    assert study.run_dir(args(data_path="x.json", manager_only=True), tmp_path, "logo", 1) == tmp_path / "logo_addnoop" / "seed1"
    with pytest.raises(ValueError, match="--candidates takes"):
        args(data_path="x.json", manager_only=True, candidates="rag-turns")
    with pytest.raises(ValueError, match="--manager-only"):
        args(data_path="x.json", candidates="add-only-turns")
    init = tmp_path / "init"
    scored = []
    monkeypatch.setattr(study, "evaluate", lambda a, name, strategy, root, adapter: scored.append((name, strategy)) or {
        "name": name, "file": f"{name}.json"})
    monkeypatch.setattr(study, "against", lambda file, baseline: {"baseline": baseline})
    rows = study.evaluate_all(a, tmp_path, init, [])
    assert [name for name, _ in scored] == ["add-only", "add-only-turns", "zero-shot-manager-turns", "sft-manager-turns"]
    assert dict(scored)["sft-manager-turns"] == ("by-role:extract=add-only-turns,manage=llm:smollm2-135m:"
                                                 f"{init}?prompt_style=compact&max_prompt_tokens=1024"
                                                 "&max_new_tokens=1024&manage_ops=ADD/NOOP")
    assert all(r["vs_add_only"]["baseline"] == "add-only.json" for r in rows[1:])
