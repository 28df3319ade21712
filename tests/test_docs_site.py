"""The documentation site's results hook (docs/hooks/results.py): every file a result page links
is published on the site, sub-folders included, so ``mkdocs build --strict`` cannot fail on a
result's link that the README and GitHub resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def _hook():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("results_hook", ROOT / "docs" / "hooks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_publishes_a_runs_own_folder(tmp_path):
    hook = _hook()
    (tmp_path / "run").mkdir()
    for name in ("table.md", "run/curves.png", "run/args.json", "run/adapter_model.safetensors"):
        (tmp_path / name).write_text("x")
    published = [p.as_posix() for p in hook.result_files(tmp_path)]
    assert published == ["run/args.json", "run/curves.png", "table.md"]  # weights are not pages


def test_every_link_of_a_result_page_into_the_results_is_published():
    hook = _hook()
    results = hook.RESULTS
    published = {results / p for p in hook.result_files()}
    missing = []
    for page in (results / p for p in hook.result_files() if p.suffix == ".md"):
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (page.parent / target).resolve()
            if path.is_relative_to(results) and path not in published:  # mkdocs --strict fails on any of them
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing
    assert results / "locomo_manager_only_t15" / "curves.png" in published
