"""A whole PPO run with real SmolLM2 weights (4-bit QLoRA): a keyword reward moves the policy's samples its way, the
reference stays the base, and the run folder holds the logs and a plain peft adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignment.models import read_meta
from alignment.ppo.core import response_mask
from alignment.reward_functions import keyword
from alignment.ppo.trainer import PPOTrainer

TRAIN_PROMPTS = [
    "I watched this film last weekend and", "The director's new thriller", "When the opening credits began to roll,",
    "The lead actress, best known for television,", "This comedy is about a wedding that", "Honestly, the soundtrack",
    "The second half of the movie", "My favourite scene was", "The plot", "Critics have called it",
    "The special effects", "By the end of the film,",
]
HELD_OUT = [
    "I went to see it with my sister and", "The cinematography", "From the very first scene,", "The villain",
    "Two hours later,", "The dialogue in this movie", "It is hard to describe how", "The ending",
]
METRICS = {"reward_mean", "reward_std", "kl", "entropy", "clipfrac", "approx_kl", "value_loss", "explained_variance",
           "response_length", "eos_rate", "time_generation", "time_training", "kl_coef", "learning_rate"}


def _recipe(tmp_path: Path, **keys) -> list[str]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in TRAIN_PROMPTS))
    values = {
        "model_name_or_path": "builtin:smollm2-135m-instruct", "lora_r": 8, "dataset_path": str(prompts),
        "use_chat_template": False, "use_cpu": True, "bf16": False, **keys,
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return [str(recipe)]


def test_keyword_reward_moves_the_qlora_policy_towards_the_keyword(tmp_path):
    """Also the over-optimisation monitor: against a gold reward that disagrees with the proxy (fewer "the"), the
    held-out rows show proxy up and gold down, and KL from 0 at the start."""
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in HELD_OUT * 2))
    argv = _recipe(
        tmp_path, method="qlora", reward_function="keyword", reward_kwargs={"keywords": ["the"]}, batch_size=8,
        num_mini_batches=2, ppo_epochs=2, total_steps=4, learning_rate=3e-3, kl_coef=0.01, response_length=8,
        value_model="head", save_steps=100, output_dir=str(tmp_path / "run"),
        eval_prompts=str(heldout), gold_reward="helpers:fewer_the", eval_steps=2,
    )
    trainer = PPOTrainer.from_recipe(argv)
    responses_before, before = trainer.score_policy(HELD_OUT * 2, seed=0)
    query = trainer.encode_prompts(HELD_OUT)
    response = trainer.sample(query)
    mask = response_mask(response, trainer.tokenizer.eos_token_id, trainer.tokenizer.pad_token_id)
    probe_args = (
        torch.cat([query["input_ids"], response], 1), torch.cat([query["attention_mask"], mask.long()], 1),
        query["input_ids"].shape[1], response,
    )
    policy_start, reference_start = trainer.logprobs(*probe_args) * mask, trainer.logprobs(*probe_args, reference=True) * mask

    trainer.train()
    responses_after, after = trainer.score_policy(HELD_OUT * 2, seed=0)
    assert before == keyword(HELD_OUT * 2, responses_before, ["the"])
    assert sum(after) / len(after) >= sum(before) / len(before) + 0.25, (responses_before, responses_after)
    torch.testing.assert_close(policy_start, reference_start, atol=1e-5, rtol=0)  # LoRA starts at zero: policy = base
    torch.testing.assert_close(trainer.logprobs(*probe_args, reference=True) * mask, reference_start, atol=1e-5, rtol=0)
    assert (trainer.logprobs(*probe_args) * mask - policy_start).abs().max() > 1e-2

    summary = trainer.save_final()
    run = tmp_path / "run"
    monitor = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in monitor] == [0, 2, 4] and all(r["num_prompts"] == 16 for r in monitor)
    assert all(r["gold_reward"] == -r["proxy_reward"] for r in monitor)  # the gold judge scored the same answers
    assert monitor[-1]["proxy_reward"] > monitor[0]["proxy_reward"] and monitor[-1]["gold_reward"] < monitor[0]["gold_reward"]
    assert abs(monitor[0]["kl"]) < 1e-4 < 1e-3 < abs(monitor[-1]["kl"])  # the policy starts as the reference, then moves
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and METRICS <= set(rows[0])
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * trainer.config.num_samples and {"prompt", "response", "score"} <= set(samples[0])
    assert summary["steps"] == 4 and json.loads((run / "metrics.json").read_text())["episodes"] == 32
    assert read_meta(run)["base_model"] == "builtin:smollm2-135m-instruct" and read_meta(run)["stage"] == "ppo"
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and not (run / "value").exists()

