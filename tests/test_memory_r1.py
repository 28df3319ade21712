"""The Memory-R1 trainer: flags, rewards, the LoCoMo split counts, GRPO / PPO updates, learning."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from algos import memory_r1 as M
from algos import memory_r1_rollouts
from algos.cli import parse_args
from algos.run import UserError
from algos.update import Sample

pytestmark = pytest.mark.usefixtures("single_torch_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "locomo_tiny.json"
SMALL = ("--model tiny --device cpu --num-sessions 2 --updates 2 --conversations-per-update 1 --questions-per-update 3 "
         "--max-new-tokens 8 --max-prompt-tokens 512 --answer-top-k 2 --ppo-epochs 1 --num-minibatches 1 "
         "--micro-batch-size 16 --learning-rate 1e-3 --no-progress --no-constrained").split()
# --no-constrained: in 8 tokens an answer grammar forces every token ("Relevant: " alone is 10
# bytes of the byte-level tokenizer), leaving GRPO nothing to compare or train


def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def base_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def initial_answer_model(seed=0):
    """The model main() starts from: torch seeded, the tiny backbone, one 'answer' adapter."""
    from agents.backbone import load_backbone
    from agents.lora import add_lora

    torch.manual_seed(seed)
    return add_lora(load_backbone("tiny", device="cpu"), r=16, alpha=32, names=("answer",))


# ---------------------------------------------------------------------------- flags
def test_every_flag_is_in_help():
    out = subprocess.run([sys.executable, "-m", "algos.memory_r1", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in M.Args.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in out
    assert "{answer,manager}" in out and "{grpo,ppo}" in out


@pytest.mark.parametrize("flags,fragment", [
    (["--algo", "grpo", "--group-size", "1"], "--group-size"),
    (["--source", "locomo"], "--data-path"),
    (["--temperature", "0"], "--temperature"),
    (["--algo", "reinforce"], "--algo"),
    (["--value-clip", "-1"], "--value-clip"),
])
def test_bad_flags_fail_at_parse_time(flags, fragment, capsys):
    with pytest.raises(SystemExit):
        parse_args(M.Args, flags)
    assert fragment in capsys.readouterr().err


def test_samples_per_state_default_by_algorithm():
    assert parse_args(M.Args, ["--algo", "grpo"]).n == 8
    assert parse_args(M.Args, ["--algo", "ppo"]).n == 1
    assert parse_args(M.Args, ["--algo", "ppo", "--group-size", "4"]).n == 4


def test_cpu_demo_presets_by_mode_and_explicit_flags_win():
    def demo(argv):
        return M.apply_demo_defaults(parse_args(M.Args, argv), argv, has_gpu=False)

    answer, manager = demo(["--mode", "answer"]), demo(["--mode", "manager"])
    assert answer.demo and manager.demo and answer.model == manager.model == "tiny"
    assert answer.new_tokens == 24 and manager.new_tokens == 128  # room for a byte-level operation list
    assert manager.sft_warmup_steps == 100 and manager.sft_learning_rate == 1e-2
    assert demo(["--mode", "manager", "--max-new-tokens", "64"]).new_tokens == 64
    assert not M.apply_demo_defaults(parse_args(M.Args, []), [], has_gpu=True).demo
    assert not demo(["--model", "smollm2-135m"]).demo


# ---------------------------------------------------------------------------- pure helpers
def test_answer_reward_parses_the_distilled_answer():
    assert M.answer_reward("Relevant: m1, m4\nAnswer: Paris.", "paris") == 1.0
    assert M.answer_reward("Relevant: m1\nAnswer: in Paris", "Paris") == 0.0
    assert M.answer_reward("Answer: in Paris", "Paris", "f1") == pytest.approx(2 / 3)


def test_group_advantages_are_per_state():
    samples = [Sample([1], [2], [0.0], "answer", -1, False, group=g, reward=r)
               for g, r in [(("a", 0), 1.0), (("a", 0), 0.0), (("a", 1), 1.0), (("a", 1), 1.0)]]
    M.assign_group_advantages(samples)
    # group 0: mean 0.5, sample std 0.7071 -> +-0.7071; group 1 is constant -> 0
    assert [s.advantage for s in samples] == pytest.approx([0.70710, -0.70710, 0.0, 0.0], abs=1e-4)


def locomo_fixture(tmp_path, ids=("conv-26", "conv-30")):
    data = json.loads(FIXTURE.read_text())
    for record, new in zip(data, ids):
        record["sample_id"] = new
    path = tmp_path / "locomo_r1.json"
    path.write_text(json.dumps(data))
    return path, data


def test_informative_samples_drop_groups_of_equal_rewards():
    def sample(group, reward):
        return Sample([1], [2], [0.0], role="answer", session=-1, local=False, group=group, reward=reward)

    samples = [sample(("a", 0), 1.0), sample(("a", 0), 1.0), sample(("a", 1), 0.0), sample(("a", 1), 1.0),
               sample(("a", 2), 0.0), sample(("a", 2), 0.0)]
    assert M.informative_samples(samples) == samples[2:4]
    assert M.informative_samples([]) == []


def test_skip_uniform_groups_trains_only_on_informative_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(memory_r1_rollouts, "answer_reward", lambda text, gold, metric="em": float(len(text) % 2))  # varied groups
    result = M.main([*SMALL, "--algo", "grpo", "--group-size", "2", "--sft-warmup-steps", "2", "--updates", "3",
                     "--skip-uniform-groups", "--output-dir", str(tmp_path)])
    rows = result["history"]
    # groups of two: a group is informative exactly when both of its advantages are nonzero
    assert all(r["charts/trained_samples"] == r["charts/samples"] * r["charts/nonzero_advantage_rate"] for r in rows)
    assert any(0 < r["charts/trained_samples"] < r["charts/samples"] for r in rows)
    assert (tmp_path / "sft_adapter" / "adapter_config.json").is_file()


def test_split_question_counts_on_a_file_with_conv_26_and_30(tmp_path):
    path, data = locomo_fixture(tmp_path)
    expected = [sum(1 for q in rec["qa"] if q.get("category") != 5) for rec in data]
    counts = M.split_question_counts(str(path), "memory-r1")
    assert counts == {"train": expected[0], "val": expected[1], "test": None}
    line = M.format_split_counts("memory-r1", counts)
    assert f"train {expected[0]}, val {expected[1]}, test missing" in line
    assert "paper: train 152, val 81, test 1307" in line


def test_locomo_run_prints_the_split_counts_and_trains_on_conv_26(tmp_path, capsys):
    path, _ = locomo_fixture(tmp_path)
    result = M.main([*SMALL, "--updates", "1", "--source", "locomo", "--data-path", str(path), "--manager", "noop",
                     "--group-size", "2", "--output-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "LoCoMo split memory-r1 questions: train" in out and "test missing from the file" in out
    assert result["history"][0]["charts/samples"] == 2 * 3


# ---------------------------------------------------------------------------- updates
def test_grpo_answer_mode_trains_every_lora_parameter_and_no_base_parameter(tmp_path):
    start = initial_answer_model()
    before_lora, before_base = lora_state(start), base_state(start)
    result = M.main([*SMALL, "--algo", "grpo", "--group-size", "2", "--output-dir", str(tmp_path)])
    model = result["model"]
    after_lora, after_base = lora_state(model), base_state(model)
    assert after_lora.keys() == before_lora.keys() and len(after_lora) == 2 * 7 * 2  # A, B x 7 linears x 2 layers
    assert all(".answer." in n for n in after_lora)
    unchanged = [n for n in after_lora if torch.equal(after_lora[n], before_lora[n])]
    assert unchanged == []
    assert all(torch.equal(after_base[n], before_base[n]) for n in before_base)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2]
    assert all(k == "update" or "/" in k for r in rows for k in r)
    assert rows[0]["charts/samples"] == 3 * 2
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "value_head").exists()


def test_ppo_cli_writes_adapter_and_value_head(tmp_path):
    from algos.value import load_value_head

    result = M.main([*SMALL, "--algo", "ppo", "--output-dir", str(tmp_path)])
    assert result["history"][0]["charts/samples"] == 3  # one sample per question
    assert "losses/value_loss" in result["history"][0]
    head = load_value_head(tmp_path / "value_head")
    assert torch.equal(head.linear.weight, result["value_head"].linear.weight.detach().cpu())
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


TIMING = ("charts/rollout_seconds", "charts/update_seconds", "charts/tokens_per_s", "charts/elapsed_s")


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def _weights(result):
    return {n: p.detach().clone() for n, p in result["model"].named_parameters() if "lora_" in n}


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, algo):
    flags = [*SMALL, "--algo", algo, "--updates", "3", "--eval-worlds", "1", "--checkpoint-every", "2"]
    if algo == "grpo":
        flags += ["--group-size", "2"]
    full = M.main([*flags, "--output-dir", str(tmp_path / "full")])
    part = M.main([*flags, "--output-dir", str(tmp_path / "cut"), "--stop-after", "1"])
    assert part["state"]["update"] == 1 and "after" not in part["eval"]
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text() == "update-000001"  # --stop-after checkpoints
    # a row logged after the checkpoint (as a crash would leave it) is dropped, not duplicated
    with (tmp_path / "cut" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"update": 2, "charts/reward": -1.0}) + "\n")
    rest = M.main([*flags, "--resume", str(tmp_path / "cut")])
    assert rest["state"]["update"] == 3 and len(rest["history"]) == 2
    assert rest["eval"] == full["eval"] and set(full["eval"]) == {"before", "after"}
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
    a, b = _weights(full), _weights(rest)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    if algo == "ppo":
        assert torch.equal(full["value_head"].linear.weight, rest["value_head"].linear.weight)
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("update-*")) == ["update-000002",
                                                                                            "update-000003"]


def test_fresh_run_refuses_an_output_dir_with_an_earlier_run(tmp_path):
    M.main([*SMALL, "--updates", "1", "--output-dir", str(tmp_path)])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="--resume"):
        M.main([*SMALL, "--updates", "1", "--output-dir", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing changed


def test_resuming_a_finished_run_logs_its_final_eval_once(tmp_path):
    flags = [*SMALL, "--algo", "grpo", "--group-size", "2", "--updates", "1", "--eval-worlds", "1"]
    first = M.main([*flags, "--output-dir", str(tmp_path)])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"update": 1, "charts/rew')  # a line torn by a crash mid-write
    again = M.main([*flags, "--resume", str(tmp_path)])
    assert again["eval"] == first["eval"] and len(again["history"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows if "eval/score" in r] == [0, 1]


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(UserError, match="no checkpoints/latest"):
        M.main([*SMALL, "--resume", str(tmp_path)])


def test_manager_grpo_runs_end_to_end_with_nonzero_advantages(tmp_path):
    """A tiny model with sharper random weights (initializer 0.2), so a brief SFT on oracle
    operations makes some sampled operation lists valid: valid and invalid ones differ in reward.
    The warm start (100 steps, LoRA on the output layer too) decays its rate linearly, and RL
    runs on worlds the warm start saw (--num-train-worlds 2): the tiny model memorises its
    demonstrations but writes garbage for unseen worlds. With 60 constant-rate steps and
    unseen worlds the valid rate was 0.0 on some float paths."""
    from agents.backbone import tiny_backbone

    backbone = tiny_backbone(0, initializer_range=0.2)
    backbone.model.save_pretrained(tmp_path / "model")
    backbone.tokenizer.save_pretrained(tmp_path / "model")
    result = M.main(["--mode", "manager", "--algo", "grpo", "--model", str(tmp_path / "model"), "--device", "cpu",
                     "--prompt-style", "compact", "--num-sessions", "2", "--updates", "1", "--conversations-per-update",
                     "1", "--num-train-worlds", "2", "--group-size", "8", "--sft-warmup-steps", "100", "--sft-schedule", "linear",
                     "--lora-lm-head", "--learning-rate",
                     "1e-2", "--temperature", "1.0", "--max-new-tokens", "160", "--max-prompt-tokens", "1024",
                     "--ppo-epochs", "1", "--num-minibatches", "1", "--micro-batch-size", "16", "--no-progress",
                     "--output-dir", str(tmp_path / "run")])
    row = result["history"][0]
    assert row["charts/samples"] == 2 * 8  # two manage turns, 8 samples each
    assert 0 < row["charts/valid_rate"]  # measured 0.94 on AVX-512 and AVX2, 1 and 2 threads
    assert row["charts/nonzero_advantage_rate"] > 0
    assert "charts/episode_score" in row and "losses/policy_loss" in row
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


