"""The vLLM engine's wiring that runs without vLLM: spec options, engine sharing, one-line
errors before anything is written (tests/test_vllm_engine.py runs the engine itself)."""

from __future__ import annotations

import importlib.util

import pytest

from agents import vllm_engine
from agents.llm_agent import split_spec_options, with_engine

NO_VLLM = importlib.util.find_spec("vllm") is None


def test_with_engine_adds_the_option_to_llm_specs_only():
    assert with_engine("llm:smollm2-135m", "vllm") == "llm:smollm2-135m?engine=vllm"
    assert with_engine("llm:smollm2-135m?max_new_tokens=8", "vllm") == "llm:smollm2-135m?max_new_tokens=8&engine=vllm"
    assert with_engine("llm:smollm2-135m?engine=hf", "vllm") == "llm:smollm2-135m?engine=hf"  # the spec's own wins
    assert with_engine("add-only", "vllm") == "add-only"
    assert with_engine("llm:smollm2-135m", "hf") == "llm:smollm2-135m"
    assert split_spec_options(with_engine("llm:x", "vllm"))[1] == {"engine": "vllm"}
    with pytest.raises(ValueError, match="rollout engine must be one of hf, vllm"):
        split_spec_options("llm:x?engine=sglang")


def test_shared_reuses_an_engine_with_room_and_builds_one_without(monkeypatch):
    built = []

    class Fake(vllm_engine.VLLMEngine):
        def __init__(self, model_name, **kwargs):
            built.append((model_name, kwargs))

    monkeypatch.setattr(vllm_engine, "_ENGINES", {})
    big = Fake.shared("m", max_lora_rank=16, max_model_len=2048)
    assert Fake.shared("m", max_lora_rank=8, max_model_len=900) is big
    assert Fake.shared("m", max_lora_rank=32, max_model_len=900) is not big  # the rank does not fit
    assert Fake.shared("m", max_lora_rank=8, max_model_len=4096, dtype="float32") is not big
    assert Fake.shared("other", max_lora_rank=8, max_model_len=512) is not big
    assert len(built) == 4 and built[0] == ("m", {"max_lora_rank": 16, "max_model_len": 2048})


@pytest.mark.skipif(not NO_VLLM, reason="checks the error where vLLM is absent")
@pytest.mark.parametrize("command", [["algos.logo_grpo"], ["algos.memory_r1"], ["algos.evaluate"],
                                     ["benchmarks.gen_speed", "--engines", "hf", "vllm"],
                                     ["benchmarks.leaderboard", "--rows", "llm:tiny+scripted", "--worlds", "0"]])
def test_without_vllm_every_command_says_how_to_install_it_and_writes_nothing(command, tmp_path):
    import subprocess
    import sys

    module = command[0]
    flags = [] if module == "benchmarks.gen_speed" else ["--rollout-engine", "vllm"]
    if module in ("algos.logo_grpo", "algos.memory_r1"):
        flags += ["--output-dir", str(tmp_path / "run")]
    elif module.startswith("benchmarks."):
        flags += ["--out", str(tmp_path / "out" / ("g.json" if module == "benchmarks.gen_speed" else "lb"))]
    proc = subprocess.run([sys.executable, "-m", *command, *flags], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "requirements-vllm.lock" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())
