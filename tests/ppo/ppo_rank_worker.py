"""Run by test_distributed_ppo.py under ``torchrun``: ``ppo_rank_worker.py OUT_DIR --key value ...`` trains PPO like
``python -m alignment.ppo``, then every rank writes what it holds (trained weights, reward moments, KL coefficient,
step, its first prompts) to OUT_DIR/rank<N>.pt, so the test can compare the ranks."""

import sys

import torch

from alignment.ppo.trainer import PPOTrainer
from alignment.run import end_process_group, setup_logging

setup_logging()
out = sys.argv[1]
trainer = PPOTrainer.from_recipe(sys.argv[2:])
trainer.train()
torch.save(
    {
        "params": {n: p.detach().cpu() for n, p in trainer.actor_critic.named_parameters() if p.requires_grad},
        "moments": trainer.reward_moments.state_dict(),
        "kl_coef": trainer.kl_ctl.kl_coef,
        "step": trainer.step,
        "prompts": [row["prompt"] for row in trainer.batch_prompts(0)],
    },
    f"{out}/rank{trainer.accelerator.process_index}.pt",
)
trainer.accelerator.wait_for_everyone()
end_process_group()
