"""Training memory agents on LoCoMo's real dialogue, on the tiny model and an invented file.

The invented file copies the two conversations of ``fixtures/locomo_tiny.json`` under the ids
of the full LoCoMo file, so that the Memory-R2 split's train / val / test parts all exist:
the teacher SFT path, one LoGo-GRPO update on the train part with validation on the val
part, the session curriculum (first N sessions), the Memory-R2 metrics (hand-computed
pairs, including where they differ from the mem0 ones), the paired bootstrap and the
leaderboard on the test part.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from memenv.data import first_sessions
from memenv.data.locomo import SPLITS, LoCoMoSource
from memenv.metrics import bleu1, paired_bootstrap, squad_bleu1, squad_f1, summarize, token_f1

FIXTURE = Path(__file__).parent / "fixtures" / "locomo_tiny.json"
FULL_IDS = sorted({cid for parts in SPLITS.values() for ids in parts.values() for cid in ids})


@pytest.fixture(scope="module")
def full_file(tmp_path_factory) -> Path:
    """An invented LoCoMo file holding every conversation id of the full file."""
    base = json.loads(FIXTURE.read_text())
    records = []
    for i, cid in enumerate(FULL_IDS):
        record = copy.deepcopy(base[i % len(base)])
        record["sample_id"] = cid
        records.append(record)
    path = tmp_path_factory.mktemp("locomo") / "locomo_full.json"
    path.write_text(json.dumps(records))
    return path


# --------------------------------------------------------------------------- the curriculum
def test_first_sessions_keeps_only_questions_whose_evidence_lies_within(full_file):
    whole = LoCoMoSource(full_file, split="memory-r2", part="train")
    cut = LoCoMoSource(full_file, split="memory-r2", part="train", num_sessions=1)
    for key in whole.keys():
        conv, short = whole.get(key), cut.get(key)
        assert conv.num_sessions > 1 and short.num_sessions == 1
        assert short.sessions[0] == conv.sessions[0]
        kept = [q for q in conv.questions if q.evidence and max(q.evidence) < 1]
        assert list(short.questions) == kept and len(kept) < len(conv.questions)
    conv = whole.get("conv-43")
    assert first_sessions(conv, None) is conv and first_sessions(conv, 99) is conv
    with pytest.raises(ValueError, match="num_sessions"):
        LoCoMoSource(full_file, num_sessions=0)


def test_the_trainers_curriculum_sets_locomo_sessions(full_file):
    import gymnasium as gym

    import memenv  # noqa: F401
    from algos.logo_grpo import takes_num_sessions

    env = gym.make("MemorySession-v0", source="locomo", data_path=str(full_file), split="memory-r2", part="train",
                   num_sessions=2)
    assert takes_num_sessions(env.unwrapped.source)
    assert all(env.unwrapped.source.get(k).num_sessions == 2 for k in env.unwrapped.source.keys())


# --------------------------------------------------------------------------- Memory-R2 metrics
@pytest.mark.parametrize("prediction, gold, squad, mem0", [
    # articles and punctuation: SQuAD drops both, mem0 keeps "the" and only replaces .,!?
    ("The park.", "park", 1.0, 2 * (1 / 2) * 1 / (1 / 2 + 1)),
    # a hyphen: SQuAD deletes it ("wellknown"), mem0 keeps "well-known" as one token
    ("well-known", "well known", 0.0, 0.0),
    ("7 May 2023", "7 may, 2023", 1.0, 1.0),
    # repeated prediction words: common tokens as a set, precision over the token list
    ("paris paris", "paris", 2 * (1 / 2) * 1 / (1 / 2 + 1), 1.0),
    # both empty after normalisation: SQuAD says 1, mem0 says 0
    ("the", "a", 1.0, 0.0),
])
def test_squad_f1_by_hand(prediction, gold, squad, mem0):
    assert squad_f1(prediction, gold) == pytest.approx(squad)
    assert token_f1(prediction, gold) == pytest.approx(mem0)


@pytest.mark.parametrize("prediction, gold, expected", [
    ("The park.", "park", 1.0),                                  # one token each after normalisation
    ("park", "the city park", math.exp(1 - 2 / 1) * 1.0),         # brevity: 1 token against 2
    ("red red red", "red car", 1 / 3),                            # clipped: "red" counts once
    ("a blue car", "blue car", 1.0),
    ("", "anything", 0.0),
    ("something", "", 0.0),
])
def test_squad_bleu1_by_hand(prediction, gold, expected):
    assert squad_bleu1(prediction, gold) == pytest.approx(expected)


def test_squad_bleu1_differs_from_mem0_bleu1_on_punctuation_and_articles():
    pytest.importorskip("nltk")
    # nltk word tokens: "the", "park", "." -> 1 of 3 unigrams matches, no brevity penalty
    assert bleu1("The park.", "park") == pytest.approx(1 / 3)
    assert squad_bleu1("The park.", "park") == 1.0


def test_by_conversation_averages_per_conversation_first():
    pytest.importorskip("nltk")
    records = [("single-hop", "a", "a"), ("single-hop", "b", "a"), ("single-hop", "c", "a"), ("temporal", "x", "x")]
    summary = summarize(records, conversations=["c1", "c1", "c1", "c2"])
    assert summary["overall"]["squad_f1"] == pytest.approx(2 / 4)
    assert summary["by_conversation"]["squad_f1"] == pytest.approx((1 / 3 + 1) / 2)
    assert summary["by_conversation"]["count"] == 2
    with pytest.raises(ValueError, match="conversation ids"):
        summarize(records, conversations=["c1"])


def test_paired_bootstrap_interval():
    same = paired_bootstrap([0.2, 0.5, 0.9], [0.2, 0.5, 0.9])
    assert same["diff"] == same["low"] == same["high"] == 0.0 and same["p_le_0"] == 1.0
    better = paired_bootstrap([1.0] * 30 + [0.5] * 30, [0.0] * 30 + [0.5] * 30, resamples=2000)
    assert better["diff"] == pytest.approx(0.5) and 0 < better["low"] < 0.5 < better["high"] <= 1.0
    assert better["p_le_0"] == 0.0
    # one win among many ties is not significant
    weak = paired_bootstrap([1.0] + [0.0] * 19, [0.0] * 20, resamples=2000)
    assert weak["low"] == 0.0 and weak["p_le_0"] > 0.2
    assert paired_bootstrap([1, 0], [0, 1], seed=3) == paired_bootstrap([1, 0], [0, 1], seed=3)
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1.0], [1.0, 0.0])


# --------------------------------------------------------------------------- teacher SFT
def test_sft_imitates_add_only_on_locomo_train_beside_synthetic_worlds(full_file, tmp_path):
    from algos import sft

    out = tmp_path / "sft"
    sft.main(["--teacher", "add-only", "--source", "locomo", "--data-path", str(full_file), "--split", "memory-r2",
              "--part", "train", "--num-sessions", "2", "--synthetic-worlds", "1", "--env-kwargs",
              '{"session_chunks": 2, "manage_top_k": 1}', "--model", "tiny", "--steps", "2", "--batch-size", "2",
              "--max-prompt-tokens", "4096", "--output-dir", str(out)], progress=False)
    record = json.loads((out / "sft_losses.json").read_text())
    by_source = record["by_source"]
    # two train conversations x 2 sessions x up to 2 chunks x 2 roles, and one synthetic world
    assert 8 <= by_source["add-only on locomo"] <= 16 and by_source["oracle on synthetic"] > 0
    assert record["demonstrations"] == sum(by_source.values()) and len(record["losses"]) == 2
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_teacher_demonstrations_are_the_add_only_facts(full_file):
    from agents.baselines import first_person_facts
    from algos.sft import SFTArgs, demonstrations

    args = SFTArgs(teacher="add-only", source="locomo", data_path=str(full_file), num_sessions=1)
    pairs, counts = demonstrations(args)
    assert counts == {"add-only on locomo": len(pairs)}
    obs, target = pairs[0]
    turns = json.loads(obs)["turns"]
    expected = [fact for t in turns for fact in first_person_facts(t["text"], t["speaker"], json.loads(obs)["date"])]
    assert json.loads(target)["facts"] == list(dict.fromkeys(expected))
    manage = [json.loads(t)["operations"] for o, t in pairs if json.loads(o).get("role") == "manage"]
    assert manage and all(op["op"] == "ADD" and "fact" in op for ops in manage for op in ops)


@pytest.mark.parametrize("flags, fragment", [
    (["--source", "locomo"], "--data-path"),
    (["--teacher", "nosuchagent"], "--teacher"),
    (["--synthetic-worlds", "2"], "--synthetic-worlds"),
    (["--env-kwargs", "[1]"], "--env-kwargs"),
])
def test_sft_refuses_bad_teacher_flags_in_one_line(flags, fragment, capsys, tmp_path):
    from algos import sft

    with pytest.raises(SystemExit):
        sft.main([*flags, "--output-dir", str(tmp_path / "x")])
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- RL on LoCoMo train
def test_one_logo_grpo_update_on_locomo_train_with_validation_on_val(full_file, tmp_path):
    from algos import logo_grpo

    env = {"source": "locomo", "data_path": str(full_file), "split": "memory-r2", "part": "train",
           "manage_top_k": 1, "answer_top_k": 2}
    result = logo_grpo.main([
        "--model", "tiny", "--stages", "1", "--updates-per-stage", "1", "--group-size", "2", "--inner-n", "2",
        "--inner-fraction", "1.0", "--conversations-per-update", "1", "--max-new-tokens", "8",
        "--max-prompt-tokens", "4096", "--max-final-questions", "2", "--answerer", "base", "--ppo-epochs", "1",
        "--num-minibatches", "1", "--no-progress", "--no-tensorboard", "--env-kwargs", json.dumps(env),
        "--val-env-kwargs", '{"part": "val"}', "--output-dir", str(tmp_path / "run")])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "charts/session_reward" in r]
    assert len(trained) == 1 and math.isfinite(trained[0]["charts/session_reward"])
    assert trained[0]["charts/samples"] > 0 and trained[0]["charts/samples_local"] > 0
    assert any(k.startswith("val/") for r in rows for k in r)
    assert result["history"] and (tmp_path / "run" / "adapter").is_dir()


# --------------------------------------------------------------------------- the test part
def test_leaderboard_reports_on_the_memory_r2_test_part_of_a_full_file(full_file, tmp_path):
    from benchmarks.leaderboard import cli as lb
    from benchmarks.leaderboard import compare

    out = tmp_path / "lb"
    results = lb.main(["--source", "locomo", "--data-path", str(full_file), "--split", "memory-r2", "--part", "test",
                       "--rows", "add-only+llm:tiny", "rag-turns+llm:tiny", "--answer-top-k", "2",
                       "--save-predictions", "--no-progress", "--out", str(out)])
    assert results["settings"]["conversations"] == SPLITS["memory-r2"]["test"]
    row = results["rows"][0]
    assert row["num_conversations"] == 7 and row["by_conversation"]["count"] == 7
    assert {"squad_f1", "squad_bleu1", "f1", "locomo_f1"} <= set(row["predictions"][0])
    md = out.with_suffix(".md").read_text()
    assert "R2-F1" in md and "averaged per conversation" in md
    cmp = compare.main(["--a", f"{out}.json#add-only + llm:tiny", "--b", f"{out}.json#rag-turns + llm:tiny",
                        "--resamples", "200", "--out", str(tmp_path / "cmp")])
    assert cmp["n"] == row["num_questions"] and cmp["low"] <= cmp["diff"] <= cmp["high"]
    assert (tmp_path / "cmp.md").read_text().startswith("| A | B |")


def test_synthetic_validation_worlds_on_a_locomo_source_are_refused_in_one_line(full_file, tmp_path):
    """--preset memory-r2 sets --val-worlds 4; on a LoCoMo source that used to crash at the first
    validation, with a ValueError about conversation 900000. It is refused before the run
    directory is written, so the corrected command can use the same --output-dir."""
    from algos import logo_grpo
    from algos.cli import UserError

    env = {"source": "locomo", "data_path": str(full_file), "split": "memory-r2", "part": "train"}
    with pytest.raises(UserError) as err:
        logo_grpo.main(["--model", "tiny", "--stages", "1", "--updates-per-stage", "1", "--val-worlds", "2",
                        "--no-progress", "--no-tensorboard", "--env-kwargs", json.dumps(env),
                        "--output-dir", str(tmp_path / "run")])
    message = str(err.value)
    assert "\n" not in message and "--val-env-kwargs" in message and "conv-" in message
    assert not (tmp_path / "run").exists()
