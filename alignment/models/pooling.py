"""How a sequence classifier (or reward model) turns an encoder's hidden states into the vector its head reads.

``model``: the architecture's own choice (BERT: the tanh-projected [CLS] token; decoder LMs: the last non-pad token).
``mean``: the attention-masked mean of the final hidden states, the pooling sentence-transformers encoders such as
all-MiniLM-L6-v2 are pretrained with; their [CLS] pooler was never trained for a sentence-level task.
``auto``: what the run folder recorded, else the checkpoint's own sentence-transformers pooling config
(``1_Pooling/config.json``), else ``model``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from alignment.errors import ModelError

Pooling = Literal["auto", "model", "mean"]


class MaskedMeanPooler(torch.nn.Module):
    """Drop-in for a BERT-style ``pooler``: the mean of the hidden states over the non-pad positions of the batch.

    The backbone calls its pooler with the hidden states only; :func:`apply_pooling` hands it the attention mask
    through a forward pre-hook on the backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.attention_mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.attention_mask is None:
            return hidden_states.mean(dim=1)
        mask = self.attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def resolve_pooling(requested: str, checkpoint: str | Path, meta: dict[str, Any]) -> str:
    """``model`` or ``mean`` for ``requested`` (see the module docstring for ``auto``)."""
    if requested != "auto":
        return requested
    if meta.get("pooling"):
        return meta["pooling"]
    st_config = Path(checkpoint) / "1_Pooling" / "config.json"
    if st_config.is_file() and json.loads(st_config.read_text()).get("pooling_mode_mean_tokens"):
        return "mean"
    return "model"


def apply_pooling(model, pooling: str) -> None:
    """Make ``model`` (a sequence classifier, before any adapter wraps it) pool as ``pooling`` says.

    ``mean`` replaces the backbone's ``pooler`` (a BERT-style encoder's): its weights are dropped, and a run folder
    records ``pooling: mean`` so every reload pools the same way."""
    if pooling == "model":
        return
    backbone = getattr(model, model.base_model_prefix, None)
    if backbone is None or getattr(backbone, "pooler", None) is None:
        raise ModelError(
            f"pooling: {pooling} needs an encoder with a pooler (BERT-style); {type(model).__name__} reads its "
            "own positions — use pooling: model"
        )
    pooler = MaskedMeanPooler()
    backbone.pooler = pooler

    def hand_over_mask(module, args, kwargs):
        pooler.attention_mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    backbone.register_forward_pre_hook(hand_over_mask, with_kwargs=True)
