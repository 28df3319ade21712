"""benchmarks.update_speed: one real batch, the update timed with and without shared prompts."""

import json

import pytest

from benchmarks.update_speed import Args, main

TINY = ("--model tiny --no-demo --seed 0 --stages 2 --updates-per-stage 1 --group-size 3 --conversations-per-update 1 "
        "--num-train-worlds 1 --inner-n 2 --extractor oracle --answerer scripted --prompt-style compact "
        "--max-new-tokens 16 --max-prompt-tokens 256 --ppo-epochs 1 --num-minibatches 1 --micro-batch-size 4")


def test_update_speed_times_both_modes_on_the_trainers_batch(tmp_path):
    result = main(["--trainer-flags", TINY, "--repeats", "2", "--out", str(tmp_path / "speed")])
    batch, timing = result["batch"], result["timing"]
    assert batch["samples"] > batch["distinct_prompts"] >= 1  # a group's samples repeat the first session's prompt
    assert batch["distinct_prompt_tokens"] < batch["prompt_tokens"]
    assert all(len(timing["seconds"][m]) == 2 and min(timing["seconds"][m]) > 0 for m in ("never", "always"))
    assert timing["speedup"] == pytest.approx(timing["median_seconds"]["never"] / timing["median_seconds"]["always"])
    # the same update up to rounding: first-epoch ratio 1 in both modes, equal losses
    for mode in ("never", "always"):
        assert timing["stats"][mode]["ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    assert timing["stats"]["never"]["loss"] == pytest.approx(timing["stats"]["always"]["loss"], abs=1e-4)
    assert result["config"]["micro_batch_size"] == 4
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["batch"] == batch and "Speed-up of shared prompts" in (tmp_path / "speed.md").read_text()


def test_update_speed_refuses_flags_it_sets():
    with pytest.raises(ValueError, match="must not set --output-dir"):
        Args(trainer_flags="--model tiny --output-dir x")
    with pytest.raises(ValueError, match="must not set --env"):
        Args(trainer_flags="--model tiny --env=MemorySession-v0")
    Args(trainer_flags="--model tiny --env-kwargs '{}'")  # another flag that starts with --env


def test_update_speed_says_when_the_batch_is_empty(tmp_path):
    from algos.cli import UserError

    flags = TINY + " --skip-uniform-groups --no-constrained --max-new-tokens 1"  # one-token actions: every group ties
    with pytest.raises(UserError, match="batch is empty"):
        main(["--trainer-flags", flags, "--repeats", "1", "--out", str(tmp_path / "speed")])
