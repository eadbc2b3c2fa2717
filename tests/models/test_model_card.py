"""Saved models load elsewhere: the folder's README.md holds plain transformers/peft code that gives the scores and
logits our own loader gives (a mean-pooled reward model; an adapter trained on a merged base), and adapter_config.json
names a base another machine can resolve. Loads report only the weights nobody expected to be missing."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignment.models import ModelArguments, load_model, load_tokenizer, load_trained, save_model
from alignment.models.builtin import cache_dir
from alignment.rewards import load_reward_model

PROMPTS = ["Review the film.", "Describe the plot in one line."]
RESPONSES = ["A warm, funny and generous film.", "Dull, far too long, and badly acted from start to finish."]


def card_code(folder) -> str:
    card = (folder / "README.md").read_text()
    section = card.split("## Load with transformers", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def load_warnings():
    """Warnings of transformers and of our loader, however either library configures its own loggers."""
    handler = Captured()
    loggers = [logging.getLogger("transformers"), logging.getLogger("alignment.models.loader")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.messages
    for lg in loggers:
        lg.removeHandler(handler)


@pytest.fixture(scope="module")
def minilm_rm(tmp_path_factory):
    """A mean-pooled reward model on the embedded MiniLM, its head trained to something other than zero."""
    tok = load_tokenizer("builtin:minilm-l6")
    model, origin = load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method="full"), "seq_cls", tok, num_labels=1)
    torch.manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.normal_()
    out = tmp_path_factory.mktemp("minilm-rm")
    save_model(model.eval(), tok, out, kind="seq_cls", origin=origin, num_labels=1, stage="rm", max_length=64)
    return out


def test_a_mean_pooled_reward_model_scores_the_same_through_its_cards_plain_transformers_code(minilm_rm):
    assert json.loads((minilm_rm / "alignment_model.json").read_text())["pooling"] == "mean"
    ours = load_reward_model(minilm_rm).score(PROMPTS, RESPONSES)
    scope = {"prompts": PROMPTS, "responses": RESPONSES}
    exec(card_code(minilm_rm), scope)
    assert scope["scores"][:, 0].tolist() == pytest.approx(ours, abs=1e-5)
    # transformers' own forward pools with the (untrained, re-initialised) BERT pooler: a different score
    batch = scope["tokenizer"](PROMPTS, RESPONSES, padding=True, return_token_type_ids=False, return_tensors="pt")
    with torch.no_grad():
        plain = scope["model"](**batch).logits[:, 0].tolist()
    assert plain != pytest.approx(ours, abs=1e-3)


def test_reloading_a_mean_pooled_model_reports_nothing_missing(minilm_rm, load_warnings):
    load_trained(minilm_rm)
    assert not [m for m in load_warnings if "pooler" in m or "LOAD REPORT" in m], load_warnings


def test_a_new_head_on_the_embedded_encoder_loads_quietly(load_warnings):
    tok = load_tokenizer("builtin:minilm-l6")
    load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method="full"), "seq_cls", tok, num_labels=1, training=False)
    assert load_warnings == []


def test_a_backbone_weight_missing_from_the_checkpoint_is_still_reported(tmp_path, load_warnings):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    BertModel(config).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    [query] = [k for k in weights if k.endswith("layer.0.attention.self.query.weight")]
    save_file({k: v for k, v in weights.items() if k != query}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    tok = load_tokenizer("builtin:minilm-l6")
    load_model(ModelArguments(model_name_or_path=str(tmp_path), method="full", pooling="model"), "seq_cls", tok, num_labels=1, training=False)
    [warning] = [m for m in load_warnings if m.startswith("Loading ")]
    assert "missing from the checkpoint, newly initialised: bert.encoder.layer.0.attention.self.query.weight" in warning
    assert "classifier" not in warning and "LOAD REPORT" not in "".join(load_warnings)


def test_an_adapter_on_a_merged_base_names_the_original_base_and_loads_with_plain_peft(tmp_path, tiny_llama_dir):
    """DPO, KTO and PPO train a new adapter on the SFT adapter merged into its base: the folder names the original
    base and the merge, not this machine's cache of merged copies, and the card's peft code rebuilds the model."""
    tok = load_tokenizer(tiny_llama_dir)
    lora = dict(method="lora", lora_r=4, lora_alpha=8)
    torch.manual_seed(0)

    def perturbed(model):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.5)
        return model

    sft, origin = load_model(ModelArguments(model_name_or_path=tiny_llama_dir, **lora), "causal", tok)
    save_model(perturbed(sft), tok, tmp_path / "sft", kind="causal", origin=origin, stage="sft")
    dpo, origin = load_model(ModelArguments(model_name_or_path=str(tmp_path / "sft"), **lora), "causal", tok, continue_adapter=False)
    assert str(cache_dir()) in origin.base_model  # trained on a merged copy in the local cache
    save_model(perturbed(dpo), tok, tmp_path / "dpo", kind="causal", origin=origin, stage="dpo")

    config = json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_llama_dir
    assert str((tmp_path / "sft").resolve()) in (tmp_path / "dpo" / "README.md").read_text()
    ids = tok(["The film was"], return_tensors="pt")
    ours, _, _ = load_trained(tmp_path / "dpo")
    scope: dict = {}
    exec(card_code(tmp_path / "dpo"), scope)
    with torch.no_grad():
        expected, plain = ours(**ids).logits, scope["model"](**ids).logits
        sft_only = load_trained(tmp_path / "sft")[0](**ids).logits
    torch.testing.assert_close(plain, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(sft_only, expected, atol=1e-3)  # the DPO adapter changes the model: the check has teeth


def test_an_adapter_on_the_embedded_model_loads_through_its_cards_code(tmp_path):
    tok = load_tokenizer("builtin:smollm2-135m-instruct")
    model, origin = load_model(ModelArguments(model_name_or_path="builtin:smollm2-135m-instruct", method="lora", lora_r=4),
                               "causal", tok)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    save_model(model, tok, tmp_path / "sft", kind="causal", origin=origin, stage="sft")
    assert json.loads((tmp_path / "sft" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "builtin:smollm2-135m-instruct"
    scope: dict = {}
    exec(card_code(tmp_path / "sft"), scope)
    ids = tok(["The film was"], return_tensors="pt")
    with torch.no_grad():
        expected = load_trained(tmp_path / "sft")[0](**ids).logits
        torch.testing.assert_close(scope["model"](**ids).logits, expected, rtol=0, atol=1e-4)
