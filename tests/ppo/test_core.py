"""PPO math on tiny hand-made tensors, checked against closed forms and explicit per-sequence loops."""

import math

import pytest
import torch

from alignment.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    response_mask,
    shape_rewards,
    value_loss,
)

EOS, PAD = 2, 0


def tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# --- response_mask -----------------------------------------------------------------------------------------------


def test_response_mask_keeps_first_eos_and_drops_everything_after_it() -> None:
    ids = torch.tensor(
        [
            [5, 6, EOS, 7, EOS, 8],  # EOS mid-sequence, tokens (even another EOS) after it are not real
            [5, 6, 7, 8, 9, 4],  # no EOS, no padding: truncated at the length limit, all real
            [5, EOS, PAD, PAD, PAD, PAD],  # EOS then padding
            [EOS, 6, 7, PAD, PAD, PAD],  # EOS first: only the EOS is real
            [5, 6, 7, PAD, PAD, PAD],  # no EOS but padded: padding is not real
        ]
    )
    expected = tensor(
        [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    ).float()
    assert torch.equal(response_mask(ids, EOS, PAD), expected)


def test_response_mask_when_pad_is_eos_keeps_the_first_eos() -> None:
    ids = torch.tensor([[5, 6, EOS, EOS, EOS], [5, 6, 7, 8, 9]])
    expected = tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).float()
    assert torch.equal(response_mask(ids, eos_token_id=EOS, pad_token_id=EOS), expected)


# --- log-probs and entropy ---------------------------------------------------------------------------------------


def test_logprobs_are_those_of_the_temperature_scaled_policy() -> None:
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [[2.0, 2.0, 2.0], [4.0, 0.0, 1.0]]])
    tokens = torch.tensor([[1, 2], [0, 1]])
    for temperature in (1.0, 0.7, 2.0):
        got = logprobs_from_logits(logits, tokens, temperature)
        probs = torch.softmax(logits / temperature, dim=-1)
        expected = [[probs[b, t, tokens[b, t]].log().item() for t in range(2)] for b in range(2)]
        torch.testing.assert_close(got, torch.tensor(expected))
    assert not torch.allclose(logprobs_from_logits(logits, tokens, 2.0), logprobs_from_logits(logits, tokens, 1.0))


def test_logprobs_are_float32_for_bfloat16_logits_and_carry_gradients() -> None:
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0)).bfloat16().requires_grad_()
    logp = logprobs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long))
    assert logp.dtype == torch.float32
    logp.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_entropy_is_log_vocab_for_uniform_and_zero_for_peaked_logits() -> None:
    logits = torch.stack([torch.zeros(2, 5), torch.tensor([[100.0, 0, 0, 0, 0], [0, 0, 0, 0, 100.0]])])
    entropy = entropy_from_logits(logits)
    torch.testing.assert_close(entropy, torch.tensor([[math.log(5)] * 2, [0.0, 0.0]]))


def test_entropy_ignores_actions_the_sampler_masked_out() -> None:
    """A sampler's processed logits can hold -inf (a banned token): p = 0 there, so it adds 0, not NaN."""
    logits = torch.tensor([[0.0, 0.0, -math.inf], [0.0, -math.inf, -math.inf]])
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([math.log(2), 0.0]))


def test_entropy_matches_definition_and_rises_with_temperature() -> None:
    logits = torch.tensor([[[1.0, 2.0, 0.5]]])
    p = torch.softmax(logits / 2.0, -1)
    torch.testing.assert_close(entropy_from_logits(logits, 2.0), -(p * p.log()).sum(-1))
    assert entropy_from_logits(logits, 2.0) > entropy_from_logits(logits, 1.0)


# --- KL estimators -----------------------------------------------------------------------------------------------


LOGP = tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, -1.2]])
REF_LOGP = tensor([[-1.5, -1.0, -0.9], [-0.2, -2.0, -1.0]])


def test_kl_estimators_match_closed_forms() -> None:
    log_r = REF_LOGP - LOGP
    torch.testing.assert_close(kl_penalty(LOGP, REF_LOGP, "k1"), LOGP - REF_LOGP)
    torch.testing.assert_close(kl_penalty(LOGP, REF_LOGP, "k2"), 0.5 * log_r**2)
    torch.testing.assert_close(kl_penalty(LOGP, REF_LOGP, "k3"), torch.exp(log_r) - 1 - log_r)


def test_k3_is_non_negative_and_zero_only_for_equal_logprobs() -> None:
    logp = torch.linspace(-8, 0, 50).unsqueeze(0)
    ref_logp = torch.linspace(0, -8, 50).unsqueeze(0)
    k3 = kl_penalty(logp, ref_logp, "k3")
    assert (k3 >= 0).all() and (kl_penalty(logp, ref_logp, "k1") < 0).any()
    assert kl_penalty(LOGP, LOGP, "k3").abs().max() == 0


def test_k1_and_k3_are_unbiased_estimates_of_the_true_kl() -> None:
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    true_kl = (p * (p / q).log()).sum()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref_logp = p.log()[samples], q.log()[samples]
    for estimator in ("k1", "k3"):
        torch.testing.assert_close(kl_penalty(logp, ref_logp, estimator).mean(), true_kl, atol=5e-3, rtol=0)


def test_unknown_kl_estimator_is_rejected() -> None:
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(LOGP, REF_LOGP, "k4")  # type: ignore[arg-type]


# --- masked statistics -------------------------------------------------------------------------------------------


X = tensor([[1.0, 2.0, 3.0, 1e6], [4.0, 5.0, -1e6, -1e6]])
MASK = tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
X_REAL = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)


def test_masked_mean_and_var_ignore_masked_entries() -> None:
    torch.testing.assert_close(masked_mean(X, MASK), X_REAL.mean())
    torch.testing.assert_close(masked_mean(X, MASK, dim=1), torch.tensor([2.0, 4.5], dtype=torch.float64))
    torch.testing.assert_close(masked_var(X, MASK), X_REAL.var(correction=1))
    torch.testing.assert_close(masked_var(X, MASK, unbiased=False), X_REAL.var(correction=0))


def test_masked_var_and_whitening_of_a_single_entry_do_not_stop_the_run() -> None:
    one = tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    assert masked_var(X, one).item() == 0.0
    whitened = masked_whiten(X, one)
    assert torch.isfinite(whitened).all() and (whitened == 0).all()


def test_masked_whiten_gives_zero_mean_unit_variance_on_real_entries() -> None:
    whitened = masked_whiten(X, MASK)
    torch.testing.assert_close(masked_mean(whitened, MASK), torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(masked_var(whitened, MASK), torch.tensor(1.0, dtype=torch.float64))
    assert (whitened[MASK == 0] == 0).all()
    expected = (X_REAL - X_REAL.mean()) / X_REAL.std()
    torch.testing.assert_close(whitened[MASK == 1], expected)


def test_masked_whiten_without_shift_keeps_the_mean() -> None:
    whitened = masked_whiten(X, MASK, shift_mean=False)
    torch.testing.assert_close(masked_mean(whitened, MASK), X_REAL.mean())
    torch.testing.assert_close(masked_var(whitened, MASK), torch.tensor(1.0, dtype=torch.float64))


# --- reward shaping ----------------------------------------------------------------------------------------------


SHAPE_MASK = tensor([[1, 1, 0], [1, 1, 1]])


def test_shape_rewards_puts_score_on_last_real_token_and_kl_penalty_everywhere_real() -> None:
    scores = torch.tensor([2.0, -1.0], dtype=torch.float64)
    rewards, kl_sum = shape_rewards(scores, LOGP, REF_LOGP, SHAPE_MASK, kl_coef=0.1, estimator="k1")
    kl = LOGP - REF_LOGP
    expected = tensor(
        [
            [-0.1 * kl[0, 0], -0.1 * kl[0, 1] + 2.0, 0.0],
            [-0.1 * kl[1, 0], -0.1 * kl[1, 1], -0.1 * kl[1, 2] - 1.0],
        ]
    )
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(kl_sum, torch.stack([kl[0, :2].sum(), kl[1].sum()]))


def test_shape_rewards_uses_the_chosen_estimator_for_the_kl_sum() -> None:
    scores = torch.zeros(2, dtype=torch.float64)
    _, kl_sum = shape_rewards(scores, LOGP, REF_LOGP, SHAPE_MASK, kl_coef=0.0, estimator="k3")
    torch.testing.assert_close(kl_sum, (kl_penalty(LOGP, REF_LOGP, "k3") * SHAPE_MASK).sum(1))


@pytest.mark.parametrize(("mode", "penalised_score"), [("subtract", -1.0 - 3.0), ("replace", -3.0)])
def test_missing_eos_penalty_only_hits_sequences_without_eos(mode: str, penalised_score: float) -> None:
    scores = torch.tensor([2.0, -1.0], dtype=torch.float64)
    has_eos = torch.tensor([True, False])
    rewards, _ = shape_rewards(
        scores, LOGP, LOGP, SHAPE_MASK, 0.1, "k1", missing_eos_penalty=3.0, has_eos=has_eos, missing_eos_mode=mode
    )
    torch.testing.assert_close(rewards, tensor([[0.0, 2.0, 0.0], [0.0, 0.0, penalised_score]]))


def test_missing_eos_penalty_requires_has_eos() -> None:
    with pytest.raises(ValueError, match="has_eos"):
        shape_rewards(torch.zeros(2), LOGP, LOGP, SHAPE_MASK, 0.1, "k1", missing_eos_penalty=1.0)


# --- GAE ---------------------------------------------------------------------------------------------------------


def reference_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Textbook GAE on one unpadded episode: V after the last step is 0."""
    advantages, running = [], 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        running = rewards[t] + gamma * next_value - values[t] + gamma * lam * running
        advantages.insert(0, running)
    return advantages


# Row 0: EOS at index 2 then post-EOS tokens; row 1: no EOS (all real); row 2: padding after index 0.
GAE_MASK = tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
GAE_REWARDS = tensor([[0.1, -0.2, 1.5, 9.0, 9.0], [0.0, 0.3, -0.1, 0.2, 2.0], [-1.0, 7.0, 7.0, 7.0, 7.0]])
GAE_VALUES = tensor([[0.5, 0.4, 1.0, 50.0, 50.0], [0.2, 0.1, 0.3, -0.4, 1.2], [0.3, 40.0, 40.0, 40.0, 40.0]])


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.99, 0.95), (1.0, 1.0), (0.0, 0.95), (0.9, 0.0), (0.0, 0.0)])
def test_gae_matches_per_episode_loop_and_ignores_masked_tokens(gamma: float, lam: float) -> None:
    advantages, returns = compute_gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma, lam)
    for row in range(3):
        length = int(GAE_MASK[row].sum())
        expected = reference_gae(GAE_REWARDS[row, :length].tolist(), GAE_VALUES[row, :length].tolist(), gamma, lam)
        torch.testing.assert_close(advantages[row, :length], torch.tensor(expected, dtype=torch.float64))
        torch.testing.assert_close(returns[row, :length], advantages[row, :length] + GAE_VALUES[row, :length])
    assert (advantages[GAE_MASK == 0] == 0).all() and (returns[GAE_MASK == 0] == 0).all()


def test_gae_edge_cases_by_hand() -> None:
    rewards, values, mask = tensor([[1.0, 2.0, 3.0, 100.0]]), tensor([[0.5, 1.0, 1.5, 100.0]]), tensor([[1, 1, 1, 0]])
    # gamma = lam = 1: Monte-Carlo return-to-go minus V_t, no bootstrap into the masked 4th token.
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, tensor([[6.0 - 0.5, 5.0 - 1.0, 3.0 - 1.5, 0.0]]))
    torch.testing.assert_close(returns, tensor([[6.0, 5.0, 3.0, 0.0]]))
    # gamma = 0: A_t = r_t - V_t.
    advantages, _ = compute_gae(rewards, values, mask, gamma=0.0, lam=0.95)
    torch.testing.assert_close(advantages, tensor([[0.5, 1.0, 1.5, 0.0]]))
    # lam = 0: one-step TD error r_t + gamma V_{t+1} - V_t, with V after the last real token = 0.
    advantages, _ = compute_gae(rewards, values, mask, gamma=0.5, lam=0.0)
    torch.testing.assert_close(advantages, tensor([[1.0 + 0.5 - 0.5, 2.0 + 0.75 - 1.0, 3.0 - 1.5, 0.0]]))


# --- policy loss -------------------------------------------------------------------------------------------------


def policy_grad(ratio: float, advantage: float, clip_range: float = 0.2) -> tuple[float, dict[str, torch.Tensor]]:
    """d loss / d logp_new for a single token with the given ratio and advantage."""
    logp_new = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    logp_old = torch.zeros(1, 1, dtype=torch.float64)
    loss, stats = policy_loss(logp_new, logp_old, tensor([[advantage]]), tensor([[1]]), clip_range)
    loss.backward()
    return logp_new.grad.item(), stats


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [
        (1.5, 1.0, True),  # already more likely and good: no further push
        (0.5, -1.0, True),  # already less likely and bad: no further push
        (1.5, -1.0, False),  # more likely but bad: pessimistic unclipped term keeps the gradient
        (0.5, 1.0, False),  # less likely but good: unclipped term keeps the gradient
        (1.1, 1.0, False),  # inside the trust region
        (0.9, -1.0, False),
    ],
)
def test_policy_loss_gradient_is_zero_exactly_where_clipping_is_active(
    ratio: float, advantage: float, clipped: bool
) -> None:
    grad, stats = policy_grad(ratio, advantage)
    # loss = -A * ratio, d ratio / d logp = ratio.
    expected = 0.0 if clipped else -advantage * ratio
    assert grad == pytest.approx(expected)
    assert stats["clipfrac"].item() == float(clipped)
    assert stats["ratio_mean"].item() == pytest.approx(ratio)


def test_policy_loss_value_clipfrac_and_approx_kl_over_real_tokens() -> None:
    ratios = tensor([[1.5, 1.0, 0.5, 3.0], [1.1, 0.7, 9.0, 9.0]])
    advantages = tensor([[2.0, -1.0, -1.0, -0.5], [1.0, 1.0, 5.0, 5.0]])
    mask = tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss, stats = policy_loss(ratios.log(), torch.zeros_like(ratios), advantages, mask, clip_range=0.2)
    # per token: max(-A r, -A clip(r)): [-2.4 (clipped), 1, 0.8 (clipped), 1.5], [-1.1, -0.7]
    torch.testing.assert_close(loss, torch.tensor((-2.4 + 1.0 + 0.8 + 1.5 - 1.1 - 0.7) / 6, dtype=torch.float64))
    assert stats["clipfrac"].item() == pytest.approx(2 / 6)
    real = ratios[mask == 1]
    torch.testing.assert_close(stats["approx_kl"], (real - 1 - real.log()).mean())
    assert not stats["approx_kl"].requires_grad


def test_policy_loss_at_old_policy_is_minus_mean_advantage_with_zero_kl() -> None:
    logp = LOGP.clone().requires_grad_()
    loss, stats = policy_loss(logp, LOGP, REF_LOGP, SHAPE_MASK, clip_range=0.2)
    torch.testing.assert_close(loss, -masked_mean(REF_LOGP, SHAPE_MASK))
    assert stats["approx_kl"].item() == 0 and stats["clipfrac"].item() == 0


# --- value loss --------------------------------------------------------------------------------------------------


def test_value_loss_clips_updates_that_move_away_from_the_return() -> None:
    values_old, returns, mask = tensor([[1.0, 1.0, 1.0, 0.0]]), tensor([[2.0, 0.0, 1.1, 0.0]]), tensor([[1, 1, 1, 0]])
    values_new = tensor([[3.0, 1.5, 1.05, 99.0]]).requires_grad_()
    loss, stats = value_loss(values_new, values_old, returns, mask, clip_range_value=0.2)
    # token 0: overshoots the return; clipped value 1.2 has error 0.64 < unclipped 1.0 -> unclipped, gradient flows.
    # token 1: moves away from the return; clipped 1.2 has error 1.44 < 2.25 -> unclipped, gradient flows.
    # token 2: inside the clip range -> both equal.
    torch.testing.assert_close(loss, torch.tensor(0.5 * (1.0 + 2.25 + 0.05**2) / 3, dtype=torch.float64))
    assert stats["value_clipfrac"].item() == 0
    loss.backward()
    torch.testing.assert_close(values_new.grad, tensor([[1.0, 1.5, -0.05, 0.0]]) / 3)


def test_value_loss_stops_gradient_when_the_clipped_error_is_larger() -> None:
    values_old, returns, mask = tensor([[0.0, 0.0]]), tensor([[1.0, 5.0]]), tensor([[1, 1]])
    values_new = tensor([[0.9, 0.1]]).requires_grad_()
    loss, stats = value_loss(values_new, values_old, returns, mask, clip_range_value=0.2)
    # token 0: V jumped to 0.9 (error 0.01) but the clipped 0.2 errs 0.64: the clipped term wins, no gradient.
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.64 + 4.9**2) / 2, dtype=torch.float64))
    assert stats["value_clipfrac"].item() == 0.5
    loss.backward()
    torch.testing.assert_close(values_new.grad, tensor([[0.0, (0.1 - 5.0) / 2]]))


# --- explained variance ------------------------------------------------------------------------------------------


def test_explained_variance_is_one_for_perfect_and_zero_for_the_mean() -> None:
    returns = tensor([[1.0, 2.0, 3.0, 0.0], [5.0, -1.0, 0.0, 0.0]])
    mask = tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    garbage = tensor([[0.0, 0.0, 0.0, 1e3], [0.0, 0.0, -1e3, 7.0]])  # values on masked tokens must not matter
    assert explained_variance(returns + garbage, returns, mask).item() == pytest.approx(1.0)
    mean_prediction = torch.full_like(returns, masked_mean(returns, mask).item()) + garbage
    assert explained_variance(mean_prediction, returns, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert explained_variance(-returns, returns, mask).item() < 0


# --- KL controllers ----------------------------------------------------------------------------------------------


def test_adaptive_kl_raises_coef_above_target_and_lowers_it_below() -> None:
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=6.6, n_steps=100)  # error 0.1
    assert controller.kl_coef == pytest.approx(0.1 * (1 + 0.1 * 100 / 10_000))
    controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=3.0, n_steps=100)  # error -0.5, clipped to -0.2
    assert controller.kl_coef == pytest.approx(0.1 * (1 - 0.2 * 100 / 10_000))
    controller.update(current_kl=600.0, n_steps=100)  # error 99, clipped to +0.2
    assert controller.kl_coef == pytest.approx(0.1 * (1 - 0.2 * 0.01) * (1 + 0.2 * 0.01))


def test_kl_controllers_resume_from_state_dict() -> None:
    controller = AdaptiveKLController(0.2, target=1.0, horizon=100)
    controller.update(current_kl=5.0, n_steps=10)
    resumed = AdaptiveKLController(0.2, target=1.0, horizon=100)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.kl_coef == controller.kl_coef != 0.2
    fixed = FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=64)
    assert fixed.kl_coef == 0.05
    fixed.load_state_dict({"kl_coef": 0.3})
    assert fixed.state_dict() == {"kl_coef": 0.3}


# --- running moments ---------------------------------------------------------------------------------------------


def test_running_moments_match_the_concatenated_batches_and_resume() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=generator) * 3 + 2 for n in (5, 1, 17)]
    moments = RunningMoments()
    for batch in batches[:2]:
        moments.update(batch)
    resumed = RunningMoments()
    resumed.load_state_dict(moments.state_dict())
    resumed.update(batches[2])
    everything = torch.cat(batches).double()
    assert resumed.count == 23
    assert resumed.mean == pytest.approx(everything.mean().item())
    assert resumed.var == pytest.approx(everything.var(correction=0).item())
    normalized = resumed.normalize(everything)
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert normalized.std(correction=0).item() == pytest.approx(1.0, abs=1e-6)
