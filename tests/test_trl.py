"""The TRL integration (algos.trl): datasets on forked snapshots, rewards, SFT then GRPO, session rollouts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
WORLDS = [1_000_000, 1_000_001]
ENV_KWARGS = {"num_sessions": 4}
DATA = dict(worlds=WORLDS, prompt_style="compact", max_prompt_tokens=256, env_kwargs=ENV_KWARGS)
# fp32, no checkpointing, no files, no trackers: what a CPU test needs from TRL's configs.
TRAINER = dict(bf16=False, gradient_checkpointing=False, save_strategy="no", report_to="none", logging_steps=1,
               disable_tqdm=True, seed=0)


def _fingerprint(snapshot) -> tuple:
    """Everything a step can change in a stored environment."""
    env = snapshot.env
    return (tuple((e.id, e.text, e.updated_turn) for e in env.memory), env.session_index, env.role, env.done,
            env._turn, env._queue, env._facts, env._seen_tokens, env._scores,
            json.dumps(env.np_random.bit_generator.state, sort_keys=True, default=str))


def _lora_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


# ------------------------------------------------------------------------------ no TRL needed
def test_importing_the_integration_needs_neither_trl_nor_datasets():
    code = ("import sys; sys.modules['trl'] = None; sys.modules['datasets'] = None\n"
            "import algos.trl as t\n"
            "try:\n    t.role_dataset('manage', None)\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'algos.trl needs the datasets package from the [trl] extra: pip install -e ".[trl]"'
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, algos.trl; print(' '.join(sys.modules))"], cwd=ROOT,
        capture_output=True, text=True, timeout=120).stdout.split()


def test_rewards_fork_the_snapshot_and_rank_the_oracle_above_doing_nothing(tiny_tokenizer):
    pytest.importorskip("datasets")
    from algos.trl import ManageReward, SnapshotStore, ValidAction, role_dataset
    from memenv.scripted import OracleAgent

    store = SnapshotStore()
    data = role_dataset("manage", tiny_tokenizer, store=store, **DATA)
    assert len(data) == 8 and set(data.column_names) >= {"prompt", "state", "role", "world", "session"}
    assert data[0]["prompt"].startswith("<|im_start|>system\nMemory manager.")
    states = list(data["state"])
    before = {k: _fingerprint(store[k]) for k in store.keys()}
    oracle = [OracleAgent().act(store[k].obs, store[k].info) for k in states]
    noop = ['{"operations": [{"op": "NOOP"}]}'] * len(data)
    garbage = ["not json"] * len(data)
    reward = ManageReward(store=store)
    good, nothing, bad = (reward(c, states) for c in (oracle, noop, garbage))
    assert sum(good) > sum(nothing)
    assert all(b == pytest.approx(n - 0.1) for b, n in zip(bad, nothing))  # invalid: nothing changes, minus 0.1
    assert ValidAction(store=store)(garbage + oracle, states * 2) == [0.0] * 8 + [1.0] * 8
    assert reward(oracle, states) == good  # every call starts from the same stored state
    assert {k: _fingerprint(store[k]) for k in store.keys()} == before


def test_every_role_has_a_dataset_and_a_reward(tiny_tokenizer):
    pytest.importorskip("datasets")
    from algos.trl import AnswerReward, ExtractReward, SnapshotStore, demonstration_dataset, role_dataset
    from memenv.scripted import OracleAgent

    store = SnapshotStore()
    extract = role_dataset("extract", tiny_tokenizer, store=store, sessions=[1], conversational=True, **DATA)
    assert len(extract) == 2 and set(extract["session"]) == {1}
    assert [m["role"] for m in extract[0]["prompt"]] == ["system", "user"]
    states = list(extract["state"])
    gold = [[{"role": "assistant", "content": OracleAgent().act(store[k].obs, store[k].info)}] for k in states]
    empty = [[{"role": "assistant", "content": '{"facts": []}'}]] * 2
    assert sum(ExtractReward(store=store)(gold, states)) > sum(ExtractReward(store=store)(empty, states))

    answers = role_dataset("answer", tiny_tokenizer, store=store, **DATA)
    questions = list(answers["state"])
    golds = [store[k].info["gold_answer"] for k in questions]
    assert AnswerReward(metric="em", store=store)([f"Answer: {g}" for g in golds], questions) == [1.0] * len(golds)
    assert AnswerReward(store=store)(["Answer: nobody knows"] * len(golds), questions) != [1.0] * len(golds)
    with pytest.raises(ValueError, match="answer_reward scores answer turns, but the dataset holds"):
        AnswerReward(store=store)(["x", "y"], states)

    demos = demonstration_dataset(tiny_tokenizer, **DATA)
    assert set(demos["role"]) == {"extract", "manage"} and len(demos) == 16
    manage = next(row for row in demos if row["role"] == "manage")
    assert json.loads(manage["completion"])["operations"] and manage["prompt"].endswith("<|im_start|>assistant\n")


def test_continuation_follows_the_chat_template(tiny_tokenizer):
    from algos.trl import continuation_text, state_key_of

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert continuation_text(tiny_tokenizer, messages, "R", "M", replied_eos=True) == \
        "\n<|im_start|>user\nM<|im_end|>\n<|im_start|>assistant\n"
    assert continuation_text(tiny_tokenizer, messages, "R", "M", replied_eos=False).startswith("<|im_end|>\n")
    with pytest.raises(ValueError, match="session_dataset"):
        state_key_of("a text prompt")


# ------------------------------------------------------------------------------ TRL trainers
@pytest.fixture(scope="module")
def warm_started():
    """The tiny backbone after SFTTrainer on the oracle's manage demonstrations (120 steps)."""
    pytest.importorskip("trl")
    from trl import SFTConfig, SFTTrainer

    from agents.backbone import tiny_backbone
    from agents.lora import add_lora
    from algos.trl import demonstration_dataset

    backbone = tiny_backbone(seed=0)
    model = add_lora(backbone, r=16, alpha=32)
    demos = demonstration_dataset(backbone.tokenizer, roles=["manage"], **DATA)
    sft = SFTTrainer(model, args=SFTConfig("unused", max_steps=120, learning_rate=1e-2, per_device_train_batch_size=4,
                                           **TRAINER), train_dataset=demos, processing_class=backbone.tokenizer)
    sft.train()
    losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
    assert losses[-1] < 0.2 < losses[0]
    return sft.model, backbone.tokenizer


def test_sft_then_two_grpo_steps_train_lora_on_rewards_from_forked_snapshots(warm_started):
    from trl import GRPOConfig, GRPOTrainer

    from algos.trl import ManageReward, SnapshotStore, ValidAction, role_dataset

    model, tokenizer = warm_started
    store = SnapshotStore()
    data = role_dataset("manage", tokenizer, store=store, **DATA)
    before = {k: _fingerprint(store[k]) for k in store.keys()}
    scorer, calls = ManageReward(store=store), []

    def manage_reward(completions, state, **kwargs):
        rewards = scorer(completions, state, **kwargs)
        calls.append((list(completions), list(state), rewards))
        return rewards

    lora = _lora_state(model)
    config = GRPOConfig("unused", max_steps=2, num_generations=4, per_device_train_batch_size=8,
                        max_completion_length=96, learning_rate=1e-3, reward_weights=[1.0, 0.0], **TRAINER)
    trainer = GRPOTrainer(model, reward_funcs=[manage_reward, ValidAction(store=store)], args=config,
                          train_dataset=data, processing_class=tokenizer)
    trainer.train()

    assert len(calls) == 2 and all(len(c[0]) == 8 for c in calls)
    # every completion was scored on its own fork: the stored states are untouched, and
    # scoring the same completions again from them gives the same rewards
    assert {k: _fingerprint(store[k]) for k in store.keys()} == before
    for completions, state, rewards in calls:
        assert ManageReward(store=store)(completions, state) == rewards
        groups = [state[i:i + 4] for i in range(0, 8, 4)]
        assert all(len(set(g)) == 1 for g in groups)  # a TRL group is one snapshot
    stds = [max(r[i:i + 4]) - min(r[i:i + 4]) for _, _, r in calls for i in range(0, 8, 4)]
    assert any(s > 0 for s in stds), [r for _, _, r in calls]
    logged = [h for h in trainer.state.log_history if "frac_reward_zero_std" in h]
    assert min(h["frac_reward_zero_std"] for h in logged) < 1 and "rewards/valid_action/mean" in logged[0]
    after = _lora_state(model)
    assert any(not after[n].equal(lora[n]) for n in lora)


def test_session_rollout_extracts_then_manages_with_env_mask_on_environment_text(warm_started):
    from trl import GRPOConfig, GRPOTrainer

    from algos.trl import SessionRollout, SnapshotStore, ValidAction, session_dataset, session_reward

    model, tokenizer = warm_started
    store = SnapshotStore()
    data = session_dataset(tokenizer, store=store, sessions=[1, 2], **DATA)
    assert len(data) == 4 and all(m["state"] == row["state"] for row in data for m in row["prompt"])
    before = {k: _fingerprint(store[k]) for k in store.keys()}
    rollout, seen = SessionRollout(prompt_style="compact", max_prompt_tokens=1024, store=store,
                                   max_new_tokens={"extract": 48, "manage": 32}), []

    def recording_rollout(prompts, trainer):
        out = rollout(prompts, trainer)
        seen.append((prompts, out))
        return out

    config = GRPOConfig("unused", max_steps=1, num_generations=4, per_device_train_batch_size=8, learning_rate=1e-3,
                        reward_weights=[1.0, 0.0], **TRAINER)
    trainer = GRPOTrainer(model, reward_funcs=[session_reward, ValidAction(store=store)], args=config,
                          train_dataset=data, processing_class=tokenizer, rollout_func=recording_rollout)
    trainer.train()

    (prompts, out), = seen
    keys = [p[0]["state"] for p in prompts]
    assert len(keys) == 8 and keys[0::4] == keys[3::4] and len(set(keys)) == 2  # TRL repeats each prompt 4 times
    for i, ids in enumerate(out["completion_ids"]):
        mask = out["env_mask"][i]
        assert len(mask) == len(ids) == len(out["logprobs"][i])
        env_tokens = [t for t, m in zip(ids, mask) if m == 0]
        assert re.match(r"(<\|im_end\|>)?\n<\|im_start\|>user\nMemory manager\.", tokenizer.decode(env_tokens))
        assert all(lp == 0.0 for lp, m in zip(out["logprobs"][i], mask) if m == 0)
        assert mask[0] == 1 and 0 in mask
    assert len(out["session_reward"]) == 8 and set(out["session_valid"]) <= {0.0, 1.0}
    assert {k: _fingerprint(store[k]) for k in store.keys()} == before
    assert all(f.unwrapped._turn == store[k].env._turn + 2 for f, k in zip(rollout.last_forks, keys))
    assert "rewards/session_reward/mean" in trainer.state.log_history[0]


@pytest.mark.slow
def test_readme_trl_script_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    from algos.trl import SNAPSHOTS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart: training with TRL"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    statements = [line for line in code if not line.startswith(("from ", "import ", " "))]
    assert len(statements) <= 10, statements
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
    finally:
        SNAPSHOTS.clear()
    logged = [h for h in namespace["grpo"].state.log_history if "rewards/manage_reward/mean" in h]
    assert logged and "rewards/valid_action/mean" in logged[-1]
