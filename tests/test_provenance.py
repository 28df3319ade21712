"""benchmarks.provenance: what every committed result records."""

import json
import re
import subprocess

from benchmarks import provenance


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_code_revision_names_the_commit_and_says_when_tracked_files_changed(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.md").write_text("F1 0.1\n")
    _git(tmp_path, "add", "a.py", "benchmarks")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = provenance.code_revision(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{12}", clean)
    (tmp_path / "untracked.txt").write_text("ignored\n")
    assert provenance.code_revision(tmp_path) == clean  # untracked files are not the code
    (tmp_path / "benchmarks" / "results" / "r.md").write_text("F1 0.2\n")
    assert provenance.code_revision(tmp_path) == clean  # nor are re-made results
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.code_revision(tmp_path) == clean + "+changes"


def test_code_revision_is_none_outside_a_git_checkout(tmp_path):
    assert provenance.code_revision(tmp_path) is None


def test_markdown_line_names_the_revision_lock_and_processor():
    env = provenance.environment()
    line = provenance.markdown_line(env)
    assert line.startswith("Environment: ")
    assert "requirements.lock" in line and env["cpu_capability"] in line
    if env["code_revision"]:
        assert f"code {env['code_revision']};" in line


def test_compare_notice_says_whether_a_remade_result_should_agree_exactly(tmp_path):
    env = provenance.environment()
    path = tmp_path / "r.json"
    assert provenance.compare_notice(path, env) is None  # nothing to compare with
    path.write_text(json.dumps({"environment": env}))
    assert "should reappear exactly" in provenance.compare_notice(path, env)
    other = {**env, "cpu_model": "Some Other CPU", "code_revision": "0123456789ab"}
    path.write_text(json.dumps({"environment": other}))
    line = provenance.compare_notice(path, env)
    assert "code_revision, " in line and "cpu_model" in line and "Some Other CPU" in line
    assert provenance.float_path_changes({k: v for k, v in env.items() if k != "cpu_model"}, env) == ["cpu_model"]
    path.write_text("not json")
    assert provenance.compare_notice(path, env) is None


def test_the_vllm_virtualenv_is_compared_against_its_own_lock(monkeypatch):
    from agents import vllm_engine

    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: True)
    assert provenance.active_lock() == provenance.VLLM_LOCK
    env = provenance.environment()
    pins = provenance.lock_pins(provenance.VLLM_LOCK)
    assert env["lock"] == "requirements-vllm.lock" and pins["transformers"] != provenance.lock_pins()["transformers"]
    # this (main-lock) install differs from the vLLM lock in transformers, and the line says which lock
    assert "transformers" in env["differs_from_lock"]
    assert "`requirements-vllm.lock`" in provenance.markdown_line(env)
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: False)
    assert provenance.active_lock() == provenance.LOCK and provenance.environment()["lock"] == "requirements.lock"
