"""Kahneman-Tversky optimisation from binary feedback: ``python -m alignment.kto recipe.yaml [--key value ...]``
(trl ``KTOTrainer``).

Rows are unpaired: a prompt, one completion and ``label`` (true: desirable, false: undesirable), e.g. the thumbs
up/down or rating feedback the annotation store exports (data task ``feedback``). The policy is a QLoRA adapter by
default (``method: qlora``) on a fresh adapter; the reference is the starting policy, held without a second model:
trl keeps a frozen copy of the fresh adapter, whose LoRA update is zero, so it scores as the base with the adapter
disabled (the copy is left out of the saved run folder).
``beta``, ``loss_type`` (kto, apo_zero_unpaired), ``desirable_weight`` and ``undesirable_weight`` are recipe keys;
when the weighted label counts leave the range the KTO paper recommends, the stage says which weight to set.

KTO's KL estimate pairs each prompt with the completion of its neighbour in the same training batch (trl rotates
the completions once, in data order), so it needs ``per_device_train_batch_size`` of at least 2 and sequential
sampling; the stage checks both before any model loads and shuffles the training rows once (``seed``), so that a
batch mixes prompts and labels whatever order the source file has. trl's metric names are logged alongside the
plain-language ones of the DPO stage (``reward_margin``, …); ``eval_prompts`` adds the held-out monitor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trl import KTOConfig, KTOTrainer

from alignment.data import DataArguments, load_data
from alignment.dpo import PlainMetricNames
from alignment.errors import RecipeError
from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.monitor import HeldoutCallback, Monitor, MonitorArguments
from alignment.run import stage_main
from alignment.training import (
    PREFERENCE_DEFAULTS,
    TRAINER_DEFAULTS,
    NonFiniteLossGuard,
    ResumeArguments,
    begin,
    final_evaluation,
    final_metrics,
    parse_stage,
    resume_from,
    score_labelled_positions_only,
    stage_keys,
    write_results,
)

logger = logging.getLogger(__name__)

DEFAULTS = {**TRAINER_DEFAULTS, **PREFERENCE_DEFAULTS, "method": "qlora", "learning_rate": 5e-5, "beta": 0.1, "per_device_train_batch_size": 4}
# Eq. (8) of the KTO paper (Ethayarajh et al. 2024): desirable_weight * n_desirable / (undesirable_weight *
# n_undesirable) should lie in [1, 4/3]; trl's warning uses the same bounds.
WEIGHTED_RATIO = (1.0, 4 / 3)
REFERENCE_ADAPTER = "ref"  # the name trl gives its frozen copy of a peft policy's adapter


@dataclass
class KTOStageArguments(ResumeArguments):
    """KTO keys beyond trl's KTOConfig (none yet besides ``resume``)."""


def check_config(config: KTOConfig) -> None:
    """Positive label weights and the batches KTO's KL estimate needs (trl checks these only after the model loads)."""
    for key in ("desirable_weight", "undesirable_weight"):
        if not getattr(config, key) > 0:
            raise RecipeError(f"{key}: must be a positive number, got {getattr(config, key)}")
    if config.loss_type == "apo_zero_unpaired":  # the one loss without a KL term
        return
    if config.per_device_train_batch_size < 2:
        raise RecipeError(
            f"per_device_train_batch_size: KTO estimates its KL term by pairing each prompt with another row's "
            f"completion in the same batch, so it needs at least 2, got {config.per_device_train_batch_size} "
            "(or set loss_type: apo_zero_unpaired, which has no KL term)"
        )
    if config.train_sampling_strategy != "sequential":
        raise RecipeError(
            f"train_sampling_strategy: KTO pairs each row with its neighbour for the KL term, so it reads the rows in "
            f"order; set sequential, got {config.train_sampling_strategy} (the stage shuffles the rows once itself)"
        )


def weight_advice(desirable: int, undesirable: int, desirable_weight: float, undesirable_weight: float) -> str | None:
    """What to change when the weighted label balance leaves :data:`WEIGHTED_RATIO`: the lighter side's weight
    (the other kept). None when it is in range."""
    counts = f"training labels: {desirable} desirable, {undesirable} undesirable"
    if not desirable or not undesirable:
        missing = "desirable" if not desirable else "undesirable"
        return f"{counts}: with no {missing} rows KTO learns from one side only and logs no reward margin"
    ratio = desirable_weight * desirable / (undesirable_weight * undesirable)
    low, high = WEIGHTED_RATIO
    if low <= ratio <= high:
        return None
    if ratio < low:
        key, base = "desirable_weight", undesirable_weight * undesirable / desirable
        bounds = (base * low, base * high)
    else:
        key, base = "undesirable_weight", desirable_weight * desirable / undesirable
        bounds = (base / high, base / low)
    return (
        f"{counts}; desirable_weight x {desirable} / (undesirable_weight x {undesirable}) = {ratio:.2f}, outside the "
        f"KTO paper's range [1, 1.33]: set {key} between {bounds[0]:.2f} and {bounds[1]:.2f}"
    )


def drop_reference_adapter(model) -> None:
    """Remove trl's frozen reference copy of the adapter ("ref"), which would otherwise be saved beside the result."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REFERENCE_ADAPTER)


CLASSES = (ModelArguments, DataArguments, KTOStageArguments, MonitorArguments, KTOConfig)


@stage_main(keys=stage_keys("kto", CLASSES, DEFAULTS))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.kto RECIPE.yaml [--key value ...]"""
    model_args, data_args, stage_args, monitor_args, config = parse_stage(argv, "kto", CLASSES, DEFAULTS)
    check_config(config)
    data = load_data(data_args, "feedback")
    train = data.splits["train"].shuffle(seed=config.seed).flatten_indices()
    labels = train["label"]
    advice = weight_advice(sum(labels), len(labels) - sum(labels), config.desirable_weight, config.undesirable_weight)
    run_dir = begin(config, model_args, data_args, stage_args, monitor_args)
    for line in data.report:
        logger.info("data: %s", line)
    if advice:
        logger.warning("%s", advice)

    tokenizer = load_tokenizer(model_args.tokenizer_name_or_path or model_args.model_name_or_path)
    # A fresh adapter on the starting policy (an SFT adapter is merged first), so that the reference is that policy.
    model, origin = load_model(model_args, "causal", tokenizer, continue_adapter=False)
    score_labelled_positions_only()
    monitor = Monitor.build(monitor_args, run_dir)
    heldout = [HeldoutCallback(monitor, tokenizer, monitor_args, config.seed)] if monitor else []
    trainer = KTOTrainer(
        model=model,
        ref_model=None,  # peft policy: the reference is trl's frozen copy of the fresh adapter
        args=config,
        train_dataset=train,
        eval_dataset=data.splits.get("validation"),
        processing_class=tokenizer,
        callbacks=[NonFiniteLossGuard(), PlainMetricNames(), *heldout],
    )
    for callback in heldout:
        callback.trainer = trainer
    result = trainer.train(resume_from_checkpoint=resume_from(run_dir, stage_args.resume))
    metrics = dict(result.metrics)
    if "validation" in data.splits:
        metrics.update(final_evaluation(trainer))
    metrics = final_metrics(metrics, trainer)
    if trainer.is_world_process_zero():
        drop_reference_adapter(trainer.model)
        save_model(trainer.model, tokenizer, run_dir, kind="causal", origin=origin, method=model_args.method, stage="kto")
    write_results(trainer, run_dir, metrics, [*data.report, *([advice] if advice else [])])
    logger.info("KTO finished: %s", {k: v for k, v in metrics.items() if "loss" in k or "margin" in k or k.endswith("kl")})


if __name__ == "__main__":
    raise SystemExit(main())
