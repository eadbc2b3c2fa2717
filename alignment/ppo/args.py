"""Recipe keys of the PPO stage (``python -m alignment.ppo recipe.yaml``), next to ModelArguments and DataArguments."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from transformers import TrainingArguments

from alignment.rewards import RewardTerm, parse_reward_terms

Estimator = Literal["gae", "grpo", "dr_grpo", "rloo", "reinforce_pp"]
CRITIC_FREE = ("grpo", "dr_grpo", "rloo", "reinforce_pp")
GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo")
# What each estimator implies when the recipe leaves the key unset (null); see alignment/ppo/README.md.
ESTIMATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "gae": {"value_model": "adapter", "kl_in": "reward", "loss_aggregation": "token_mean", "group_std_scaling": False},
    "grpo": {"value_model": "none", "kl_in": "loss", "loss_aggregation": "seq_mean_token_mean", "group_std_scaling": True},
    "dr_grpo": {"value_model": "none", "kl_in": "loss", "loss_aggregation": "seq_mean_token_sum", "group_std_scaling": False},
    "rloo": {"value_model": "none", "kl_in": "reward", "loss_aggregation": "token_mean", "group_std_scaling": False},
    "reinforce_pp": {"value_model": "none", "kl_in": "reward", "loss_aggregation": "token_mean", "group_std_scaling": False},
}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


# The TrainingArguments keys the PPO loop reads; it runs its own loop, so every other one is refused by name.
TRAINING_KEYS = (
    "output_dir", "seed", "use_cpu", "bf16", "report_to", "run_name", "project", "save_steps", "save_total_limit",
    "eval_steps", "gradient_accumulation_steps", "gradient_checkpointing", "activation_checkpointing", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm",
)
TRAINING_FIELDS = frozenset(f.name for f in fields(TrainingArguments))
# What a trl user reaches for, and what PPO has instead.
INSTEAD = {
    "per_device_train_batch_size": "use batch_size (responses rolled out per step on each process)",
    "per_device_eval_batch_size": "use forward_batch_size and eval_max_prompts",
    "num_train_epochs": "use total_steps or total_episodes",
    "max_steps": "use total_steps",
    "warmup_ratio": "use warmup_steps (a value below 1 is a fraction of the optimizer steps)",
    "logging_steps": "every PPO step is logged",
    "eval_strategy": "use eval_steps",
    "save_strategy": "use save_steps",
    "num_generation": "use num_generations",
    "beta": "use kl_coef",
    "max_completion_length": "use response_length",
    "epsilon": "use cliprange",
}


@dataclass
class PPOConfig(TrainingArguments):
    """Rollout, reward, advantage, loss, optimisation and bookkeeping settings of one PPO run.

    One step rolls out ``batch_size`` responses per process (``batch_size / num_generations`` prompts, each
    answered ``num_generations`` times), then runs ``ppo_epochs`` passes over them, each split into
    ``num_mini_batches`` optimizer steps of ``gradient_accumulation_steps`` micro-batches. The run, optimiser and
    schedule keys are transformers' TrainingArguments (TRAINING_KEYS); the rest of those are refused.
    """

    num_samples: int = field(default=4, metadata=_help("Rollouts per step written to samples.jsonl with their rewards."))
    # --- length of training
    total_steps: int = field(default=200, metadata=_help("PPO steps (rollout + update rounds)."))
    total_episodes: int | None = field(
        default=None, metadata=_help("Rollouts in all, over all processes; when set, it decides total_steps.")
    )
    # --- batches
    batch_size: int = field(
        default=16, metadata=_help("Responses rolled out per step on each process (batch_size / num_generations prompts).")
    )
    num_generations: int = field(
        default=1, metadata=_help("Responses sampled per prompt, kept together as a group (>= 2 for grpo, dr_grpo, rloo).")
    )
    num_mini_batches: int = field(default=2, metadata=_help("Optimizer steps per PPO epoch (batch_size must divide)."))
    ppo_epochs: int = field(default=4, metadata=_help("Passes over each rollout batch."))
    forward_batch_size: int | None = field(
        default=None, metadata=_help("Rows per generation/scoring forward pass (null: the whole batch).")
    )
    # --- advantages and losses
    advantage_estimator: Estimator = field(
        default="gae",
        metadata=_help(
            "gae: PPO with a learnt value function (GAE); grpo, dr_grpo, rloo, reinforce_pp: critic-free, from the "
            "group of num_generations responses (grpo, dr_grpo, rloo) or the batch (reinforce_pp)."
        ),
    )
    group_std_scaling: bool | None = field(
        default=None, metadata=_help("grpo/dr_grpo: divide group-centred rewards by the group's std (null: on for grpo, off for dr_grpo).")
    )
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"] | None = field(
        default=None,
        metadata=_help(
            "Policy-loss reduction: token_mean, seq_mean_token_mean (GRPO's), seq_mean_token_sum (Dr. GRPO's, over the "
            "constant response_length). null: the estimator's."
        ),
    )
    gamma: float = field(default=1.0, metadata=_help("Discount factor of GAE."))
    lam: float = field(default=0.95, metadata=_help("GAE lambda."))
    cliprange: float = field(default=0.2, metadata=_help("Clip range of the policy ratio."))
    cliprange_value: float = field(default=0.2, metadata=_help("Clip range of the value update around the old values."))
    vf_coef: float = field(default=0.1, metadata=_help("Weight of the value loss."))
    ent_coef: float = field(default=0.0, metadata=_help("Weight of the entropy bonus."))
    # --- KL penalty against the reference policy
    kl_coef: float = field(default=0.05, metadata=_help("KL penalty coefficient (the initial one when adaptive)."))
    kl_in: Literal["reward", "loss"] | None = field(
        default=None,
        metadata=_help("reward: -kl_coef * KL per token in the reward; loss: kl_coef * KL(pi || pi_ref) added to the "
                       "loss, GRPO style. null: loss for grpo/dr_grpo, reward otherwise."),
    )
    kl_estimator: Literal["k1", "k2", "k3"] | None = field(
        default=None, metadata=_help("Per-token KL estimator (null: k1 in the reward, k3 in the loss).")
    )
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
    rewards: list[dict] = field(
        default_factory=list,
        metadata=_help(
            "Instead of reward_model/reward_function: a weighted sum [{spec, weight, kwargs, name}, ...] of reward "
            "specs (an RM run folder, CLASSIFIER_RUN#label, a built-in function or module:function); each is logged."
        ),
    )
    reward_batch_size: int = field(default=16, metadata=_help("Rows per reward-model forward pass."))
    normalize_rewards: bool = field(
        default=True,
        metadata=_help("Standardise scores with the reward model's saved mean/std (running moments otherwise)."),
    )
    whiten_rewards: bool = field(default=False, metadata=_help("Whiten the per-token rewards of each batch (scale only)."))
    missing_eos_penalty: float | None = field(
        default=1.0,  # a cut answer is never scored as if it had ended; recipes with short response_length on purpose set null
        metadata=_help(
            "Taken off the score of a response cut at response_length without EOS, in units of the score as it enters "
            "the reward (one standard deviation with normalize_rewards); null: cut responses are scored as they are."
        ),
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
    value_model: Literal["adapter", "head", "none"] | None = field(
        default=None,
        metadata=_help(
            "adapter: the value function is a second LoRA adapter + scalar head on the shared base; "
            "head: a scalar head on the policy's hidden states (one forward pass, shared features); "
            "none: no value function (the critic-free estimators). null: adapter for gae, none otherwise."
        ),
    )

    @classmethod
    def unused_key(cls, key: str) -> str | None:
        """Why a recipe may not set ``key``: a TrainingArguments key the PPO loop does not read, or trl's name for one
        of PPO's keys (see alignment.config.unused_key)."""
        if key in INSTEAD:
            return INSTEAD[key]
        if key in TRAINING_FIELDS and key not in TRAINING_KEYS:
            return "a Trainer key the PPO loop does not read (alignment.ppo --help lists the keys it reads)"
        return None

    def to_dict(self) -> dict[str, Any]:
        """The keys PPO reads (the resolved recipe.yaml runs again as it is)."""
        return {k: v for k, v in super().to_dict().items() if not self.unused_key(k)}

    def __post_init__(self) -> None:
        """ValueErrors here reach the user as RecipeErrors naming the recipe file."""
        super().__post_init__()
        if self.save_steps < 1 or self.save_steps != int(self.save_steps):
            raise ValueError(f"save_steps must be a whole number of PPO steps >= 1, got {self.save_steps}")
        self.resolve_estimator()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for PPO (log-probs are those of the sampler), got {self.temperature}")
        self.rewards = parse_reward_terms(self.rewards)
        if sum((self.reward_model is not None, self.reward_function is not None, bool(self.rewards))) != 1:
            raise ValueError("set exactly one of reward_model (a run folder or checkpoint), reward_function and rewards (a list)")
        for key in ("kl_coef", "vf_coef", "ent_coef", "max_grad_norm", "weight_decay", "missing_eos_penalty"):
            if (getattr(self, key) or 0) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        positive = ("learning_rate", "cliprange", "cliprange_value", "kl_target", "kl_horizon", "response_length", "batch_size",
                    "ppo_epochs", "num_mini_batches", "gradient_accumulation_steps", "total_steps", "num_generations")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma} and {self.lam}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 (or null), got {self.eval_steps}")
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by num_generations ({self.num_generations}): "
                "each prompt's responses stay together as one group"
            )
        if self.advantage_estimator in GROUP_ESTIMATORS and self.num_generations < 2:
            raise ValueError(f"advantage_estimator {self.advantage_estimator} compares responses to one prompt: num_generations must be >= 2")
        micro = self.num_mini_batches * self.gradient_accumulation_steps
        if self.batch_size % micro:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by num_mini_batches x gradient_accumulation_steps "
                f"({self.num_mini_batches} x {self.gradient_accumulation_steps})"
            )

    def resolve_estimator(self) -> None:
        """Fill the keys left null with the estimator's defaults (ESTIMATOR_DEFAULTS); reject contradictions."""
        defaults = ESTIMATOR_DEFAULTS[self.advantage_estimator]
        critic_free = self.advantage_estimator in CRITIC_FREE
        if critic_free and self.value_model not in (None, "none"):
            raise ValueError(f"value_model: {self.value_model} trains a critic, which advantage_estimator "
                             f"{self.advantage_estimator} does not use; leave value_model unset (none) or use gae")
        if not critic_free and self.value_model == "none":
            raise ValueError("advantage_estimator gae needs a value function: value_model adapter or head")
        if self.group_std_scaling and self.advantage_estimator not in ("grpo", "dr_grpo"):
            raise ValueError(f"group_std_scaling is for grpo and dr_grpo, not {self.advantage_estimator}")
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.kl_estimator is None:
            self.kl_estimator = "k1" if self.kl_in == "reward" else "k3"

    @property
    def critic(self) -> bool:
        """Whether a value function is trained (gae)."""
        return self.value_model != "none"

    @property
    def on_policy_update(self) -> bool:
        """One optimizer step per rollout batch (ppo_epochs 1, num_mini_batches 1), no critic and no KL in the
        reward: pi_old is exactly the policy being trained, so the loss takes pi_old = pi_theta (detached, ratio 1,
        as trl does) and the rollout skips the trainer's own log-prob pass."""
        return (self.ppo_epochs == 1 and self.num_mini_batches == 1 and not self.critic
                and (self.kl_in == "loss" or self.kl_coef == 0))

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.num_generations

    def reward_terms(self) -> list[RewardTerm]:
        """The reward as weighted terms: the ``rewards`` list, or the one reward_model / reward_function key."""
        if self.rewards:
            return self.rewards
        if self.reward_function is not None:
            return [RewardTerm(self.reward_function, 1.0, self.reward_kwargs)]
        label = f"#{self.reward_label}" if self.reward_label is not None else ""
        return [RewardTerm(self.reward_model + label)]

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
