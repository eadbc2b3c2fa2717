"""Critic-free online RL with real SmolLM2 weights (LoRA on the full-precision base, which loads faster than 4-bit):
GRPO moves a keyword reward up on held-out prompts through ``python -m alignment.grpo``; no value adapter or head
is built; every prompt's answers stay together as one group; the KL term sits in the loss."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignment.grpo import main as grpo_main
from alignment.ppo.modeling import VALUE
from alignment.ppo.trainer import PPOTrainer

from helpers import ROOT

PROMPTS = ROOT / "data" / "prompts"


def _recipe(tmp_path: Path, **keys) -> list[str]:
    values = {
        "model_name_or_path": "builtin:smollm2-135m-instruct", "method": "lora", "lora_r": 8,
        "dataset_path": str(PROMPTS / "movie_reviews.jsonl"), "eval_max_prompts": 16,
        "use_chat_template": False, "use_cpu": True, "bf16": False, "reward_function": "keyword",
        "reward_kwargs": {"keywords": ["the"]}, "response_length": 8, "eval_prompts": str(PROMPTS / "movie_reviews_validation.jsonl"), "save_steps": 100,
        "output_dir": str(tmp_path / "run"), **keys,
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return [str(recipe)]


def test_grpo_raises_a_keyword_reward_on_held_out_prompts(tmp_path):
    argv = _recipe(tmp_path, batch_size=16, num_mini_batches=2, ppo_epochs=2, total_steps=4, learning_rate=5e-3, eval_steps=4)
    assert grpo_main(argv) == 0
    run = tmp_path / "run"
    monitor = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in monitor] == [0, 4]
    assert monitor[-1]["proxy_reward"] >= monitor[0]["proxy_reward"] + 0.25, monitor
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("kl_loss" in r and "value_loss" not in r and "explained_variance" not in r for r in rows)
    assert rows[0]["episodes"] == 16
    meta = json.loads((run / "alignment_model.json").read_text())
    assert meta["advantage_estimator"] == "grpo"


def test_critic_free_trainer_has_no_value_function_and_keeps_groups_whole(tmp_path):
    trainer = PPOTrainer.from_recipe(_recipe(
        tmp_path, advantage_estimator="rloo", num_generations=4, batch_size=8, num_mini_batches=1, ppo_epochs=1,
        total_steps=2, learning_rate=1e-3, eval_prompts=None,
    ))
    model = trainer.actor_critic
    assert VALUE not in model.model.peft_config and model.value_head is None
    assert not any("value" in name for name in model.trainable_names)

    rows = trainer.batch_prompts(0)
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == 8 and prompts[0:4] == [prompts[0]] * 4 and prompts[4:8] == [prompts[4]] * 4
    assert prompts[0] != prompts[4]
    assert trainer.batch_prompts(1) != rows and trainer.batch_prompts(0) == rows  # deterministic per step

    rollout, _ = trainer.rollout(prompts)
    sequence_advantages = (rollout.advantages * rollout.mask).sum(-1) / rollout.mask.sum(-1)
    group_sums = sequence_advantages.view(2, 4).sum(-1)  # RLOO advantages of a group sum to zero
    torch.testing.assert_close(group_sums, torch.zeros(2), atol=1e-4, rtol=0)
    assert torch.equal(rollout.values, torch.zeros_like(rollout.values))
    stats = trainer.update(rollout)
    assert "value_loss" not in stats and "policy_loss" in stats
