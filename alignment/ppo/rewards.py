"""PPO's reward: the recipe's reward terms (``rewards:``, or the one ``reward_model`` / ``reward_function`` key), each
built by :func:`alignment.rewards.reward_source`, summed with their weights by a
:class:`~alignment.rewards.WeightedReward`.

The one shortcut of its own: a LoRA reward model trained on the policy's base (an ``alignment.rm`` run folder) is
loaded as a third adapter on the shared base (``reward_adapter: true``, the default), so no second model is held.
It reads the rollout's own token ids (``token_ids=``) when the prompts went through the same chat template it was
trained with, so what it scores is what the policy sampled: no decode and re-encode, and a response cut without EOS
stays an unfinished turn instead of being closed by the template.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignment.errors import RecipeError
from alignment.models import load_tokenizer, read_meta
from alignment.models.loader import is_adapter
from alignment.ppo.args import PPOConfig
from alignment.rewards import Prompt, RewardSource, WeightedReward, encode, encoding_settings, reward_source


def shares_base(path: str, policy_base: str | None) -> bool:
    """True when ``path`` is a LoRA reward model trained on the policy's base (so it can ride on the shared base)."""
    if not is_adapter(path) or policy_base is None:
        return False
    peft_type = json.loads((Path(path) / "adapter_config.json").read_text()).get("peft_type")
    return peft_type == "LORA" and read_meta(path).get("base_model") == policy_base


def turn_suffix(tokenizer) -> list[int] | None:
    """What the chat template writes after an assistant turn's EOS (e.g. a newline), or None when the template does
    not end the turn with the tokenizer's EOS (then token ids cannot stand in for the rendered text)."""
    ids = encode(tokenizer, "x", "y", max_length=10**6)
    eos = tokenizer.eos_token_id
    if eos not in ids:
        return None
    return ids[len(ids) - ids[::-1].index(eos):]


def adapter_reward(path: str, actor_critic, config: PPOConfig, policy_tokenizer) -> RewardSource:
    meta = read_meta(path)
    actor_critic.add_reward_adapter(path)
    tokenizer = load_tokenizer(path)
    settings = encoding_settings(meta)
    same_encoding = (
        config.use_chat_template and tokenizer.chat_template is not None and settings["prompt_turns"] is None
        and tokenizer.get_vocab() == policy_tokenizer.get_vocab() and tokenizer.chat_template == policy_tokenizer.chat_template
    )
    suffix = turn_suffix(tokenizer) if same_encoding else None

    def score(prompts: list[Prompt], responses: list[str], token_ids: list[list[int]] | None = None, **_) -> list[float]:
        if token_ids is not None and suffix is not None:
            eos = tokenizer.eos_token_id
            ids = [(t + suffix if t and t[-1] == eos else t)[-settings["max_length"]:] for t in token_ids]
        else:
            ids = [encode(tokenizer, p, r, **settings) for p, r in zip(prompts, responses)]
        return actor_critic.reward_scores(ids, tokenizer.pad_token_id, config.reward_batch_size)

    stats = meta.get("reward_stats") or {}
    return RewardSource(score, f"reward adapter {path} (shared base)", stats.get("mean"), stats.get("std"))


def load_reward(config: PPOConfig, actor_critic, policy_base: str | None, device, policy_tokenizer=None) -> WeightedReward:
    """The recipe's reward terms as scorers (see the module docstring)."""
    terms = []
    for term in config.reward_terms():
        path = term.spec.partition("#")[0]
        if "#" not in term.spec and Path(path).is_dir():
            labels = read_meta(path).get("label_names") or []
            if len(labels) > 1:
                raise RecipeError(f"reward {path} is a classifier with labels {labels}: name the rewarded one "
                                  f"(reward_label, or spec {path}#LABEL)")
            if config.reward_adapter and shares_base(path, policy_base):
                terms.append((term, adapter_reward(path, actor_critic, config, policy_tokenizer)))
                continue
        source = reward_source(term.spec, kwargs=term.kwargs, device=device, batch_size=config.reward_batch_size,
                               classifier_text=config.classifier_text)
        terms.append((term, source))
    return WeightedReward(terms)
