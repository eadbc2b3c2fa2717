"""Classifier pooling: sentence-transformers encoders pool by masked mean, the choice survives save and reload."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.errors import ModelError
from alignment.models import ModelArguments, load_model, load_tokenizer, load_trained, save_model
from alignment.models.pooling import MaskedMeanPooler

SHORT, LONG = "a warm film", "dull, far too long, and badly acted from start to finish"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("builtin:minilm-l6")


def _tiny_bert(path, *, sentence_transformers_pooling: bool):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    if sentence_transformers_pooling:
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return str(path)


def _load(path, tok, **keys):
    """(model in eval mode, its ModelOrigin)."""
    model, origin = load_model(ModelArguments(model_name_or_path=path, method="full", **keys), "seq_cls", tok, num_labels=1)
    return model.eval(), origin


def _scores(model, tok, texts):
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0]


def test_auto_follows_the_checkpoint_and_mean_ignores_padding(tmp_path, tok):
    st, st_origin = _load(_tiny_bert(tmp_path / "st", sentence_transformers_pooling=True), tok)
    plain, plain_origin = _load(_tiny_bert(tmp_path / "plain", sentence_transformers_pooling=False), tok)
    assert isinstance(st.bert.pooler, MaskedMeanPooler) and st_origin.pooling == "mean"
    assert not isinstance(plain.bert.pooler, MaskedMeanPooler) and plain_origin.pooling == "model"
    # The head reads the mean over real tokens only: a short row scores the same alone and padded next to a long one.
    alone, batched = _scores(st, tok, [SHORT]), _scores(st, tok, [SHORT, LONG])
    torch.testing.assert_close(batched[:1], alone, rtol=0, atol=1e-6)
    enc = tok([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = st.bert(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        expected = st.classifier((hidden * mask).sum(1) / mask.sum(1))[:, 0]
    torch.testing.assert_close(batched, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("requested", ["mean", "model"])
def test_the_pooling_is_saved_and_reloaded(tmp_path, tok, requested):
    path = _tiny_bert(tmp_path / "st", sentence_transformers_pooling=True)
    model, origin = _load(path, tok, pooling=requested)
    with torch.no_grad():
        model.classifier.weight.normal_()
    before = _scores(model, tok, [SHORT, LONG])
    save_model(model, tok, tmp_path / "run", kind="seq_cls", origin=origin, num_labels=1)
    reloaded, tok2, meta = load_trained(tmp_path / "run")
    assert meta["pooling"] == requested and isinstance(reloaded.bert.pooler, MaskedMeanPooler) == (requested == "mean")
    torch.testing.assert_close(_scores(reloaded, tok2, [SHORT, LONG]), before, rtol=0, atol=1e-6)


def test_mean_pooling_needs_an_encoder_pooler(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    with pytest.raises(ModelError, match="pooling: mean needs an encoder with a pooler"):
        _load(tiny_llama_dir, tok, pooling="mean")
