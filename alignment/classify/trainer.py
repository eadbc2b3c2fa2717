"""``transformers.Trainer`` for classifiers: class-weighted cross-entropy, a separate learning rate for the head and
layer-wise learning-rate decay for the body."""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch.utils.data import SequentialSampler
from transformers import Trainer

from alignment.errors import RecipeError
from alignment.models import head_module_names, transformer_layers


def class_weights_tensor(spec: str | list[str] | None, train_labels: list[int], label_names: list[str]) -> torch.Tensor | None:
    """``auto``: n / (k * n_c) from the train split (mean weight over training rows is 1); a list: one weight per
    class in label order; ``None``: unweighted."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        counts = Counter(train_labels)
        missing = [name for i, name in enumerate(label_names) if counts[i] == 0]
        if missing:
            raise RecipeError(f"class_weights: auto needs every class in the train split; no rows for {missing}")
        n, k = len(train_labels), len(label_names)
        return torch.tensor([n / (k * counts[i]) for i in range(k)], dtype=torch.float32)
    if isinstance(spec, str):
        raise RecipeError(f"class_weights: expected 'auto' or a list of {len(label_names)} numbers, got {spec!r}")
    try:
        weights = [float(w) for w in spec]
    except ValueError:
        raise RecipeError(f"class_weights: expected numbers, got {spec}") from None
    if len(weights) != len(label_names) or any(w < 0 for w in weights) or not any(weights):
        raise RecipeError(
            f"class_weights: expected {len(label_names)} non-negative weights (not all zero) for {label_names}, got {spec}"
        )
    return torch.tensor(weights, dtype=torch.float32)


def weighted_cross_entropy(weights: torch.Tensor):
    """A ``compute_loss_func``: sum of weighted per-row losses over the rows of the whole accumulated batch, so
    gradient accumulation gives the same loss as one large batch."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        total = F.cross_entropy(logits.float(), labels, weight=weights.to(logits.device), reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss


def head_parameter_ids(model) -> set[int]:
    """Parameters of the task head (also inside a peft wrapper, where the head is a trained copy)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    heads = set(head_module_names(base))
    return {id(p) for name, p in base.named_parameters() if name.split(".")[0] in heads}


def layer_lr_scales(model, decay: float) -> dict[int, float]:
    """Learning-rate factor per parameter id: ``decay ** k`` for the transformer layer k places below the top one
    (the top layer: k = 0, factor 1); ``decay ** n_layers`` for what the model registers before its layers (the
    embeddings: token, position — BERT's, GPT-2's ``wpe`` — and their norm). Parameters after the layers — head,
    pooler, final norm — and a peft prompt encoder keep factor 1."""
    layers = transformer_layers(model)
    scales = {id(p): decay ** (len(layers) - 1 - i) for i, layer in enumerate(layers) for p in layer.parameters()}
    below = {}
    for name, p in model.named_parameters():
        if id(p) in scales:
            break
        if "prompt_encoder" not in name:
            below[id(p)] = decay ** len(layers)
    return scales | below


class ClassifierTrainer(Trainer):
    """Trainer with optional class weights (``weighted_cross_entropy``), ``head_learning_rate`` for the head and
    ``layer_lr_decay`` for the body's parameter groups; everything else is the stock Trainer."""

    def __init__(
        self,
        *args,
        class_weights: torch.Tensor | None = None,
        head_learning_rate: float | None = None,
        layer_lr_decay: float | None = None,
        **kwargs,
    ):
        if class_weights is not None:
            kwargs["compute_loss_func"] = weighted_cross_entropy(class_weights)
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate
        self.layer_lr_decay = layer_lr_decay

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation keeps the dataset's order: transformers also groups *eval* batches by length when
        ``train_sampling_strategy`` is ``group_by_length``, which reorders ``predict()``'s rows against the texts."""
        if eval_dataset is None or self.args.world_size > 1:
            return None  # distributed: accelerate shards in order and gathers back in order
        return SequentialSampler(eval_dataset)

    def create_optimizer(self, model=None):
        grouped = self.head_learning_rate is not None or self.layer_lr_decay is not None
        if grouped and self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(self._parameter_groups(opt_model), **kwargs)
        return super().create_optimizer(model)

    def _parameter_groups(self, model) -> list[dict]:
        """One group per (learning rate, decays or not): the head at ``head_learning_rate`` (default
        ``learning_rate``), the body at ``learning_rate`` times its layer's factor, weight decay as the args say."""
        head, decay = head_parameter_ids(model), set(self.get_decay_parameter_names(model))
        scales = layer_lr_scales(model, self.layer_lr_decay) if self.layer_lr_decay is not None else {}
        head_lr = self.head_learning_rate if self.head_learning_rate is not None else self.args.learning_rate
        groups: dict[tuple[float, bool], list] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                lr = head_lr if id(p) in head else self.args.learning_rate * scales.get(id(p), 1.0)
                groups.setdefault((lr, name in decay), []).append(p)
        return [
            {"params": params, "lr": lr, "weight_decay": self.args.weight_decay if decays else 0.0}
            for (lr, decays), params in groups.items()
        ]
