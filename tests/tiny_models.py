"""Tiny random-init models of every architecture family, built from configs (no hub), for the family tests."""

from __future__ import annotations

import torch
import transformers

SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 256}
GQA = {"num_key_value_heads": 1}
FAMILIES = {
    "llama": ("LlamaConfig", GQA),
    "qwen2": ("Qwen2Config", GQA),
    "qwen3": ("Qwen3Config", {**GQA, "head_dim": 16}),
    "gemma2": ("Gemma2Config", {**GQA, "head_dim": 16, "query_pre_attn_scalar": 16, "final_logit_softcapping": 2.0}),
    "gemma3": ("Gemma3TextConfig", {**GQA, "head_dim": 16, "final_logit_softcapping": 2.0}),
    "mistral": ("MistralConfig", GQA),
    "phi3": ("Phi3Config", GQA),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", {}),
    "olmo2": ("Olmo2Config", GQA),
    "granite": ("GraniteConfig", {**GQA, "logits_scaling": 8.0}),
    "cohere": ("CohereConfig", {**GQA, "logit_scale": 4.0}),
}


def build_decoder(family: str, tokenizer, folder) -> str:
    """A random-init 2-layer model of ``family`` with large logits (initializer_range 0.5), so that a head's own
    post-processing changes the distribution measurably."""
    name, extra = FAMILIES[family]
    sizes = {} if family == "gpt2" else SIZES
    config = getattr(transformers, name)(
        vocab_size=len(tokenizer), initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes, **extra,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


ENCODERS = {
    "bert": ("BertConfig", {}),
    "roberta": ("RobertaConfig", {"pad_token_id": 0}),
    "deberta_v2": ("DebertaV2Config", {}),
    "distilbert": ("DistilBertConfig", {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 2}),
    "modernbert": ("ModernBertConfig", {"global_attn_every_n_layers": 1, "local_attention": 16}),
}
ENCODER_SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "max_position_embeddings": 256}


def build_encoder(family: str, tokenizer, folder) -> str:
    """A random-init 2-layer encoder of ``family`` with ``tokenizer``'s vocabulary (no head: the stage adds it)."""
    name, extra = ENCODERS[family]
    sizes = {} if family == "distilbert" else ENCODER_SIZES
    config = getattr(transformers, name)(vocab_size=len(tokenizer), **{"pad_token_id": tokenizer.pad_token_id, **sizes, **extra})
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
