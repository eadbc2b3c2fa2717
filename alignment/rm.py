"""Reward model training: ``python -m alignment.rm recipe.yaml [--key value ...]`` (trl ``RewardTrainer``).

Preference data (store export, plain or conversational pairs, HH-RLHF transcripts, K-way rankings) comes through the
data layer; the backbone (a causal LM with a scalar head, or an encoder) through the model layer, with the head always
trained and saved. Pairs are encoded by :func:`alignment.rewards.encode` — the same function the scorer uses, so a
reloaded model scores exactly as in training — and truncated from the left, keeping the final turns. After training,
held-out pairwise accuracy, mean margin, calibration (ECE) and accuracy by strength are measured, and the reward
mean/std over the training responses is saved with the model for PPO's reward normalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from trl import RewardConfig, RewardTrainer

from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.rewards import encode, init_reward_head, preference_metrics, score_ids
from alignment.run import stage_main
from alignment.training import (
    PREFERENCE_DEFAULTS,
    TRAINER_DEFAULTS,
    NonFiniteLossGuard,
    ResumeArguments,
    begin,
    final_metrics,
    parse_stage,
    resume_from,
    stage_keys,
    write_results,
)

logger = logging.getLogger(__name__)

DEFAULTS = {**TRAINER_DEFAULTS, **PREFERENCE_DEFAULTS, "learning_rate": 1e-4, "per_device_eval_batch_size": 16}


@dataclass
class RMStageArguments(ResumeArguments):
    use_margin: bool = field(default=True, metadata={"help": "Subtract the data's margin inside the loss when present."})
    stats_samples: int = field(default=512, metadata={"help": "Training pairs scored to compute the reward mean/std."})
    prompt_turns: int | None = field(
        default=None,
        metadata={"help": "Keep only the final N turns of a conversational prompt (1: the final user turn); saved with "
                  "the model so scoring encodes alike. Default: all turns, left-truncated to max_length."},
    )


def tokenize_pairs(dataset, tokenizer, use_margin: bool, **settings):
    """Encode every pair once (:func:`alignment.rewards.encode` with ``settings``: left-truncated to ``max_length``,
    optionally the final ``prompt_turns`` only) in the columns RewardTrainer takes as processed."""

    def _encode(row):
        out = {
            "chosen_ids": encode(tokenizer, row["prompt"], row["chosen"], **settings),
            "rejected_ids": encode(tokenizer, row["prompt"], row["rejected"], **settings),
        }
        if use_margin and "margin" in row:
            out["margin"] = float(row["margin"] or 0.0)
        return out

    drop = [c for c in dataset.column_names if c != "margin" or not use_margin]
    return dataset.map(_encode, remove_columns=drop, desc="encoding pairs")


def evaluate_pairs(model, tokenizer, encoded, raw, batch_size: int) -> dict:
    chosen = score_ids(model, tokenizer, list(encoded["chosen_ids"]), batch_size)
    rejected = score_ids(model, tokenizer, list(encoded["rejected_ids"]), batch_size)
    margins = list(raw["margin"]) if "margin" in raw.column_names else None
    return preference_metrics(chosen, rejected, margins)


def reward_stats(model, tokenizer, encoded, n: int, batch_size: int) -> dict[str, float]:
    """Mean/std of rewards over training responses (chosen and rejected), for PPO reward normalisation."""
    sub = encoded.select(range(min(n, len(encoded))))
    rewards = np.asarray(score_ids(model, tokenizer, list(sub["chosen_ids"]) + list(sub["rejected_ids"]), batch_size))
    return {"mean": float(rewards.mean()), "std": float(rewards.std() + 1e-8), "n": int(rewards.size)}


CLASSES = (ModelArguments, DataArguments, RMStageArguments, RewardConfig)


@stage_main(keys=stage_keys("rm", CLASSES, DEFAULTS))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.rm RECIPE.yaml [--key value ...]"""
    model_args, data_args, stage_args, config = parse_stage(argv, "rm", CLASSES, DEFAULTS)
    if stage_args.prompt_turns is not None and stage_args.prompt_turns < 0:
        raise RecipeError(f"key 'prompt_turns': expected a count of final turns >= 0 (0 drops the prompt), got {stage_args.prompt_turns}")
    data = load_data(data_args, "preference")
    run_dir = begin(config, model_args, data_args, stage_args)
    for line in data.report:
        logger.info("data: %s", line)

    tokenizer = load_tokenizer(model_args.tokenizer_name_or_path or model_args.model_name_or_path)
    model, origin = load_model(model_args, "seq_cls", tokenizer, num_labels=1, init_head=init_reward_head)
    settings = {"max_length": config.max_length, "prompt_turns": stage_args.prompt_turns}
    splits = {name: tokenize_pairs(ds, tokenizer, stage_args.use_margin, **settings) for name, ds in data.splits.items()}
    held_out = "test" if "test" in splits else "validation" if "validation" in splits else None
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=splits["train"],
        eval_dataset=splits.get("validation"),
        processing_class=tokenizer,
        callbacks=[NonFiniteLossGuard()],
    )
    result = trainer.train(resume_from_checkpoint=resume_from(run_dir, stage_args.resume))
    model = trainer.model.eval()
    metrics = {"train": final_metrics(result.metrics, trainer)}
    if held_out:
        metrics[held_out] = evaluate_pairs(model, tokenizer, splits[held_out], data.splits[held_out], config.per_device_eval_batch_size)
        logger.info("held-out (%s) preference metrics: %s", held_out, metrics[held_out])
    stats = reward_stats(model, tokenizer, splits["train"], stage_args.stats_samples, config.per_device_eval_batch_size)
    if trainer.is_world_process_zero():
        save_model(
            model, tokenizer, run_dir, kind="seq_cls", origin=origin, num_labels=1, method=model_args.method, stage="rm",
            **settings, reward_stats=stats,
        )
    write_results(trainer, run_dir, {**metrics, "reward_stats": stats}, data.report)


if __name__ == "__main__":
    raise SystemExit(main())
