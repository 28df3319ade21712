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
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "1 0"  # the fork example: the branch has a memory, the parent none
