"""The model layer: one way to resolve, load, quantise, adapt, save and reload models for every stage."""

from alignment.models.args import ModelArguments
from alignment.models.loader import (
    ModelOrigin,
    head_module_names,
    load_model,
    load_tokenizer,
    load_trained,
    log_footprint,
    merge_adapter,
    parameter_counts,
    read_meta,
    save_model,
    transformer_layers,
)

__all__ = [
    "ModelArguments",
    "ModelOrigin",
    "head_module_names",
    "load_model",
    "load_tokenizer",
    "load_trained",
    "log_footprint",
    "merge_adapter",
    "parameter_counts",
    "read_meta",
    "save_model",
    "transformer_layers",
]
