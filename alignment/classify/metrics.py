"""Classification metrics: accuracy, macro and per-class precision/recall/F1, confusion matrix (JSON and PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(labels, predictions, label_names: list[str]) -> dict[str, float]:
    """Scalar metrics: ``accuracy``, ``{precision,recall,f1}_macro`` and ``{precision,recall,f1}_<label>``."""
    ids = list(range(len(label_names)))
    macro = precision_recall_fscore_support(labels, predictions, labels=ids, average="macro", zero_division=0)
    per_class = precision_recall_fscore_support(labels, predictions, labels=ids, average=None, zero_division=0)
    out = {"accuracy": float(accuracy_score(labels, predictions))}
    for metric, macro_value, values in zip(("precision", "recall", "f1"), macro, per_class):
        out[f"{metric}_macro"] = float(macro_value)
        out.update({f"{metric}_{name}": float(v) for name, v in zip(label_names, values)})
    return out


def confusion(labels, predictions, label_names: list[str]) -> list[list[int]]:
    """Rows are true labels, columns predicted labels, both in label order."""
    return confusion_matrix(labels, predictions, labels=list(range(len(label_names)))).tolist()


def plot_confusion(matrix: list[list[int]], label_names: list[str], path: str | Path, title: str) -> Path:
    """Save the confusion matrix as a PNG (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 2.5 + 0.6 * len(label_names)
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=label_names)
    display.plot(cmap="Blues", colorbar=False, xticks_rotation=45 if len(label_names) > 4 else "horizontal")
    display.figure_.set_size_inches(size, size)
    display.ax_.set_title(title)
    display.figure_.tight_layout()
    display.figure_.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(display.figure_)
    return Path(path)


def logits_of(predictions: Any) -> np.ndarray:
    """The logits from a Trainer prediction (models may return extra outputs after them)."""
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


class EvalMetrics:
    """``compute_metrics`` for the Trainer; keeps the confusion matrix of the latest evaluation."""

    def __init__(self, label_names: list[str]):
        self.label_names = label_names
        self.last_confusion: list[list[int]] | None = None

    def __call__(self, eval_prediction) -> dict[str, float]:
        predicted = logits_of(eval_prediction.predictions).argmax(-1)
        self.last_confusion = confusion(eval_prediction.label_ids, predicted, self.label_names)
        return classification_metrics(eval_prediction.label_ids, predicted, self.label_names)
