"""Zero-/few-shot baseline: an instruct LM reads the text (after a few labelled examples for few-shot) and the
label whose word it finds most likely as the answer is its prediction. Scored on the same split with the same
metrics as the fine-tuned classifier, so a user sees what fine-tuning bought."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from alignment.classify.metrics import classification_metrics, confusion
from alignment.errors import RecipeError
from alignment.generation import render_prompt
from alignment.models import load_trained

logger = logging.getLogger(__name__)


def label_words_for(label_names: list[str], mapping: dict | None) -> list[str]:
    """The answer word of each label, in label order (the label name unless ``mapping`` says otherwise)."""
    mapping = mapping or {}
    unknown = set(mapping) - set(label_names)
    if unknown:
        raise RecipeError(f"label_words: unknown labels {sorted(unknown)}; the labels are {label_names}")
    return [str(mapping.get(name, name)) for name in label_names]


def question(text: str, words: list[str]) -> str:
    return f"Classify the text as one of: {', '.join(words)}. Answer with one word.\n\nText: {text}"


def messages_for(text: str, words: list[str], examples: list[tuple[str, int]]) -> list[dict[str, str]]:
    """The conversation for one text: earlier (question, answer) turns for the few-shot examples, then the text."""
    turns: list[dict[str, str]] = []
    for example, label in examples:
        turns += [{"role": "user", "content": question(example, words)}, {"role": "assistant", "content": words[label]}]
    return turns + [{"role": "user", "content": question(text, words)}]


def few_shot_examples(texts: list[str], labels: list[int], num_labels: int, shots: int, seed: int) -> list[tuple[str, int]]:
    """``shots`` training rows per class, in a seeded random order."""
    rng = random.Random(seed)
    chosen: list[tuple[str, int]] = []
    for label in range(num_labels):
        rows = [t for t, y in zip(texts, labels) if y == label]
        chosen += [(t, label) for t in rng.sample(rows, min(shots, len(rows)))]
    rng.shuffle(chosen)
    return chosen


@torch.no_grad()
def label_log_likelihoods(model, tokenizer, prompts: list[str], words: list[str], batch_size: int = 16) -> np.ndarray:
    """``(len(prompts), len(words))`` log-probabilities of each word's tokens following each rendered prompt."""
    word_ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    pairs = [(tokenizer(p, add_special_tokens=False)["input_ids"], w) for p in prompts for w in word_ids]
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        enc = tokenizer.pad([{"input_ids": p + w} for p, w in chunk], return_tensors="pt", padding_side="right")
        log_probs = torch.log_softmax(model(**enc.to(model.device)).logits.float(), dim=-1)
        for row, (p, w) in enumerate(chunk):
            positions = torch.arange(len(p) - 1, len(p) + len(w) - 1)
            scores.append(log_probs[row, positions, torch.tensor(w)].sum().item())
    return np.asarray(scores).reshape(len(prompts), len(words))


def evaluate_baseline(
    mode: str,
    model_name: str,
    test: dict[str, list],
    train: dict[str, list],
    label_names: list[str],
    *,
    label_words: dict | None = None,
    shots: int = 2,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Metrics of the ``zero_shot`` or ``few_shot`` LM baseline on ``test`` (``text``/``label`` columns)."""
    words = label_words_for(label_names, label_words)
    examples = few_shot_examples(train["text"], train["label"], len(label_names), shots, seed) if mode == "few_shot" else []
    model, tokenizer, _ = load_trained(model_name, "causal")
    prompts = [render_prompt(tokenizer, messages_for(t, words, examples)) for t in test["text"]]
    logger.info("baseline: scoring %d texts × %d labels with %s (%s)", len(prompts), len(words), model_name, mode)
    predicted = label_log_likelihoods(model, tokenizer, prompts, words, batch_size).argmax(-1)
    return {
        "mode": mode,
        "model": model_name,
        "label_words": dict(zip(label_names, words)),
        "num_examples_in_prompt": len(examples),
        **classification_metrics(test["label"], predicted, label_names),
        "confusion_matrix": confusion(test["label"], predicted, label_names),
    }
