"""Recipe keys of the PPO stage (``python -m alignment.ppo recipe.yaml``), next to ModelArguments and DataArguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class PPOConfig:
    """Rollout, reward, loss, optimisation and bookkeeping settings of one PPO run.

    One PPO step rolls out ``batch_size`` prompts per process, then runs ``ppo_epochs`` passes over them, each
    split into ``num_mini_batches`` optimizer steps of ``gradient_accumulation_steps`` micro-batches.
    """

    # --- run
    output_dir: str | None = field(default=None, metadata=_help("Run folder (default runs/ppo-<timestamp>)."))
    seed: int = field(default=42, metadata=_help("Seed for prompt order, sampling and initialisation."))
    use_cpu: bool = field(default=False, metadata=_help("Train on the CPU even when a GPU is present."))
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision (accelerate)."))
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata=_help("Trackers: none, wandb, tensorboard, all."))
    run_name: str | None = field(default=None, metadata=_help("Tracker run name (wandb group)."))
    save_steps: int = field(default=50, metadata=_help("Write a checkpoint every N PPO steps (and at the end)."))
    save_total_limit: int | None = field(default=2, metadata=_help("Keep only the newest N checkpoints (null: all)."))
    num_samples: int = field(default=4, metadata=_help("Rollouts per step written to samples.jsonl with their rewards."))
    eval_steps: int | None = field(
        default=None,
        metadata=_help("Score the held-out eval_prompts every N PPO steps (also before the first and after the last)."),
    )
    # --- length of training
    total_steps: int = field(default=200, metadata=_help("PPO steps (rollout + update rounds)."))
    total_episodes: int | None = field(
        default=None, metadata=_help("Rollouts in all, over all processes; when set, it decides total_steps.")
    )
    # --- batches
    batch_size: int = field(default=16, metadata=_help("Prompts rolled out per PPO step on each process."))
    num_mini_batches: int = field(default=2, metadata=_help("Optimizer steps per PPO epoch (batch_size must divide)."))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("Micro-batches per mini-batch."))
    ppo_epochs: int = field(default=4, metadata=_help("Passes over each rollout batch."))
    forward_batch_size: int | None = field(
        default=None, metadata=_help("Rows per generation/scoring forward pass (null: the whole batch).")
    )
    # --- optimisation
    learning_rate: float = field(default=5e-5, metadata=_help("AdamW learning rate of the LoRA adapters and value head."))
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = field(
        default="linear", metadata=_help("Learning-rate schedule over all optimizer steps.")
    )
    warmup_ratio: float = field(default=0.0, metadata=_help("Fraction of optimizer steps spent warming up."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    adam_epsilon: float = field(default=1e-5, metadata=_help("AdamW epsilon."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Clip the gradient norm of each optimizer step."))
    # --- PPO losses
    gamma: float = field(default=1.0, metadata=_help("Discount factor of GAE."))
    lam: float = field(default=0.95, metadata=_help("GAE lambda."))
    cliprange: float = field(default=0.2, metadata=_help("Clip range of the policy ratio."))
    cliprange_value: float = field(default=0.2, metadata=_help("Clip range of the value update around the old values."))
    vf_coef: float = field(default=0.1, metadata=_help("Weight of the value loss."))
    ent_coef: float = field(default=0.0, metadata=_help("Weight of the entropy bonus."))
    # --- KL penalty against the reference policy
    kl_coef: float = field(default=0.05, metadata=_help("KL penalty coefficient (the initial one when adaptive)."))
    kl_estimator: Literal["k1", "k2", "k3"] = field(default="k1", metadata=_help("Per-token KL estimator."))
    adaptive_kl: bool = field(default=False, metadata=_help("Adapt kl_coef towards kl_target (Ziegler et al. 2019)."))
    kl_target: float = field(default=6.0, metadata=_help("Adaptive KL: target KL per sequence, in nats."))
    kl_horizon: int = field(default=10000, metadata=_help("Adaptive KL: horizon, in rollouts."))
    # --- rewards
    reward_model: str | None = field(
        default=None,
        metadata=_help(
            "Reward model: an alignment.rm run folder, a sequence-classification checkpoint, or an "
            "alignment.classify run folder (then reward_label picks the class whose probability is the reward)."
        ),
    )
    reward_adapter: bool = field(
        default=True,
        metadata=_help("Load a LoRA reward model whose base is the policy's as a third adapter on the shared base."),
    )
    reward_label: str | None = field(default=None, metadata=_help("Classifier reward: the rewarded label."))
    classifier_text: Literal["response", "prompt_and_response"] = field(
        default="response", metadata=_help("Classifier reward: what the classifier reads.")
    )
    reward_function: str | None = field(
        default=None,
        metadata=_help("Python reward 'module:function' taking (prompts, responses) -> list[float], or a built-in: length, keyword."),
    )
    reward_kwargs: dict = field(default_factory=dict, metadata=_help("Keyword arguments for reward_function."))
    reward_batch_size: int = field(default=16, metadata=_help("Rows per reward-model forward pass."))
    normalize_rewards: bool = field(
        default=True,
        metadata=_help("Standardise scores with the reward model's saved mean/std (running moments otherwise)."),
    )
    whiten_rewards: bool = field(default=False, metadata=_help("Whiten the per-token rewards of each batch (scale only)."))
    missing_eos_penalty: float | None = field(
        default=None, metadata=_help("Penalty for responses cut at response_length without EOS (null: none).")
    )
    missing_eos_mode: Literal["subtract", "replace"] = field(
        default="subtract", metadata=_help("subtract the penalty from the score, or replace the score by -penalty.")
    )
    # --- rollouts
    temperature: float = field(default=0.7, metadata=_help("Sampling temperature (> 0); log-probs use the same one."))
    response_length: int = field(default=53, metadata=_help("Maximum new tokens per response."))
    sampler_check_tolerance: float | None = field(
        default=0.1,  # bf16 autocast on a CPU measured 0.04 (cached generation vs the full forward); fp32 ~1e-6
        metadata=_help("First rollout: stop when the sampler's token log-probs differ from the trainer's by more (mean nats; null: no check)."),
    )
    max_prompt_length: int = field(default=128, metadata=_help("Prompts are cut to their last N tokens."))
    use_chat_template: bool = field(
        default=True, metadata=_help("Render prompts through the chat template; false continues the raw text.")
    )
    value_model: Literal["adapter", "head"] = field(
        default="adapter",
        metadata=_help(
            "adapter: the value function is a second LoRA adapter + scalar head on the shared base; "
            "head: a scalar head on the policy's hidden states (one forward pass, shared features)."
        ),
    )

    def __post_init__(self) -> None:
        """ValueErrors here reach the user as RecipeErrors naming the recipe file."""
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for PPO (log-probs are those of the sampler), got {self.temperature}")
        if (self.reward_model is None) == (self.reward_function is None):
            raise ValueError("set exactly one of reward_model (a run folder or checkpoint) and reward_function")
        for key in ("kl_coef", "vf_coef", "ent_coef", "max_grad_norm", "weight_decay", "warmup_ratio"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        positive = ("learning_rate", "cliprange", "cliprange_value", "kl_target", "kl_horizon", "response_length", "batch_size",
                    "ppo_epochs", "num_mini_batches", "gradient_accumulation_steps", "total_steps")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma} and {self.lam}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 (or null), got {self.eval_steps}")
        micro = self.num_mini_batches * self.gradient_accumulation_steps
        if self.batch_size % micro:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by num_mini_batches x gradient_accumulation_steps "
                f"({self.num_mini_batches} x {self.gradient_accumulation_steps})"
            )

    @property
    def mini_batch_size(self) -> int:
        return self.batch_size // self.num_mini_batches

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps

    def steps_for(self, world_size: int) -> int:
        """PPO steps of the run: total_steps, or enough to roll out total_episodes over all processes."""
        if self.total_episodes is None:
            return self.total_steps
        return -(-self.total_episodes // (self.batch_size * world_size))
