"""The single-base PPO model with real SmolLM2 weights (4-bit QLoRA): one base in memory for the policy, reference,
value and reward roles; reference log-probs; log-probs consistent with the sampler; the reward adapter scoring as
the reward model does."""

from __future__ import annotations

import gc
import json

import pytest
import torch
import torch.nn.functional as F

from alignment.errors import AlignmentError
from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.ppo.core import response_mask
from alignment.ppo.modeling import POLICY, REFERENCE, REWARD, VALUE
from alignment.ppo.trainer import PPOTrainer
from alignment.rewards import init_reward_head, load_reward_model

from helpers import ROOT

BASE = "builtin:smollm2-135m-instruct"
PROMPTS = ["I watched this film last weekend and", "The director's new thriller", "Honestly, the soundtrack", "The plot"]


def _perturb(model, scale: float = 0.05) -> None:
    """Make LoRA B non-zero (it starts at zero), so the adapter changes the model's outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A fake SFT run (perturbed causal LoRA adapter) and a fake RM run (perturbed seq-cls LoRA + head), both on BASE."""
    root = tmp_path_factory.mktemp("ppo-unit")
    tok = load_tokenizer(BASE)
    lora = ModelArguments(model_name_or_path=BASE, method="lora", lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    sft, sft_origin = load_model(lora, "causal", tok)
    _perturb(sft)
    save_model(sft, tok, root / "sft", kind="causal", origin=sft_origin, stage="sft")
    rm, rm_origin = load_model(lora, "seq_cls", tok, num_labels=1, init_head=init_reward_head)
    _perturb(rm)
    save_model(rm, tok, root / "rm", kind="seq_cls", origin=rm_origin, num_labels=1, stage="rm", max_length=128, reward_stats={"mean": 0.5, "std": 2.0})
    del sft, rm
    gc.collect()
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return root


@pytest.fixture(scope="module")
def trainer(folders):
    return PPOTrainer.from_recipe([
        "--model_name_or_path", str(folders / "sft"), "--method", "qlora", "--lora_r", "4",
        "--lora_target_modules", "[q_proj, v_proj]", "--dataset_path", str(folders / "prompts.jsonl"),
        "--reward_model", str(folders / "rm"), "--batch_size", "4", "--num_mini_batches", "1", "--ppo_epochs", "1",
        "--response_length", "6", "--learning_rate", "5e-3", "--use_chat_template", "false",
        "--output_dir", str(folders / "run"), "--use_cpu", "true", "--bf16", "false",
    ])


def test_policy_reference_value_and_reward_share_one_base(trainer):
    gc.collect()
    model = trainer.actor_critic
    assert set(model.model.peft_config) == {POLICY, VALUE, REFERENCE, REWARD}
    assert "shared base" in trainer.reward.description
    token_tables = [o for o in gc.get_objects() if isinstance(o, torch.nn.Embedding) and o.num_embeddings >= 49152]
    assert token_tables == [model.model.get_input_embeddings()]
    quantised = {id(o) for o in gc.get_objects() if type(o).__name__ == "Linear4bit"}
    assert quantised and quantised == {id(m) for m in model.modules() if type(m).__name__ == "Linear4bit"}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == model.trainable_names
    assert any(".value." in n for n in trained) and any(".default." in n for n in trained) and "value_head.weight" in trained
    assert not any(".reference." in n or ".reward." in n for n in trained)


def test_logprobs_are_those_of_the_temperature_sampler(trainer):
    query = trainer.encode_prompts(PROMPTS)
    torch.manual_seed(0)
    out = trainer.actor_critic.model.generate(
        **query, generation_config=trainer.generation_config, output_scores=True, return_dict_in_generate=True
    )
    length = query["input_ids"].shape[1]
    response = out.sequences[:, length:]
    sampler_logp = F.log_softmax(torch.stack(out.scores, dim=1).float(), -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    mask = response_mask(response, trainer.tokenizer.eos_token_id, trainer.tokenizer.pad_token_id)
    ids = torch.cat([query["input_ids"], response], 1)
    attention = torch.cat([query["attention_mask"], mask.long()], 1)
    ours = trainer.logprobs(ids, attention, length, response)
    torch.testing.assert_close(ours * mask, sampler_logp * mask, atol=2e-3, rtol=0)
    at_temperature_one = F.log_softmax(torch.stack(out.scores, 1).float() * trainer.config.temperature, -1)
    assert not torch.allclose(ours * mask, at_temperature_one.gather(-1, response.unsqueeze(-1)).squeeze(-1) * mask, atol=1e-2)


def test_reward_adapter_scores_like_the_reward_model(trainer, folders):
    prompts, responses = PROMPTS[:2], [" and I loved every minute of it.", " is a dull mess."]
    shared = trainer.reward.score(prompts, responses)
    separate = load_reward_model(folders / "rm", load_in_4bit=True)
    source = trainer.reward.terms[0][1]
    assert (source.mean, source.std) == (0.5, 2.0)
    torch.testing.assert_close(torch.tensor(shared), torch.tensor(separate.score(prompts, responses)), atol=1e-3, rtol=0)
    assert abs(shared[0] - shared[1]) > 1e-3  # the head reads the responses, not a constant
    del separate
    gc.collect()


def test_reference_is_the_frozen_sft_adapter_and_the_policy_moves_away(trainer):
    rollout, _ = trainer.rollout(PROMPTS)
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length, rollout.response_ids)
    mask = rollout.mask
    torch.testing.assert_close(rollout.ref_logp * mask, rollout.logp * mask, atol=1e-5, rtol=0)  # policy starts as the SFT model
    model = trainer.actor_critic
    with torch.no_grad(), model.model.disable_adapter():
        bare = F.log_softmax(model.logits(*args[:3]).float() / trainer.config.temperature, -1)
    bare = bare.gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)
    assert ((bare - rollout.ref_logp) * mask).abs().max() > 1e-2  # the reference is the SFT adapter, not the bare base
    trainer.update(rollout)
    torch.testing.assert_close(trainer.logprobs(*args, reference=True) * mask, rollout.ref_logp * mask, atol=1e-5, rtol=0)
    assert ((trainer.logprobs(*args) - rollout.logp) * mask).abs().max() > 1e-3


@pytest.fixture(scope="module")
def llama_with_sampling_defaults(tmp_path_factory, tiny_llama_dir):
    """The tiny Llama with the sampling options instruct checkpoints ship in their generation_config."""
    import shutil

    from transformers import GenerationConfig

    out = tmp_path_factory.mktemp("llama-gen-config") / "model"
    shutil.copytree(tiny_llama_dir, out)
    GenerationConfig(do_sample=True, repetition_penalty=1.3, min_p=0.1, typical_p=0.9, no_repeat_ngram_size=2, top_k=20).save_pretrained(out)
    return out


def test_the_sampler_ignores_the_checkpoints_sampling_options(llama_with_sampling_defaults, tmp_path):
    """Every option generate would take from the checkpoint is neutral: the sampler's own log-probs (its scores)
    are the trainer's softmax(logits / T); the start-up self-check passes, and stops a run whose sampler is not."""
    trainer = PPOTrainer.from_recipe([
        "--model_name_or_path", str(llama_with_sampling_defaults), "--method", "lora", "--lora_r", "4",
        "--lora_target_modules", "[q_proj, v_proj]", "--dataset_path", str(ROOT / "data/prompts/movie_reviews.jsonl"),
        "--reward_function", "length", "--batch_size", "4", "--num_mini_batches", "1", "--ppo_epochs", "1",
        "--response_length", "12", "--use_chat_template", "false", "--output_dir", str(tmp_path / "run"),
        "--use_cpu", "true", "--bf16", "false",
    ])
    query = trainer.encode_prompts(PROMPTS)
    torch.manual_seed(0)
    response, sampler_logp, _ = trainer.sample(query, with_logprobs=True)
    mask = response_mask(response, trainer.tokenizer.eos_token_id, trainer.tokenizer.pad_token_id)
    ids = torch.cat([query["input_ids"], response], 1)
    ours = trainer.logprobs(ids, torch.cat([query["attention_mask"], mask.long()], 1), query["input_ids"].shape[1], response)
    torch.testing.assert_close(ours * mask, torch.where(mask.bool(), sampler_logp, 0.0), atol=1e-4, rtol=0)
    trainer.rollout(PROMPTS)
    assert trainer.sampler_checked
    trainer.sampler_checked = False
    trainer.generation_config.top_k = 5  # a sampler that is another policy
    with pytest.raises(AlignmentError, match="the sampler is not the policy being trained"):
        trainer.rollout(PROMPTS)


def test_reward_adapter_reads_the_rollout_token_ids_under_the_chat_template(folders):
    """With the chat template the reward adapter scores the sampled ids themselves: a finished answer scores as its
    rendered text does, and an answer cut without EOS stays an unfinished turn (the text path would close it)."""
    chat = PPOTrainer.from_recipe([
        "--model_name_or_path", str(folders / "sft"), "--method", "qlora", "--lora_r", "4",
        "--lora_target_modules", "[q_proj, v_proj]", "--dataset_path", str(folders / "prompts.jsonl"),
        "--reward_model", str(folders / "rm"), "--batch_size", "4", "--num_mini_batches", "1", "--ppo_epochs", "1",
        "--response_length", "6", "--use_chat_template", "true",
        "--output_dir", str(folders / "run-chat"), "--use_cpu", "true", "--bf16", "false",
    ])
    tok, source = chat.tokenizer, chat.reward.terms[0][1]
    prompt, answer = PROMPTS[0], "I loved every minute of it."
    query = chat.encode_prompts([prompt])
    prompt_ids = query["input_ids"][0][query["attention_mask"][0].bool()].tolist()
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    finished, cut = prompt_ids + answer_ids + [tok.eos_token_id], prompt_ids + answer_ids[:3]
    as_text = source.score([prompt, prompt], [answer, tok.decode(answer_ids[:3])])
    as_ids = source.score([prompt, prompt], [answer, tok.decode(answer_ids[:3])], token_ids=[finished, cut])
    assert as_ids[0] == pytest.approx(as_text[0], abs=1e-3)
    assert abs(as_ids[1] - as_text[1]) > 1e-3

    seen = {}
    real = source.score
    source.score = lambda p, r, **kw: seen.update(kw) or real(p, r, **kw)
    torch.manual_seed(0)
    rollout, _ = chat.rollout(PROMPTS)
    keep = rollout.attention_mask.bool()
    assert seen["token_ids"] == [ids[k].tolist() for ids, k in zip(rollout.input_ids, keep)]
    del chat
    gc.collect()
