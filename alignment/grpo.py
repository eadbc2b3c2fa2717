"""Critic-free online RL: ``python -m alignment.grpo recipe.yaml [--key value ...]``.

The PPO stage (:mod:`alignment.ppo`, same trainer, same recipe keys) with GRPO's defaults: ``advantage_estimator:
grpo``, ``num_generations: 4``, no value function, k3 KL in the loss (``kl_coef: 0.04``) and one policy update per
rollout batch. Any of them can be set in the recipe, e.g. ``advantage_estimator: dr_grpo | rloo | reinforce_pp``.
See alignment/ppo/README.md for the estimators.
"""

from __future__ import annotations

from alignment.ppo.trainer import CLASSES, STAGE_DEFAULTS, PPOTrainer
from alignment.run import stage_main
from alignment.training import stage_keys


@stage_main(keys=stage_keys("grpo", CLASSES, STAGE_DEFAULTS["grpo"]))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.grpo RECIPE.yaml [--key value ...]   (the PPO stage with GRPO defaults)"""
    trainer = PPOTrainer.from_recipe(argv, stage="grpo")
    trainer.train()
    trainer.save_final()


if __name__ == "__main__":
    raise SystemExit(main())
