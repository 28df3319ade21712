"""mkdocs hook: the measured results in ``benchmarks/results/`` become pages of the site.

The studies write their tables (``*.md``), learning curves (``*.png``) and raw results
(``*.json``, ``*.jsonl``) into ``benchmarks/results/`` (a run's own files in a sub-folder), outside ``docs/``.
This hook adds each of them to the site at the same path, ``benchmarks/results/<name>``, so a docs page links
``benchmarks/results/reproduce_cpu.md`` exactly as the README does, and ``mkdocs build
--strict`` checks those links (and the links inside the result pages) like any other. It
also writes ``benchmarks/results/index.md``: every result table with its title and the
command that made it, and every learning curve. Nothing is copied into ``docs/``: the
results stay in one place.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SITE_DIR = "benchmarks/results"
SUFFIXES = (".md", ".png", ".json", ".jsonl")
INDEX = f"{SITE_DIR}/index.md"


def _title(text: str, name: str) -> str:
    match = re.search(r"^# (.+)$", text, re.M)
    return match.group(1).strip() if match else name


def _command(text: str) -> str:
    """The command a result file records: ``Command: `...` `` or the first ``python -m`` line
    of its first code block; empty when it records none in either form."""
    match = re.search(r"^Command: `([^`]+)`", text, re.M)
    if match:
        return match.group(1)
    match = re.search(r"^```[a-z]*\n(python -m [^\n]+)", text, re.M)
    return match.group(1) if match else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def index_page(results: Path = RESULTS) -> str:
    """The markdown of the index of result files."""
    tables = sorted(p for p in results.iterdir() if p.suffix == ".md")
    curves = sorted(p for p in results.iterdir() if p.suffix == ".png")
    lines = ["# Every result file", "",
             "Each table records the command that made it, the date, the machine and the code revision "
             "inside. The readings are on the [results page](../../results.md).", "",
             "| file | title | command |", "| --- | --- | --- |"]
    for path in tables:
        text = path.read_text()
        command = _command(text)
        lines.append(f"| [{path.stem}]({path.name}) | {_cell(_title(text, path.stem))} | "
                     f"{'`' + _cell(command) + '`' if command else 'in the file'} |")
    lines += ["", "## Learning curves", "", "Training reward against cumulative generated tokens, mean over seeds "
              "(written by `python -m benchmarks.reproduce` beside each table).", ""]
    for path in curves:
        lines += [f"### {path.stem}", "", f"[table]({path.stem}.md)" if (results / f"{path.stem}.md").exists() else "",
                  "", f"![{path.stem}]({path.name})", ""]
    return "\n".join(lines) + "\n"


def result_files(results: Path = RESULTS) -> list[Path]:
    """Every table, curve and raw result under ``results``, sub-folders included (a run's
    folder holds its own ``curves.png`` and ``args.json``), relative to ``results``."""
    return sorted(p.relative_to(results) for p in results.rglob("*")
                  if p.is_file() and p.suffix in SUFFIXES)


def on_files(files: Files, config) -> Files:
    for rel in result_files():
        uri = f"{SITE_DIR}/{rel.as_posix()}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(RESULTS / rel)))
    if files.get_file_from_path(INDEX) is None:
        files.append(File.generated(config, INDEX, content=index_page()))
    return files
