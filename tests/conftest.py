"""Shared fixtures. Real embedded weights are resolved once per session (the GGUF conversion is cached)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")  # tests of the trackers turn it back on
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm_path() -> str:
    from alignment.models.builtin import resolve

    return resolve("builtin:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from alignment.models.builtin import resolve

    return resolve("builtin:minilm-l6")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm_path) -> str:
    """A random-init 2-layer Llama with SmolLM2's tokenizer and chat template: fast stand-in for unit tests."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import torch

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm_path)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> str:
    """A random-init 2-layer BERT encoder with MiniLM-L6's tokenizer: the classify stage's stand-in for real weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=128, pad_token_id=tok.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
