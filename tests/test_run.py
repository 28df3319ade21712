"""Run safety shared by the trainers (algos.run): checkpoints that never run code and never
load damaged, output directories one run owns, resumes that keep the run's settings."""

import errno
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from algos import logo_grpo
from algos.checkpoint import save_checkpoint
from algos.run import RunDir, UserError, resume_args
from algos.update import Sample

from tests.helpers_run import TINY, manifest_refresh

pytestmark = pytest.mark.usefixtures("single_torch_thread")




class _Payload:
    """Unpickling this creates a file: the proof that opening a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-update TINY run: checkpoints update-000002..4 (3 kept), adapters, metrics."""
    out = tmp_path_factory.mktemp("run") / "full"
    result = logo_grpo.main([*TINY, "--output-dir", str(out)])
    return out, result


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# ---------------------------------------------------------------------------- opening a file never runs code
def test_a_pickle_payload_in_the_trainer_state_is_refused_without_running(finished_run, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    marker = tmp_path / "pwned"
    for ckpt in (run / "checkpoints").glob("update-*"):
        torch.save({"optimizer": _Payload(marker)}, ckpt / "trainer_state.pt")
        manifest_refresh(ckpt)
    with pytest.raises(UserError, match="no intact checkpoint"):
        logo_grpo.main([*TINY, "--resume", str(run)])
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(finished_run):
    ckpt = finished_run[0] / "checkpoints" / (finished_run[0] / "checkpoints" / "latest").read_text()
    blob = torch.load(ckpt / "trainer_state.pt", weights_only=True)  # raises if anything else were pickled
    assert set(blob) == {"optimizer", "rng", "state", "modules"}
    assert blob["state"]["update"] == 4


# ---------------------------------------------------------------------------- damaged checkpoints
def test_renamed_lora_keys_fall_back_to_the_previous_intact_checkpoint(finished_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = _copy_run(finished_run[0], tmp_path / "run")
    latest = run / "checkpoints" / "update-000004"
    path = latest / "adapters" / "policy" / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k.replace("q_proj", "q_renamed"): v for k, v in weights.items()}, str(path))
    manifest_refresh(latest)
    result = logo_grpo.main([*TINY, "--resume", str(run), "--no-progress"])
    out = " ".join(capsys.readouterr().out.split())
    assert "update-000004 is damaged" in out and "LoRA tensors differ" in out
    assert "resumed from update-000003" in out
    assert result["state"]["update"] == 4 and len(result["history"]) == 1  # update 4 done again
    assert result["digest"] == finished_run[1]["digest"]  # ...exactly as the first time


def test_a_changed_byte_is_caught_by_the_digest(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run[0], tmp_path / "run")
    path = run / "checkpoints" / "update-000004" / "adapters" / "policy" / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    logo_grpo.main([*TINY, "--resume", str(run)])
    assert "does not match its SHA-256" in " ".join(capsys.readouterr().out.split())


def test_no_intact_checkpoint_is_one_line_naming_the_file(finished_run, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    for ckpt in (run / "checkpoints").glob("update-*"):
        (ckpt / "manifest.json").unlink()
    with pytest.raises(UserError, match=r"no intact checkpoint: .*update-000004/manifest.json is missing") as err:
        logo_grpo.main([*TINY, "--resume", str(run)])
    assert "\n" not in str(err.value)


def test_the_latest_pointer_may_only_name_a_checkpoint_folder(finished_run, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    (run / "checkpoints" / "latest").write_text("../../elsewhere")
    with pytest.raises(UserError, match="does not name a checkpoint folder"):
        logo_grpo.main([*TINY, "--resume", str(run)])


# ---------------------------------------------------------------------------- one run per directory
def test_a_fresh_run_refuses_a_non_empty_directory_and_changes_nothing(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds notes.txt"):
        logo_grpo.main([*TINY, "--output-dir", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_locked_directory_refuses_a_second_run(tmp_path):
    with RunDir(tmp_path / "run", resume=False):
        (tmp_path / "run" / "checkpoints").mkdir()
        (tmp_path / "run" / "checkpoints" / "latest").write_text("update-000001")
        with pytest.raises(UserError, match=r"in use by another run \(pid \d+\)"):
            RunDir(tmp_path / "run", resume=True)
    RunDir(tmp_path / "run", resume=True).close()  # released: a resume may take it now


def test_two_trainers_on_one_directory_second_stops_at_once(finished_run, tmp_path):
    """The lock holds across processes: a second trainer resuming a run that another process
    holds exits with one line, and the first keeps its directory to itself."""
    run = _copy_run(finished_run[0], tmp_path / "run")
    code = ("import sys, time; from algos.run import RunDir; r = RunDir(sys.argv[1], resume=True); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "algos.logo_grpo", "--resume", str(run)],
                              capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and f"{run} is in use by another run (pid" in proc.stderr


def test_resume_into_another_output_dir_is_refused(capsys):
    from algos.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(logo_grpo.Args, ["--resume", "runs/a", "--output-dir", "runs/b"])
    assert "must be the same directory" in capsys.readouterr().err


def test_resume_of_a_missing_directory_does_not_create_it(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        logo_grpo.main([*TINY, "--resume", str(tmp_path / "nope")])
    assert not (tmp_path / "nope").exists()


# ---------------------------------------------------------------------------- resume keeps the run's settings
def test_resume_refuses_flags_that_change_the_run_and_names_each(finished_run, tmp_path):
    run = _copy_run(finished_run[0], tmp_path / "run")
    before = (run / "args.json").read_text()
    with pytest.raises(UserError) as err:
        logo_grpo.main([*TINY, "--resume", str(run), "--learning-rate", "0.5", "--seed", "3", "--lora-r", "4"])
    message = str(err.value)
    for flag in ("--learning-rate 0.5 (the run has 0.001)", "--seed 3 (the run has 0)", "--lora-r 4 (the run has 16)"):
        assert flag in message
    assert "--override" in message and (run / "args.json").read_text() == before


def test_resume_alone_continues_with_the_runs_own_settings(finished_run, tmp_path):
    """``--resume DIR`` with no other flag: every setting comes from DIR/args.json."""
    import shutil

    run = _copy_run(finished_run[0], tmp_path / "run")
    # back to the update-2 checkpoint (of a 4-update run)
    for name in ("update-000003", "update-000004"):
        shutil.rmtree(run / "checkpoints" / name)
    (run / "checkpoints" / "latest").write_text("update-000002")
    result = logo_grpo.main(["--resume", str(run), "--no-progress"])
    assert result["state"]["update"] == 4 and result["digest"] == finished_run[1]["digest"]


def test_override_accepts_a_change_and_records_it(finished_run, tmp_path):
    from algos.logo_grpo import Args

    run = _copy_run(finished_run[0], tmp_path / "run")
    parsed = Args(learning_rate=0.5, resume=str(run), override=True)
    args, changes = resume_args(Args, run, parsed, {"learning_rate", "override"}, override=True)
    assert args.learning_rate == 0.5 and args.group_size == 2 and changes == {"learning_rate": (0.001, 0.5)}
    logo_grpo.main([*TINY, "--resume", str(run), "--learning-rate", "0.5", "--override", "--stages", "2", "3"])
    history = [json.loads(line) for line in (run / "args_history.jsonl").read_text().splitlines()]
    assert history[-1]["changes"] == {"learning_rate": [0.001, 0.5]}
    assert json.loads((run / "args.json").read_text())["learning_rate"] == 0.5


# ---------------------------------------------------------------------------- kills and full disks
def test_a_kill_during_the_stage_export_is_finished_by_the_resume(tmp_path, monkeypatch, finished_run):
    from algos import run as run_module

    real = run_module.export_atomically

    def killed_mid_export(target, write):
        if target.name == "stage-2":
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.mkdir(parents=True)
            (tmp / "half-written").write_text("x")
            raise KeyboardInterrupt
        return real(target, write)

    monkeypatch.setattr(run_module, "export_atomically", killed_mid_export)
    with pytest.raises(KeyboardInterrupt):
        logo_grpo.main([*TINY, "--output-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "stage-2").exists()
    monkeypatch.setattr(run_module, "export_atomically", real)
    result = logo_grpo.main([*TINY, "--resume", str(tmp_path / "run")])
    assert (tmp_path / "run" / "stage-2" / "policy" / "adapter_config.json").is_file()
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert result["digest"] == finished_run[1]["digest"]


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_how_to_continue(tmp_path, monkeypatch, finished_run):
    calls = {"n": 0}
    real = torch.save

    def full_disk(obj, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"No space left on device.*update-000002 is intact.*--resume"):
        logo_grpo.main([*TINY, "--output-dir", str(tmp_path / "run")])
    monkeypatch.setattr(torch, "save", real)
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    result = logo_grpo.main([*TINY, "--resume", str(tmp_path / "run")])
    assert result["digest"] == finished_run[1]["digest"]


def test_a_read_only_place_is_one_line_before_any_model_loads():
    proc = subprocess.run([sys.executable, "-m", "algos.logo_grpo", *TINY, "--output-dir", "/proc/memenv-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def test_save_checkpoint_removes_its_temporary_folder_on_failure(tmp_path, tiny_backbone, monkeypatch):
    import numpy as np

    from agents.lora import add_lora

    model = add_lora(tiny_backbone)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only")))
    with pytest.raises(UserError, match="no earlier checkpoint exists"):
        save_checkpoint(tmp_path, model, optimizer, {"update": 1}, np.random.default_rng(0), torch.Generator(),
                        ["policy"])
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []


# ---------------------------------------------------------------------------- user errors are one line
@pytest.mark.parametrize("flags,fragment", [
    (["--learning-rate", "-1"], "--learning-rate must be >= 0"),
    (["--top-p", "0"], "--top-p must be > 0"),
    (["--lora-r", "0"], "--lora-r must be >= 1"),
    (["--env", "NoSuchEnv-v0"], "--env 'NoSuchEnv-v0' is not a registered environment"),
    (["--answerer", "nobody"], "--answerer 'nobody': unknown agent"),
    (["--extractor", "nobody"], "--extractor 'nobody': unknown agent"),
    (["--env-kwargs", "[" * 100000 + "]" * 100000], "--env-kwargs is not JSON: nested too deeply"),
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--device", "gpu"], "--device must be cpu, cuda or cuda:N"),
    (["--override"], "--override only applies with --resume"),
])
def test_bad_flags_are_refused_at_parse_time(flags, fragment, capsys):
    from algos.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(logo_grpo.Args, flags)
    err = capsys.readouterr().err
    assert fragment in err


def test_too_few_prompt_tokens_are_refused_before_the_model_loads(tmp_path, monkeypatch):
    import agents.backbone

    monkeypatch.setattr(agents.backbone, "load_backbone", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(UserError, match="--max-prompt-tokens 16 is too small: the manage prompt needs"):
        logo_grpo.main([*TINY, "--max-prompt-tokens", "16", "--extractor", "oracle", "--output-dir", str(tmp_path)])


def test_the_command_prints_user_errors_as_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "algos.logo_grpo", *TINY, "--resume", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"python -m algos.logo_grpo: error: --resume {tmp_path / 'missing'}: no such directory"
    assert not (tmp_path / "missing").exists()


def test_sample_keeps_the_reward_and_value_of_ppo():
    s = Sample([1], [2], [0.0], "answer", -1, False, reward=1.0, value=0.25)
    assert (s.reward, s.value, s.advantage) == (1.0, 0.25, 0.0)
    assert pickle.loads(pickle.dumps(s)) == s
