"""Held-out scoring while a policy trains: the over-optimisation monitor of PPO and DPO.

As in Gao, Schulman & Hilton (2022), a fixed set of held-out prompts is answered by the current policy and scored by
the *proxy* reward (the reward model learnt from the raters, which the policy is optimised against) and, where one is
given, by the *gold* reward (the judge the result is trusted by), next to the KL of those answers to the reference
policy. Proxy rising while gold falls is reward hacking; the report plots both against KL. PPO scores every
``eval_steps`` and DPO at the end of every epoch, both once before the first update too. Rows go to ``eval.jsonl``
in the run folder and to the trackers as ``heldout/*``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.generation import SamplingArguments, generate, response_logprobs
from alignment.rewards import RewardFn, check_reward_spec, resolve_reward
from alignment.run import append_jsonl, truncate_jsonl
from alignment.stats import bootstrap_ci

EVAL_FILE = "eval.jsonl"


@dataclass
class MonitorArguments:
    """Recipe keys of the held-out monitor (PPO and DPO)."""

    eval_prompts: str | None = field(
        default=None, metadata={"help": "Held-out prompts (a file with a prompt column) scored while training; null: no monitor."}
    )
    eval_max_prompts: int | None = field(default=32, metadata={"help": "Use at most this many of them (null: all)."})
    proxy_reward: str | None = field(
        default=None, metadata={"help": "Proxy reward spec scored on them (DPO: the learnt RM; PPO default: its training reward)."}
    )
    gold_reward: str | None = field(
        default=None, metadata={"help": "Gold reward spec scored on them: the judge the result is trusted by."}
    )
    # PPO answers the prompts as it samples its rollouts; these three are for stages that do not sample (DPO).
    eval_max_new_tokens: int = field(default=32, metadata={"help": "DPO: tokens per held-out answer."})
    eval_temperature: float = field(default=0.7, metadata={"help": "DPO: sampling temperature of the held-out answers."})
    eval_use_chat_template: bool = field(
        default=True, metadata={"help": "DPO: render held-out prompts through the chat template (false: continue the text)."}
    )

    def __post_init__(self) -> None:
        if self.eval_prompts is not None and not Path(self.eval_prompts).is_file():
            raise ValueError(f"eval_prompts: no such file: {self.eval_prompts}")
        if (self.proxy_reward or self.gold_reward) and self.eval_prompts is None:
            raise ValueError("proxy_reward and gold_reward are scored on eval_prompts: set eval_prompts too")
        for key in ("proxy_reward", "gold_reward"):
            if getattr(self, key):
                try:
                    check_reward_spec(getattr(self, key), key)
                except RecipeError as exc:  # as a ValueError the recipe parser names the recipe file
                    raise ValueError(str(exc)) from None


@dataclass
class Monitor:
    """The held-out prompts and the judges that score answers to them; :meth:`record` writes one ``eval.jsonl`` row."""

    prompts: list[Any]
    judges: dict[str, RewardFn]
    path: Path
    columns: dict[str, list] = field(default_factory=dict)  # the prompts' extra columns, for reward functions

    @classmethod
    def build(cls, args: MonitorArguments, run_dir: Path, proxy: RewardFn | None = None,
              extra_columns: list[str] | tuple[str, ...] = ()) -> Monitor | None:
        """None without ``eval_prompts``; ``proxy`` is used when the recipe names no ``proxy_reward``;
        ``extra_columns`` (the training data's) are read from the held-out prompts too."""
        if args.eval_prompts is None:
            return None
        data_args = DataArguments(dataset_path=args.eval_prompts, max_samples=args.eval_max_prompts, extra_columns=list(extra_columns))
        data = load_data(data_args, "prompts")
        judges: dict[str, RewardFn] = {}
        if args.proxy_reward or proxy is not None:
            judges["proxy"] = resolve_reward(args.proxy_reward) if args.proxy_reward else proxy
        if args.gold_reward:
            judges["gold"] = resolve_reward(args.gold_reward)
        rows = data.splits["train"]
        return cls(list(rows["prompt"]), judges, run_dir / EVAL_FILE, {c: list(rows[c]) for c in extra_columns})

    def record(self, step: int, responses: list[str], kl: np.ndarray) -> dict[str, Any]:
        """Score ``responses`` (one per prompt) with every judge; append the row and return it."""
        row: dict[str, Any] = {"step": step, "num_prompts": len(responses), "kl": float(np.mean(kl)), "kl_ci95": bootstrap_ci(kl, 1000)}
        for name, judge in self.judges.items():
            scores = np.asarray(judge(self.prompts, responses, **self.columns), dtype=float)
            row[f"{name}_reward"] = float(scores.mean())
            row[f"{name}_reward_ci95"] = bootstrap_ci(scores, 1000)
        append_jsonl(self.path, [row])
        return row


def tracker_metrics(row: dict[str, Any]) -> dict[str, float]:
    """A monitor row as tracker scalars: ``heldout/proxy_reward``, ``heldout/gold_reward``, ``heldout/kl``."""
    return {f"heldout/{k}": v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}


class HeldoutCallback(TrainerCallback):
    """The monitor in a transformers Trainer (DPO): before training and at the end of every epoch, the peft policy
    answers the held-out prompts; KL is against the same model with its adapter disabled (the reference)."""

    def __init__(self, monitor: Monitor, tokenizer, args: MonitorArguments, seed: int = 0) -> None:
        self.monitor, self.tokenizer, self.use_chat_template = monitor, tokenizer, args.eval_use_chat_template
        self.sampling = SamplingArguments(max_new_tokens=args.eval_max_new_tokens, temperature=args.eval_temperature, top_p=1.0, seed=seed)
        self.trainer = None  # set after the trainer is built: logging and autocast go through it

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            truncate_jsonl(self.monitor.path, state.global_step)
            if state.global_step == 0:
                self.score(state.global_step, model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.score(state.global_step, model)

    @torch.no_grad()
    def score(self, step: int, model) -> None:
        prompts, tok = self.monitor.prompts, self.tokenizer
        side, autocast = tok.padding_side, self.trainer.accelerator.autocast() if self.trainer else nullcontext()
        with autocast:
            try:
                answers = [o[0] for o in generate(model, tok, prompts, self.sampling, use_chat_template=self.use_chat_template)]
            finally:
                tok.padding_side = side
            texts, finished = [a["text"] for a in answers], [a["finished"] for a in answers]
            logp = np.asarray(response_logprobs(model, tok, prompts, texts, self.use_chat_template, finished))
            with model.disable_adapter():
                ref_logp = np.asarray(response_logprobs(model, tok, prompts, texts, self.use_chat_template, finished))
        row = self.monitor.record(step, texts, logp - ref_logp)
        if self.trainer is not None:
            self.trainer.log(tracker_metrics(row))
