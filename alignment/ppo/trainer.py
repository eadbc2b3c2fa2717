"""The PPO loop for RLHF: rollouts, scoring, reward shaping, advantages (GAE or a critic-free estimator), clipped
updates, logging and checkpoints.

The math lives in :mod:`alignment.ppo.core`; the single-base model (policy, reference, value, reward adapters) in
:mod:`alignment.ppo.modeling`; the reward in :mod:`alignment.ppo.rewards`. ``accelerate`` places the model and
runs the same code on one or many processes (each process rolls out ``batch_size`` responses to prompts of its own).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from transformers import GenerationConfig, get_scheduler

from alignment.config import looks_local, to_dict
from alignment.data import DataArguments, load_data
from alignment.errors import AlignmentError, RecipeError
from alignment.generation import render_prompt
from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.models.loader import is_adapter, peft_config
from alignment.monitor import EVAL_FILE, Monitor, MonitorArguments, tracker_metrics
from alignment.ppo import checkpoint
from alignment.ppo.args import PPOConfig
from alignment.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    RunningMoments,
    aggregate_loss,
    compute_gae,
    discounted_returns,
    entropy_from_logits,
    explained_variance,
    group_advantages,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    response_mask,
    shape_rewards,
    value_loss,
)
from alignment.ppo.modeling import ActorCritic
from alignment.ppo.rewards import load_reward
from alignment.rewards import WeightedReward, check_reward_spec
from alignment.run import append_jsonl, truncate_jsonl, write_json
from alignment.training import ResumeArguments, begin, parse_stage, resume_from

logger = logging.getLogger(__name__)

# Stage defaults under the recipe: alignment.grpo is this stage with GRPO's (DeepSeekMath: beta 0.04, one policy
# update per batch of G answers per prompt).
PPO_DEFAULTS = {"method": "qlora", "save_steps": 50, "adam_epsilon": 1e-5}
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": PPO_DEFAULTS,
    "grpo": {**PPO_DEFAULTS, "advantage_estimator": "grpo", "num_generations": 4, "ppo_epochs": 1, "num_mini_batches": 1,
             "kl_coef": 0.04},
}
CLASSES = (ModelArguments, DataArguments, ResumeArguments, MonitorArguments, PPOConfig)
PPO_METHODS = ("lora", "qlora")


@dataclass
class Rollout:
    """One batch of sampled responses and what PPO derives from it; per-token tensors are [batch, R]."""

    input_ids: torch.Tensor  # [batch, P + R]: left-padded prompt, then the right-padded response; a prompt's
    # num_generations responses are adjacent rows
    attention_mask: torch.Tensor
    prompt_length: int  # P
    response_ids: torch.Tensor
    mask: torch.Tensor  # 1.0 on response tokens up to and including the first EOS
    logp: torch.Tensor  # log pi_old(a_t | s_t) at the sampling temperature
    ref_logp: torch.Tensor
    values: torch.Tensor  # zeros without a value function
    entropy: torch.Tensor
    scores: torch.Tensor  # [batch] raw reward-source scores
    score_terms: torch.Tensor  # [batch] the normalised score as it enters the shaped reward (before any whitening)
    rewards: torch.Tensor  # shaped per-token rewards (normalised score at the last token, -beta * KL per token)
    advantages: torch.Tensor  # per token: whitened GAE, or the estimator's (a sequence's advantage on each of its tokens)
    returns: torch.Tensor  # GAE's value targets (zeros without a value function)
    kl: torch.Tensor  # [batch] KL(pi || pi_ref) summed over each response
    has_eos: torch.Tensor  # [batch] bool
    prompts: list[Any]
    responses: list[str]
    components: dict[str, torch.Tensor]  # [batch] raw score of each reward term, by name


# ------------------------------------------------------------------------------------------------------ helpers
def sampling_config(config: PPOConfig, tokenizer) -> GenerationConfig:
    """Sampling from softmax(logits / temperature) and nothing else, the distribution PPO's log-probs assume.

    ``generate`` fills every option left unset from the checkpoint's own ``generation_config``; instruct models ship
    repetition penalties, min-p, typical-p or n-gram bans that would make the sampler another policy. So each option
    is set here to its neutral value (transformers' defaults, min_p 0, min_new_tokens 0, top_k off)."""
    neutral = {k: v for k, v in GenerationConfig._get_default_generation_params().items() if k not in ("max_length", "min_length")}
    return GenerationConfig(**{
        **neutral, "do_sample": True, "temperature": config.temperature, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
        "min_new_tokens": 0, "max_new_tokens": config.response_length, "return_dict_in_generate": True,
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
    })


def kl_controller(config: PPOConfig) -> KLController:
    if config.adaptive_kl:
        return AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
    return FixedKLController(config.kl_coef)


def trackers(report_to: list[str]) -> list[str]:
    return [t for t in report_to if t != "none"]


# ------------------------------------------------------------------------------------------------------ trainer
def check_method(model_args: ModelArguments) -> None:
    if model_args.method not in PPO_METHODS:
        raise RecipeError(f"PPO trains LoRA adapters on one shared base: method must be lora or qlora, got {model_args.method}")


def check_rewards(config: PPOConfig, data_args: DataArguments) -> None:
    """Before any model loads: every reward term names a reward (a run folder that exists, with its label for a
    classifier; a function that imports and takes its kwargs), and the data keeps the columns the functions need."""
    if config.reward_model is not None and config.reward_label is None:
        if looks_local(config.reward_model) and not Path(config.reward_model).exists():
            raise RecipeError(f"reward_model: no such folder: {config.reward_model}")
        return
    key = "rewards" if config.rewards else "reward_function" if config.reward_function else "reward_model"
    for i, term in enumerate(config.reward_terms()):
        where = f"{key}[{i}]" if config.rewards else key
        check_reward_spec(term.spec, where, term.kwargs, columns=data_args.extra_columns or [])


class PPOTrainer:
    """Build with :meth:`from_recipe`; :meth:`train` runs (or resumes) the steps, :meth:`save_final` then writes the
    policy adapter to the run folder."""

    def __init__(
        self,
        config: PPOConfig,
        model_args: ModelArguments,
        prompts: list[Any],
        accelerator: Accelerator,
        run_dir: Path,
        *,
        resume: bool = True,
        monitor_args: MonitorArguments | None = None,
    ) -> None:
        check_method(model_args)
        if not prompts:
            raise RecipeError("PPO needs at least one prompt in the training data")
        self.prompts = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]  # {prompt, *extra_columns}
        self.config, self.model_args = config, model_args
        self.accelerator, self.run_dir, self.resume = accelerator, run_dir, resume
        set_seed(config.seed, device_specific=True)
        self.tokenizer = load_tokenizer(model_args.tokenizer_name_or_path or model_args.model_name_or_path, padding_side="left")
        self.tokenizer.truncation_side = "left"
        policy, self.origin = load_model(model_args, "causal", self.tokenizer)
        reference = model_args.model_name_or_path if is_adapter(model_args.model_name_or_path) else None
        actor_critic = ActorCritic(policy, config.value_model, peft_config(model_args, "causal", []), reference)
        actor_critic.eval()  # dropout off for good: rollouts and updates must see the same policy
        if config.gradient_checkpointing:
            actor_critic.enable_gradient_checkpointing()  # updates then run in training mode, dropout zeroed
        self.reward: WeightedReward = load_reward(
            config, actor_critic, self.origin.base_model, accelerator.device, self.tokenizer
        )
        self.columns = [c for c in self.prompts[0] if c != "prompt"]
        optimizer = torch.optim.AdamW(
            actor_critic.trainable_parameters(), lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon, weight_decay=config.weight_decay,
        )
        self.model, self.optimizer = accelerator.prepare(actor_critic, optimizer)
        self.total_steps = config.steps_for(accelerator.num_processes)
        updates = self.total_steps * config.ppo_epochs * config.num_mini_batches
        self.scheduler = get_scheduler(
            config.lr_scheduler_type, self.optimizer, num_warmup_steps=config.get_warmup_steps(updates),
            num_training_steps=updates, scheduler_specific_kwargs=config.lr_scheduler_kwargs or None,
        )
        self.monitor = Monitor.build(monitor_args, run_dir, proxy=self.reward.score, extra_columns=self.columns) if monitor_args else None
        self.kl_ctl = kl_controller(config)
        self.reward_moments = RunningMoments()
        self.step = 0
        self.generation_config = sampling_config(config, self.tokenizer)
        self.sampler_checked = False
        logger.info("%s: reward from %s; %d steps of %d prompts x %d responses x %d processes", config.advantage_estimator,
                    self.reward.description, self.total_steps, config.prompts_per_step, config.num_generations,
                    accelerator.num_processes)

    @classmethod
    def from_recipe(cls, argv: list[str], stage: str = "ppo") -> PPOTrainer:
        """Parse the recipe (under ``stage``'s defaults), load the prompts, create the run folder and trackers, load
        the models."""
        model_args, data_args, resume_args, monitor_args, config = parse_stage(argv, stage, CLASSES, STAGE_DEFAULTS[stage])
        check_method(model_args)  # before the Accelerator: its precision is fixed once per process
        check_rewards(config, data_args)
        data = load_data(data_args, "prompts")
        run_dir = begin(config, model_args, data_args, resume_args, monitor_args)
        accelerator = Accelerator(
            cpu=config.use_cpu,
            mixed_precision="bf16" if config.bf16 else "no",
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=trackers(config.report_to) or None,
            project_dir=config.output_dir,
        )
        if trackers(config.report_to):
            names = {"wandb": {"dir": str(run_dir), "name": config.run_name}, "trackio": {"name": config.run_name}}
            recipe = to_dict(model_args, data_args, resume_args, monitor_args, config)
            accelerator.init_trackers(config.project, config=recipe, init_kwargs=names)
        for line in data.report:
            logger.info("data: %s", line)
        prompts = data.splits["train"].to_list()  # {prompt, *extra_columns}
        return cls(config, model_args, prompts, accelerator, run_dir, resume=resume_args.resume, monitor_args=monitor_args)

    @property
    def actor_critic(self) -> ActorCritic:
        return self.accelerator.unwrap_model(self.model)

    # -------------------------------------------------------------------------------------------------- loop
    def train(self) -> None:
        """Run PPO steps up to the total, continuing from the last complete checkpoint; checkpoint as configured."""
        self.load_checkpoint()
        if self.step == 0:
            self.evaluate_heldout()
        while self.step < self.total_steps:
            metrics = self.ppo_step()
            self.step += 1
            self.log(metrics)
            every = self.config.eval_steps
            if (every and self.step % every == 0) or self.step == self.total_steps:
                self.evaluate_heldout()
            if self.step % self.config.save_steps == 0 or self.step == self.total_steps:
                self.save_checkpoint()

    def evaluate_heldout(self) -> None:
        """The over-optimisation monitor: the current policy answers the held-out prompts (each process a share,
        seeded), the main process scores them with the proxy and gold rewards and logs them with their KL."""
        if self.monitor is None:
            return
        acc = self.accelerator
        shard = self.monitor.prompts[acc.process_index :: acc.num_processes]
        responses, kl = self.sample_heldout(shard, seed=self.config.seed)
        pairs = gather_object([(acc.process_index + i * acc.num_processes, r, k) for i, (r, k) in enumerate(zip(responses, kl))])
        if acc.is_main_process:
            ordered = sorted(pairs)
            row = self.monitor.record(self.step, [r for _, r, _ in ordered], np.asarray([k for _, _, k in ordered]))
            acc.log(tracker_metrics(row), step=self.step)
            logger.info(
                "held-out at step %d: %s", self.step,
                ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("reward") or k == "kl"),
            )
        acc.wait_for_everyone()

    def ppo_step(self) -> dict[str, Any]:
        """One rollout batch and its PPO epochs; returns the step's metrics (averaged over processes)."""
        start, learning_rate = time.perf_counter(), self.scheduler.get_last_lr()[0]
        rows = self.batch_prompts(self.step)
        columns = {c: [row[c] for row in rows] for c in self.columns}
        rollout, timings = self.rollout([row["prompt"] for row in rows], columns)
        train_start = time.perf_counter()
        update_stats = self.update(rollout)
        timings["time_training"] = time.perf_counter() - train_start
        timings["time_step"] = time.perf_counter() - start
        metrics = self.rollout_metrics(rollout)
        metrics.update(update_stats)
        metrics = {k: float(v) for k, v in zip(metrics, self.accelerator.reduce(torch.tensor(list(metrics.values()), device=self.accelerator.device), "mean"))}
        scores = self.accelerator.gather(rollout.scores)
        metrics.update(reward_mean=scores.mean().item(), reward_std=scores.std().item() if scores.numel() > 1 else 0.0)
        if len(rollout.components) > 1:
            metrics.update({f"reward/{name}": self.accelerator.gather(x).mean().item() for name, x in rollout.components.items()})
        for name in ("policy_loss", "value_loss", "kl_loss"):
            if not math.isfinite(metrics.get(name, 0.0)):
                raise AlignmentError(
                    f"{name} became {metrics[name]} at PPO step {self.step + 1}. Likely causes: learning rate too high, "
                    "fp16 overflow, or non-finite rewards. The last good checkpoint in the run folder is kept."
                )
        self.write_samples(rollout)
        self.kl_ctl.update(metrics["kl"], self.config.batch_size * self.accelerator.num_processes)
        return {
            "step": self.step + 1,
            "episodes": (self.step + 1) * self.config.batch_size * self.accelerator.num_processes,
            **metrics,
            "kl_coef": self.kl_ctl.kl_coef,
            "learning_rate": learning_rate,
            **timings,
        }

    def batch_prompts(self, step: int) -> list[dict[str, Any]]:
        """This process's data rows for ``step``, each repeated ``num_generations`` times in a row (a group): a
        fixed seeded order per epoch over whole prompts, so groups never span processes and a resumed run sees the
        same ones."""
        size, rank = self.config.prompts_per_step, self.accelerator.process_index
        first = (step * self.accelerator.num_processes + rank) * size
        picked = []
        for position in range(first, first + size):
            epoch, index = divmod(position, len(self.prompts))
            order = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.config.seed + epoch))
            picked.extend([self.prompts[int(order[index])]] * self.config.num_generations)
        return picked

    # -------------------------------------------------------------------------------------------------- rollout
    def chunks(self, n: int) -> list[slice]:
        size = self.config.forward_batch_size or n
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    @torch.no_grad()
    def sample(self, query: dict[str, torch.Tensor], with_logprobs: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Responses [batch, R'] (R' <= response_length), right-padded with the pad token after EOS; with
        ``with_logprobs`` also the sampler's own log-probability of each token and the entropy of the distribution
        it was drawn from (from the scores it sampled from; 0 after EOS)."""
        pieces, logps, entropies = [], [], []
        prompt_length = query["input_ids"].shape[1]
        config = copy.copy(self.generation_config)
        config.output_scores = with_logprobs
        for part in self.chunks(len(query["input_ids"])):
            out = self.actor_critic.generate(
                input_ids=query["input_ids"][part], attention_mask=query["attention_mask"][part], generation_config=config
            )
            pieces.append(out.sequences[:, prompt_length:])
            if with_logprobs:  # one step at a time: no [batch, R, vocab] copy
                token_logp, entropy = zip(*(self.token_stats(scores, pieces[-1][:, t]) for t, scores in enumerate(out.scores)))
                logps.append(torch.stack(token_logp, 1))
                entropies.append(torch.stack(entropy, 1))
        width = max(p.shape[1] for p in pieces)
        pad = lambda x, value: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)  # noqa: E731
        response = torch.cat([pad(p, self.tokenizer.pad_token_id) for p in pieces])
        if not with_logprobs:
            return response
        return response, torch.cat([pad(x, 0.0) for x in logps]), torch.cat([pad(x, 0.0) for x in entropies])

    @staticmethod
    def token_stats(scores: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p of ``tokens`` [batch] and the entropy of the distribution ``scores`` [batch, vocab] (the sampler's
        processed logits at one step, already at its temperature)."""
        return logprobs_from_logits(scores[:, None], tokens[:, None])[:, 0], entropy_from_logits(scores)

    def check_sampler(self, sampler_logp: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> None:
        """Start-up self-check on the first rollout: the trainer's log-probs must be the sampler's (ratio 1, KL 0),
        else every ratio, advantage and KL of the run would be off-policy."""
        diff = torch.where(mask.bool(), logp - sampler_logp, 0.0)  # after EOS the sampler's pad tokens may be -inf
        gap = diff.abs().sum() / mask.sum().clamp(min=1)
        approx_kl = masked_mean(0.5 * diff**2, mask)
        logger.info("sampler check: mean |log-prob gap| %.2e nats, approx KL %.2e", gap.item(), approx_kl.item())
        tolerance = self.config.sampler_check_tolerance
        if tolerance is not None and gap.item() > tolerance:
            raise AlignmentError(
                f"the sampler is not the policy being trained: its token log-probs differ from the forward pass by "
                f"{gap.item():.3f} nats on average (approx KL {approx_kl.item():.3f}; tolerance {tolerance}). Likely "
                "causes: sampling options from the checkpoint's generation_config, a model whose logits need its own "
                "post-processing, or mixed kernels between generation and training. Set sampler_check_tolerance: null "
                "to run anyway."
            )
        self.sampler_checked = True

    @torch.no_grad()
    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int, response_ids: torch.Tensor, *, reference: bool = False) -> torch.Tensor:
        """log pi(response token) at the sampling temperature, [batch, R]; the reference policy's with ``reference``."""
        model, out = self.actor_critic, []
        for part in self.chunks(len(input_ids)):
            if reference:
                with model.reference():
                    logits = model.logits(input_ids[part], attention_mask[part], prompt_length)
            else:
                logits = model.logits(input_ids[part], attention_mask[part], prompt_length)
            out.append(logprobs_from_logits(logits, response_ids[part], self.config.temperature))
        return torch.cat(out)

    def encode_prompts(self, prompts: list[Any]) -> dict[str, torch.Tensor]:
        texts = [render_prompt(self.tokenizer, p, self.config.use_chat_template) for p in prompts]
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.config.max_prompt_length, add_special_tokens=False
        )
        return {k: v.to(self.accelerator.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def rollout(self, prompts: list[Any], columns: dict[str, list] | None = None) -> tuple[Rollout, dict[str, float]]:
        """Sample responses, score them, shape rewards with the KL penalty and compute the advantages.

        ``columns``: the data's extra columns for these rows, for reward functions that read them."""
        cfg, tok = self.config, self.tokenizer
        # One update right after the rollout, no critic, no KL in the reward: the trainer needs no log-probs of its own
        # here (pi_old is the policy being trained); the sampler's serve the KL and entropy metrics.
        from_sampler = cfg.on_policy_update and self.sampler_checked
        with self.accelerator.autocast():
            query = self.encode_prompts(prompts)
            start = time.perf_counter()
            with_logprobs = from_sampler or not self.sampler_checked
            response_ids, sampler_logp, sampler_entropy = self.sample(query, with_logprobs) if with_logprobs else (self.sample(query), None, None)
            generated = time.perf_counter()
            mask, input_ids, attention_mask = self.with_responses(query, response_ids)
            prompt_length = query["input_ids"].shape[1]
            if from_sampler:
                logp, entropy = torch.where(mask.bool(), sampler_logp, 0.0), sampler_entropy * mask
                values = torch.zeros_like(logp)
            else:
                logp, values, entropy = self.policy_pass(input_ids, attention_mask, prompt_length, response_ids)
            ref_logp = self.logprobs(input_ids, attention_mask, prompt_length, response_ids, reference=True)
        if not self.sampler_checked:
            self.check_sampler(sampler_logp, logp, mask)
        responses = self.decode(response_ids, mask)
        token_ids = [ids[keep.bool()].tolist() for ids, keep in zip(input_ids, attention_mask)]  # prompt + response
        raw = self.reward.components(prompts, responses, token_ids=token_ids, **(columns or {}))
        components = {name: torch.tensor(x, dtype=torch.float32, device=mask.device) for name, x in raw.items()}
        scores = torch.as_tensor(self.reward.total(raw), dtype=torch.float32, device=mask.device)
        has_eos = (response_ids == tok.eos_token_id).any(dim=-1)
        beta = self.kl_ctl.kl_coef if cfg.kl_in == "reward" else 0.0  # kl_in: loss puts it in micro_step instead
        rewards, kl = shape_rewards(
            self.normalize(raw, scores), logp, ref_logp, mask, beta, cfg.kl_estimator,
            cfg.missing_eos_penalty, has_eos, cfg.missing_eos_mode,
        )
        score_terms = rewards.sum(-1) + beta * kl  # the (normalised) score alone, before whitening
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = self.advantages(rewards, values, mask)
        rollout = Rollout(
            input_ids=input_ids, attention_mask=attention_mask, prompt_length=prompt_length, response_ids=response_ids,
            mask=mask, logp=logp, ref_logp=ref_logp, values=values, entropy=entropy, scores=scores,
            score_terms=score_terms, rewards=rewards, advantages=advantages, returns=returns, kl=kl,
            has_eos=has_eos, prompts=prompts, responses=responses, components=components,
        )
        timings = {"time_generation": generated - start, "time_scoring": time.perf_counter() - generated}
        return rollout, timings

    def policy_pass(self, input_ids, attention_mask, prompt_length: int, response_ids) -> tuple[torch.Tensor, ...]:
        """log pi_old of the sampled tokens, values V(s_t) (zeros without a critic) and entropies, [batch, R]."""
        logp, values, entropy = [], [], []
        for part in self.chunks(len(input_ids)):
            logits, part_values = self.actor_critic(input_ids[part], attention_mask[part], prompt_length)
            logp.append(logprobs_from_logits(logits, response_ids[part], self.config.temperature))
            entropy.append(entropy_from_logits(logits, self.config.temperature))
            values.append(part_values.float() if part_values is not None else torch.zeros_like(logp[-1]))
        return torch.cat(logp), torch.cat(values), torch.cat(entropy)

    def advantages(self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token advantages and value targets of the configured ``advantage_estimator``, from the shaped rewards
        (score at the last token, -beta * KL per token when ``kl_in: reward``):

        * gae: GAE on the critic's values, whitened over this process's batch [N];
        * grpo, dr_grpo, rloo: each sequence's total reward against its group's (core.group_advantages), on every token;
        * reinforce_pp: the reward-to-go, whitened over the whole batch of every process [R++].
        """
        cfg = self.config
        if cfg.advantage_estimator == "gae":
            advantages, returns = compute_gae(rewards, values, mask, cfg.gamma, cfg.lam)
            return masked_whiten(advantages, mask), returns
        if cfg.advantage_estimator == "reinforce_pp":
            returns = discounted_returns(rewards, mask, cfg.gamma)
            return masked_whiten(returns, mask, moments=self.global_moments(returns, mask)), torch.zeros_like(values)
        sequence = group_advantages(
            rewards.sum(-1), cfg.num_generations, scale_std=cfg.group_std_scaling, leave_one_out=cfg.advantage_estimator == "rloo"
        )
        return sequence.unsqueeze(-1) * mask, torch.zeros_like(values)

    def global_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (unbiased) variance of ``x`` over the real tokens of every process's batch."""
        sums = torch.stack([(x * mask).sum(), (x.square() * mask).sum(), mask.sum()])
        total, total_sq, count = self.accelerator.reduce(sums, "sum")
        mean = total / count
        var = (total_sq / count - mean.square()) * count / (count - 1).clamp(min=1)
        return mean, var.clamp(min=0.0)

    def with_responses(self, query: dict[str, torch.Tensor], response_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The response mask (up to and including EOS) and the prompt + response ids and attention mask."""
        mask = response_mask(response_ids, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
        input_ids = torch.cat([query["input_ids"], response_ids], dim=1)
        return mask, input_ids, torch.cat([query["attention_mask"], mask.long()], dim=1)

    def decode(self, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Response texts (up to and including EOS; special tokens dropped)."""
        return [self.tokenizer.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(response_ids, mask)]

    @torch.no_grad()
    def sample_heldout(self, prompts: list[Any], seed: int) -> tuple[list[str], list[float]]:
        """One response per prompt sampled with ``seed`` and its KL to the reference (summed k1 log-ratio at the
        sampling temperature, as in training); the training RNG state is left as it was."""
        state = checkpoint.rng_state()
        torch.manual_seed(seed)
        try:
            with self.accelerator.autocast():
                query = self.encode_prompts(prompts)
                response_ids = self.sample(query)
                mask, input_ids, attention_mask = self.with_responses(query, response_ids)
                width = query["input_ids"].shape[1]
                logp = self.logprobs(input_ids, attention_mask, width, response_ids)
                ref_logp = self.logprobs(input_ids, attention_mask, width, response_ids, reference=True)
        finally:
            checkpoint.set_rng_state(state)
        return self.decode(response_ids, mask), ((logp - ref_logp) * mask).sum(-1).tolist()

    def score_policy(self, prompts: list[Any], seed: int) -> tuple[list[str], list[float]]:
        """One response per prompt sampled with ``seed`` and its raw score, for before/after comparisons."""
        responses, _ = self.sample_heldout(prompts, seed)
        return responses, self.reward.score(prompts, responses)

    def normalize(self, raw: dict[str, list[float]], scores: torch.Tensor) -> torch.Tensor:
        """The weighted score as it enters the reward: with ``normalize_rewards``, each reward model's score (``raw``,
        by term) is standardised with its saved statistics; a reward with none has its total (``scores``) standardised
        with running moments of every score seen (over all processes)."""
        if not self.config.normalize_rewards:
            return scores
        if self.reward.has_statistics:
            return torch.as_tensor(self.reward.total(raw, standardize=True), dtype=torch.float32, device=scores.device)
        self.reward_moments.update(self.accelerator.gather(scores))
        return self.reward_moments.normalize(scores)

    # -------------------------------------------------------------------------------------------------- update
    def update(self, rollout: Rollout) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped policy (+ value) updates over shuffled mini-batches."""
        cfg = self.config
        stats: dict[str, list[torch.Tensor]] = {}
        order_rng = torch.Generator().manual_seed(cfg.seed + self.step)
        self.actor_critic.train(cfg.gradient_checkpointing)  # transformers checkpoints only in training mode
        try:
            self.update_epochs(rollout, order_rng, stats)
        finally:
            self.actor_critic.eval()
        return {name: torch.stack(values).mean().item() for name, values in stats.items()}

    def update_epochs(self, rollout: Rollout, order_rng: torch.Generator, stats: dict[str, list[torch.Tensor]]) -> None:
        cfg, acc = self.config, self.accelerator
        for _ in range(cfg.ppo_epochs):
            for mini in torch.randperm(cfg.batch_size, generator=order_rng).split(cfg.mini_batch_size):
                for micro in mini.split(cfg.micro_batch_size):
                    with acc.accumulate(self.model):
                        step_stats = self.micro_step(rollout, micro.to(rollout.mask.device))
                        if acc.sync_gradients:
                            step_stats["grad_norm"] = acc.clip_grad_norm_(self.actor_critic.trainable_parameters(), cfg.max_grad_norm)
                        self.optimizer.step()
                        if acc.sync_gradients:
                            self.scheduler.step()
                        self.optimizer.zero_grad()
                    for name, value in step_stats.items():
                        stats.setdefault(name, []).append(torch.as_tensor(value, dtype=torch.float32).detach().cpu())

    def micro_step(self, rollout: Rollout, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss of one micro-batch, backpropagated: clipped surrogate (aggregated as ``loss_aggregation``),
        + vf_coef x clipped value loss (with a critic), + kl_coef x KL(pi || pi_ref) (``kl_in: loss``, GRPO eq. 3),
        - ent_coef x entropy (when ent_coef > 0)."""
        cfg = self.config
        mask = rollout.mask[rows]
        logits, values = self.model(rollout.input_ids[rows], rollout.attention_mask[rows], rollout.prompt_length)
        logp = logprobs_from_logits(logits, rollout.response_ids[rows], cfg.temperature)
        old = logp.detach() if cfg.on_policy_update else rollout.logp[rows]  # on-policy: pi_old is pi_theta (ratio 1)
        pg_loss, stats = policy_loss(
            logp, old, rollout.advantages[rows], mask, cfg.cliprange, cfg.loss_aggregation, cfg.response_length
        )
        loss, stats = pg_loss, {"policy_loss": pg_loss.detach(), **stats}
        if values is not None:
            vf_loss, vf_stats = value_loss(values.float(), rollout.values[rows], rollout.returns[rows], mask, cfg.cliprange_value)
            loss = loss + cfg.vf_coef * vf_loss
            stats.update(value_loss=vf_loss.detach(), **vf_stats)
        if cfg.kl_in == "loss":
            kl = aggregate_loss(kl_penalty(logp, rollout.ref_logp[rows], cfg.kl_estimator), mask, cfg.loss_aggregation, cfg.response_length)
            loss = loss + self.kl_ctl.kl_coef * kl
            stats["kl_loss"] = kl.detach()
        if cfg.ent_coef:  # the entropy over the whole vocabulary, with its gradient, only when it is in the loss
            loss = loss - cfg.ent_coef * masked_mean(entropy_from_logits(logits, cfg.temperature), mask)
        self.accelerator.backward(loss)
        return stats

    # -------------------------------------------------------------------------------------------------- logging
    def rollout_metrics(self, rollout: Rollout) -> dict[str, float]:
        mask = rollout.mask
        return {
            "reward_normalized_mean": rollout.score_terms.mean().item(),
            "rlhf_reward": rollout.rewards.sum(-1).mean().item(),
            "kl": rollout.kl.mean().item(),
            "entropy": masked_mean(rollout.entropy, mask).item(),
            "response_length": mask.sum(-1).mean().item(),
            "eos_rate": rollout.has_eos.float().mean().item(),
            **({
                "explained_variance": explained_variance(rollout.values, rollout.returns, mask).item(),
                "value_mean": masked_mean(rollout.values, mask).item(),
            } if self.config.critic else {}),
        }

    def log(self, metrics: dict[str, Any]) -> None:
        """Every step: console, ``metrics.jsonl`` in the run folder and the trackers in report_to."""
        self.accelerator.log(metrics, step=metrics["step"])
        if not self.accelerator.is_main_process:
            return
        append_jsonl(self.run_dir / "metrics.jsonl", [metrics])
        critic = (
            f" value_loss {metrics['value_loss']:.4f} explained_var {metrics['explained_variance']:.2f}" if self.config.critic else ""
        )
        kl_loss = f" kl_loss {metrics['kl_loss']:.4f}" if "kl_loss" in metrics else ""
        logger.info(
            "step %d/%d reward %.3f±%.3f kl %.3f (coef %.3g) entropy %.3f clipfrac %.3f%s%s length %.1f eos %.0f%% "
            "| generation %.1fs scoring %.1fs training %.1fs",
            metrics["step"], self.total_steps, metrics["reward_mean"], metrics["reward_std"], metrics["kl"],
            metrics["kl_coef"], metrics["entropy"], metrics["clipfrac"], critic, kl_loss,
            metrics["response_length"], 100 * metrics["eos_rate"],
            metrics["time_generation"], metrics["time_scoring"], metrics["time_training"],
        )

    def write_samples(self, rollout: Rollout) -> None:
        """The first ``num_samples`` rollouts of the main process with their scores: samples.jsonl (+ a wandb table)."""
        if not self.accelerator.is_main_process or self.config.num_samples <= 0:
            return
        rows = [
            {"step": self.step + 1, "prompt": p, "response": r, "score": s, "kl": k, "finished": bool(e)}
            for p, r, s, k, e in zip(
                rollout.prompts, rollout.responses, rollout.scores.tolist(), rollout.kl.tolist(), rollout.has_eos.tolist()
            )
        ][: self.config.num_samples]
        append_jsonl(self.run_dir / "samples.jsonl", rows)
        if {"wandb", "all"} & set(self.config.report_to):
            import wandb

            columns = list(rows[0])
            table = wandb.Table(columns=columns, data=[[str(row[c]) for c in columns] for row in rows])
            self.accelerator.get_tracker("wandb", unwrap=True).log({"samples": table}, step=self.step + 1)

    # -------------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "total_steps": self.total_steps, "kl_controller": self.kl_ctl.state_dict(),
                 "reward_moments": self.reward_moments.state_dict()}
        path = checkpoint.save(self.run_dir, self.step, self.accelerator, self.actor_critic, self.optimizer,
                               self.scheduler, state, self.config.save_total_limit)
        if self.accelerator.is_main_process:
            logger.info("Saved %s", path)
        return path

    def load_checkpoint(self) -> None:
        """Continue from the last complete checkpoint: model, optimizer, scheduler, RNG, KL controller, reward
        moments and step; the run folder's JSONL logs are cut back to that step."""
        found = resume_from(self.run_dir, self.resume)
        if found is None:
            return
        state = checkpoint.load(Path(found), self.accelerator, self.actor_critic, self.optimizer, self.scheduler)
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        self.step = state["step"]
        if self.accelerator.is_main_process:
            for name in ("metrics.jsonl", "samples.jsonl", EVAL_FILE):
                truncate_jsonl(self.run_dir / name, self.step)
        logger.info("Resumed at PPO step %d/%d", self.step, self.total_steps)

    def save_final(self) -> dict[str, Any]:
        """Save the policy adapter alone, in plain peft format, in the run folder; write ``metrics.json``.

        The other adapters are deleted first: call it once, after :meth:`train`."""
        self.accelerator.end_training()
        self.accelerator.wait_for_everyone()
        history = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines() if line] if (self.run_dir / "metrics.jsonl").is_file() else []
        summary = {
            "steps": self.step,
            "episodes": self.step * self.config.batch_size * self.accelerator.num_processes,
            "reward": self.reward.description,
            **({"reward_mean_first_step": history[0]["reward_mean"], "final": history[-1]} if history else {}),
        }
        if self.accelerator.is_main_process:
            model = self.actor_critic
            model.keep_only_policy()
            save_model(model.model, self.tokenizer, self.run_dir, kind="causal", origin=self.origin, method=self.model_args.method, stage="ppo",
                       ppo_steps=self.step, advantage_estimator=self.config.advantage_estimator)
            write_json(self.run_dir / "metrics.json", summary)
        self.accelerator.wait_for_everyone()
        return summary
