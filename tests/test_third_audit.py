"""The faults of the third audit (issue 30), each reproduced and shown fixed.

Every test here failed on main a73e22b (the audited commit): reused runs published under other
settings, resume forgetting run-control flags, raw tracebacks on a failing disk or a bad model
flag, a damaged or unwritable model cache, non-finite weights, and the minor items.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from algos import logo_grpo
from algos.cli import UserError, run_main

from tests.helpers_run import TINY, manifest_refresh

pytestmark = pytest.mark.usefixtures("single_torch_thread")



def _one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message
    return message



def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("update-*"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The 4-update TINY run: checkpoints update-000002..4 (3 kept), adapters, metrics."""
    out = tmp_path_factory.mktemp("run") / "full"
    result = logo_grpo.main([*TINY, "--output-dir", str(out)])
    return out, result


# ---------------------------------------------------------------------------- 1. reproduce reuses only equal runs
@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from benchmarks import reproduce as R

    root = tmp_path_factory.mktemp("micro")
    report = R.main(["--preset", "micro", "--work-dir", str(root / "runs"), "--results-dir", str(root / "results")])
    return root, report


@pytest.mark.parametrize("flags,names", [
    (["--token-budget", "500"], ["token_budget 1 (the preset: 500)"]),
    (["--sft-steps", "7"], ["steps 2 (the preset: 7)"]),
])
def test_reproduce_refuses_a_finished_run_made_with_other_settings(micro, flags, names):
    """Issue 30.1: a second call with --token-budget 500 (or --sft-steps 7) exited 0, retrained
    nothing and published the new numbers; now it stops naming each difference, and writes no report."""
    from benchmarks import reproduce as R

    root, _ = micro
    results = root / f"results-{flags[0]}"
    with pytest.raises(UserError) as err:
        R.main(["--preset", "micro", "--work-dir", str(root / "runs"), "--results-dir", str(results), *flags])
    message = _one_line(str(err.value))
    for name in names:
        assert name in message
    assert "other settings" in message and "--work-dir" in message
    assert not results.exists()  # nothing published under settings the runs were not made with
    # the runs themselves are untouched
    assert json.loads((root / "runs" / "logo" / "seed0" / "args.json").read_text())["token_budget"] == 1


def test_reproduce_reuse_with_equal_settings_still_passes(micro):
    from benchmarks import reproduce as R

    root, report = micro
    again = R.main(["--preset", "micro", "--work-dir", str(root / "runs"), "--results-dir", str(root / "again")])
    assert again["table"] == report["table"]


def test_an_evaluation_is_keyed_by_the_adapters_digest_not_its_size_and_time(micro, monkeypatch):
    """Issue 30.1: evaluations read back must match the adapter: one copied over with the same
    size and modification time (the old key) is evaluated again."""
    import os

    from benchmarks import reproduce as R

    root, _ = micro
    run = _copy_run(root / "runs" / "logo" / "seed0", root / "logo-copy")
    preset = R.PRESETS["micro"]
    cached = R._evaluate(preset, run / "adapter", run / "eval.json")
    weights = next((run / "adapter").rglob("adapter_model.safetensors"))
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # another value (a factor of 2 in the last float), the same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    calls = []
    real = __import__("algos.evaluate", fromlist=["evaluate_synthetic"]).evaluate_synthetic
    monkeypatch.setattr("algos.evaluate.evaluate_synthetic", lambda *a, **k: calls.append(1) or real(*a, **k))
    R._evaluate(preset, run / "adapter", run / "eval.json")
    assert calls == [1]
    stored = json.loads((run / "eval.json").read_text())["key"]["adapter"]
    assert any(len(entry[2]) == 64 for entry in stored)  # a SHA-256 per file
    assert cached is not None


# ---------------------------------------------------------------------------- 2. resume keeps run-control flags
def test_resume_keeps_the_runs_keep_checkpoints_and_checkpoint_every(tmp_path):
    """Issue 30.2: resumed with --resume DIR alone, --keep-checkpoints 10 fell back to 3 (and
    pruned), and --checkpoint-every to its default. Now the run's values hold."""
    run = tmp_path / "run"
    flags = [*TINY, "--keep-checkpoints", "10"]
    logo_grpo.main([*flags, "--output-dir", str(run), "--stop-after", "2"])
    assert _checkpoints(run) == ["update-000001", "update-000002"]
    result = logo_grpo.main(["--resume", str(run), "--no-progress"])
    assert result["state"]["update"] == 4
    assert _checkpoints(run) == [f"update-00000{i}" for i in (1, 2, 3, 4)]  # every one kept, every update saved
    assert not (run / "args_history.jsonl").exists()  # nothing changed, nothing recorded
    saved = json.loads((run / "args.json").read_text())
    assert saved["keep_checkpoints"] == 10 and saved["checkpoint_every"] == 1


def test_resume_applies_a_run_control_flag_it_gives_and_records_the_change(tmp_path):
    run = tmp_path / "run"
    logo_grpo.main([*TINY, "--keep-checkpoints", "10", "--output-dir", str(run), "--stop-after", "2"])
    logo_grpo.main(["--resume", str(run), "--no-progress", "--keep-checkpoints", "2"])
    assert _checkpoints(run) == ["update-000003", "update-000004"]
    assert json.loads((run / "args.json").read_text())["keep_checkpoints"] == 2
    history = [json.loads(line) for line in (run / "args_history.jsonl").read_text().splitlines()]
    assert history[-1]["changes"] == {"keep_checkpoints": [10, 2]}


def test_resume_args_keeps_control_flags_unless_given(finished_run):
    from algos.logo_grpo import Args
    from algos.run import resume_args

    run, _ = finished_run
    parsed = Args(resume=str(run), keep_checkpoints=3, checkpoint_every=50)  # the defaults
    args, changes = resume_args(Args, run, parsed, {"resume"}, override=False)
    assert (args.keep_checkpoints, args.checkpoint_every, changes) == (3, 1, {})
    parsed = Args(resume=str(run), checkpoint_every=2)
    args, changes = resume_args(Args, run, parsed, {"resume", "checkpoint_every"}, override=False)
    assert args.checkpoint_every == 2 and changes == {"checkpoint_every": (1, 2)}


# ---------------------------------------------------------------------------- 3. a write failure during a checkpoint
@pytest.mark.parametrize("failure", ["safetensors", "enospc"])
def test_a_failing_checkpoint_write_is_one_line_naming_the_file_and_the_intact_checkpoint(
        tmp_path, monkeypatch, finished_run, failure, capsys):
    """Issue 30.3: safetensors' SafetensorError on a full disk is no OSError: the run exited 1
    with a traceback and left checkpoints/.tmp-update-*/. Now: one line, no temporary folder,
    and the resume (once space is free) is bit-exact."""
    import safetensors
    import safetensors.torch

    calls = {"n": 0}

    def full_disk(tensors, filename, *a, **k):
        if "/checkpoints/.tmp-update-000003/" in str(filename):
            calls["n"] += 1
            if failure == "safetensors":
                raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                                                  "StorageFull, message: \"No space left on device\" })")
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real(tensors, filename, *a, **k)

    import peft.peft_model

    real = peft.peft_model.safe_save_file  # what PeftModel.save_pretrained calls
    monkeypatch.setattr(peft.peft_model, "safe_save_file", full_disk)
    run = tmp_path / "run"
    code = run_main(logo_grpo.main, "python -m algos.logo_grpo", [*TINY, "--output-dir", str(run)])
    assert calls["n"] == 1 and code == 2
    err = _one_line(capsys.readouterr().err)
    assert "could not write checkpoint update-000003" in err
    assert "adapter_model.safetensors" in err  # the file being written
    assert f"{run / 'checkpoints' / 'update-000002'} is intact" in err
    assert "temporary folder was removed" in err and f"--resume {run}" in err
    assert not list((run / "checkpoints").glob(".tmp-*")) and not (run / "checkpoints" / ".latest.tmp").exists()
    assert (run / "checkpoints" / "latest").read_text() == "update-000002"
    monkeypatch.setattr(peft.peft_model, "safe_save_file", real)
    result = logo_grpo.main([*TINY, "--resume", str(run)])
    assert result["digest"] == finished_run[1]["digest"]


def test_a_failing_adapter_export_is_one_line_and_replaces_nothing(tmp_path, tiny_backbone, monkeypatch):
    import safetensors

    from agents.lora import add_lora
    from algos.run import export_adapters

    model = add_lora(tiny_backbone)
    target = tmp_path / "adapter"
    export_adapters(model, target, ["policy"], nested=False)
    before = (target / "adapter_model.safetensors").read_bytes()

    def fail(*a, **k):
        raise safetensors.SafetensorError("Error while serializing: No space left on device\nsecond line")

    import peft.peft_model

    monkeypatch.setattr(peft.peft_model, "safe_save_file", fail)
    with pytest.raises(UserError) as err:
        export_adapters(model, target, ["policy"], nested=False)
    assert "nothing was replaced" in _one_line(str(err.value))
    assert (target / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary folder left


# ---------------------------------------------------------------------------- 4. bad model flags, failed starts
def _trainers():
    from algos import memory_r1, sft

    small_r1 = ("--device cpu --num-sessions 2 --updates 1 --conversations-per-update 1 --questions-per-update 3 "
                "--max-new-tokens 8 --max-prompt-tokens 512 --no-progress --no-constrained").split()
    yield "logo_grpo", logo_grpo.main, [t for t in TINY if t not in ("--model", "tiny")]
    yield "memory_r1", memory_r1.main, small_r1
    yield "sft", sft.main, ["--steps", "1", "--num-worlds", "1", "--num-sessions", "2"]


BAD_FLAGS = {
    "model": (["--model", "nosuchmodel"], "--model nosuchmodel: no such model"),
    "init-adapter": (["--model", "tiny", "--init-adapter", "missing/dir"], "--init-adapter missing/dir: no PEFT adapter"),
    "device": (["--model", "tiny", "--device", "cuda:7"], "--device cuda:7"),
}
# memory_r1 has no --init-adapter, sft neither nor a --device
CASES = [("logo_grpo", "model"), ("logo_grpo", "init-adapter"), ("logo_grpo", "device"),
         ("memory_r1", "model"), ("memory_r1", "device"), ("sft", "model")]


@pytest.mark.parametrize("trainer,case", CASES)
def test_a_bad_model_flag_is_one_line_and_writes_nothing(tmp_path, trainer, case):
    """Issue 30.4: FileNotFoundError / AssertionError tracebacks, and .lock + args.json left in
    --output-dir so that the corrected command was refused."""
    name, main, base = next(t for t in _trainers() if t[0] == trainer)
    flags, fragment = BAD_FLAGS[case]
    if case == "device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        main([*base, *flags, "--output-dir", str(out)])
    assert fragment in _one_line(str(err.value))
    assert not out.exists()  # nothing written: the corrected command runs there


def test_the_command_line_prints_a_bad_model_as_one_line_with_status_2(tmp_path, capsys):
    code = run_main(logo_grpo.main, "python -m algos.logo_grpo",
                    [*TINY[2:], "--model", "nosuchmodel", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("python -m algos.logo_grpo: error: --model nosuchmodel: no such model")


def test_trl_example_checks_its_model_before_trl_writes(tmp_path):
    pytest.importorskip("trl")
    from benchmarks import trl_example

    out = tmp_path / "trl"
    with pytest.raises(UserError) as err:
        trl_example.main(["--model", "nosuchmodel", "--output-dir", str(out)])
    assert "--model nosuchmodel: no such model" in _one_line(str(err.value))
    assert not out.exists()


def test_a_start_that_fails_before_its_first_checkpoint_is_taken_over_by_the_rerun(tmp_path, monkeypatch, capsys,
                                                                                  finished_run):
    """Issue 30.4: a kill (or a failure) before the first checkpoint left .lock and args.json;
    the same command was refused ("already holds"), and so was --resume. Now --resume says to
    rerun, and the rerun starts afresh there."""
    import algos.build

    real = algos.build.build_policy_model

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(algos.build, "build_policy_model", killed)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        logo_grpo.main([*TINY, "--output-dir", str(run)])
    assert (run / "args.json").is_file()  # the trap: a start that wrote its args and stopped
    monkeypatch.setattr(algos.build, "build_policy_model", real)
    with pytest.raises(UserError) as err:
        logo_grpo.main([*TINY, "--resume", str(run)])
    assert "stopped before its first checkpoint" in _one_line(str(err.value)) and "without --resume" in str(err.value)
    capsys.readouterr()
    result = logo_grpo.main([*TINY, "--output-dir", str(run)])
    assert "an earlier start stopped before its first checkpoint; starting afresh there" in capsys.readouterr().out
    assert result["digest"] == finished_run[1]["digest"]


def test_a_directory_with_a_checkpoint_or_other_files_is_never_taken_over(tmp_path, finished_run):
    from algos.run import failed_start

    run = _copy_run(finished_run[0], tmp_path / "run")
    assert not failed_start(run)  # a run with checkpoints
    start = tmp_path / "start"
    start.mkdir()
    (start / "args.json").write_text("{}")
    (start / ".lock").write_text("")
    assert failed_start(start)
    (start / "notes.txt").write_text("mine")
    assert not failed_start(start)  # the user's file: refused, not deleted
    with pytest.raises(UserError, match="already holds"):
        logo_grpo.main([*TINY, "--output-dir", str(start)])
    assert (start / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- 5, 6. the model cache
class _FakeConverted:
    """Stands in for the dequantised model and tokenizer: writes a small HF-like folder."""

    def __init__(self, calls: list):
        self.calls = calls

    def save_pretrained(self, folder):
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / "config.json").write_text("{}")
        save_file({"w": torch.arange(256, dtype=torch.float32)}, str(folder / "model.safetensors"))


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    import agents.backbone as B

    calls: list = []

    def dequantise(path):
        calls.append(path)
        return _FakeConverted(calls), _FakeConverted(calls)

    monkeypatch.setenv(B.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(B, "_dequantise_gguf", dequantise)
    return B, calls, tmp_path / "cache" / "models" / "fake"


def test_a_converted_model_is_verified_and_a_truncated_one_converted_again(fake_cache, capsys):
    """Issue 30.5: a truncated cached model.safetensors was used as is (SafetensorError naming no
    cache). Conversion writes size and SHA-256; a damaged copy is named and converted again."""
    B, calls, target = fake_cache
    assert B._cached_gguf_dir(Path("fake.gguf"), "fake") == target and len(calls) == 1
    manifest = json.loads((target / B.CACHE_MANIFEST).read_text())["files"]
    assert set(manifest) == {"model.safetensors"} and len(manifest["model.safetensors"]["sha256"]) == 64
    assert B.cache_problem(target) is None
    B._cached_gguf_dir(Path("fake.gguf"), "fake")
    assert len(calls) == 1  # verified: reused
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    problem = B.cache_problem(target)
    assert str(weights) in problem and "truncated" in problem
    capsys.readouterr()
    B._cached_gguf_dir(Path("fake.gguf"), "fake")
    assert len(calls) == 2 and B.cache_problem(target) is None
    assert "model cache damaged" in capsys.readouterr().out


def test_a_changed_byte_of_the_same_size_and_a_missing_manifest_are_named(fake_cache):
    B, _, target = fake_cache
    B._cached_gguf_dir(Path("fake.gguf"), "fake")
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "does not match the SHA-256" in B.cache_problem(target)
    (target / B.CACHE_MANIFEST).unlink()
    assert "is missing or unreadable" in B.cache_problem(target)


def test_a_damaged_cache_that_cannot_be_removed_says_which_folder_to_delete(fake_cache, monkeypatch):
    B, _, target = fake_cache
    B._cached_gguf_dir(Path("fake.gguf"), "fake")
    (target / "model.safetensors").write_bytes(b"x")

    def refuse(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(B.shutil, "rmtree", refuse)
    with pytest.raises(B.ModelCacheError) as err:
        B._cached_gguf_dir(Path("fake.gguf"), "fake")
    assert f"delete the folder {target}" in _one_line(str(err.value))


def test_an_unwritable_cache_is_one_line_before_any_conversion(tmp_path, monkeypatch, capsys):
    """Issue 30.6: an unwritable MEMENV_CACHE failed after 27 s of conversion with a raw OSError."""
    import agents.backbone as B

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(B.CACHE_ENV_VAR, str(blocker / "cache"))
    monkeypatch.setattr(B, "_dequantise_gguf", lambda path: pytest.fail("converted before the cache was checked"))
    with pytest.raises(B.ModelCacheError) as err:
        B._cached_gguf_dir(Path("fake.gguf"), "fake")
    message = _one_line(str(err.value))
    assert "cannot be written" in message and B.CACHE_ENV_VAR in message

    def main(argv):
        B._cached_gguf_dir(Path("fake.gguf"), "fake")

    assert run_main(main, "python -m x", []) == 2
    assert _one_line(capsys.readouterr().err).startswith("python -m x: error: the model cache")


# ---------------------------------------------------------------------------- 7. non-finite weights and losses
def test_a_checkpoint_with_non_finite_lora_tensors_is_damaged_and_falls_back(finished_run, tmp_path, capsys):
    """Issue 30.7: LoRA tensors times NaN (digests recomputed) resumed into 'probability tensor
    contains either inf, nan' in the sampler. Now the checkpoint is damage; the resume falls
    back to the one before, bit-exact."""
    from safetensors.torch import load_file, save_file

    run = _copy_run(finished_run[0], tmp_path / "run")
    latest = run / "checkpoints" / "update-000004"
    path = latest / "adapters" / "policy" / "adapter_model.safetensors"
    save_file({k: v * float("nan") for k, v in load_file(str(path)).items()}, str(path))
    manifest_refresh(latest)
    capsys.readouterr()
    result = logo_grpo.main([*TINY, "--resume", str(run)])
    out = " ".join(capsys.readouterr().out.split())
    assert "update-000004 is damaged" in out and "non-finite" in out and "resumed from update-000003" in out
    assert result["digest"] == finished_run[1]["digest"]


def test_a_checkpoint_with_a_non_finite_optimizer_state_is_damaged(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run[0], tmp_path / "run")
    latest = run / "checkpoints" / "update-000004"
    blob = torch.load(latest / "trainer_state.pt", weights_only=True)
    state = next(iter(blob["optimizer"]["state"].values()))
    state["exp_avg"] = state["exp_avg"] * float("inf")
    torch.save(blob, latest / "trainer_state.pt")
    manifest_refresh(latest)
    capsys.readouterr()
    result = logo_grpo.main([*TINY, "--resume", str(run)])
    out = " ".join(capsys.readouterr().out.split())
    assert "update-000004 is damaged" in out and "non-finite" in out
    assert result["digest"] == finished_run[1]["digest"]


def test_a_non_finite_loss_stops_the_run_before_sampling_from_it(tmp_path, monkeypatch):
    import algos.update

    real = algos.update.ppo_update
    calls = {"n": 0}

    def diverging(*a, **k):
        calls["n"] += 1
        losses = real(*a, **k)
        if calls["n"] == 2:
            losses = {**losses, "losses/policy": math.nan}
        return losses

    monkeypatch.setattr(algos.update, "ppo_update", diverging)
    run = tmp_path / "run"
    with pytest.raises(UserError) as err:
        logo_grpo.main([*TINY, "--output-dir", str(run)])
    message = _one_line(str(err.value))
    assert message.startswith("update 2: the loss losses/policy is nan; stopping")
    assert calls["n"] == 2 and _checkpoints(run) == ["update-000001"]  # no checkpoint of the broken update


def test_non_finite_weights_stop_the_run_too(tiny_backbone):
    from agents.lora import add_lora
    from algos.run import check_finite

    model = add_lora(tiny_backbone)
    check_finite(model, {"losses/policy": 0.5}, 1, Path("runs/x"))  # finite: passes
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).fill_(float("inf"))
    with pytest.raises(UserError, match="update 3: the weight .* is not finite"):
        check_finite(model, {"losses/policy": 0.5}, 3, Path("runs/x"))


def test_a_non_finite_sft_loss_stops_with_one_line(monkeypatch):
    from agents.backbone import load_backbone
    from agents.lora import add_lora
    from algos import sft

    real = sft.sft_loss
    monkeypatch.setattr(sft, "sft_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    backbone = load_backbone("tiny", device="cpu")
    model = add_lora(backbone)
    pairs = sft.demonstrations(sft.SFTArgs(num_worlds=1, num_sessions=2))[0]
    with pytest.raises(UserError, match=r"SFT step 1: the loss is nan; stopping") as err:
        sft.train_sft(model, backbone.tokenizer, pairs, steps=2)
    _one_line(str(err.value))


# ---------------------------------------------------------------------------- 8. the minor items
@pytest.mark.parametrize("value", ["99999999999999999999", "1048577", "0", "\u0661\u0662", "１２", "-3", "1e3"])
def test_spec_numeric_options_are_bounded_ascii_whole_numbers(value):
    from agents.llm_agent import split_spec_options

    for key in ("max_new_tokens", "max_prompt_tokens"):
        with pytest.raises(ValueError, match="must be a whole number from 1 to 1048576 in ASCII digits") as err:
            split_spec_options(f"llm:tiny?{key}={value}")
        _one_line(str(err.value))


def test_spec_numeric_options_accept_the_bounds():
    from agents.llm_agent import split_spec_options

    assert split_spec_options("llm:tiny?max_prompt_tokens=1048576")[1] == {"max_prompt_tokens": 1048576}
    assert split_spec_options("llm:tiny?max_prompt_tokens=1")[1] == {"max_prompt_tokens": 1}
    assert set(split_spec_options("llm:tiny?max_new_tokens=12")[1]["max_new_tokens"].values()) == {12}


@pytest.mark.parametrize("spec,fragment", [
    ("llm", "'llm' needs an argument, as 'llm:ARGUMENT'"),
    ("oracle:extra", "'oracle' takes no argument; write it as 'oracle'"),
])
def test_make_agent_names_the_specs_form_in_one_line(spec, fragment):
    from agents.registry import make_agent

    with pytest.raises(ValueError) as err:
        make_agent(spec)
    assert not isinstance(err.value, TypeError)
    assert fragment in _one_line(str(err.value))


def test_make_agent_still_builds_agents_with_and_without_arguments():
    from agents.registry import make_agent

    assert callable(make_agent("oracle").act)


def test_a_pickled_trainer_state_is_one_line(finished_run, tmp_path):
    """Issue 30.8: torch's weights-only refusal was quoted whole (many lines)."""

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    run = _copy_run(finished_run[0], tmp_path / "run")
    for ckpt in (run / "checkpoints").glob("update-*"):
        torch.save({"optimizer": Payload()}, ckpt / "trainer_state.pt")
        manifest_refresh(ckpt)
    with pytest.raises(UserError) as err:
        logo_grpo.main([*TINY, "--resume", str(run)])
    message = _one_line(str(err.value))
    assert "no intact checkpoint" in message and "pickled object that the safe loader refuses" in message


def test_a_pickled_adapter_model_bin_is_one_line(tmp_path, tiny_backbone):
    """Issue 30.8: an adapter folder whose weights are a pickled adapter_model.bin gave torch's
    whole multi-line weights-only refusal."""
    from agents.lora import add_lora, load_adapter, save_adapter

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    model = add_lora(tiny_backbone)
    folder = save_adapter(model, tmp_path / "adapter", "policy")
    (folder / "adapter_model.safetensors").unlink()
    torch.save({"weights": Payload()}, folder / "adapter_model.bin")
    from agents.backbone import load_backbone

    with pytest.raises(ValueError) as err:
        load_adapter(load_backbone("tiny", device="cpu"), folder)
    message = _one_line(str(err.value))
    assert "adapter_model.bin: it holds a pickled object that the safe loader refuses" in message


def test_saved_adapter_files_are_readable_by_all_like_the_rest_of_the_run(tmp_path, tiny_backbone):
    """Issue 30.8: adapter_model.safetensors was mode 0600 (moved out of a private temporary folder)."""
    from agents.lora import add_lora, save_adapter

    folder = save_adapter(add_lora(tiny_backbone), tmp_path / "adapter", "policy")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (folder / name).stat().st_mode & 0o777 == 0o644, name


def test_the_memory_bank_cleans_lone_surrogates_so_it_always_saves(tmp_path):
    """Issue 30.8: MemoryBank().add("x\\ud800").save(p) raised UnicodeEncodeError."""
    from memenv.memory import MemoryBank

    bank, memory_id = MemoryBank().add("x\ud800", speaker="A\udc00")
    bank = bank.update(memory_id, "y\ud83d\ude00 z\udfff")  # a split pair joins; a lone one is replaced
    bank.save(tmp_path / "bank.json")
    loaded = MemoryBank.from_dict(json.loads((tmp_path / "bank.json").read_text(encoding="utf-8")))
    entry = loaded[memory_id]
    assert entry.text == "y\U0001F600 z\ufffd" and entry.speaker == "A\ufffd"
    assert [r.after for r in loaded.history] == ["x\ufffd", "y\U0001F600 z\ufffd"]


def test_the_leaderboard_rescore_writes_atomically(tmp_path, monkeypatch):
    """Issue 30.8: rescore rewrote its JSON in place; a kill mid-write left half a file. Now a
    failure before the rename keeps the old file whole and leaves no temporary file."""
    import os

    from benchmarks.leaderboard import main as lb_main
    from benchmarks.leaderboard import rescore as lb_rescore

    lb_main(["--worlds", "0", "--rows", "oracle", "--max-questions", "3", "--out", str(tmp_path / "lb"),
             "--no-progress", "--save-predictions"])
    before = (tmp_path / "lb.json").read_bytes()
    replaced = []

    def killed(src, dst):
        replaced.append(Path(dst).name)
        raise KeyboardInterrupt  # after the temporary file is written, before it replaces the results

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        lb_rescore.main(["--results", str(tmp_path / "lb.json")])  # in place
    monkeypatch.undo()
    assert replaced == ["lb.json"]
    assert (tmp_path / "lb.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    rescored = lb_rescore.main(["--results", str(tmp_path / "lb.json")])
    assert json.loads((tmp_path / "lb.json").read_text()) == rescored
