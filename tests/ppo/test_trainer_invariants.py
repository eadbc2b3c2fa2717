"""Trainer-level invariants of PPO on a tiny random-init Llama (fast): the KL the trainer shapes rewards with is
KL(policy || reference) and not its mirror, a higher kl_coef holds the policy closer to the reference, k3 KL is never
negative, and two micro-batches of gradient accumulation give the update of one full micro-batch."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.ppo.trainer import PPOTrainer

PROMPTS = ["I watched this film last weekend and", "The plot", "Honestly, the soundtrack", "My favourite scene was"]


def make_trainer(tiny_llama_dir, tmp_path, name: str, **keys) -> PPOTrainer:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    values = {
        "model_name_or_path": tiny_llama_dir, "method": "lora", "lora_r": 4, "lora_target_modules": "all-linear",
        "dataset_path": str(prompts), "reward_function": "length", "batch_size": 4, "num_mini_batches": 1,
        "ppo_epochs": 1, "total_steps": 4, "response_length": 5, "use_chat_template": "false", "learning_rate": 3e-2,
        "lr_scheduler_type": "constant", "output_dir": str(tmp_path / name), "use_cpu": "true", "bf16": "false",
        "save_steps": 100, "num_samples": 0, **keys,
    }
    return PPOTrainer.from_recipe([x for k, v in values.items() for x in (f"--{k}", str(v))])


def perturb_policy(trainer: PPOTrainer) -> None:
    """Move the policy LoRA away from zero, so policy and reference differ."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in trainer.actor_critic.named_parameters():
            if ".default." in name and "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)


def test_rollout_kl_is_policy_minus_reference_log_probs(tiny_llama_dir, tmp_path):
    trainer = make_trainer(tiny_llama_dir, tmp_path, "kl", kl_coef=0.5, normalize_rewards="false")
    perturb_policy(trainer)
    torch.manual_seed(0)
    rollout, _ = trainer.rollout(PROMPTS)
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length, rollout.response_ids)
    policy, reference = trainer.logprobs(*args), trainer.logprobs(*args, reference=True)
    expected = ((policy - reference) * rollout.mask).sum(-1)
    assert expected.abs().max() > 0.1  # the perturbation made the two policies differ
    torch.testing.assert_close(rollout.kl, expected, atol=1e-4, rtol=0)
    # the shaped per-token reward is -kl_coef * (log pi - log pi_ref), plus the raw score at the last token
    last = rollout.mask.sum(-1).long() - 1
    penalty = rollout.rewards.clone()
    penalty[torch.arange(len(PROMPTS)), last] -= rollout.scores - 1.0 * ~rollout.has_eos  # default missing_eos_penalty
    torch.testing.assert_close(penalty, -0.5 * (policy - reference) * rollout.mask, atol=1e-4, rtol=0)


@pytest.mark.parametrize("penalty", [None, 1.0, 2.5])
def test_a_response_cut_without_eos_loses_the_missing_eos_penalty_by_default(tiny_llama_dir, tmp_path, penalty):
    """Responses cut at response_length are not scored as if they had ended: by default each loses 1 (in units of
    the score as it enters the reward); null turns it off."""
    keys = {"missing_eos_penalty": "null" if penalty is None else penalty} if penalty != 1.0 else {}
    trainer = make_trainer(tiny_llama_dir, tmp_path, f"eos-{penalty}", normalize_rewards="false",
                           sampler_check_tolerance="null", **keys)  # the edited tokens are not the sampler's
    assert trainer.config.missing_eos_penalty == penalty
    eos = trainer.tokenizer.eos_token_id
    torch.manual_seed(0)
    real_sample = trainer.sample

    def half_end_with_eos(query, with_logprobs=False):
        out = real_sample(query, with_logprobs)
        ids = out[0] if with_logprobs else out
        ids[::2, 1] = eos  # rows 0 and 2 end at their second token; rows 1 and 3 run to the limit
        ids[1::2] = torch.where(ids[1::2] == eos, eos + 1, ids[1::2])
        return out

    trainer.sample = half_end_with_eos
    rollout, _ = trainer.rollout(PROMPTS)
    assert rollout.has_eos.tolist() == [True, False, True, False]
    expected = rollout.scores - (penalty or 0.0) * (~rollout.has_eos).float()
    torch.testing.assert_close(rollout.score_terms, expected, atol=1e-5, rtol=0)


def record_gradients(trainer: PPOTrainer) -> list[dict[str, torch.Tensor]]:
    """The gradients at every optimizer step from now on (the torch optimizer steps only when they are synchronised)."""
    seen, inner = [], trainer.optimizer.optimizer
    real_step = inner.step

    def recording_step(*args, **kwargs):
        seen.append({n: p.grad.detach().clone() for n, p in trainer.actor_critic.named_parameters() if p.grad is not None})
        return real_step(*args, **kwargs)

    inner.step = recording_step
    return seen


def final_kl(trainer: PPOTrainer) -> float:
    trainer.train()
    _, kl = trainer.sample_heldout(PROMPTS * 4, seed=3)
    return sum(kl) / len(kl)


def test_a_higher_kl_coef_keeps_the_policy_closer_and_k3_is_never_negative(tiny_llama_dir, tmp_path):
    # the missing-EOS penalty is off: its step of 1 on every cut answer would pull both policies towards EOS as hard
    # as the KL holds them back, and the comparison would measure that pull instead of the KL coefficient
    free = final_kl(make_trainer(tiny_llama_dir, tmp_path, "free", kl_coef=0.0, missing_eos_penalty="null"))
    held = make_trainer(tiny_llama_dir, tmp_path, "held", kl_coef=2.0, kl_estimator="k3", missing_eos_penalty="null")
    held_kl = final_kl(held)
    assert free > 0.05, free  # without a penalty the policy moves
    assert held_kl < 0.5 * free, (held_kl, free)
    rows = [json.loads(line) for line in (tmp_path / "held" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kl"] >= 0 for r in rows)


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_two_accumulated_micro_batches_make_the_gradient_of_one(tiny_llama_dir, tmp_path, estimator):
    """Gradients, not parameters, are compared: AdamW's first step is about lr * sign(gradient), blind to scale."""
    keys = {"value_model": "adapter"} if estimator == "gae" else {"advantage_estimator": "grpo", "num_generations": 2}
    gradients = []
    for accumulation in (1, 2):
        trainer = make_trainer(tiny_llama_dir, tmp_path, f"ga{accumulation}-{estimator}", gradient_accumulation_steps=accumulation,
                               max_grad_norm=1e6, **keys)
        perturb_policy(trainer)
        torch.manual_seed(0)
        prompts = PROMPTS[:2] * 2 if estimator == "gae" else [p for p in PROMPTS[:2] for _ in range(2)]
        rollout, _ = trainer.rollout(prompts)
        # equal token counts per micro-batch (no early EOS from a random model), so a token mean over one micro-batch
        # of 4 is the mean of the two token means over micro-batches of 2
        assert bool(rollout.mask.all())
        seen = record_gradients(trainer)
        trainer.update(rollout)
        assert len(seen) == 1  # one optimizer step per mini-batch, whatever the accumulation
        gradients.append(seen[0])
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-3)
    assert any(g.abs().max() > 0 for g in gradients[0].values())


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(tiny_llama_dir, tmp_path):
    gradients, layer_calls = [], []
    for checkpointing in ("false", "true"):
        trainer = make_trainer(tiny_llama_dir, tmp_path, f"gc-{checkpointing}", gradient_checkpointing=checkpointing,
                               max_grad_norm=1e6, value_model="adapter")
        perturb_policy(trainer)
        torch.manual_seed(0)
        rollout, _ = trainer.rollout(PROMPTS)
        calls = []
        mlp = trainer.actor_critic.model.get_base_model().model.layers[0].mlp  # runs inside the checkpointed block
        mlp_forward = mlp.forward  # counted by wrapping: module hooks do not fire in the backward's recompute

        def counted(*args, **kwargs):
            calls.append(1)
            return mlp_forward(*args, **kwargs)

        mlp.forward = counted
        seen = record_gradients(trainer)
        trainer.update(rollout)
        assert not trainer.actor_critic.training  # rollouts after the update sample in eval mode again
        gradients.append(seen[0])
        layer_calls.append(len(calls))
    assert layer_calls[1] > layer_calls[0]  # the checkpointed blocks ran again in the backward pass
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-4)


def test_a_single_on_policy_update_skips_the_rollout_log_prob_pass(tiny_llama_dir, tmp_path):
    from alignment.ppo.core import kl_penalty

    prompts = [p for p in PROMPTS[:2] for _ in range(2)]
    passes = {}
    for name, minis in (("on-policy", 1), ("two-minibatches", 2)):
        trainer = make_trainer(tiny_llama_dir, tmp_path, name, advantage_estimator="grpo", num_generations=2, num_mini_batches=minis)
        assert trainer.config.on_policy_update == (minis == 1)
        perturb_policy(trainer)
        torch.manual_seed(0)
        trainer.rollout(prompts)  # the first rollout checks the sampler against the trainer's own pass, always
        calls, forward = [], trainer.actor_critic.forward
        trainer.actor_critic.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
        rollout, _ = trainer.rollout(prompts)
        passes[name] = len(calls)
        trainer.actor_critic.forward = forward
        if minis == 1:  # the sampler's log-probs stand in for the pass: the same KL
            args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length, rollout.response_ids)
            expected = (kl_penalty(trainer.logprobs(*args), trainer.logprobs(*args, reference=True), "k3") * rollout.mask).sum(-1)
            torch.testing.assert_close(rollout.kl, expected, atol=1e-3, rtol=0)
            stats = trainer.update(rollout)
            assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clipfrac"] == 0.0
    assert passes == {"on-policy": 0, "two-minibatches": 1}
