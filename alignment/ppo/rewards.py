"""Where PPO's scores come from: reward models, classifiers and Python functions, behind one ``RewardSource``.

* ``reward_model`` = an ``alignment.rm`` run folder holding a LoRA adapter on the policy's base: loaded as a third
  adapter on the shared base (``reward_adapter: true``, the default), so no second model is held;
* any other reward model (full checkpoint, another base, ``reward_adapter: false``): ``load_reward_model``;
* ``reward_model`` = an ``alignment.classify`` run folder with ``reward_label``: the label's probability;
* ``reward_function: module:function`` (or a built-in, ``length`` / ``keyword``) called as
  ``function(prompts, responses, **reward_kwargs) -> list[float]``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from alignment.errors import RecipeError
from alignment.generation import prompt_text
from alignment.models import load_tokenizer, read_meta
from alignment.models.loader import is_adapter
from alignment.ppo.args import PPOConfig
from alignment.rewards import Prompt, encode, encoding_settings, load_reward_model

ScoreFn = Callable[[list[Prompt], list[str]], list[float]]


@dataclass
class RewardSource:
    """``score(prompts, responses)`` -> one float per pair. ``mean``/``std``: the statistics the source measured
    on its training data (a reward model's), used to standardise scores; None when it has none."""

    score: ScoreFn
    description: str
    mean: float | None = None
    std: float | None = None


# --------------------------------------------------------------------------------------- built-in reward functions
def length(prompts: list[Prompt], responses: list[str], target_words: int = 0) -> list[float]:
    """-|words - target_words| per response: with the default target 0, the shorter the better."""
    return [-float(abs(len(r.split()) - target_words)) for r in responses]


def keyword(
    prompts: list[Prompt], responses: list[str], keywords: list[str] | str = "great", case_sensitive: bool = False
) -> list[float]:
    """How many times the response uses any of ``keywords`` (whole words)."""
    words = [keywords] if isinstance(keywords, str) else list(keywords)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", 0 if case_sensitive else re.IGNORECASE)
    return [float(len(pattern.findall(r))) for r in responses]


BUILTIN_FUNCTIONS: dict[str, Callable[..., list[float]]] = {"length": length, "keyword": keyword}


# --------------------------------------------------------------------------------------------------- loading
def import_function(spec: str) -> Callable[..., list[float]]:
    """``package.module:function`` -> the function; a RecipeError names what could not be found."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise RecipeError(
            f"reward_function: expected 'module:function' or one of {sorted(BUILTIN_FUNCTIONS)}, got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"reward_function: cannot import module '{module_name}': {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RecipeError(f"reward_function: module '{module_name}' has no function '{attr}'")
    return fn


def function_reward(spec: str, kwargs: dict[str, Any]) -> RewardSource:
    fn = BUILTIN_FUNCTIONS.get(spec) or import_function(spec)
    try:
        inspect.signature(fn).bind([], [], **kwargs)
    except TypeError as exc:
        raise RecipeError(f"reward_function '{spec}' cannot take (prompts, responses) with reward_kwargs {kwargs}: {exc}") from None
    return RewardSource(partial(fn, **kwargs), f"function {spec}")


def classifier_reward(path: str, config: PPOConfig, device) -> RewardSource:
    from alignment.predict import load_classifier  # the classifier stage is optional for PPO

    classifier = load_classifier(path)
    classifier.model.to(device)
    label = config.reward_label
    if label not in classifier.label_names:
        raise RecipeError(f"reward_label {label!r} is not a label of {path}: {classifier.label_names}")

    def score(prompts: list[Prompt], responses: list[str]) -> list[float]:
        texts = responses
        if config.classifier_text == "prompt_and_response":
            texts = [prompt_text(p) + r for p, r in zip(prompts, responses)]
        return classifier.scores(texts, label=label, batch_size=config.reward_batch_size)

    return RewardSource(score, f"classifier {path} (p({label}))")


def shares_base(path: str, policy_base: str | None) -> bool:
    """True when ``path`` is a LoRA reward model trained on the policy's base (so it can ride on the shared base)."""
    if not is_adapter(path) or policy_base is None:
        return False
    peft_type = json.loads((Path(path) / "adapter_config.json").read_text()).get("peft_type")
    return peft_type == "LORA" and read_meta(path).get("base_model") == policy_base


def adapter_reward(path: str, actor_critic, config: PPOConfig) -> RewardSource:
    meta = read_meta(path)
    actor_critic.add_reward_adapter(path)
    tokenizer = load_tokenizer(path)
    settings = encoding_settings(meta)

    def score(prompts: list[Prompt], responses: list[str]) -> list[float]:
        ids = [encode(tokenizer, p, r, **settings) for p, r in zip(prompts, responses)]
        return actor_critic.reward_scores(ids, tokenizer.pad_token_id, config.reward_batch_size)

    stats = meta.get("reward_stats") or {}
    return RewardSource(score, f"reward adapter {path} (shared base)", stats.get("mean"), stats.get("std"))


def separate_reward_model(path: str, config: PPOConfig, device) -> RewardSource:
    model = load_reward_model(path)
    model.model.to(device)
    stats = read_meta(path).get("reward_stats") or {}
    return RewardSource(
        partial(model.score, batch_size=config.reward_batch_size), f"reward model {path}", stats.get("mean"), stats.get("std")
    )


def load_reward_source(config: PPOConfig, actor_critic, policy_base: str | None, device) -> RewardSource:
    """The reward source the recipe names (see the module docstring for the choices)."""
    if config.reward_function is not None:
        return function_reward(config.reward_function, config.reward_kwargs)
    path = config.reward_model
    labels = read_meta(path).get("label_names") or []
    if config.reward_label is not None:
        return classifier_reward(path, config, device)
    if len(labels) > 1:
        raise RecipeError(f"reward_model {path} is a classifier with labels {labels}: set reward_label to the rewarded one")
    if config.reward_adapter and shares_base(path, policy_base):
        return adapter_reward(path, actor_critic, config)
    return separate_reward_model(path, config, device)
