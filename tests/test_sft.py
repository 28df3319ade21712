"""Supervised warm start: demonstrations, the loss, and the command line."""

import json

import gymnasium as gym
import pytest

import memenv  # noqa: F401
from algos import sft

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make():
    return gym.make("MemorySession-v0", num_sessions=2, disable_env_checker=True)


def test_oracle_demonstrations_use_fact_indices_for_repeated_facts():
    pairs = sft.record_demonstrations(make, [1_000_000], roles=("manage",))
    assert len(pairs) == 2
    obs, target = pairs[0]
    facts = json.loads(obs)["facts"]
    ops = json.loads(target)["operations"]
    assert facts and all(op.get("fact") in range(len(facts)) for op in ops if op["op"] == "ADD")


def test_training_lowers_the_loss_on_the_demonstrations():
    from agents.backbone import tiny_backbone
    from agents.lora import add_lora

    backbone = tiny_backbone(seed=0)
    model = add_lora(backbone)
    pairs = sft.record_demonstrations(make, [1_000_000, 1_000_001], roles=("manage",))
    encoded = sft.encode_pairs(backbone.tokenizer, pairs, max_prompt_tokens=256, prompt_style="compact")
    pad = backbone.tokenizer.pad_token_id
    before = float(sft.sft_loss(model, encoded, pad))
    sft.train_sft(model, backbone.tokenizer, pairs, steps=20, learning_rate=1e-2, max_prompt_tokens=256,
                  prompt_style="compact")
    assert float(sft.sft_loss(model, encoded, pad)) < before - 1.0


def test_command_writes_a_peft_adapter_and_the_losses(tmp_path):
    sft.main(["--steps", "3", "--num-worlds", "2", "--num-sessions", "2", "--prompt-style", "compact",
              "--max-prompt-tokens", "256", "--output-dir", str(tmp_path)])
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    record = json.loads((tmp_path / "sft_losses.json").read_text())
    assert len(record["losses"]) == 3 and record["demonstrations"] == 8


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        sft.main(["--roles", "answer"])
    assert "--roles" in capsys.readouterr().err
