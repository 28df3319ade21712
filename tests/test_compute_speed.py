"""benchmarks.compute_speed: the peak is the best of several shapes and no fraction exceeds 1."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import compute_speed as cs


def test_peak_is_the_best_shape_and_names_it(monkeypatch):
    speeds = {(8, 8, 8): 10.0, (4, 2, 3): 30.0, (4, 3, 2): 20.0}
    monkeypatch.setattr(cs, "matmul_gflops", lambda m, k, n, dtype, device, repeats: speeds[(m, k, n)])
    peak = cs.matmul_peak(torch.float32, torch.device("cpu"), 1, list(speeds))
    assert peak == {"gflops": 30.0, "shape": "4x2@2x3"}


def test_model_shapes_join_the_squares_once_each():
    shapes = cs.peak_shapes(torch.device("cpu"), [(576, 1536), (1536, 576), (576, 1536)], tokens=64)
    assert shapes[:3] == [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096)]
    assert shapes[3:] == [(64, 576, 1536), (64, 1536, 576)]


def test_a_measurement_above_the_timed_peak_becomes_the_peak():
    frac, peak = cs.fractions({"prefill": 161.0, "train": 50.0}, {"gflops": 100.0, "shape": "2048x2048@2048x2048"})
    assert frac == {"prefill": 1.0, "train": pytest.approx(50 / 161)}
    assert peak["from"] == "prefill" and peak["matmul_gflops"] == 100.0
    frac, peak = cs.fractions({"prefill": 80.0}, {"gflops": 100.0, "shape": "s"})
    assert frac == {"prefill": 0.8} and "from" not in peak


def test_tiny_run_reports_fractions_at_most_one(tmp_path):
    out = tmp_path / "speed.json"
    cs.main(["--model", "tiny", "--prompts", "2", "--prompt-tokens", "16", "--new-tokens", "4",
             "--train-sequences", "2", "--train-tokens", "16", "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert all(0 < v <= 1 for v in result["fraction"].values())
    assert set(result["fraction"]) == {"prefill", "decode_1", "decode_16", "decode_64", "train"}
    md = out.with_suffix(".md").read_text()
    assert "best of" in md and "@" in md and "%" in md
