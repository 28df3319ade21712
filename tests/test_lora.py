"""Tests for agents.lora's base-model record: an adapter refuses to load onto a base of another shape."""

from __future__ import annotations

import json

import pytest
import torch

from agents import backbone as bb
from agents import lora

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def trained_adapter(path, **shape):
    """Save the (perturbed) "policy" adapter of a tiny backbone of the given shape at ``path``."""
    model = lora.add_lora(bb.tiny_backbone(**shape), r=4)
    with torch.no_grad():
        for param in lora.adapter_parameters(model, lora.POLICY_ADAPTER):
            param.add_(0.01)
    return lora.save_adapter(model, path, lora.POLICY_ADAPTER)


def test_save_adapter_records_the_base_name_and_shape(tmp_path):
    path = trained_adapter(tmp_path / "adapter", hidden_size=64)
    record = json.loads((path / lora.ADAPTER_META).read_text())["base_model"]
    assert record == {"name": "tiny", "model_type": "llama", "vocab_size": 259, "hidden_size": 64,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                      "intermediate_size": 128}
    # an explicit name wins; a model wrapped by plain peft has no name but still a shape
    model = lora.load_adapter(bb.tiny_backbone(), path, is_trainable=True)
    assert lora.saved_adapter_info(lora.save_adapter(model, tmp_path / "named", "policy", base_model="my-base"))[
        "base_model"]["name"] == "my-base"
    from peft import LoraConfig, get_peft_model

    plain = get_peft_model(bb.tiny_backbone(hidden_size=32).model, LoraConfig(r=2, target_modules=["q_proj"]))
    record = lora.saved_adapter_info(lora.save_adapter(plain, tmp_path / "plain", "default"))["base_model"]
    assert record["name"] is None and record["hidden_size"] == 32


def test_resaved_adapter_keeps_the_base_name(tmp_path):
    # logo_grpo --init-adapter: load_adapter onto a backbone, train, save again
    first = trained_adapter(tmp_path / "first")
    backbone = bb.tiny_backbone()
    model = lora.load_adapter(backbone, first, is_trainable=True)
    again = lora.save_adapter(model, tmp_path / "again", "policy")
    assert lora.saved_adapter_info(again)["base_model"] == lora.saved_adapter_info(first)["base_model"]


def test_adapter_refuses_a_base_of_another_hidden_size(tmp_path):
    path = trained_adapter(tmp_path / "adapter", hidden_size=64)
    for load in (lambda: lora.load_adapter(bb.tiny_backbone(hidden_size=32), path),
                 lambda: lora.load_adapters(bb.tiny_backbone(hidden_size=32), path),
                 lambda: lora.load_adapter(lora.add_lora(bb.tiny_backbone(hidden_size=32), r=4), path,
                                           adapter_name="other")):
        with pytest.raises(ValueError) as error:
            load()
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(f"adapter {path} was trained on base model 'tiny' but is being loaded onto 'tiny'")
        assert "hidden_size 64 != 32" in message and "num_hidden_layers" not in message


def test_adapter_refuses_a_base_with_more_layers(tmp_path):
    # peft itself loads this one silently: the extra layers just get no LoRA weights
    path = trained_adapter(tmp_path / "adapter", num_layers=2)
    with pytest.raises(ValueError, match="num_hidden_layers 2 != 3"):
        lora.load_adapter(bb.tiny_backbone(num_layers=3), path)


def test_llm_agent_and_registry_refuse_a_mismatched_adapter(tmp_path):
    from agents.llm_agent import LLMAgent
    from agents.registry import make_agent

    path = trained_adapter(tmp_path / "adapter", hidden_size=32)
    with pytest.raises(ValueError, match="hidden_size 32 != 64"):
        LLMAgent(bb.tiny_backbone(), adapter_path=path)
    with pytest.raises(ValueError, match=r"trained on base model 'tiny' .*hidden_size 32 != 64"):
        make_agent(f"llm:tiny:{path}")  # load_backbone("tiny") has hidden_size 64


def test_adapter_loads_on_a_base_of_the_same_shape(tmp_path):
    path = trained_adapter(tmp_path / "adapter", hidden_size=32)
    other = bb.tiny_backbone(hidden_size=32)
    other.name = "/some/copy/of/tiny"  # only the shape is compared, not the name
    loaded = lora.load_adapter(other, path)
    assert lora.adapter_names(loaded) == ("policy",)
    lora.check_base_model(path, lora.saved_adapter_info(path)["base_model"], other.model, "elsewhere")


def test_adapters_without_the_record_still_load(tmp_path):
    path = trained_adapter(tmp_path / "plain_peft", hidden_size=64)
    (path / lora.ADAPTER_META).unlink()  # as plain peft saves it
    assert lora.adapter_names(lora.load_adapter(bb.tiny_backbone(), path)) == ("policy",)
    older = trained_adapter(tmp_path / "older", hidden_size=64)
    (older / lora.ADAPTER_META).write_text(json.dumps({"adapter_name": "policy", "prompt_style": "compact"}))
    assert lora.adapter_names(lora.load_adapters(bb.tiny_backbone(), older)) == ("policy",)


def test_malformed_base_record_is_refused(tmp_path):
    path = trained_adapter(tmp_path / "adapter")
    (path / lora.ADAPTER_META).write_text(json.dumps({"adapter_name": "policy", "base_model": "tiny"}))
    with pytest.raises(ValueError, match="'base_model' should be a JSON object"):
        lora.load_adapter(bb.tiny_backbone(), path)


def test_snapshot_reference_is_a_frozen_copy_of_the_adapter_that_the_reference_pass_uses(tiny_backbone):
    from agents.generation import sequence_logprobs
    from agents.lora import adapter_parameters, reference_adapter, snapshot_reference, use_adapter
    from algos.build import make_optimizer

    model = lora.add_lora(tiny_backbone, r=4, alpha=8)
    assert reference_adapter(model, "manage") is None  # the base model, adapter disabled
    with torch.no_grad():
        for p in adapter_parameters(model, "policy"):
            p.add_(0.05)
    assert snapshot_reference(model, ["policy"]) == ["reference-policy"]
    assert reference_adapter(model, "manage") == reference_adapter(model, "extract") == "reference-policy"
    assert reference_adapter(model, "answer") is None
    assert not any(p.requires_grad for p in adapter_parameters(model, "reference-policy"))
    optimizer = make_optimizer(model, 1e-3)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in adapter_parameters(model, "policy"))
    ids = torch.tensor([[5, 6, 7]])
    mask = torch.ones_like(ids)

    def logp(adapter):
        with torch.no_grad(), use_adapter(model, adapter):
            return sequence_logprobs(model, ids, mask, torch.tensor([[8, 9]]), torch.ones(1, 2, dtype=torch.long))

    at_snapshot = logp("policy")
    assert torch.allclose(logp("reference-policy"), at_snapshot)
    with torch.no_grad():
        for p in adapter_parameters(model, "policy"):
            p.add_(0.05)
    assert not torch.allclose(logp("policy"), at_snapshot)  # training moves on
    assert torch.allclose(logp("reference-policy"), at_snapshot)  # the reference stays
    snapshot_reference(model, ["policy"])  # the next stage's start
    assert torch.allclose(logp("reference-policy"), logp("policy"))


def test_save_adapter_records_the_command_that_made_it(tmp_path, monkeypatch):
    """The command of the saving process, as one would type it (``python -m module args``),
    and when it was saved: a result made with the adapter can name how to rebuild it."""
    import sys
    import types

    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="algos.memory_r1")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/x/algos/memory_r1.py", "--mode", "answer", "--output-dir", "runs/a b"])
    assert lora.process_command() == "python -m algos.memory_r1 --mode answer --output-dir 'runs/a b'"
    info = lora.saved_adapter_info(trained_adapter(tmp_path / "adapter"))
    assert info["command"] == "python -m algos.memory_r1 --mode answer --output-dir 'runs/a b'"
    assert info["saved"][:4].isdigit() and "T" in info["saved"]
    main.__spec__ = types.SimpleNamespace(name="benchmarks.leaderboard.__main__")  # python -m benchmarks.leaderboard
    assert lora.process_command().startswith("python -m benchmarks.leaderboard --mode")
    main.__spec__ = None  # a script
    monkeypatch.setattr(sys, "argv", ["train.py", "--fast"])
    assert lora.process_command() == "python train.py --fast"
