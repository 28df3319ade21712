"""The per-fact manager wrapper for SB3, the trained-manager agent, its pickle-free files, and a short PPO run."""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import subprocess
import sys
import warnings
import zipfile
from dataclasses import fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import memenv  # noqa: F401
from agents.sb3_manager import (
    ADD,
    DELETE,
    FEATURE_NAMES,
    NUM_FEATURES,
    UPDATE,
    FeatureManagerAgent,
    ManagerDecisionEnv,
    RandomManagerAgent,
    SB3ManagerAgent,
    SessionDecisions,
    change_kind,
    load_manager_policy,
    rule_decision,
    save_manager,
    topics,
)
from agents.registry import make_agent
from benchmarks.sb3_manager import Args, evaluate_agent, main, parse_args, train_manager
from memenv.env import MemorySessionEnv
from memenv.scripted import OracleAgent
from memenv.sources import ConversationSource
from memenv.synthetic import generate_world
from memenv.types import Conversation, GoldFact, Question, Session, Turn

pytestmark = pytest.mark.usefixtures("single_torch_thread")

HELD_OUT = list(range(500_000, 500_012))
# The trained manager must beat the random manager by at least this much (token F1).
MIN_MARGIN_OVER_RANDOM = 0.1


def _f(i):
    return FEATURE_NAMES.index(i)


class ClubSource(ConversationSource):
    """Two sessions: Alice joins a club and lives in Paris; then quits and moves."""

    def keys(self):
        return ["club"]

    def get(self, key):
        s0 = Session(0, "3 May 2023", (Turn("Alice", "I joined the chess club, and I live in Paris.", "D1:1"),),
                     (GoldFact("Alice joined the chess club on 2 May 2023.", "ADD", "Alice"),
                      GoldFact("Alice lives in Paris.", "ADD", "Alice")),
                     ("Alice joined the chess club on 2 May 2023.", "Alice lives in Paris."))
        s1 = Session(1, "9 May 2023", (Turn("Alice", "I quit the chess club and moved to Lyon.", "D2:1"),),
                     (GoldFact("Alice quit the chess club on 8 May 2023.", "DELETE", "Alice",
                               old_text="Alice joined the chess club on 2 May 2023."),
                      GoldFact("Alice moved to Lyon on 7 May 2023.", "UPDATE", "Alice",
                               old_text="Alice lives in Paris.")),
                     ("Alice moved to Lyon on 7 May 2023.",))
        questions = (Question("q0", "Where does Alice live?", "Lyon", "knowledge-update", (0, 1)),
                     Question("q1", "Which clubs is Alice a member of?", "unknown", "knowledge-update", (0, 1)))
        return Conversation("club", ("Alice", "Bob"), (s0, s1), questions)


def club_env(**kwargs) -> ManagerDecisionEnv:
    return ManagerDecisionEnv(MemorySessionEnv(ClubSource()), **kwargs)


# ------------------------------------------------------------------------ semantics --
def test_retraction_deletes_the_join_fact_and_a_change_updates_the_old_value():
    env = club_env()
    x, _ = env.reset(seed=0)
    assert x.shape == (NUM_FEATURES,) and x.dtype == np.float32
    for decision in (ADD, ADD):
        x, reward, terminated, _, info = env.step(decision)
    assert not terminated and [e.text for e in env.memory] == ["Alice joined the chess club on 2 May 2023.",
                                                               "Alice lives in Paris."]
    join_id, paris_id = [e.id for e in env.memory]
    # the retraction: its nearest memory is the join fact, same speaker and topic
    assert x[_f("cue_retraction")] == 1 and x[_f("nearest0_same_topic")] == 1
    x, _, _, _, info = env.step(DELETE)
    assert info["decision"] == "DELETE" and info["target"] == join_id
    # the move shares no value word with "lives in Paris" but is matched by topic
    assert x[_f("cue_change")] == 1 and x[_f("nearest0_same_topic")] == 1 and x[_f("nearest0_same_speaker")] == 1
    x, reward, terminated, _, info = env.step(UPDATE)
    assert terminated and info["target"] == paris_id
    assert info["operations"] == [{"op": "DELETE", "id": join_id},
                                  {"op": "UPDATE", "id": paris_id, "text": "Alice moved to Lyon on 7 May 2023."}]
    assert [(e.id, e.text) for e in env.memory] == [(paris_id, "Alice moved to Lyon on 7 May 2023.")]
    # both questions answered right: "Lyon", and "unknown" since no club is left
    assert info["answer_scores"] == [1.0, 1.0] and reward == pytest.approx(2.0)
    assert not np.any(x)  # the terminal observation is all zeros


def test_a_memory_updated_earlier_in_the_session_is_no_longer_a_target():
    obs = {"role": "manage", "session": 1, "num_sessions": 2, "speakers": ["Alice", "Bob"], "memory_size": 1,
           "facts": [{"index": 0, "text": "Alice moved to Lyon on 7 May 2023.", "speaker": "Alice", "related": ["m0"]},
                     {"index": 1, "text": "Alice moved to Rome on 8 May 2023.", "speaker": "Alice", "related": ["m0"]}],
           "memories": [{"id": "m0", "text": "Alice lives in Paris.", "speaker": "Alice", "session": 0, "date": ""}]}
    session = SessionDecisions(obs)
    session.decide(UPDATE)
    assert session.features()[_f("nearest0_present")] == 0  # m0 is taken
    session.decide(DELETE)  # nothing left to delete: dropped, the op list stays valid
    assert session.done and session.operations() == [
        {"op": "UPDATE", "id": "m0", "text": "Alice moved to Lyon on 7 May 2023."}]


def test_text_cues():
    assert change_kind("Alice quit the chess club on 9 June 2023.") == "retraction"
    assert change_kind("Ben gave his cat Milo to a friend on 2 May 2023.") == "retraction"
    assert change_kind("Alice started working as a pilot on 2 May 2023.") == "change"
    assert change_kind("Alice travelled to Peru on 2 May 2023.") == "acquisition"
    assert change_kind("The weather is nice") == "state" and change_kind("Hello there") is None
    assert topics("Alice started working as a pilot") == topics("Alice works as a nurse") == {"work"}
    assert "relationship" in topics("Alice broke up with Sam") & topics("Alice's partner is Sam.")


def test_session_without_facts_is_one_ignored_step():
    class Silent:
        def act(self, obs, info):
            return json.dumps({"facts": []})

    env = ManagerDecisionEnv(env_kwargs={"num_sessions": 3}, extractor=Silent())
    x, _ = env.reset(seed=1)
    steps = 0
    done = False
    while not done:
        assert x[_f("placeholder")] == 1 and x.sum() == 1
        x, _, done, _, info = env.step(ADD)
        steps += 1
    assert steps == 3 and len(env.memory) == 0 and info["memory_episode"]["num_questions"] > 0


@pytest.mark.parametrize("bad", [4, -1, 1.5, "ADD"])
def test_invalid_actions_raise(bad):
    env = club_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be"):
        env.step(bad)


def test_constructor_errors():
    with pytest.raises(ValueError, match="reward_mode"):
        ManagerDecisionEnv(reward_mode="dense")
    with pytest.raises(TypeError, match="extractor"):
        ManagerDecisionEnv(extractor=object())
    with pytest.raises(ValueError, match="sb3-manager needs"):
        SB3ManagerAgent.from_spec("")


# ---------------------------------------------------------------------- env checkers --
def test_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only "no spec, cannot test render modes"
        check_env(ManagerDecisionEnv(env_kwargs={"num_sessions": 3, "world_seeds": [1, 2, 3]}))


def test_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker warns about anything it dislikes
        check_env(ManagerDecisionEnv(env_kwargs={"num_sessions": 3, "world_seeds": [1, 2, 3]}))


# ----------------------------------------------------------------------- rewards ----
def test_probe_return_telescopes_to_the_score_on_the_final_memory():
    env = ManagerDecisionEnv(env_kwargs={"num_sessions": 4}, reward_mode="probe")
    rng = np.random.default_rng(0)
    env.reset(options={"world_seed": 21})
    total, done = 0.0, False
    while not done:
        _, reward, done, _, _ = env.step(int(rng.integers(4)))
        total += reward
    base = env.inner.unwrapped
    reader = OracleAgent()
    final = sum(base.score_answer(q, reader.act(base.probe(q), {})) for q in base.questions_due_by(3))
    assert total == pytest.approx(final) and 0 < final < len(base.questions_due_by(3))


def test_answers_return_equals_inner_env_return_of_the_same_decisions():
    """The wrapper's return in "answers" mode is what the inner env pays the same manager."""
    env = ManagerDecisionEnv(env_kwargs={"num_sessions": 4})
    agent = FeatureManagerAgent(rule_decision)
    x, _ = env.reset(options={"world_seed": 8})
    wrapper_return, done = 0.0, False
    while not done:
        x, reward, done, _, _ = env.step(rule_decision(x))
        wrapper_return += reward
    inner = gym.make("MemorySession-v0", num_sessions=4)
    obs, info = inner.reset(options={"world_seed": 8})
    inner_return, done = 0.0, False
    while not done:
        obs, reward, done, _, info = inner.step(agent.act(obs, info))
        inner_return += reward
    assert wrapper_return == pytest.approx(inner_return)
    assert inner.unwrapped.memory == env.memory


# ----------------------------------------------------------------- agents and PPO ---
def test_feature_rule_rebuilds_the_gold_memory_so_the_features_suffice():
    """A hand-written rule on the features reproduces the gold operations: what PPO can reach."""
    agent = FeatureManagerAgent(rule_decision)
    env = gym.make("MemorySessionBench-v0", num_sessions=8)
    for seed in HELD_OUT[:5]:
        obs, info = env.reset(options={"world_seed": seed})
        done = False
        while not done:
            obs, _, done, _, info = env.step(agent.act(obs, info))
        gold = generate_world(seed, 8).sessions[-1].gold_memory
        assert sorted(env.unwrapped.memory.texts()) == sorted(gold)
    assert evaluate_agent(agent, HELD_OUT[:3])["f1"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short PPO run (fixed seeds) and its saved model."""
    args = Args(timesteps=8192, seeds=(0,), train_worlds=100, eval_worlds=len(HELD_OUT),
                eval_seed_offset=HELD_OUT[0], progress=False)
    model = train_manager(args, seed=0)
    path = save_manager(model, str(tmp_path_factory.mktemp("sb3") / "ppo.safetensors"))
    return model, path


def test_ppo_beats_a_random_manager_on_held_out_worlds(trained):
    model, _ = trained
    ppo = evaluate_agent(SB3ManagerAgent(model), HELD_OUT)
    random = evaluate_agent(RandomManagerAgent(0), HELD_OUT)
    assert ppo["num_questions"] == random["num_questions"] > 100
    assert ppo["f1"] >= random["f1"] + MIN_MARGIN_OVER_RANDOM, (ppo["f1"], random["f1"])
    assert ppo["invalid_actions"] == 0


def test_saved_model_loads_through_the_registry_spec_and_acts_the_same(trained):
    model, path = trained
    loaded = make_agent(f"sb3-manager:{path}")
    assert isinstance(loaded, SB3ManagerAgent)
    features = np.random.default_rng(0).random((256, NUM_FEATURES), dtype=np.float32)
    features[:, _f("placeholder")] = 0
    expected = model.predict(features, deterministic=True)[0]
    assert len(set(expected.tolist())) > 1  # a constant policy would not show a mix-up of weights
    np.testing.assert_array_equal(loaded.model.predict(features, deterministic=True)[0], expected)
    env = gym.make("MemorySession-v0", num_sessions=4)
    obs, info = env.reset(options={"world_seed": HELD_OUT[0]})
    in_memory = SB3ManagerAgent(model)
    while info["role"] != "manage":
        obs, _, _, _, info = env.step(in_memory.act(obs, info))
    action = loaded.act(obs, info)
    assert action == in_memory.act(obs, info)
    assert json.loads(action)["operations"][0]["op"] in ("ADD", "UPDATE", "DELETE", "NOOP")


def test_cli_writes_markdown_and_json(tmp_path):
    out = tmp_path / "res"
    result = main(["--timesteps", "512", "--n-steps", "128", "--batch-size", "128", "--n-envs", "2",
                   "--eval-worlds", "2", "--num-sessions", "3", "--no-progress",
                   "--out", str(out), "--model-dir", str(tmp_path / "models")])
    data = json.loads((tmp_path / "res.json").read_text())
    markdown = (tmp_path / "res.md").read_text()
    assert set(data["rows"]) == {"PPO (sb3-manager)", "random manager", "noop", "add-all",
                                 "feature rule (hand-written)", "keep-history rule (hand-written)",
                                 "budget-aware keep-history rule (hand-written)", "oracle"}
    assert data["rows"]["oracle"]["f1"] == 1.0 and data["command"].startswith("python -m benchmarks.sb3_manager")
    assert "--timesteps 512" in markdown and "| oracle | 1.000 |" in markdown
    assert (tmp_path / "models" / "ppo_seed0.zip").exists() and result["runs"][0]["seed"] == 0
    # the file the project loads is the pickle-free one, and it is what was evaluated
    assert result["runs"][0]["model"] == str(tmp_path / "models" / "ppo_seed0.safetensors")
    assert isinstance(make_agent(f"sb3-manager:{result['runs'][0]['model']}"), SB3ManagerAgent)


def test_args_refuse_training_on_evaluation_worlds():
    with pytest.raises(ValueError, match="reach the training worlds"):
        Args(eval_worlds=100, eval_seed_offset=999_950)
    assert Args().train_seeds[0] == 1_000_000 and Args().eval_seeds[-1] < 1_000_000
    with pytest.raises(ValueError, match="batch-size"):
        Args(n_steps=100, n_envs=1, batch_size=64)


def test_cli_flags_keep_their_defaults_and_record_the_command():
    args = parse_args(["--seeds", "3", "4", "--no-progress", "--ablation-answers", "--reward-mode", "answers"])
    assert args.seeds == (3, 4) and not args.progress and args.ablation_answers and args.reward_mode == "answers"
    assert args.command == "python -m benchmarks.sb3_manager --seeds 3 4 --no-progress --ablation-answers " \
                           "--reward-mode answers"
    defaults = parse_args([])
    assert defaults.command == "python -m benchmarks.sb3_manager"
    defaults.command = ""
    assert defaults == Args()


def test_cli_help_lists_every_flag_with_its_help(capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for f in fields(Args):
        if f.init:
            assert "--" + f.name.replace("_", "-") in shown and " ".join(f.metadata["help"].split()) in shown, f.name
    assert "--command" not in shown


@pytest.mark.parametrize("argv, message", [
    (["--timesteps", "0"], "--timesteps must be >= 1, got 0"),
    (["--batch-size", "100"], "--batch-size 100 must divide n_steps * n_envs = 2048"),
    (["--reward-mode", "dense"], "argument --reward-mode: invalid choice: 'dense'"),
])
def test_cli_bad_values_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith(f"python -m benchmarks.sb3_manager: error: {message}")
    assert err.count("\n") == 1


def test_cli_module_exits_2_with_one_line_on_a_bad_flag():
    done = subprocess.run([sys.executable, "-m", "benchmarks.sb3_manager", "--timesteps", "0"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "python -m benchmarks.sb3_manager: error: --timesteps must be >= 1, got 0\n"


def test_the_old_module_re_exports_every_part():
    """agents.sb3_manager keeps its public names; each is the object of the module that defines it."""
    import agents.sb3_agents
    import agents.sb3_decision_env
    import agents.sb3_features
    import agents.sb3_manager
    import agents.sb3_model_file
    from agents.registry import _load

    parts = (agents.sb3_features, agents.sb3_decision_env, agents.sb3_agents, agents.sb3_model_file)
    for name in agents.sb3_manager.__all__:
        owners = [m for m in parts if name in vars(m) and getattr(m, name) is getattr(agents.sb3_manager, name)]
        assert owners, name
    assert _load("agents.sb3_agents:SB3ManagerAgent.from_spec") == SB3ManagerAgent.from_spec
    assert isinstance(make_agent("random-manager:3"), RandomManagerAgent)


# --------------------------------------------------------- saved managers: no pickle --
class MarkerPayload:
    """Unpickling this creates ``marker``: it stands in for the code a crafted model file runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted_sb3_zip(marker: str) -> bytes:
    """A zip laid out like SB3's: a cloudpickled field in ``data``, a pickle payload as ``policy.pth``."""
    import torch

    policy_pth = io.BytesIO()
    torch.save(MarkerPayload(marker), policy_pth)
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>",
                             ":serialized:": base64.b64encode(pickle.dumps(MarkerPayload(marker))).decode()},
            "policy_kwargs": {}}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data", json.dumps(data))
        z.writestr("policy.pth", policy_pth.getvalue())
        z.writestr("_stable_baselines3_version", "2.9.2")
    return archive.getvalue()


def test_the_payload_is_live(tmp_path):
    """The payloads below do run when unpickled, so the refusals are not vacuous."""
    import torch

    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(MarkerPayload(str(marker))))
    assert marker.exists()
    marker.unlink()
    with zipfile.ZipFile(io.BytesIO(crafted_sb3_zip(str(marker)))) as z:
        policy_pth = z.read("policy.pth")
    # torch's restricted unpickler refuses it (the loader does not even get that far) ...
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(io.BytesIO(policy_pth), weights_only=True)
    assert not marker.exists()
    # ... a full unpickle runs it
    torch.load(io.BytesIO(policy_pth), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name, content", [
    ("model.zip", lambda marker: crafted_sb3_zip(marker)),
    ("model.safetensors", lambda marker: crafted_sb3_zip(marker)),  # the name does not matter
    ("policy.pth", lambda marker: zipfile.ZipFile(io.BytesIO(crafted_sb3_zip(marker))).read("policy.pth")),
    ("model.pkl", lambda marker: pickle.dumps(MarkerPayload(marker))),
    ("model.p0", lambda marker: pickle.dumps(MarkerPayload(marker), protocol=0)),
])
def test_a_crafted_model_file_is_refused_without_running_its_payload(tmp_path, name, content):
    marker = tmp_path / "ran"
    path = tmp_path / name
    path.write_bytes(content(str(marker)))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": refused, ") as refused:
        make_agent(f"sb3-manager:{path}")
    assert "\n" not in str(refused.value)
    assert not marker.exists()


def _policy(net_arch=None, activation_fn=None):
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy

    torch.manual_seed(0)
    return ActorCriticPolicy(spaces.Box(0.0, 1.0, (NUM_FEATURES,), np.float32), spaces.Discrete(4), lambda _: 0.0,
                             net_arch=net_arch, activation_fn=activation_fn or torch.nn.Tanh)


@pytest.mark.parametrize("net_arch, activation", [(None, "Tanh"), ([16], "ReLU"), ({"pi": [8, 8], "vf": []}, "Tanh")])
def test_save_and_load_round_trip_other_architectures(tmp_path, net_arch, activation):
    import torch

    policy = _policy(net_arch, getattr(torch.nn, activation))
    loaded = load_manager_policy(save_manager(policy, str(tmp_path / "m.safetensors")))
    assert loaded.state_dict().keys() == policy.state_dict().keys()
    for key, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = np.random.default_rng(1).random((64, NUM_FEATURES), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x, deterministic=True)[0], policy.predict(x, deterministic=True)[0])


def test_save_refuses_a_policy_it_could_not_rebuild(tmp_path):
    import torch

    with pytest.raises(ValueError, match="activation must be one of"):
        save_manager(_policy(activation_fn=torch.nn.ELU), str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="cannot save this manager: net_arch"):
        save_manager(_policy(net_arch=[2048]), str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="only SB3 MlpPolicy"):
        save_manager(object(), str(tmp_path / "m.safetensors"))


def _edit_header(**changes):
    def edit(tensors, header):
        header.update(changes)
    return edit


def _set_tensor(key, value):
    def edit(tensors, header):
        tensors[key] = value(tensors[key])
    return edit


@pytest.mark.parametrize("edit, why", [
    (_set_tensor("action_net.weight", lambda t: t.new_zeros(5, 64)),
     "tensors do not fit the architecture in its header ('action_net.weight' is F32 [5, 64], expected F32 [4, 64])"),
    (_set_tensor("mlp_extractor.policy_net.0.weight", lambda t: t[:, :-1].contiguous()),
     "'mlp_extractor.policy_net.0.weight' is F32 [64, 37], expected F32 [64, 38]"),
    (_set_tensor("value_net.bias", lambda t: t.double()), "'value_net.bias' is F64 [1], expected F32 [1]"),
    (lambda tensors, header: tensors.pop("action_net.bias"), "missing 'action_net.bias'"),
    (lambda tensors, header: tensors.update(extra=tensors["value_net.bias"].clone()), "unexpected tensor 'extra'"),
    (_edit_header(net_arch={"pi": [32, 32], "vf": [64, 64]}),
     "'mlp_extractor.policy_net.0.weight' is F32 [64, 38], expected F32 [32, 38]"),
    (_edit_header(net_arch={"pi": [100_000], "vf": [64]}), "net_arch {'pi': [100000], 'vf': [64]} is not"),
    (_edit_header(net_arch={"pi": [64] * 10_000, "vf": [64]}), "net_arch {'pi': [64, 64, 64,"),
    (_edit_header(format="something-else"), "not written by save_manager"),
    (lambda tensors, header: header.clear(), "not written by save_manager"),
    (_edit_header(format_version=2), "format version 2, this code reads 1"),
    (_edit_header(feature_names=list(FEATURE_NAMES[:-1]), observation_size=NUM_FEATURES - 1),
     "trained on other features"),
    (_edit_header(feature_version=0), "trained on other features"),
    (_edit_header(num_actions=5), "5 actions, the manager has 4"),
    (_edit_header(activation="gelu"), "activation 'gelu' is not one of"),
])
def test_a_file_that_does_not_match_is_refused_with_the_reason(tmp_path, edit, why):
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = save_manager(_policy(), str(tmp_path / "good.safetensors"))
    with safe_open(good, framework="pt") as f:
        header = json.loads(f.metadata()["memenv"])
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    edit(tensors, header)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"memenv": json.dumps(header)} if header else None)
    with pytest.raises(ValueError, match=re.escape(f"{path}: refused, ") + ".*" + re.escape(why)) as refused:
        SB3ManagerAgent.from_spec(str(path))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < len(str(path)) + 200


def test_a_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such sb3-manager model file"):
        make_agent(f"sb3-manager:{tmp_path / 'absent.safetensors'}")
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match=re.escape(f"{path}: refused, not a safetensors file")):
        make_agent(f"sb3-manager:{path}")


def test_a_good_file_loads_whatever_its_first_byte(tmp_path):
    """A safetensors file starts with its header's length: 0x80 there must not read as a pickle."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = save_manager(_policy(), str(tmp_path / "good.safetensors"))
    with safe_open(good, framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    path = tmp_path / "x80.safetensors"
    for pad in range(0, 256, 8):  # the header is padded to 8 bytes, and 0x80 is a multiple of 8
        save_file(tensors, str(path), metadata={**metadata, "pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    assert isinstance(make_agent(f"sb3-manager:{path}"), SB3ManagerAgent)
