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

SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 256}
GQA = {"num_key_value_heads": 1}
FAMILIES = {
    "llama": ("LlamaConfig", GQA),
    "qwen2": ("Qwen2Config", GQA),
    "qwen3": ("Qwen3Config", {**GQA, "head_dim": 16}),
    "gemma2": ("Gemma2Config", {**GQA, "head_dim": 16, "query_pre_attn_scalar": 16, "final_logit_softcapping": 2.0}),
    "gemma3": ("Gemma3TextConfig", {**GQA, "head_dim": 16, "final_logit_softcapping": 2.0}),
    "mistral": ("MistralConfig", GQA),
    "phi3": ("Phi3Config", GQA),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", {}),
    "olmo2": ("Olmo2Config", GQA),
    "granite": ("GraniteConfig", {**GQA, "logits_scaling": 8.0}),
    "cohere": ("CohereConfig", {**GQA, "logit_scale": 4.0}),
}
PROMPTS = ["I watched this film last weekend and", "The plot"]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)


def build(family: str, tokenizer, folder) -> str:
    """A random-init 2-layer model of ``family`` with large logits (initializer_range 0.5), so that a head's own
    post-processing changes the distribution measurably."""
    name, extra = FAMILIES[family]
    sizes = {} if family == "gpt2" else SIZES
    config = getattr(transformers, name)(
        vocab_size=len(tokenizer), initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes, **extra,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


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
    response, sampler_logp = trainer.sample(query, with_logprobs=True)
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
