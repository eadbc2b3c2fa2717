"""Recipe keys for the model layer: trl's ``ModelConfig`` plus the adaptation method and what trl lacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trl import ModelConfig

from alignment.models.builtin import check_source
from alignment.models.pooling import Pooling

Method = Literal["full", "freeze", "lora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning"]
PEFT_METHODS = ("lora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning")


@dataclass
class ModelArguments(ModelConfig):
    """trl's ModelConfig (model path, dtype, LoRA and bitsandbytes keys) plus:

    ``method`` picks the adaptation: ``full`` fine-tuning, ``freeze`` (frozen backbone, trained head), ``lora``,
    ``qlora`` (= ``lora`` on a 4-bit NF4 base), ``ia3``, ``prompt_tuning``, ``prefix_tuning``, ``p_tuning``.
    ``use_peft`` and ``load_in_4bit`` are derived from it.
    """

    model_name_or_path: str | None = field(
        default="builtin:smollm2-135m-instruct",
        metadata={"help": "builtin:<name>, a local folder, a run folder, or a hub id."},
    )
    method: Method = field(default="lora", metadata={"help": "Adaptation method (see class docstring)."})
    freeze_layers: int = field(
        default=0, metadata={"help": "Freeze the embeddings and the first N transformer layers (full fine-tuning)."}
    )
    freeze_embeddings: bool = field(
        default=False,
        metadata={"help": "Freeze the input token embeddings (full fine-tuning; implied by freeze_layers > 0). Saves "
                  "their gradient, optimiser state and update, about half of a small encoder's parameters."},
    )
    pooling: Pooling = field(
        default="auto",
        metadata={"help": "Classifier/reward-model input: auto, model (the architecture's: BERT [CLS], LMs last token) "
                  "or mean (masked mean, as sentence-transformers encoders are pretrained). See alignment/models/pooling.py."},
    )
    bnb_4bit_compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={"help": "Compute dtype of 4-bit layers: auto is bfloat16 on a GPU that does bf16, else the model's dtype."},
    )
    num_virtual_tokens: int = field(default=16, metadata={"help": "Virtual tokens for prompt/prefix/p-tuning."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Defaults to the model's."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the hub."})

    def __post_init__(self):
        for key in ("model_name_or_path", "tokenizer_name_or_path"):
            if getattr(self, key):
                check_source(getattr(self, key), key)
        if self.method == "qlora":
            self.load_in_4bit = True
        if self.load_in_4bit and self.method == "full":
            raise ValueError("a 4-bit base cannot be fully fine-tuned; use method: qlora (or lora/ia3 with load_in_4bit)")
        self.use_peft = self.method in PEFT_METHODS
        super().__post_init__()
