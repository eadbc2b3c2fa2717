"""Classification pieces without training: bad recipes fail before any model loads, class weights change the loss,
the head gets its own learning rate, metrics, the search block, and the LM baseline's label scoring."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import GPT2Config, GPT2ForSequenceClassification, TrainingArguments

from alignment.classify.baseline import evaluate_baseline, label_log_likelihoods, messages_for
from alignment.classify.metrics import classification_metrics, confusion
from alignment.classify.search import parse_search
from alignment.classify.stage import main as classify_main, searchable_keys
from alignment.classify.trainer import ClassifierTrainer, class_weights_tensor, layer_lr_scales
from alignment.errors import RecipeError
from alignment.generation import render_prompt
from alignment.models import ModelArguments, load_model, load_tokenizer, load_trained

from helpers import ROOT

SENTIMENT = ROOT / "data" / "sentiment"
LABELS = ["negative", "positive"]
SPACE = {"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}


def recipe(tmp_path, **values) -> str:
    base = {"dataset_path": str(SENTIMENT / "train.jsonl"), "validation_path": str(SENTIMENT / "validation.jsonl"),
            "output_dir": str(tmp_path / "run")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**base, **values}))
    return str(path)


def test_bad_key_exits_2_before_loading_a_model(tmp_path):
    path = recipe(tmp_path, learning_rat=1e-4)
    proc = subprocess.run([sys.executable, "-m", "alignment.classify", path], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unknown key 'learning_rat'" in proc.stderr and "Did you mean 'learning_rate'?" in proc.stderr
    assert "Loaded" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "values,message",
    [
        ({"search": {"method": "grid", "space": SPACE}}, "search.space.learning_rate: a grid search needs"),
        ({"search": {"space": {"dataset_path": {"type": "categorical", "choices": ["x"]}}}}, "not a searchable recipe key"),
        ({"search": {"space": {"lora_r": {"type": "categorical", "choices": ["many"]}}}}, "search.space: .*key 'lora_r'"),
        ({"search": {"space": SPACE, "metric": "f1"}}, "search.metric: 'f1' is not an evaluation metric"),
        ({"metric_for_best_model": "f1"}, "metric_for_best_model: 'f1' is not an evaluation metric; choose one of loss, accuracy"),
        ({"class_weights": [1.0, 2.0, 3.0]}, r"class_weights: expected 2 non-negative weights"),
        ({"early_stopping_patience": 2, "eval_strategy": "no", "load_best_model_at_end": False}, "early_stopping_patience"),
        ({"baseline": "zero_shot"}, "baseline is scored on the test split"),
        ({"weight_averaging": "ema"}, "weight_averaging: ema and load_best_model_at_end: true choose different"),
        ({"ema_decay": 1.5, "load_best_model_at_end": False}, "key 'ema_decay': expected a number between 0 and 1"),
        ({"layer_lr_decay": 0}, r"key 'layer_lr_decay': expected a factor in \(0, 1\], got 0"),
        ({"search": {"space": {"layer_lr_decay": {"type": "uniform", "low": 0.5, "high": 1.5}}}},
         r"search.space: .*key 'layer_lr_decay': expected a factor in \(0, 1\], got 1.5"),
        ({"search": {"space": {"layer_lr_decay": {"type": "categorical", "choices": [0.9, 0.8, 0.0]}}}},
         r"search.space: .*key 'layer_lr_decay': expected a factor in \(0, 1\], got 0.0"),
        ({"search": {"space": {"lora_r": {"type": "int", "low": 4, "high": 64, "step": 4, "log": True}}}},
         "search.space.lora_r: an int range with log: true takes no step"),
        ({"search": {"space": {"weight_averaging": {"type": "categorical", "choices": ["none", "ema"]}}}},
         "search.space: weight_averaging: ema and load_best_model_at_end: true choose different"),
    ],
    ids=["grid-needs-choices", "data-key", "bad-value", "search-metric", "best-metric", "weights", "patience", "baseline",
         "ema-and-best", "ema-decay", "layer-lr-decay", "search-range-end", "search-last-choice",
         "search-int-log-step", "search-combination"],
)
def test_bad_recipes_fail_before_loading_a_model(tmp_path, capsys, values, message):
    assert classify_main([recipe(tmp_path, **values)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_search_examples_hold_every_choice_and_the_sampled_ends():
    space = {
        "lora_r": {"type": "int", "low": 4, "high": 10, "step": 4},  # optuna samples 4 or 8
        "learning_rate": {"type": "loguniform", "low": "1e-5", "high": 1e-3},
        "lora_alpha": {"type": "categorical", "choices": [8, 16, 32]},
    }
    examples = parse_search({"space": space}, "accuracy", searchable_keys()).examples()
    assert [e["lora_r"] for e in examples] == [4, 8, 8]
    assert [e["learning_rate"] for e in examples] == [1e-5, 1e-3, 1e-3]
    assert [e["lora_alpha"] for e in examples] == [8, 16, 32]


def test_class_weights_auto_and_list():
    auto = class_weights_tensor("auto", [0, 0, 0, 1], LABELS)
    assert auto.tolist() == pytest.approx([4 / 6, 4 / 2])  # n / (k * n_c): mean weight over the rows is 1
    assert class_weights_tensor(["1", "3.5"], [0, 1], LABELS).tolist() == [1.0, 3.5]
    assert class_weights_tensor(None, [0, 1], LABELS) is None
    with pytest.raises(RecipeError, match=r"no rows for \['positive'\]"):
        class_weights_tensor("auto", [0, 0], LABELS)


@pytest.fixture(scope="module")
def minilm_batch():
    tok = load_tokenizer("builtin:minilm-l6")
    texts = ["a warm and funny film", "dull and far too long", "I loved it", "badly acted"]
    batch = tok(texts, padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0, 1, 0])
    return tok, batch


def trainer_for(model, tmp_path, **kwargs) -> ClassifierTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=1e-5, weight_decay=0.1)
    return ClassifierTrainer(model=model, args=args, **kwargs)


def test_class_weights_change_the_loss(minilm_batch, tmp_path):
    tok, batch = minilm_batch
    torch.manual_seed(0)
    model, _ = load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method="full"), "seq_cls", tok, label_names=LABELS)
    model.eval()
    weights = torch.tensor([1.0, 4.0])
    plain = trainer_for(model, tmp_path).compute_loss(model, dict(batch))
    weighted = trainer_for(model, tmp_path, class_weights=weights).compute_loss(model, dict(batch))
    with torch.no_grad():
        per_row = torch.nn.functional.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"], reduction="none")
    assert plain.item() == pytest.approx(per_row.mean().item(), rel=1e-5)
    assert weighted.item() == pytest.approx((per_row * weights[batch["labels"]]).mean().item(), rel=1e-5)
    assert abs(weighted.item() - plain.item()) > 1e-3


@pytest.mark.parametrize("method", ["full", "lora"])
def test_head_learning_rate_groups(minilm_batch, tmp_path, method):
    tok, _ = minilm_batch
    model, _ = load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method=method, lora_r=4), "seq_cls", tok, label_names=LABELS)
    optimizer = trainer_for(model, tmp_path, head_learning_rate=1e-3).create_optimizer()
    head = {id(p) for n, p in model.named_parameters() if "classifier" in n and p.requires_grad}
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == (1e-3 if in_head.pop() else 1e-5)
    trained = {id(p) for n, p in model.named_parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trained
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.1}


@pytest.mark.parametrize("method,head_lr", [("full", 1e-3), ("lora", None)])
def test_layer_lr_decay_scales_each_layer(minilm_batch, tmp_path, method, head_lr):
    tok, _ = minilm_batch
    model, _ = load_model(ModelArguments(model_name_or_path="builtin:minilm-l6", method=method, lora_r=4), "seq_cls", tok, label_names=LABELS)
    optimizer = trainer_for(model, tmp_path, head_learning_rate=head_lr, layer_lr_decay=0.5).create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = re.search(r"encoder\.layer\.(\d)\.", name)
        if layer:
            expected = 1e-5 * 0.5 ** (5 - int(layer.group(1)))  # the top layer (5) at learning_rate
        elif "classifier" in name:
            expected = head_lr or 1e-5
        else:
            expected = 1e-5 * 0.5**6 if "embeddings" in name else 1e-5
        assert lr_of[id(p)] == pytest.approx(expected), name
    assert len(set(lr_of.values())) == 6 + (head_lr is not None) + (method == "full")  # layers, head, embeddings
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.1}


def test_layer_lr_decay_covers_what_sits_below_the_layers():
    """GPT-2 names its position embeddings ``wpe`` (no "embed" in the name): they decay with the token embeddings,
    while the final norm and the head, registered after the layers, keep the full rate."""
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=50, n_positions=32, num_labels=2))
    scales = layer_lr_scales(model, 0.5)
    by_name = {name: scales.get(id(p), 1.0) for name, p in model.named_parameters()}
    assert by_name["transformer.wte.weight"] == by_name["transformer.wpe.weight"] == 0.5**3
    assert by_name["transformer.h.0.attn.c_attn.weight"] == 0.5**2 and by_name["transformer.h.2.mlp.c_fc.weight"] == 1.0
    assert by_name["transformer.ln_f.weight"] == by_name["score.weight"] == 1.0


def test_metrics_macro_per_class_and_confusion():
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1], ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    assert m["precision_b"] == pytest.approx(1 / 3) and m["recall_a"] == 0.5 and m["f1_c"] == 0
    assert m["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert confusion([0, 0, 1, 2], [0, 1, 1, 1], ["a", "b", "c"]) == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_search_block_defaults():
    spec = parse_search({"method": "grid", "space": {"lora_r": {"type": "categorical", "choices": [4, 8]},
                                                      "num_train_epochs": {"type": "categorical", "choices": [1, 2, 3]}}},
                        "eval_loss", searchable_keys())
    assert spec.n_trials == 6 and spec.direction == "minimize" and spec.metric == "loss"
    assert parse_search({"space": SPACE}, "f1_macro", searchable_keys()).direction == "maximize"
    assert "max_length" not in searchable_keys() and "learning_rate" in searchable_keys()


def test_baseline_scores_match_unbatched_log_likelihoods(tiny_llama_dir):
    model, tok, _ = load_trained(tiny_llama_dir, "causal")
    words = ["negative", "positive"]
    prompts = [render_prompt(tok, messages_for(t, words, [])) for t in ["fine", "a much longer text that needs padding in a batch"]]
    batched = label_log_likelihoods(model, tok, prompts, words, batch_size=4)
    for i, prompt in enumerate(prompts):
        for j, word in enumerate(words):
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            w = tok(word, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([p + w])).logits[0], -1)
            expected = sum(logp[len(p) - 1 + k, t].item() for k, t in enumerate(w))
            assert batched[i, j] == pytest.approx(expected, abs=1e-3)


def test_few_shot_baseline_reports_the_same_metrics(tiny_llama_dir):
    test = {"text": ["great", "awful", "lovely"], "label": [1, 0, 1]}
    train = {"text": ["good", "bad", "nice", "poor"], "label": [1, 0, 1, 0]}
    result = evaluate_baseline("few_shot", tiny_llama_dir, test, train, LABELS, shots=1, label_words={"positive": "good"})
    assert result["num_examples_in_prompt"] == 2 and result["label_words"] == {"negative": "negative", "positive": "good"}
    assert set(classification_metrics([0], [0], LABELS)) <= set(result)
    assert sum(map(sum, result["confusion_matrix"])) == 3
