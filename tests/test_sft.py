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


def test_loss_equals_the_token_mean_of_unpadded_per_example_losses():
    import torch

    from agents.backbone import tiny_backbone

    backbone = tiny_backbone(seed=0)
    batch = [([5, 6, 7, 8, 9], [10, 11]), ([12, 13], [14, 15, 16, 17]), ([18, 19, 20, 21, 22, 23, 24], [25])]
    total, count = 0.0, 0
    with torch.no_grad():
        for p, t in batch:  # one example at a time: no padding at all, Hugging Face's own shifted loss
            labels = torch.tensor([[-100] * len(p) + t])
            loss = backbone.model(input_ids=torch.tensor([p + t]), labels=labels).loss
            total, count = total + float(loss) * len(t), count + len(t)
        batched = float(sft.sft_loss(backbone.model, batch, backbone.tokenizer.pad_token_id))
    assert batched == pytest.approx(total / count, abs=1e-5)


def test_linear_schedule_halves_the_second_of_two_steps():
    import torch

    from agents.backbone import tiny_backbone
    from agents.lora import add_lora

    pairs = sft.record_demonstrations(make, [1_000_000], roles=("manage",))
    second_step = {}
    for schedule in ("constant", "linear"):
        backbone = tiny_backbone(seed=0)
        model = add_lora(backbone, r=4)
        snapshots = []

        def snap(step, loss, model=model, snapshots=snapshots):
            snapshots.append(torch.cat([p.detach().flatten().clone() for p in model.parameters() if p.requires_grad]))

        sft.train_sft(model, backbone.tokenizer, pairs, steps=2, batch_size=2, learning_rate=1e-3,
                      max_prompt_tokens=256, prompt_style="compact", schedule=schedule, on_step=snap)
        second_step[schedule] = float((snapshots[1] - snapshots[0]).norm())
    # AdamW's second step moves each weight by about lr: half of it under the linear decay (1 - 1/2)
    assert second_step["linear"] / second_step["constant"] == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="schedule"):
        sft.train_sft(model, backbone.tokenizer, pairs, steps=1, schedule="cosine")


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


def test_an_environment_without_roles_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "algos.sft", "--env", "CartPole-v1", "--output-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "CartPole-v1 is not a MemorySession environment" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_command_never_overwrites_an_earlier_adapter(tmp_path):
    from algos.run import UserError

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"earlier")
    with pytest.raises(UserError, match="already holds adapter"):
        sft.main(["--steps", "1", "--num-worlds", "1", "--num-sessions", "2", "--output-dir", str(tmp_path)])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == b"earlier"


def test_micro_batches_give_the_same_step_as_one_pass():
    """Gradient accumulation over micro-batches weighted by target tokens: the same loss as the
    whole batch at once, and (within the mixed-precision rounding that the second step
    inherits from the first) the same second step."""
    from agents.backbone import tiny_backbone
    from agents.lora import add_lora

    pairs = sft.record_demonstrations(make, [1_000_000, 1_000_001], roles=("extract", "manage"))
    runs = []
    for micro in (None, 1, 3):
        backbone = tiny_backbone(seed=0)
        model = add_lora(backbone)
        losses = sft.train_sft(model, backbone.tokenizer, pairs, steps=2, batch_size=4, learning_rate=1e-2,
                               max_prompt_tokens=256, prompt_style="compact", micro_batch_size=micro)
        runs.append((losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}))
    (base_losses, base_weights), *others = runs
    for losses, weights in others:
        assert losses[0] == pytest.approx(base_losses[0], rel=1e-5)  # a wrong weighting changes this
        assert losses[1] == pytest.approx(base_losses[1], rel=1e-2)
        assert weights.keys() == base_weights.keys()
    with pytest.raises(ValueError, match="micro_batch_size"):
        sft.train_sft(model, backbone.tokenizer, pairs, steps=1, micro_batch_size=0)
