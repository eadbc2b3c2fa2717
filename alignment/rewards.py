"""Rewards: one encoding of (prompt, response) shared by training and scoring, the scorers (:func:`load_reward_model`,
:func:`load_classifier`), the one builder of a scorer from a reward spec (:func:`reward_source`), weighted sums of
rewards (:class:`WeightedReward`), and preference metrics (pairwise accuracy, margin, calibration, accuracy by
strength)."""

from __future__ import annotations

import importlib
import inspect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from alignment.errors import ModelError, RecipeError
from alignment.models import load_trained, read_meta
from alignment.reward_functions import BUILTIN

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


def reward_head(model) -> torch.nn.Linear:
    """The linear layer that maps a sequence classifier's features to its scores (``score``, ``classifier`` or a
    classifier's ``out_proj``), also under a peft wrapper (the copy it trains and saves)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = _trained_copy(getattr(base, "score", None) or getattr(base, "classifier", None))
    linear = _trained_copy(head if isinstance(head, torch.nn.Linear) else getattr(head, "out_proj", None))
    if not isinstance(linear, torch.nn.Linear):
        raise ModelError(f"cannot find the reward head of {type(base).__name__}")
    return linear


def _trained_copy(module):
    """The copy of a module that a peft ``modules_to_save`` wrapper trains (the module itself when unwrapped)."""
    copies = getattr(module, "modules_to_save", None)
    return copies["default"] if copies is not None and "default" in copies else module


def init_reward_head(model) -> None:
    """Initialise a fresh scalar head N(0, 1/sqrt(d+1)) (Stiennon et al. 2020), bias zero."""
    linear = reward_head(model)
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

    @torch.no_grad()
    def features(self, prompts: list[Prompt], responses: list[Response], batch_size: int = 8) -> torch.Tensor:
        """[n, d] what the reward head reads for each pair (at the position the score is taken from)."""
        head, seen = reward_head(self.model), []
        hook = head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().float()))
        try:
            ids = [encode(self.tokenizer, p, r, self.max_length, self.prompt_turns) for p, r in zip(prompts, responses)]
            rows = []
            for start in range(0, len(ids), batch_size):
                chunk = [{"input_ids": x} for x in ids[start : start + batch_size]]
                enc = self.tokenizer.pad(chunk, return_tensors="pt", padding_side="right").to(self.model.device)
                seen.clear()
                self.model(**enc)
                x = seen[-1]
                if x.dim() == 3:  # a decoder's head reads every position; its score is the last non-pad token's
                    x = x[torch.arange(len(x)), enc["attention_mask"].sum(-1) - 1]
                rows.append(x.cpu())
        finally:
            hook.remove()
        return torch.cat(rows) if rows else torch.empty(0, head.in_features)

    def head(self) -> tuple[torch.Tensor, float]:
        """The trained head's weight [d] and bias."""
        linear = reward_head(self.model)
        return linear.weight.detach().float().reshape(-1).cpu(), float(linear.bias.item()) if linear.bias is not None else 0.0


def load_reward_model(run_dir: str | Path, **overrides: Any) -> RewardModel:
    """Load a reward model saved by ``alignment.rm`` (adapter or full; the head is restored exactly)."""
    model, tokenizer, meta = load_trained(run_dir, "seq_cls", **overrides)
    if model.config.num_labels != 1:
        raise ModelError(f"{run_dir} is not a reward model (num_labels={model.config.num_labels}, expected 1)")
    stats = meta.get("reward_stats", {})
    return RewardModel(model, tokenizer, **encoding_settings(meta), mean=stats.get("mean", 0.0), std=stats.get("std", 1.0))


def prediction_rows(probabilities: np.ndarray, label_names: list[str]) -> list[dict[str, Any]]:
    """``{"label": most probable name, "probabilities": {name: p}}`` per row of ``probabilities``."""
    return [
        {"label": label_names[int(p.argmax())], "probabilities": {n: float(x) for n, x in zip(label_names, p)}}
        for p in probabilities
    ]


@dataclass
class Classifier:
    """A trained classifier with its tokenizer, label names, and the ``max_length`` and precision (``bf16``: under
    bf16 autocast, as the stage's own evaluations ran) it was trained with."""

    model: Any
    tokenizer: Any
    label_names: list[str]
    max_length: int = 512
    bf16: bool = False

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """``(len(texts), num_labels)`` class probabilities; texts are batched by length, results keep input order."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.zeros((len(ids), len(self.label_names)), dtype=np.float32)
        for start in tqdm(range(0, len(order), batch_size), desc="classifying", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            enc = self.tokenizer.pad([{"input_ids": ids[i]} for i in rows], return_tensors="pt").to(self.model.device)
            with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(**enc).logits
            out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def count_truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` are longer than ``max_length`` tokens (and so are read cut)."""
        return sum(len(ids) > self.max_length for ids in self.tokenizer(list(texts))["input_ids"])

    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[dict[str, Any]]:
        """One ``{"label", "probabilities"}`` dict per text."""
        return prediction_rows(self.probabilities(texts, batch_size, progress), self.label_names)

    def scores(self, texts: list[str], label: str = "positive", batch_size: int = 32) -> list[float]:
        """The probability of ``label`` for each text (a reward in [0, 1])."""
        if label not in self.label_names:
            raise ModelError(f"label {label!r} is not one of this classifier's labels {self.label_names}")
        return self.probabilities(texts, batch_size)[:, self.label_names.index(label)].tolist()


def load_classifier(run_dir: str | Path, **overrides: Any) -> Classifier:
    """Load a classifier saved by ``alignment.classify`` (full weights or a peft adapter with its head)."""
    model, tokenizer, meta = load_trained(run_dir, "seq_cls", **overrides)
    names = meta.get("label_names") or [model.config.id2label[i] for i in range(model.config.num_labels)]
    if len(names) < 2:
        raise ModelError(f"{run_dir} is not a classifier (it has {len(names)} output); use alignment.score for reward models")
    return Classifier(model, tokenizer, list(names), meta.get("max_length", 512), bool(meta.get("bf16", False)))


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


RewardFn = Callable[..., list[float]]  # (prompts, responses, **columns) -> one float per pair


@dataclass
class RewardSource:
    """One named reward: ``score(prompts, responses, **columns)`` -> one float per pair (``columns``: the prompt
    data's ``extra_columns``; only functions that name them read them). ``mean``/``std``: the statistics a reward
    model measured on its training responses (None for classifiers and functions)."""

    score: RewardFn
    description: str
    mean: float | None = None
    std: float | None = None
    columns: tuple[str, ...] = ()  # data columns the score needs


def reward_source(spec: str, *, kwargs: dict[str, Any] | None = None, device: Any = None, batch_size: int = 16,
                  classifier_text: str = "response") -> RewardSource:
    """The one way every stage turns a reward spec into a scorer:

    * ``RUN_DIR`` of a reward model (``alignment.rm``) -> its scalar score (with its saved mean/std);
    * ``RUN_DIR#LABEL`` of a classifier (``alignment.classify``) -> the probability of LABEL (default: the last
      label); ``classifier_text: prompt_and_response`` makes it read the prompt too;
    * a built-in function name (:mod:`alignment.reward_functions`: length, keyword, exact_match, format_match) or
      ``package.module:function``, called with ``kwargs`` and the data columns it names.
    """
    path, _, label = spec.partition("#")
    if Path(path).is_dir():
        meta = read_meta(path)
        if meta.get("num_labels", 1) == 1 and not meta.get("label_names"):
            return model_reward(path, device, batch_size)
        return classifier_reward(path, label or meta["label_names"][-1], device, batch_size, classifier_text)
    if spec not in BUILTIN and not spec.partition(":")[2]:
        raise ModelError(f"reward '{spec}' is neither a run folder, a built-in function ({', '.join(BUILTIN)}) nor 'module:function'")
    return function_reward(spec, kwargs or {})


def resolve_reward(spec: str) -> RewardFn:
    """The scorer of a reward spec (see :func:`reward_source`)."""
    return reward_source(spec).score


def model_reward(path: str, device: Any = None, batch_size: int = 16) -> RewardSource:
    rm = load_reward_model(path)
    if device is not None:
        rm.model.to(device)
    return RewardSource(lambda prompts, responses, **_: rm.score(prompts, responses, batch_size=batch_size),
                        f"reward model {path}", rm.mean, rm.std)


def classifier_reward(path: str, label: str, device: Any = None, batch_size: int = 16, text: str = "response") -> RewardSource:
    from alignment.generation import prompt_text

    classifier = load_classifier(path)
    if device is not None:
        classifier.model.to(device)
    if label not in classifier.label_names:
        raise RecipeError(f"reward label {label!r} is not a label of {path}: {classifier.label_names}")

    def score(prompts: list[Prompt], responses: list[str], **_: Any) -> list[float]:
        texts = responses if text == "response" else [prompt_text(p) + r for p, r in zip(prompts, responses)]
        return classifier.scores(texts, label=label, batch_size=batch_size)

    return RewardSource(score, f"classifier {path} (p({label}))")


def function_columns(fn: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the data columns ``fn`` requires, those it accepts): parameters after (prompts, responses) that
    ``kwargs`` does not give, without and with a default."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
    return tuple(p.name for p in named if p.default is p.empty), tuple(p.name for p in named)


def function_reward(spec: str, kwargs: dict[str, Any]) -> RewardSource:
    """A built-in or ``module:function`` reward, checked to take (prompts, responses, **kwargs, **its columns)."""
    fn = BUILTIN.get(spec) or import_reward_function(spec, "reward")
    required, accepted = function_columns(fn, kwargs)
    try:
        inspect.signature(fn).bind([], [], **kwargs, **{c: [] for c in required})
    except TypeError as exc:
        raise RecipeError(f"reward function '{spec}' cannot take (prompts, responses) with kwargs {kwargs}: {exc}") from None

    def score(prompts: list[Prompt], responses: list[str], **columns: Any) -> list[float]:
        missing = [c for c in required if c not in columns]
        if missing:
            raise RecipeError(f"reward function '{spec}' needs the data column(s) {missing}: name them in extra_columns")
        return list(fn(prompts, responses, **kwargs, **{c: columns[c] for c in accepted if c in columns}))

    return RewardSource(score, f"function {spec}", columns=required)


def import_reward_function(spec: str, key: str) -> RewardFn:
    """``package.module:function`` -> the function; a RecipeError naming recipe key ``key`` when it cannot be
    imported or is not callable."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise RecipeError(f"{key}: expected a built-in reward function ({', '.join(BUILTIN)}) or 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RecipeError(f"{key}: reward function {spec!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise RecipeError(f"{key}: {spec!r} is not callable")
    return fn


def check_reward_spec(spec: str, key: str, kwargs: dict[str, Any] | None = None, columns: list[str] | None = None) -> None:
    """Raise a one-line RecipeError when ``spec`` (the value of recipe key ``key``) cannot name a reward; loads no
    model: a run folder must carry ``alignment_model.json`` (and a classifier the ``#label``), a function must import
    and take ``kwargs``, and, when the data's ``columns`` (its extra_columns) are given, find the ones it reads there."""
    path, _, label = spec.partition("#")
    expected = f"an alignment.rm run folder, CLASSIFIER_RUN#label, a built-in ({', '.join(BUILTIN)}) or package.module:function"
    if Path(path).is_dir():
        meta = read_meta(path)
        if not meta:
            raise RecipeError(f"{key}: {path} is a folder but not an alignment run (no alignment_model.json); expected {expected}")
        labels = meta.get("label_names") or []
        if label and label not in labels:
            raise RecipeError(f"{key}: {spec!r}: {path} has no label {label!r} (labels: {labels or 'none, it is a reward model'})")
        return
    module, _, name = spec.partition(":")
    if spec not in BUILTIN and (not module or not name or "#" in spec):
        raise RecipeError(f"{key}: {spec!r} is not a reward: no such run folder, and not module:function; expected {expected}")
    try:
        needed = function_reward(spec, kwargs or {}).columns
    except RecipeError as exc:
        raise RecipeError(f"{key}: {exc}") from None
    missing = [c for c in needed if columns is not None and c not in columns]
    if missing:
        raise RecipeError(f"{key}: '{spec}' reads the data column(s) {missing}: add them to extra_columns (now {columns})")


@dataclass
class RewardTerm:
    """One entry of a ``rewards:`` list: a reward spec, its weight in the sum, its function kwargs and a name
    for the logs (default: derived from the spec)."""

    spec: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec:
            raise ValueError(f"spec must be a reward spec string, got {self.spec!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"weight must be a finite number, got {self.weight!r}")
        if not isinstance(self.kwargs, dict):
            raise ValueError(f"kwargs must be a mapping, got {self.kwargs!r}")
        self.weight = float(self.weight)
        self.name = self.name or term_name(self.spec)


def term_name(spec: str) -> str:
    """A short log name for a spec: the function's name, or the run folder's name (and label)."""
    path, _, label = spec.partition("#")
    if ":" in spec and not Path(path).is_dir():
        return spec.rpartition(":")[2]
    return Path(path).name + (f"_{label}" if label else "") if Path(path).name else spec


def parse_reward_terms(entries: list[Any]) -> list[RewardTerm]:
    """A recipe's ``rewards:`` list as RewardTerms; a ValueError names the bad entry."""
    terms = []
    for i, entry in enumerate(entries):
        if isinstance(entry, RewardTerm):
            terms.append(entry)
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"rewards[{i}]: expected a mapping {{spec, weight, kwargs, name}}, got {entry!r}")
        unknown = set(entry) - {"spec", "weight", "kwargs", "name"}
        if unknown or "spec" not in entry:
            raise ValueError(f"rewards[{i}]: expected keys spec (required), weight, kwargs, name; got {sorted(entry)}")
        try:
            terms.append(RewardTerm(**entry))
        except ValueError as exc:
            raise ValueError(f"rewards[{i}]: {exc}") from None
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"rewards: two entries share a name ({names}); give each a distinct name")
    return terms


@dataclass
class WeightedReward:
    """The sum of weighted reward sources, each one scored (and logged) on its own."""

    terms: list[tuple[RewardTerm, RewardSource]]

    @property
    def description(self) -> str:
        if len(self.terms) == 1 and self.terms[0][0].weight == 1.0:
            return self.terms[0][1].description
        return " + ".join(f"{t.weight:g} x {s.description}" for t, s in self.terms)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for _, s in self.terms for c in s.columns))

    def components(self, prompts: list[Prompt], responses: list[str], **columns: Any) -> dict[str, list[float]]:
        """Each term's raw scores, by name."""
        return {t.name: list(s.score(prompts, responses, **columns)) for t, s in self.terms}

    def total(self, components: dict[str, list[float]], standardize: bool = False) -> np.ndarray:
        """sum_i weight_i * score_i; with ``standardize`` each term that has saved statistics (a reward model's)
        enters as (score - mean) / std."""
        out = np.zeros(len(next(iter(components.values()))), dtype=np.float64)
        for term, source in self.terms:
            x = np.asarray(components[term.name], dtype=np.float64)
            if standardize and source.mean is not None and source.std is not None:
                x = (x - source.mean) / max(source.std, 1e-8)
            out += term.weight * x
        return out

    @property
    def has_statistics(self) -> bool:
        return any(s.mean is not None and s.std is not None for _, s in self.terms)

    def score(self, prompts: list[Prompt], responses: list[str], **columns: Any) -> list[float]:
        """The raw weighted sum (what the held-out monitor reports as the proxy reward)."""
        return self.total(self.components(prompts, responses, **columns)).tolist()
