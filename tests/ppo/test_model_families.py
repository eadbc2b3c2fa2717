"""PPO on every decoder family, on tiny random-init models built from configs (no hub): one PPO step runs, and the
trainer's token log-probs are the sampler's, with each model's own head semantics (Gemma's final logit
softcapping, Granite's logits scaling, Cohere's logit scale) included."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from alignment.ppo.core import response_mask
from alignment.ppo.modeling import position_ids
from alignment.ppo.trainer import PPOTrainer

from tiny_models import FAMILIES
from tiny_models import build_decoder as build

PROMPTS = ["I watched this film last weekend and", "The plot"]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.mark.parametrize("family", FAMILIES)
def test_ppo_sampler_and_trainer_agree_on_every_family(family, tokenizer, tmp_path):
    path = build(family, tokenizer, tmp_path / family)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    trainer = PPOTrainer.from_recipe([
        "--model_name_or_path", path, "--method", "lora", "--lora_r", "4", "--lora_target_modules", "all-linear",
        "--dataset_path", str(prompts), "--reward_function", "length", "--batch_size", "2", "--num_mini_batches", "1",
        "--ppo_epochs", "1", "--total_steps", "1", "--response_length", "6", "--use_chat_template", "false",
        "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", "--bf16", "false", "--save_steps", "100",
    ])
    query = trainer.encode_prompts(PROMPTS)
    torch.manual_seed(0)
    response, sampler_logp, _ = trainer.sample(query, with_logprobs=True)
    mask = response_mask(response, trainer.tokenizer.eos_token_id, trainer.tokenizer.pad_token_id)
    ids = torch.cat([query["input_ids"], response], 1)
    attention = torch.cat([query["attention_mask"], mask.long()], 1)
    ours = trainer.logprobs(ids, attention, query["input_ids"].shape[1], response)
    torch.testing.assert_close(ours * mask, torch.where(mask.bool(), sampler_logp, 0.0), atol=1e-3, rtol=0)
    start = query["input_ids"].shape[1]
    forward = trainer.actor_critic.model(input_ids=ids, attention_mask=attention, position_ids=position_ids(attention)).logits
    forward = forward[:, start - 1 : -1]  # the model's own forward: its head and whatever it applies to the logits
    torch.testing.assert_close(trainer.actor_critic.logits(ids, attention, start), forward, atol=1e-4, rtol=1e-4)
    _, hidden = trainer.actor_critic.causal_lm(ids, attention, start, hidden=True)  # what value_model: head reads
    torch.testing.assert_close(hidden, trainer.actor_critic.hidden_states(ids, attention)[:, start - 1 : -1])
    trainer.train()  # one step: rollout (with the start-up sampler check), update, checkpoint
    assert trainer.step == 1 and (tmp_path / "run" / "checkpoint-1").is_dir()
