"""Direct preference optimisation: ``python -m alignment.dpo recipe.yaml [--key value ...]`` (trl ``DPOTrainer``).

The policy is a QLoRA adapter by default (``method: qlora``); the reference policy is the same base with the adapter
disabled, so no second model copy is held. Any loss trl supports (``loss_type``: sigmoid, ipo, hinge, robust, …),
``beta`` and ``precompute_ref_log_probs`` are recipe keys. trl's metric names are logged alongside plain-language
ones (``preference_accuracy``, ``reward_margin``, …). With ``eval_prompts`` the policy answers held-out prompts
before training and after every epoch, scored by the proxy and gold rewards with its KL (:mod:`alignment.monitor`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from alignment.data import DataArguments, load_data
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
    stage_keys,
    score_labelled_positions_only,
    write_results,
)

logger = logging.getLogger(__name__)

DEFAULTS = {**TRAINER_DEFAULTS, **PREFERENCE_DEFAULTS, "method": "qlora", "learning_rate": 5e-5, "beta": 0.1, "per_device_train_batch_size": 4}

PLAIN_NAMES = {
    "rewards/chosen": "implicit_reward_chosen",
    "rewards/rejected": "implicit_reward_rejected",
    "rewards/accuracies": "preference_accuracy",
    "rewards/margins": "reward_margin",
    "logps/chosen": "logprob_chosen",
    "logps/rejected": "logprob_rejected",
}


@dataclass
class DPOStageArguments(ResumeArguments):
    """DPO keys beyond trl's DPOConfig (none yet besides ``resume``)."""


class PlainMetricNames(TrainerCallback):
    """Add plain-language copies of trl's DPO metrics (``eval_rewards/margins`` → ``eval_reward_margin``).

    The trainer appends a copy of ``logs`` to ``state.log_history`` before callbacks run, so both are updated.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        plain = {}
        for key in logs:
            prefix = "eval_" if key.startswith("eval_") else ""
            name = PLAIN_NAMES.get(key.removeprefix(prefix))
            if name:
                plain[prefix + name] = logs[key]
        logs.update(plain)
        state.log_history[-1].update(plain)


CLASSES = (ModelArguments, DataArguments, DPOStageArguments, MonitorArguments, DPOConfig)


@stage_main(keys=stage_keys("dpo", CLASSES, DEFAULTS))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.dpo RECIPE.yaml [--key value ...]"""
    model_args, data_args, stage_args, monitor_args, config = parse_stage(argv, "dpo", CLASSES, DEFAULTS)
    data = load_data(data_args, "preference")
    splits = {k: v.remove_columns([c for c in v.column_names if c == "margin"]) for k, v in data.splits.items()}
    run_dir = begin(config, model_args, data_args, stage_args, monitor_args)
    for line in data.report:
        logger.info("data: %s", line)

    tokenizer = load_tokenizer(model_args.tokenizer_name_or_path or model_args.model_name_or_path)
    # A fresh adapter on the starting policy (an SFT adapter is merged first), so that "adapter disabled" is that policy.
    model, origin = load_model(model_args, "causal", tokenizer, continue_adapter=False)
    score_labelled_positions_only()
    monitor = Monitor.build(monitor_args, run_dir)
    heldout = [HeldoutCallback(monitor, tokenizer, monitor_args, config.seed)] if monitor else []
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # peft policy: the reference is the base with the adapter disabled
        args=config,
        train_dataset=splits["train"],
        eval_dataset=splits.get("validation"),
        processing_class=tokenizer,
        callbacks=[NonFiniteLossGuard(), PlainMetricNames(), *heldout],
    )
    for callback in heldout:
        callback.trainer = trainer
    result = trainer.train(resume_from_checkpoint=resume_from(run_dir, stage_args.resume))
    metrics = dict(result.metrics)
    if "validation" in splits:
        metrics.update(final_evaluation(trainer))
    metrics = final_metrics(metrics, trainer)
    if trainer.is_world_process_zero():
        save_model(trainer.model, tokenizer, run_dir, kind="causal", origin=origin, method=model_args.method, stage="dpo")
    write_results(trainer, run_dir, metrics, data.report)
    logger.info("DPO finished: %s", {k: v for k, v in metrics.items() if "loss" in k or "margin" in k or "accuracy" in k})


if __name__ == "__main__":
    raise SystemExit(main())
