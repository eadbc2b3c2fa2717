"""Reward models: one encoding of (prompt, response) shared by training and scoring, the scorer API
(:func:`load_reward_model`), and preference metrics (pairwise accuracy, margin, calibration, accuracy by strength)."""

from __future__ import annotations

import importlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from alignment.errors import ModelError, RecipeError
from alignment.models import load_trained, read_meta

Prompt = str | list[dict[str, str]]
Response = str | list[dict[str, str]]


def as_messages(prompt: Prompt, response: Response) -> list[dict[str, str]]:
    """Plain strings become a user turn and an assistant turn; conversational parts are concatenated."""
    p = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    r = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    return p + r


def encode(tokenizer, prompt: Prompt, response: Response, max_length: int, prompt_turns: int | None = None) -> list[int]:
    """Token ids a reward model reads for ``prompt`` + ``response``.

    ``prompt_turns`` keeps only the final N turns of a conversational prompt (1: the final user turn), before any
    truncation; ``None`` keeps them all.

    Chat tokenizers render the conversation through the chat template and keep the *last* ``max_length`` tokens
    (the final turns and the end of the response, where the reward is read). Encoders without a chat template read
    the pair ``[CLS] prompt [SEP] response [SEP]`` and likewise keep the final tokens: the prompt loses its start
    first (its final turns stay next to the response); a response longer than the whole budget keeps its end and
    an empty prompt segment.
    """
    if prompt_turns is not None and not isinstance(prompt, str):
        prompt = list(prompt)[-prompt_turns:] if prompt_turns > 0 else []
    if tokenizer.chat_template is not None:
        ids = tokenizer.apply_chat_template(as_messages(prompt, response), tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids[-max_length:])
    text_p = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    text_r = response if isinstance(response, str) else "\n".join(m["content"] for m in response)
    # Not tokenizer(text_p, text_r, truncation="only_first"): that cuts the prompt's *end* (its final turn) and raises
    # when the response alone exceeds max_length.
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if len(tokenizer(text_r, add_special_tokens=False)["input_ids"]) >= budget:
        text_p, strategy = "", "only_second"
    else:
        strategy = "only_first"
    side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    try:
        return tokenizer(text_p, text_r, truncation=strategy, max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = side


def encoding_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The :func:`encode` keywords a saved reward model was trained with (from its ``alignment_model.json``)."""
    return {"max_length": meta.get("max_length", 512), "prompt_turns": meta.get("prompt_turns")}


def init_reward_head(model) -> None:
    """Initialise a fresh scalar head N(0, 1/sqrt(d+1)) (Stiennon et al. 2020), bias zero."""
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    linear = head if isinstance(head, torch.nn.Linear) else getattr(head, "out_proj", None)
    if linear is None:
        raise ModelError(f"cannot find the reward head of {type(model).__name__}")
    torch.nn.init.normal_(linear.weight, std=1 / math.sqrt(linear.in_features + 1))
    if linear.bias is not None:
        torch.nn.init.zeros_(linear.bias)


@torch.no_grad()
def score_ids(model, tokenizer, batch_ids: list[list[int]], batch_size: int = 8) -> list[float]:
    """Scalar rewards for already-encoded sequences (right padding; the head reads the last non-pad token)."""
    out: list[float] = []
    for start in range(0, len(batch_ids), batch_size):
        chunk = [{"input_ids": ids} for ids in batch_ids[start : start + batch_size]]
        enc = tokenizer.pad(chunk, return_tensors="pt", padding_side="right").to(model.device)
        out.extend(model(**enc).logits[:, 0].float().tolist())
    return out


@dataclass
class RewardModel:
    """A trained reward model: ``score(prompts, responses)`` returns one float per pair; ``normalize`` uses the
    mean/std measured on the training responses after training."""

    model: Any
    tokenizer: Any
    max_length: int
    prompt_turns: int | None = None
    mean: float = 0.0
    std: float = 1.0

    def score(self, prompts: list[Prompt], responses: list[Response], *, batch_size: int = 8, normalize: bool = False, progress: bool = False) -> list[float]:
        ids = [encode(self.tokenizer, p, r, self.max_length, self.prompt_turns) for p, r in zip(prompts, responses)]
        rewards: list[float] = []
        for start in tqdm(range(0, len(ids), 64), desc="scoring", disable=not progress):
            rewards.extend(score_ids(self.model, self.tokenizer, ids[start : start + 64], batch_size))
        if normalize:
            rewards = [(r - self.mean) / max(self.std, 1e-6) for r in rewards]
        return rewards


def load_reward_model(run_dir: str | Path, **overrides: Any) -> RewardModel:
    """Load a reward model saved by ``alignment.rm`` (adapter or full; the head is restored exactly)."""
    model, tokenizer, meta = load_trained(run_dir, "seq_cls", **overrides)
    if model.config.num_labels != 1:
        raise ModelError(f"{run_dir} is not a reward model (num_labels={model.config.num_labels}, expected 1)")
    stats = meta.get("reward_stats", {})
    return RewardModel(model, tokenizer, **encoding_settings(meta), mean=stats.get("mean", 0.0), std=stats.get("std", 1.0))


def preference_metrics(chosen: list[float], rejected: list[float], margins: list[float | None] | None = None, bins: int = 10) -> dict[str, Any]:
    """Pairwise accuracy, mean margin, expected calibration error of sigmoid(r_chosen − r_rejected), and accuracy
    by preference strength (the data's margin) when given."""
    diff = np.asarray(chosen) - np.asarray(rejected)
    if diff.size == 0:
        return {}
    p = 1 / (1 + np.exp(-diff))
    correct = diff > 0
    confidence = np.maximum(p, 1 - p)
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    metrics: dict[str, Any] = {
        "pairwise_accuracy": float(correct.mean()),
        "mean_margin": float(diff.mean()),
        "ece": float(ece),
        "num_pairs": int(diff.size),
    }
    if margins is not None and any(m is not None for m in margins):
        groups: dict[str, list[bool]] = defaultdict(list)
        for m, c in zip(margins, correct):
            groups["none" if m is None else f"{float(m):g}"].append(bool(c))
        metrics["accuracy_by_strength"] = {k: float(np.mean(v)) for k, v in sorted(groups.items())}
    return metrics


RewardFn = Callable[[list[Prompt], list[str]], list[float]]


def resolve_reward(spec: str) -> RewardFn:
    """A reward function from a spec string — the one way every stage names a reward:

    * ``RUN_DIR`` of a reward model (``alignment.rm``) → its scalar score;
    * ``RUN_DIR#LABEL`` of a classifier (``alignment.classify``) → probability of LABEL (default: the last label);
    * ``package.module:function`` → a Python function ``(prompts, responses) -> list[float]``.
    """
    path, _, label = spec.partition("#")
    if Path(path).is_dir():
        meta = read_meta(path)
        if meta.get("num_labels", 1) == 1 and not meta.get("label_names"):
            rm = load_reward_model(path)
            return lambda prompts, responses: rm.score(prompts, responses)
        from alignment.predict import load_classifier

        clf = load_classifier(path)
        target = label or meta["label_names"][-1]
        return lambda prompts, responses: clf.scores(responses, label=target)
    if not spec.partition(":")[2]:
        raise ModelError(f"reward '{spec}' is neither a run folder nor 'module:function'")
    return import_reward_function(spec, "reward")


def import_reward_function(spec: str, key: str) -> RewardFn:
    """``package.module:function`` -> the function; a RecipeError naming recipe key ``key`` when it cannot be
    imported or is not callable."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"{key}: reward function {spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise RecipeError(f"{key}: {spec!r} is not callable")
    return fn


def check_reward_spec(spec: str, key: str) -> None:
    """Raise a one-line RecipeError when ``spec`` (the value of recipe key ``key``) cannot name a reward; loads no
    model: a run folder must carry ``alignment_model.json`` (and a classifier the ``#label``), a function must import."""
    path, _, label = spec.partition("#")
    expected = "an alignment.rm run folder, CLASSIFIER_RUN#label or package.module:function"
    if Path(path).is_dir():
        meta = read_meta(path)
        if not meta:
            raise RecipeError(f"{key}: {path} is a folder but not an alignment run (no alignment_model.json); expected {expected}")
        labels = meta.get("label_names") or []
        if label and label not in labels:
            raise RecipeError(f"{key}: {spec!r}: {path} has no label {label!r} (labels: {labels or 'none, it is a reward model'})")
        return
    module, _, name = spec.partition(":")
    if not module or not name or "#" in spec:
        raise RecipeError(f"{key}: {spec!r} is not a reward: no such run folder, and not module:function; expected {expected}")
    import_reward_function(spec, key)
