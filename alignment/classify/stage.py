"""Fine-tune a text classifier: ``python -m alignment.classify recipe.yaml [--key value ...]``.

Single-label classification (binary or multi-class) of ``text``/``label`` data from the data layer, with any
method of the model layer (full, freeze, freeze_layers, lora, qlora, ia3, prompt_tuning). Texts are tokenised once
(truncated to ``max_length``) and padded per batch, with batches of similar length (``group_by_length``). During
training the validation split is scored (accuracy, macro and per-class precision/recall/F1); the best checkpoint by
``metric_for_best_model`` is kept, optionally with early stopping; the test split is scored once at the end. The run
folder gets the model (with its label names), ``metrics.json``, confusion matrices (JSON and PNG) and the test
predictions. Re-running the same command resumes from the last complete checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainerCallback, TrainingArguments, set_seed

from alignment.classify.args import ClassifyArguments
from alignment.classify.baseline import evaluate_baseline
from alignment.classify.metrics import EvalMetrics, classification_metrics, plot_confusion
from alignment.classify.search import SearchSpec, parse_search, run_search
from alignment.classify.trainer import ClassifierTrainer, class_weights_tensor
from alignment.config import as_flags
from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.rewards import prediction_rows
from alignment.run import stage_main, write_jsonl
from alignment.training import NonFiniteLossGuard, begin, parse_stage, resume_from, stage_keys, write_results

logger = logging.getLogger(__name__)

DEFAULTS = {
    "model_name_or_path": "builtin:minilm-l6",
    "method": "full",
    "learning_rate": 5e-5,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "f1_macro",
    "lr_scheduler_type": "linear",
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "train_sampling_strategy": "group_by_length",
}
CLASSES = (ModelArguments, DataArguments, ClassifyArguments, TrainingArguments)
FIXED_IN_SEARCH = {"model_name_or_path", "tokenizer_name_or_path", "max_length", "output_dir", "search", "resume", "baseline"}
COMPARED = ("accuracy", "f1_macro")


def parse(argv: list[str]) -> tuple[ModelArguments, DataArguments, ClassifyArguments, TrainingArguments]:
    return parse_stage(argv, "classify", CLASSES, DEFAULTS)


@dataclass
class Prepared:
    """What every training run of one stage invocation shares: tokenised splits, their labels, the tokenizer."""

    tokenizer: Any
    encoded: Any  # DatasetDict: input_ids, attention_mask, ..., label
    label_names: list[str]


def tokenize(splits, tokenizer, max_length: int):
    """Tokenise every split once (truncated, unpadded: batches are padded by the collator)."""
    drop = [c for c in splits["train"].column_names if c != "label"]
    return splits.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length), batched=True, remove_columns=drop
    )


def searchable_keys() -> set[str]:
    names = {f.name for c in (ModelArguments, ClassifyArguments, TrainingArguments) for f in fields(c)}
    return names - {f.name for f in fields(DataArguments)} - FIXED_IN_SEARCH


def check_combination(args: ClassifyArguments, config: TrainingArguments) -> None:
    """Checks across keys, which parsing one key at a time cannot make (run for the recipe and every search value)."""
    args.check_weight_averaging(config.load_best_model_at_end)
    if args.early_stopping_patience is not None and (args.early_stopping_patience < 1 or config.eval_strategy == "no"):
        raise RecipeError("early_stopping_patience must be >= 1 and needs eval_strategy: steps or epoch")


def check_recipe(argv: list[str], args: ClassifyArguments, config: TrainingArguments) -> SearchSpec | None:
    """Checks that need no data or model: the recipe's key combinations, the search block and its values."""
    check_combination(args, config)
    if not args.search:
        return None
    if config.eval_strategy == "no":
        raise RecipeError("search needs evaluations on the validation split: set eval_strategy: steps or epoch")
    spec = parse_search(args.search, config.metric_for_best_model or "f1_macro", searchable_keys())
    try:
        for values in spec.examples():
            _, _, trial_args, trial_config = parse(argv + as_flags(values))
            check_combination(trial_args, trial_config)
    except RecipeError as exc:
        raise RecipeError(f"search.space: {exc}") from None
    return spec


def check_metric(name: str | None, label_names: list[str], key: str) -> None:
    valid = ["loss", *classification_metrics([0], [0], label_names)]
    if name is not None and name.removeprefix("eval_") not in valid:
        raise RecipeError(f"{key}: '{name}' is not an evaluation metric; choose one of {', '.join(valid)}")


def check_splits(splits, args: ClassifyArguments, config: TrainingArguments) -> None:
    if "validation" not in splits and config.eval_strategy != "no":
        raise RecipeError("classification evaluates on a validation split: set validation_path or validation_split, or eval_strategy: no")
    if args.baseline != "none" and "test" not in splits:
        raise RecipeError("baseline is scored on the test split: set test_path or test_split")


def fit(model_args, args: ClassifyArguments, config, prepared: Prepared, callbacks: list[TrainerCallback] = (), resume: bool = False):
    """Train one model as the recipe says; returns ``(trainer, train_output, origin)`` (the best model loaded when
    ``load_best_model_at_end``; ``origin`` for :func:`save_model`). Seeded first: search trials initialise their
    heads alike."""
    set_seed(config.seed)
    model, origin = load_model(model_args, "seq_cls", prepared.tokenizer, label_names=prepared.label_names)
    train = prepared.encoded["train"]
    stopping = [EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold)] if args.early_stopping_patience else []
    trainer = ClassifierTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=prepared.encoded.get("validation") if config.eval_strategy != "no" else None,
        processing_class=prepared.tokenizer,
        data_collator=DataCollatorWithPadding(prepared.tokenizer),
        compute_metrics=EvalMetrics(prepared.label_names),
        callbacks=[NonFiniteLossGuard(), *stopping, *args.callbacks(), *callbacks],
        class_weights=class_weights_tensor(args.class_weights, train["label"], prepared.label_names),
        head_learning_rate=args.head_learning_rate,
        layer_lr_decay=args.layer_lr_decay,
    )
    output = trainer.train(resume_from_checkpoint=resume_from(config.output_dir, resume))
    return trainer, output, origin


def search_then_parse(argv: list[str], spec: SearchSpec, run_dir: Path, prepared: Prepared):
    """Run the search; return the recipe with the best trial's values (and this run folder) applied."""

    def train_trial(flags: list[str], callbacks: list[TrainerCallback]) -> dict[str, float]:
        model_args, _, args, config = parse(argv + flags)
        check_combination(args, config)  # combinations of values the up-front examples did not hold
        trainer, _, _ = fit(model_args, args, config, prepared, callbacks)
        return {k.removeprefix("eval_"): v for k, v in trainer.evaluate().items()}

    best = run_search(spec, run_dir / "search", train_trial)
    return parse(argv + as_flags(best) + [f"--output_dir={run_dir}"]), best


def score_split(trainer: ClassifierTrainer, prepared: Prepared, split: str, texts: list[str], run_dir: Path) -> dict[str, Any]:
    """Metrics, confusion matrix (JSON + PNG) and per-row predictions of the trained model on one split."""
    out = trainer.predict(prepared.encoded[split], metric_key_prefix=split)
    trainer.log({k.replace(f"{split}_", "test_" if split == "test" else "eval_final_", 1): v for k, v in out.metrics.items()})
    names = prepared.label_names
    metrics = {k.removeprefix(f"{split}_"): v for k, v in out.metrics.items()}
    metrics["confusion_matrix"] = trainer.compute_metrics.last_confusion
    png = plot_confusion(metrics["confusion_matrix"], names, run_dir / f"confusion_matrix_{split}.png", f"{split} (n={len(texts)})")
    probabilities = torch.softmax(torch.as_tensor(out.predictions).float(), dim=-1).numpy()
    rows = [
        {"text": t, "gold_label": names[y], **p}
        for t, y, p in zip(texts, out.label_ids.tolist(), prediction_rows(probabilities, names))
    ]
    write_jsonl(run_dir / f"predictions_{split}.jsonl", rows)
    log_wandb_image(f"{split}/confusion_matrix", png)
    return metrics


def log_wandb_image(key: str, png: Path) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.log({key: wandb.Image(str(png))})


def comparison(fine_tuned: dict[str, Any], baseline: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Fine-tuned vs baseline test figures, with the gain."""
    return {
        m: {"fine_tuned": fine_tuned[m], "baseline": baseline[m], "gain": fine_tuned[m] - baseline[m]} for m in COMPARED
    }


def training_summary(trainer: ClassifierTrainer, output) -> dict[str, Any]:
    state = trainer.state
    return {
        "train": output.metrics,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "stopped_early": state.global_step < state.max_steps,
        "best_checkpoint": state.best_model_checkpoint,
        "best_metric": state.best_metric,
        "metric_for_best_model": trainer.args.metric_for_best_model,
    }


@stage_main(keys=stage_keys("classify", CLASSES, DEFAULTS))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.classify RECIPE.yaml [--key value ...]"""
    model_args, data_args, args, config = parse(argv)
    spec = check_recipe(argv, args, config)
    data = load_data(data_args, "classification")
    splits, label_names = data.splits, data.label_names
    check_splits(splits, args, config)
    check_metric(config.metric_for_best_model, label_names, "metric_for_best_model")
    if spec:
        check_metric(spec.metric, label_names, "search.metric")
    class_weights_tensor(args.class_weights, splits["train"]["label"], label_names)  # fail on bad weights before loading
    run_dir = begin(config, model_args, data_args, args)
    for line in data.report:
        logger.info("data: %s", line)

    tokenizer = load_tokenizer(model_args.tokenizer_name_or_path or model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
    prepared = Prepared(tokenizer, tokenize(splits, tokenizer, args.max_length), label_names)
    report: dict[str, Any] = {"label_names": label_names}
    if spec:
        (model_args, _, args, config), best = search_then_parse(argv, spec, run_dir, prepared)
        report["search"] = {"best_params": best, "trials": str(run_dir / "search" / "trials.json")}
    trainer, output, origin = fit(model_args, args, config, prepared, resume=args.resume)
    if not trainer.is_world_process_zero():
        return
    save_model(
        trainer.model, tokenizer, run_dir, kind="seq_cls", origin=origin, label_names=label_names, method=model_args.method,
        stage="classify", max_length=args.max_length, bf16=config.bf16,
    )
    report.update(training_summary(trainer, output))
    for split in ("validation", "test"):
        if split in splits:
            report[split] = score_split(trainer, prepared, split, splits[split]["text"], run_dir)
    if args.baseline != "none":
        report["baseline"] = evaluate_baseline(
            args.baseline, args.baseline_model, splits["test"].to_dict(), splits["train"].to_dict(), label_names,
            label_words=args.label_words, shots=args.baseline_shots, seed=config.seed,
            batch_size=config.per_device_eval_batch_size,
        )
        report["comparison"] = comparison(report["test"], report["baseline"])
        for metric, row in report["comparison"].items():
            logger.info("test %s: fine-tuned %.4f, %s baseline %.4f (%+.4f)", metric, row["fine_tuned"], args.baseline, row["baseline"], row["gain"])
    write_results(trainer, run_dir, report, data.report)
    logger.info("classification finished: %s", {s: {m: report[s][m] for m in COMPARED} for s in ("validation", "test") if s in report})
