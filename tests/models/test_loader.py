"""Model layer: adaptation methods, heads saved with adapters, identical scores after save and reload."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from alignment.errors import ModelError
from alignment.models import (
    ModelArguments,
    load_model,
    load_tokenizer,
    load_trained,
    merge_adapter,
    parameter_counts,
    save_model,
    transformer_layers,
)

TEXTS = ["a warm and funny film", "dull, far too long, and badly acted from start to finish"]


def _perturb_adapter(model):
    """Make the adapter non-trivial (LoRA B starts at zero) so a lost adapter would change the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)


def _scores(model, tok):
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize(
    "name,labels,method",
    [("builtin:minilm-l6", ["negative", "positive"], "lora"), ("builtin:smollm2-135m-instruct", None, "lora")],
    ids=["lora-classifier-minilm", "lora-reward-model-smollm"],
)
def test_adapter_with_head_round_trip(tmp_path, name, labels, method):
    args = ModelArguments(model_name_or_path=name, method=method, lora_r=4)
    tok = load_tokenizer(name)
    model, origin = load_model(args, "seq_cls", tok, label_names=labels, num_labels=None if labels else 1)
    _perturb_adapter(model)
    model.eval()
    before = _scores(model, tok)
    save_model(model, tok, tmp_path / "run", kind="seq_cls", origin=origin, label_names=labels, num_labels=len(labels) if labels else 1)
    reloaded, tok2, meta = load_trained(tmp_path / "run")
    assert meta["base_model"] == name
    torch.testing.assert_close(_scores(reloaded, tok2), before, rtol=0, atol=1e-6)
    if labels:
        assert reloaded.config.id2label == {0: "negative", 1: "positive"}


def test_methods_freeze_the_right_parameters():
    tok = load_tokenizer("builtin:minilm-l6")
    counts = {}
    for method in ("full", "freeze", "lora", "ia3", "prompt_tuning"):
        model, _ = load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method=method), "seq_cls", tok, label_names=["a", "b"])
        counts[method] = parameter_counts(model)
        if method == "freeze":
            trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
            assert trainable == {"classifier"}
    total = counts["full"][1]
    assert counts["full"][0] == total
    assert counts["freeze"][0] == 384 * 2 + 2
    assert 0 < counts["ia3"][0] < counts["lora"][0] < total
    assert counts["prompt_tuning"][0] > 0
    partial, _ = load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method="full", freeze_layers=3), "seq_cls", tok, label_names=["a", "b"])
    assert parameter_counts(partial)[0] < total
    embeddings_frozen, _ = load_model(
        ModelArguments(model_name_or_path="builtin:minilm-l6", method="full", freeze_embeddings=True), "seq_cls", tok, label_names=["a", "b"]
    )
    frozen = {n for n, p in embeddings_frozen.named_parameters() if not p.requires_grad}
    assert frozen == {"bert.embeddings.word_embeddings.weight"}
    assert parameter_counts(embeddings_frozen)[0] == total - tok.vocab_size * 384
    with pytest.raises(ModelError, match="freeze_layers=99 but the model has only 6 layers"):
        load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method="full", freeze_layers=99), "seq_cls", tok, label_names=["a", "b"])


def test_qlora_loads_4bit_and_export_merges_into_dequantised_base(tmp_path):
    name = "builtin:smollm2-135m-instruct"
    tok = load_tokenizer(name)
    model, origin = load_model(ModelArguments(model_name_or_path=name, method="qlora", lora_r=4, lora_target_modules=["q_proj", "v_proj"]), "causal", tok)
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())
    _perturb_adapter(model)
    save_model(model, tok, tmp_path / "adapter", kind="causal", origin=origin)
    adapter, tok2, _ = load_trained(tmp_path / "adapter")  # fp32 base + adapter
    merged_dir = merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    merged, _, meta = load_trained(merged_dir)
    assert meta["merged_from"].endswith("adapter") and not (merged_dir / "adapter_config.json").exists()
    enc = tok2(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**enc).logits, adapter(**enc).logits, rtol=1e-3, atol=1e-3)


def test_transformer_layers_is_the_block_stack_not_a_longer_expert_list():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(8))  # longer than the stack

    class MoE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.layers = torch.nn.ModuleList(Block() for _ in range(3))

    model = MoE()
    assert transformer_layers(model) == list(model.layers)
    with pytest.raises(ModelError, match="could not find the transformer layers"):
        transformer_layers(torch.nn.Linear(2, 2))


def test_missing_model_folder_is_clear(tmp_path):
    with pytest.raises(ModelError, match="Model folder not found"):
        load_trained(tmp_path / "nothing")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux /proc/self/maps")
def test_4bit_load_releases_the_checkpoint_file(tmp_path):
    """A 4-bit model keeps no view into the memory-mapped safetensors file (its pages would stay resident)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    tok = load_tokenizer("builtin:smollm2-135m-instruct")
    args = ModelArguments(model_name_or_path=str(tmp_path / "tiny"), method="qlora", lora_r=4, lora_target_modules=["q_proj"])
    model, _ = load_model(args, "causal", tok, training=False)
    gc.collect()
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())
    assert str(tmp_path / "tiny" / "model.safetensors") not in Path("/proc/self/maps").read_text()
    assert model.get_input_embeddings().weight.dtype == torch.float32


def test_4bit_layers_compute_alike_in_eval_and_training(tmp_path):
    """On CPUs with avx512_bf16, bitsandbytes would repack a 4-bit weight at the first no-grad eval forward and run a
    bf16 inference kernel from then on; the loader keeps one kernel, so outputs do not depend on the mode or on an
    earlier evaluation (on other CPUs bitsandbytes never repacks, and the test holds either way)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    tok = load_tokenizer("builtin:smollm2-135m-instruct")
    args = ModelArguments(model_name_or_path=str(tmp_path / "tiny"), method="qlora", lora_r=4, lora_target_modules=["q_proj"])
    model, _ = load_model(args, "causal", tok, training=False)
    ids = torch.randint(0, 512, (2, 12))
    model.train()
    with torch.no_grad():
        trained = model(input_ids=ids).logits
    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids=ids).logits
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    torch.testing.assert_close(evaluated, trained, rtol=0, atol=1e-5)


def test_an_adapter_merges_into_a_copy_of_its_base_in_the_bases_own_dtype(tmp_path, tiny_llama_dir, monkeypatch):
    """DPO and PPO start from an SFT adapter merged into its base: a bf16 base must not become an fp32 copy (twice
    the disk and memory; ~28 GB at 7B)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from alignment.models.loader import merged_checkpoint

    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))  # a fresh merge, not a cached one
    base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16).save_pretrained(base)
    load_tokenizer(tiny_llama_dir).save_pretrained(base)
    tok = load_tokenizer(str(base))
    sft, origin = load_model(ModelArguments(model_name_or_path=str(base), method="lora", lora_r=4, dtype="bfloat16"), "causal", tok)
    torch.manual_seed(3)
    _perturb_adapter(sft)
    save_model(sft, tok, tmp_path / "sft", kind="causal", origin=origin, stage="sft")
    merged = Path(merged_checkpoint(tmp_path / "sft"))
    weights = load_file(next(merged.glob("*.safetensors")))
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}


def test_merging_on_a_cache_miss_leaves_the_random_stream_as_a_cache_hit_does(tmp_path, tiny_llama_dir, monkeypatch):
    """DPO and PPO merge their SFT start after seeding: on a fresh machine (a cache miss) the merge built a model and
    drew random numbers, so the new adapter's initialisation and the run's results depended on the cache."""
    from alignment.models.loader import merged_checkpoint

    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    tok = load_tokenizer(tiny_llama_dir)
    sft, origin = load_model(ModelArguments(model_name_or_path=tiny_llama_dir, method="lora", lora_r=4), "causal", tok)
    _perturb_adapter(sft)
    save_model(sft, tok, tmp_path / "sft", kind="causal", origin=origin, stage="sft")
    draws = []
    for _ in ("miss", "hit"):
        torch.manual_seed(7)
        merged_checkpoint(tmp_path / "sft")
        draws.append(torch.rand(4))
    torch.manual_seed(7)
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], torch.rand(4))


def test_4bit_compute_dtype_is_bf16_on_a_bf16_gpu_and_fp32_on_cpu(monkeypatch):
    from alignment.models.loader import quantization_config

    args = ModelArguments(model_name_or_path="builtin:smollm2-135m-instruct", method="qlora")
    assert quantization_config(args).bnb_4bit_compute_dtype == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert quantization_config(args).bnb_4bit_compute_dtype == torch.bfloat16
    explicit = ModelArguments(model_name_or_path="builtin:smollm2-135m-instruct", method="qlora", bnb_4bit_compute_dtype="float16")
    assert quantization_config(explicit).bnb_4bit_compute_dtype == torch.float16
