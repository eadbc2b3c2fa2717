"""Recipe keys of the classification stage (besides the model, data and ``TrainingArguments`` keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from alignment.training import WeightAveragingArguments


@dataclass
class ClassifyArguments(WeightAveragingArguments):
    max_length: int = field(default=128, metadata={"help": "Tokens per text; longer texts are truncated (tokenised once)."})
    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the new classification head; the pretrained body uses learning_rate."},
    )
    layer_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay, in (0, 1]: the top transformer layer (and what sits above it "
            "besides the head: pooler, final norm) trains at learning_rate, each layer below at this factor times "
            "the one above, the input embeddings one step below the bottom layer. Default: one rate for the body."
        },
    )
    class_weights: str | list[str] | None = field(
        default=None,
        metadata={
            "help": "Class-weighted cross-entropy: 'auto' (n_rows / (n_classes * n_rows_of_class), from the train "
            "split) or one weight per class in label order, e.g. [1.0, 3.0]. Default: unweighted."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement of metric_for_best_model."},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "How much metric_for_best_model must improve to count as an improvement."}
    )
    resume: bool = field(default=True, metadata={"help": "Continue from the last complete checkpoint in output_dir."})
    search: dict | None = field(
        default=None,
        metadata={
            "help": "Hyperparameter search with optuna: {method: grid|random|tpe, n_trials, metric, direction: "
            "maximize|minimize, seed, pruner: median|none, space: {key: {type: loguniform|uniform|int|categorical, "
            "low, high, step, choices}}}. The best configuration is retrained as the final model."
        },
    )
    baseline: Literal["none", "zero_shot", "few_shot"] = field(
        default="none",
        metadata={
            "help": "Also evaluate an instruct LM (baseline_model) on the test split by the log-likelihood of each "
            "label word, and report it next to the fine-tuned numbers."
        },
    )
    baseline_model: str = field(
        default="builtin:smollm2-135m-instruct", metadata={"help": "Instruct LM for the baseline."}
    )
    baseline_shots: int = field(default=2, metadata={"help": "few_shot: training examples per class in the prompt."})
    label_words: dict | None = field(
        default=None,
        metadata={"help": "Baseline: the word the LM should answer for each label name (default: the name itself)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer_lr_decay is not None and not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"key 'layer_lr_decay': expected a factor in (0, 1], got {self.layer_lr_decay}")
