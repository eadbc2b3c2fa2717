"""PPO for RLHF: ``python -m alignment.ppo recipe.yaml [--key value ...]`` (see alignment/ppo/README.md).

The policy is a LoRA adapter on a (4-bit) base, started from an SFT run or a base model; the reference policy, the
value function and a LoRA reward model share that one base. Re-running the same command resumes from the last
complete checkpoint; the final adapter is saved in the run folder (export it with ``alignment.export``).
"""

from __future__ import annotations

from alignment.ppo.trainer import CLASSES, STAGE_DEFAULTS, PPOTrainer
from alignment.run import stage_main
from alignment.training import stage_keys


@stage_main(keys=stage_keys("ppo", CLASSES, STAGE_DEFAULTS["ppo"]))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.ppo RECIPE.yaml [--key value ...]"""
    trainer = PPOTrainer.from_recipe(argv)
    trainer.train()
    trainer.save_final()


if __name__ == "__main__":
    raise SystemExit(main())
