"""Supervised fine-tuning of a causal LM: ``python -m alignment.sft recipe.yaml [--key value ...]``.

Data comes through the data layer (messages, prompt–completion, Alpaca, plain text); the model through the model
layer (full, LoRA, QLoRA, prompt/prefix tuning). Loss is on assistant/completion tokens only by default: chat rows
are split into the conversation so far (prompt) and the final assistant turn (completion), which ends with EOS, so
the model learns to stop. Re-running the same command resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.generation import SamplingArguments, generate
from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.run import stage_main
from alignment.training import (
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

# Batches of similar length: on the shipped chat data a random batch is ~25% padding, a length-grouped one ~3%
# (86 -> 104 real tokens/s on this CPU in a 12-step run of the SFT demo; README "SFT on CPU").
DEFAULTS = {**TRAINER_DEFAULTS, "learning_rate": 2e-4, "train_sampling_strategy": "group_by_length"}


@dataclass
class SFTStageArguments(ResumeArguments):
    num_samples: int = field(default=3, metadata={"help": "Validation prompts generated from at each evaluation."})
    sample_max_new_tokens: int = field(default=48, metadata={"help": "Length of the logged sample generations."})


def split_last_turn(row: dict) -> dict:
    """``messages`` → conversational ``prompt`` (all turns before the last) + ``completion`` (the last assistant turn)."""
    messages = row["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def completion_only_view(dataset):
    """Chat data in prompt–completion form so trl computes the loss on the final assistant turn only."""
    if "messages" not in dataset.column_names:
        return dataset
    if any(m[-1]["role"] != "assistant" for m in dataset["messages"]):
        raise RecipeError("completion-only loss needs every conversation to end with an assistant turn")
    return dataset.map(split_last_turn, remove_columns=dataset.column_names)


class SampleGenerations(TrainerCallback):
    """At each evaluation, generate from a few validation prompts; write them to ``samples.jsonl`` (and wandb)."""

    def __init__(self, tokenizer, prompts: list, run_dir: Path, max_new_tokens: int):
        self.tokenizer, self.prompts, self.path = tokenizer, prompts, run_dir / "samples.jsonl"
        self.sampling = SamplingArguments(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=len(prompts) or 1)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.prompts or model is None or not state.is_world_process_zero:
            return
        outputs = generate(model, self.tokenizer, self.prompts, self.sampling)
        rows = [
            {"step": state.global_step, "prompt": p, "completion": o[0]["text"], "finished": o[0]["finished"]}
            for p, o in zip(self.prompts, outputs)
        ]
        with self.path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        self.tokenizer.padding_side = "right"
        _log_wandb_table("samples", rows)


def _log_wandb_table(name: str, rows: list[dict]) -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None and rows:
        cols = list(rows[0])
        wandb.log({name: wandb.Table(columns=cols, data=[[str(r[c]) for c in cols] for r in rows])})


def prompt_of(row: dict):
    """The prompt part of an SFT row, for sample generations."""
    if "prompt" in row:
        return row["prompt"]
    if "messages" in row:
        return row["messages"][:-1]
    return row["text"][: len(row["text"]) // 2]


CLASSES = (ModelArguments, DataArguments, SFTStageArguments, SFTConfig)


@stage_main(keys=stage_keys("sft", CLASSES, DEFAULTS))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.sft RECIPE.yaml [--key value ...]"""
    model_args, data_args, stage_args, config = parse_stage(argv, "sft", CLASSES, DEFAULTS)
    data = load_data(data_args, "sft")
    train, evaluation = data.splits["train"], data.splits.get("validation")
    if evaluation is None and config.eval_strategy != "no":
        raise RecipeError(
            "SFT evaluates on a validation split: set validation_path or validation_split, or eval_strategy: no"
        )
    if config.completion_only_loss is not False and not config.assistant_only_loss:
        train = completion_only_view(train)
        evaluation = completion_only_view(evaluation) if evaluation is not None else None
    run_dir = begin(config, model_args, data_args, stage_args)
    for line in data.report:
        logger.info("data: %s", line)

    tokenizer = load_tokenizer(model_args.tokenizer_name_or_path or model_args.model_name_or_path)
    model, origin = load_model(model_args, "causal", tokenizer)
    score_labelled_positions_only()
    sample_prompts = [prompt_of(r) for r in (evaluation or train).select(range(min(stage_args.num_samples, len(evaluation or train))))]
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=[NonFiniteLossGuard(), SampleGenerations(tokenizer, sample_prompts, run_dir, stage_args.sample_max_new_tokens)],
    )
    result = trainer.train(resume_from_checkpoint=resume_from(run_dir, stage_args.resume))
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(final_evaluation(trainer))
    metrics = final_metrics(metrics, trainer)
    if trainer.is_world_process_zero():
        save_model(trainer.model, tokenizer, run_dir, kind="causal", origin=origin, method=model_args.method, stage="sft")
    write_results(trainer, run_dir, metrics, data.report)
    logger.info("SFT finished: %s", {k: v for k, v in metrics.items() if "loss" in k or "perplexity" in k})


if __name__ == "__main__":
    raise SystemExit(main())
