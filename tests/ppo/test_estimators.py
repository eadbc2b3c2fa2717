"""The critic-free estimators against hand-computed values (GRPO's group normalisation, Dr. GRPO's centring and
length-free aggregation, RLOO's leave-one-out baseline, REINFORCE++'s reward-to-go and global whitening), and
their recipe rules, checked before any model loads."""

from __future__ import annotations

import json
import re

import pytest
import torch

from alignment.ppo.__main__ import main
from alignment.ppo.args import PPOConfig
from alignment.ppo.core import aggregate_loss, discounted_returns, group_advantages, masked_whiten, policy_loss

SCORES = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 3.0, 1.0, 0.0, 0.0])


def test_grpo_normalises_each_group_by_its_mean_and_unbiased_std():
    # group 1: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5; group 2: all equal -> 0
    # group 3: mean 1, unbiased std sqrt((4 + 0 + 1 + 1) / 3) = sqrt(2)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0, 2 / 2**0.5, 0, -1 / 2**0.5, -1 / 2**0.5])
    torch.testing.assert_close(group_advantages(SCORES, 4, scale_std=True), expected, atol=1e-5, rtol=0)


def test_dr_grpo_only_centres_each_group():
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0, 2.0, 0.0, -1.0, -1.0])
    torch.testing.assert_close(group_advantages(SCORES, 4, scale_std=False), expected)


def test_rloo_baseline_is_the_mean_of_the_other_responses():
    # r_i - mean_{j != i} r_j: group 1 -> 1 - 0, 0 - 1/3; group 3 -> 3 - 1/3, 1 - 1, 0 - 4/3
    expected = torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0, 3 - 1 / 3, 0.0, -4 / 3, -4 / 3])
    torch.testing.assert_close(group_advantages(SCORES, 4, leave_one_out=True), expected)
    # equal to G / (G - 1) times the centred reward, and not the centred reward itself
    torch.testing.assert_close(group_advantages(SCORES, 4, leave_one_out=True), 4 / 3 * group_advantages(SCORES, 4, scale_std=False))


def test_groups_are_adjacent_rows_not_strided():
    scores = torch.tensor([1.0, 0.0, 5.0, 5.0])
    torch.testing.assert_close(group_advantages(scores, 2, scale_std=False), torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_reinforce_pp_reward_to_go_and_global_whitening():
    rewards = torch.tensor([[-0.1, -0.2, 1.0, 0.0], [0.5, -0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    returns = discounted_returns(rewards, mask, gamma=1.0)
    torch.testing.assert_close(returns, torch.tensor([[0.7, 0.8, 1.0, 0.0], [0.0, -0.5, 0.0, 0.0]]))
    discounted = discounted_returns(rewards, mask, gamma=0.5)
    torch.testing.assert_close(discounted[0, :3], torch.tensor([-0.1 + 0.5 * (-0.2 + 0.5), -0.2 + 0.5, 1.0]))
    whitened = masked_whiten(returns, mask)
    valid = returns[mask.bool()]
    torch.testing.assert_close(whitened[mask.bool()], (valid - valid.mean()) / valid.std(), atol=1e-4, rtol=0)
    # the batch's moments, not a row's: whitening with moments from a larger (global) batch differs
    moments = (torch.tensor(0.0), torch.tensor(4.0))
    torch.testing.assert_close(masked_whiten(returns, mask, moments=moments), returns / 2, atol=1e-4, rtol=0)


PER_TOKEN = torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
LENGTHS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    "aggregation,expected",
    [
        ("token_mean", 5 / 4),  # (2 + 1 + 1 + 1) / 4 tokens
        ("seq_mean_token_mean", (2 / 1 + 3 / 3) / 2),  # each sequence's mean, then the mean over sequences
        ("seq_mean_token_sum", (2 / 4 + 3 / 4) / 2),  # Dr. GRPO: each sequence's sum over the constant length 4
    ],
)
def test_loss_aggregations(aggregation, expected):
    assert aggregate_loss(PER_TOKEN, LENGTHS, aggregation, max_length=4).item() == pytest.approx(expected)


def test_dr_grpo_aggregation_weighs_tokens_of_long_and_short_answers_alike():
    logp = torch.zeros(2, 4, requires_grad=True)
    advantages = torch.ones(2, 4)
    loss, _ = policy_loss(logp, logp.detach(), advantages, LENGTHS, 0.2, "seq_mean_token_sum", max_length=4)
    loss.backward()
    grads = logp.grad[LENGTHS.bool()]
    assert torch.allclose(grads, grads[0])  # every real token gets the same gradient
    logp.grad = None
    loss, _ = policy_loss(logp, logp.detach(), advantages, LENGTHS, 0.2, "seq_mean_token_mean")
    loss.backward()
    assert logp.grad[0, 0] == pytest.approx(3 * logp.grad[1, 0].item())  # GRPO: a 1-token answer's token weighs 3x


def test_estimator_defaults():
    grpo = PPOConfig(reward_function="length", advantage_estimator="grpo", num_generations=4)
    assert (grpo.value_model, grpo.kl_in, grpo.kl_estimator, grpo.loss_aggregation, grpo.group_std_scaling) == (
        "none", "loss", "k3", "seq_mean_token_mean", True)
    dr = PPOConfig(reward_function="length", advantage_estimator="dr_grpo", num_generations=4)
    assert (dr.loss_aggregation, dr.group_std_scaling, dr.critic) == ("seq_mean_token_sum", False, False)
    ppo = PPOConfig(reward_function="length")
    assert (ppo.value_model, ppo.kl_in, ppo.kl_estimator, ppo.critic) == ("adapter", "reward", "k1", True)
    assert PPOConfig(reward_function="length", advantage_estimator="rloo", num_generations=2).kl_in == "reward"


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--advantage_estimator", "grpo", "--num_generations", "3"], "batch_size \\(16\\) must be divisible by num_generations \\(3\\)"),
        (["--advantage_estimator", "grpo", "--num_generations", "4", "--value_model", "adapter"], "value_model: adapter trains a critic"),
        (["--advantage_estimator", "rloo", "--num_generations", "4", "--value_model", "head"], "value_model: head trains a critic"),
        (["--value_model", "none"], "gae needs a value function"),
        (["--advantage_estimator", "grpo"], "num_generations must be >= 2"),
        (["--advantage_estimator", "rloo", "--num_generations", "2", "--group_std_scaling", "true"], "group_std_scaling is for grpo"),
        (["--advantage_estimator", "ppo"], "key 'advantage_estimator'"),
        (["--num_generations", "0"], "num_generations must be > 0"),
    ],
)
def test_estimator_recipe_errors_stop_before_any_model_loads(tmp_path, capsys, flags, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hello"}) + "\n")
    argv = ["--dataset_path", str(prompts), "--output_dir", str(tmp_path / "run"), "--reward_function", "length", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()
