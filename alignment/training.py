"""What every training stage shares: recipe parsing with stage defaults, device/precision defaults, checkpoint
discovery that skips half-written checkpoints, resume, a guard that stops on a NaN/Inf loss, and an exponential
moving average of the trained weights."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import TrainerCallback, TrainingArguments, set_seed

from alignment.config import parse_recipe, to_dict
from alignment.data import DataArguments
from alignment.errors import AlignmentError, RecipeError
from alignment.run import configure_trackers, default_output_dir, start_run, write_json

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 instructions (avx512_bf16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_defaults() -> dict[str, Any]:
    """Trainer defaults for this machine: CPU unless CUDA is present; bf16 where the hardware does it natively;
    no gradient checkpointing (it costs ~30% speed and is only worth it when memory runs short); logged losses are
    the real ones (transformers' default logs the window's average in place of a NaN/Inf step loss,
    hiding it from :class:`NonFiniteLossGuard`)."""
    cuda = torch.cuda.is_available()
    bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_fast_bf16()
    return {
        "use_cpu": not cuda,
        "bf16": bf16,
        "gradient_checkpointing": False,  # trl's default is True
        "report_to": "wandb",  # offline unless an API key is configured (alignment.run.configure_trackers)
        "project": "alignment",  # trackio's project
        "logging_steps": 5,
        "save_total_limit": 2,
        "dataloader_num_workers": 0,
        "logging_nan_inf_filter": False,
    }


def score_labelled_positions_only() -> None:
    """Make trl's fused LM head project only the positions that carry a label, on CPU too.

    trl (1.16) scores only labelled positions where its Triton kernel runs (CUDA/XPU) and projects every position
    elsewhere, to keep tile shapes fixed for compiled backends. On CPU, in eager mode, that spends the LM head (a fifth
    of SmolLM2's FLOPs) and its softmax over the vocabulary on prompt and padding tokens whose loss is discarded.
    The result is the same either way. Idempotent; a trl without the hook is left as it is."""
    from trl.trainer import utils

    original = getattr(utils, "_use_triton", None)
    if original is None or getattr(original, "alignment_patched", False):
        return

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    compact.alignment_patched = True
    compact.__wrapped__ = original  # what the patch replaced (tests restore it)
    utils._use_triton = compact


# Defaults the trl-based stages share (each adds its own on top): one epoch, evaluate and save each epoch, cosine
# schedule with 5% warm-up, sequences up to 256 tokens.
TRAINER_DEFAULTS = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "max_length": 256,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
}
# Preference stages hold out 10% for evaluation, and an empty prompt/chosen/rejected is a bad row (named with its
# line), not silently dropped.
PREFERENCE_DEFAULTS = {"validation_split": 0.1, "drop_empty": False}


@dataclass
class ResumeArguments:
    resume: bool = field(default=True, metadata={"help": "Continue from the last complete checkpoint in output_dir."})


@dataclass
class WeightAveragingArguments:
    weight_averaging: Literal["none", "ema"] = field(
        default="none",
        metadata={"help": "ema: the final model is the exponential moving average of the trained weights over the "
                  "steps (evaluations during training score the raw weights)."},
    )
    ema_decay: float = field(
        default=0.999, metadata={"help": "EMA decay per optimizer step (0.999 averages over ~1,000 steps)."}
    )

    def __post_init__(self) -> None:
        """ValueErrors here reach the user as RecipeErrors naming the recipe file (also for search trials' values)."""
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"key 'ema_decay': expected a number between 0 and 1 (e.g. 0.999), got {self.ema_decay}")

    def check_weight_averaging(self, load_best_model_at_end: bool) -> None:
        if self.weight_averaging == "ema" and load_best_model_at_end:
            raise RecipeError(
                "weight_averaging: ema and load_best_model_at_end: true choose different final models; set one of them"
            )

    def callbacks(self) -> list[TrainerCallback]:
        return [WeightAverage(self.ema_decay)] if self.weight_averaging == "ema" else []


def stage_defaults(stage: str, classes: tuple[type, ...], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a stage's recipe starts from: device defaults < the stage's own; ``output_dir`` runs/<stage>-<timestamp>."""
    merged = {**device_defaults(), "output_dir": default_output_dir(stage), **(defaults or {})}
    names = {f for c in classes for f in c.__dataclass_fields__}
    return {k: v for k, v in merged.items() if k in names}


def stage_keys(stage: str, classes: tuple[type, ...], defaults: dict[str, Any] | None = None):
    """For ``stage_main(keys=...)``: the classes and effective defaults ``--help`` lists."""
    return lambda: (classes, stage_defaults(stage, classes, defaults))


def parse_stage(argv: list[str], stage: str, classes: tuple[type, ...], defaults: dict[str, Any] | None = None):
    """Parse a stage recipe: device defaults < stage defaults < YAML < flags. ``output_dir`` defaults to
    ``runs/<stage>-<timestamp>``."""
    merged = stage_defaults(stage, classes, defaults)
    parsed = parse_recipe(argv, classes, defaults=merged, check_paths=("dataset_path", "validation_path", "test_path"))
    # ``label_names`` is the data layer's class names; transformers' TrainingArguments has a field of that name for
    # the *input keys* holding labels, which, if set to class names, silently drops every eval loss and metric.
    if any(isinstance(p, DataArguments) for p in parsed):
        for p in parsed:
            if isinstance(p, TrainingArguments):
                p.label_names = None
    return parsed


def begin(training_args, *configs) -> Path:
    """Create the run folder (writable, enough disk), write the resolved recipe, prepare the trackers, and seed every RNG
    with the recipe's ``seed`` (so a new head is initialised alike run after run, in or out of one process)."""
    set_seed(training_args.seed)
    run_dir = start_run(training_args.output_dir, to_dict(*configs, training_args), is_main=training_args.process_index == 0)
    configure_trackers(training_args.report_to, run_dir)
    return run_dir


def is_complete_checkpoint(path: Path) -> bool:
    """A checkpoint is usable only if its trainer state and weights were fully written (a kill mid-save leaves
    some of them missing or truncated)."""
    if not (path / "trainer_state.json").is_file():
        return False
    weights = [path / f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        return False
    try:
        import json

        json.loads((path / "trainer_state.json").read_text())
        for w in weights:
            if w.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(w), "pt") as f:
                    f.keys()
    except Exception:  # any parse failure means a torn write: the checkpoint is skipped, never loaded
        return False
    return True


def last_complete_checkpoint(run_dir: str | Path) -> str | None:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    )
    for step, path in reversed(found):
        if is_complete_checkpoint(path):
            return str(path)
        logger.warning("Skipping incomplete checkpoint %s (written when the run was interrupted)", path)
    return None


def resume_from(run_dir: str | Path, resume: bool) -> str | None:
    """The checkpoint to resume from (``None`` for a fresh start); logged so a restart is never silent."""
    if not resume:
        return None
    ckpt = last_complete_checkpoint(run_dir)
    if ckpt:
        logger.info("Resuming from %s", ckpt)
    return ckpt


class NonFiniteLossGuard(TrainerCallback):
    """Stop training at the first NaN/Inf loss or gradient norm, naming the step and the usual causes; the last good
    checkpoint stays. Every checkpoint step is also a logging step, so no checkpoint is written unchecked."""

    def on_step_end(self, args, state, control, **kwargs):
        control.should_log = control.should_log or control.should_save

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, name in (("loss", "Loss"), ("grad_norm", "Gradient norm")):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise AlignmentError(
                    f"{name} became {value} at step {state.global_step}. Likely causes: learning rate too high, fp16 "
                    "overflow (use bf16 or fp32), empty or all-masked batches, or bad labels. The last good "
                    f"checkpoint in {args.output_dir} is kept; lower learning_rate and re-run to resume from it."
                )


class WeightAverage(TrainerCallback):
    """Exponential moving average of the trainable parameters, copied into the model when training ends.

    After the t-th optimizer step of the average, ``avg <- avg + w_t * (param - avg)`` with
    ``w_t = (1 - d) / (1 - d**t)``: the bias-corrected EMA, i.e. exactly the weighted mean of the weights after
    steps 1..t with weights ``d**(t - s)``. The initial weights take no part in it, and the decay is not capped
    during a warm-up, so a short run averages over ~1/(1 - d) steps as asked. Only trainable parameters are averaged (for LoRA
    and QLoRA, the adapters and head), in their own dtype and device. Each checkpoint holds the average
    (``weight_average.safetensors``), so a resumed run continues the same average. (torch's ``AveragedModel`` deep-
    copies the whole module, 4-bit layers included; this keeps only the trained tensors.)"""

    FILE = "weight_average.safetensors"

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.params: dict[str, torch.Tensor] = {}
        self.average: dict[str, torch.Tensor] = {}
        self.start = 0  # the step the average began at (after a resume without a saved average)

    def path(self, args, state) -> Path:
        """Where the checkpoint of the current step holds the average."""
        return Path(args.output_dir) / f"checkpoint-{state.global_step}" / self.FILE

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        saved = self.path(args, state)
        self.start = 0
        if state.global_step and saved.is_file():
            from safetensors.torch import load_file

            loaded = load_file(str(saved))
            self.average = {n: loaded[n].to(p.device, p.dtype) for n, p in self.params.items()}
            logger.info("Weight average restored from %s", saved)
        else:
            if state.global_step:
                logger.warning("No weight average in the resumed checkpoint: averaging starts at step %d", state.global_step)
                self.start = state.global_step
            self.average = {n: p.detach().clone() for n, p in self.params.items()}

    def on_step_end(self, args, state, control, **kwargs):
        t = state.global_step - self.start
        weight = (1.0 - self.decay) / (1.0 - self.decay**t)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.average.values()), [p.detach() for p in self.params.values()], weight)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            from safetensors.torch import save_file

            save_file({n: t.contiguous() for n, t in self.average.items()}, str(self.path(args, state)))

    def on_train_end(self, args, state, control, **kwargs):
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.average[name])
        logger.info("Final weights: exponential moving average (decay %g) over %d steps", self.decay, state.global_step)


def final_evaluation(trainer) -> dict[str, Any]:
    """Eval metrics at the final step: reused from the log when training just evaluated, else computed once."""
    history = [row for row in trainer.state.log_history if "eval_loss" in row]
    if history and history[-1].get("step") == trainer.state.global_step:
        return {k: v for k, v in history[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def write_results(trainer, run_dir: Path, metrics: dict[str, Any], data_report: list[str]) -> None:
    """Main process only: ``metrics.json`` (final numbers + data report) and ``log_history.json`` (every log row)."""
    if trainer.is_world_process_zero():
        write_json(run_dir / "metrics.json", {**metrics, "data_report": data_report})
        write_json(run_dir / "log_history.json", trainer.state.log_history)


def final_metrics(metrics: dict[str, Any], trainer=None) -> dict[str, Any]:
    """Add perplexity next to any eval loss, and the trainer's step count and world size."""
    out = dict(metrics)
    if trainer is not None:
        out.update(global_step=trainer.state.global_step, world_size=trainer.args.world_size)
    for key in [k for k in metrics if k.endswith("eval_loss")]:
        try:
            out[key.replace("loss", "perplexity")] = math.exp(metrics[key])
        except OverflowError:
            out[key.replace("loss", "perplexity")] = float("inf")
    return out
