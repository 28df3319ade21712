"""benchmarks.publish_adapter: a bf16 copy of a trained adapter that loads by its path alone."""

from __future__ import annotations

import json

import pytest
import torch

from agents import backbone as bb
from agents import lora
from algos.cli import UserError
from benchmarks.publish_adapter import main, publish


def _saved_adapter(tmp_path, tiny_backbone):
    model = lora.add_lora(tiny_backbone, r=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model, lora.save_adapter(model, tmp_path / "adapter", lora.POLICY_ADAPTER, prompt_style="compact",
                                    max_new_tokens=16)


def test_published_copy_is_bf16_half_the_size_and_scores_alike(tmp_path, tiny_backbone):
    from safetensors.torch import load_file

    model, source = _saved_adapter(tmp_path, tiny_backbone)
    target = main([str(source), str(tmp_path / "published")])
    weights = load_file(str(target / "adapter_model.safetensors"))
    assert weights and all(v.dtype == torch.bfloat16 for v in weights.values())
    size = lambda d: (d / "adapter_model.safetensors").stat().st_size  # noqa: E731
    assert size(target) < 0.6 * size(source)
    info = json.loads((target / "memenv_adapter.json").read_text())
    assert info["prompt_style"] == "compact" and info["max_new_tokens"] == 16
    assert info["published"]["dtype"] == "bfloat16" and len(info["published"]["source_sha256"]) == 64
    assert "publish_adapter" in info["published"]["command"]
    assert oct((target / "adapter_model.safetensors").stat().st_mode & 0o777) == "0o644"
    # loads by path alone into a fresh backbone; logits within bf16 rounding of the original
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()
        loaded = lora.load_adapter(bb.tiny_backbone(), target)
        got = loaded(input_ids=ids).logits.float()
        base = bb.tiny_backbone().model(input_ids=ids).logits.float()
    assert (got - expected).abs().max() < 0.05 * (expected - base).abs().max() + 1e-3


def test_publish_refuses_overwriting_and_non_adapters(tmp_path, tiny_backbone):
    _, source = _saved_adapter(tmp_path, tiny_backbone)
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="already exists"):
        publish(source, tmp_path / "taken")
    with pytest.raises(UserError, match="not a PEFT adapter directory"):
        publish(tmp_path / "taken", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_publish_can_serve_a_manager_at_another_budget_and_ops(tmp_path, tiny_backbone):
    from agents.llm_agent import adapter_settings

    _, source = _saved_adapter(tmp_path, tiny_backbone)
    target = main([str(source), str(tmp_path / "served"), "--max-new-tokens", "1024", "--manage-ops", "ADD", "NOOP"])
    settings = adapter_settings(target)
    assert settings["max_new_tokens"]["manage"] == 1024 and settings["manage_ops"] == ["ADD", "NOOP"]
    info = json.loads((target / "memenv_adapter.json").read_text())
    assert info["published"]["serving_changed"]["max_new_tokens"] == {"trained": 16, "served": 1024}
    assert adapter_settings(source)["max_new_tokens"]["manage"] == 16  # the source is untouched
    with pytest.raises(UserError, match="--manage-ops"):
        main([str(source), str(tmp_path / "bad"), "--manage-ops", "MOVE"])
    with pytest.raises(UserError, match="--max-new-tokens"):
        main([str(source), str(tmp_path / "bad"), "--max-new-tokens", "0"])
    assert not (tmp_path / "bad").exists()
