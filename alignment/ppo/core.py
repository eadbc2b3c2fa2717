"""The math of PPO for RLHF, one function per line of the algorithm (CleanRL style, plain torch).

Sources:
- [PPO]   Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
- [GAE]   Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation",
          arXiv:1506.02438.
- [Z19]   Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593.
- [S20]   Stiennon et al. 2020, "Learning to summarize from human feedback", arXiv:2009.01325.
- [O22]   Ouyang et al. 2022, "Training language models to follow instructions with human feedback", arXiv:2203.02155.
- [KL]    Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.
- [N]     Huang et al. 2024, "The N Implementation Details of RLHF with PPO" (ICLR blog track) and
          "The N+ Implementation Details of RLHF with PPO: A Case Study on TL;DR Summarization", arXiv:2403.17031.
- [Chan]  Chan, Golub & LeVeque 1979, "Updating Formulae and a Pairwise Algorithm for Computing Sample Variances".
- [GRPO]  Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
          arXiv:2402.03300, sec. 4.1 (Group Relative Policy Optimization).
- [DrG]   Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", arXiv:2503.20783 (Dr. GRPO).
- [RLOO]  Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
          Feedback in LLMs", arXiv:2402.14740; Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE Samples, Get a
          Baseline for Free!".
- [R++]   Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models",
          arXiv:2501.03262.

Conventions: per-token tensors are shaped [batch, response_len]; `mask` is 1.0 on real response tokens (up to and
including the first EOS) and 0.0 elsewhere, always a prefix of each row (as `response_mask` builds it). Rollout
quantities (log-probs, values, rewards, advantages) are computed under `torch.no_grad()` by the caller.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

KLEstimator = Literal["k1", "k2", "k3"]
MissingEosMode = Literal["subtract", "replace"]
LossAggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]


def response_mask(response_ids: torch.Tensor, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """1.0 on tokens up to and including the first EOS, 0.0 after it and on padding ([N] "EOS trick").

    Works when pad == eos (the first EOS stays real). Rows without EOS keep every non-pad token.
    """
    length = response_ids.shape[-1]
    positions = torch.arange(length, device=response_ids.device).expand_as(response_ids)
    eos_positions = torch.where(response_ids == eos_token_id, positions, length)
    first_eos = eos_positions.min(dim=-1, keepdim=True).values
    not_pad = (response_ids != pad_token_id) | (positions == first_eos)
    return ((positions <= first_eos) & not_pad).float()


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) gathered at `tokens`: log pi(a_t | s_t) of the sampled tokens.

    `logits[b, t]` must be the logits that produced `tokens[b, t]` (already shifted by the caller) and
    `temperature` the sampler's, so that the log-probs are those of the sampling policy [N]. Computed in float32, one
    row at a time (bounds peak memory in no-grad rollout passes; autograd still keeps every row for backward).
    """
    rows = [
        F.log_softmax(row.float() / temperature, dim=-1).gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)
        for row, row_tokens in zip(logits, tokens)
    ]
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token entropy H = -sum_a pi(a) log pi(a) of softmax(logits / temperature), in nats, shape logits[..., 0].
    Actions a sampler has masked out (logit -inf, pi(a) = 0) contribute 0."""

    def row_entropy(row: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(row.float() / temperature, dim=-1)
        return -(logp.exp() * torch.where(logp.isneginf(), 0.0, logp)).sum(-1)

    return torch.stack([row_entropy(row) for row in logits])


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi [KL].

    With log r = ref_logp - logp: k1 = -log r (unbiased, high variance, can be negative),
    k2 = (log r)^2 / 2 (biased, low variance), k3 = (r - 1) - log r (unbiased, low variance, always >= 0).
    """
    if estimator == "k1":
        return logp - ref_logp
    log_ratio = ref_logp - logp
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over entries where mask == 1 (over all entries, or along `dim`)."""
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over entries where mask == 1; `unbiased` applies Bessel's correction n / (n - 1), which is
    undefined for fewer than 2 entries: there the (zero or empty) biased variance is returned, so whitening a batch
    with a single valid token gives 0 instead of stopping the run."""
    variance = masked_mean((x - masked_mean(x, mask)).square(), mask)
    count = mask.sum()
    if not unbiased or count < 2:
        return variance
    return variance * count / (count - 1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, moments: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """(x - mean) / std over the masked entries [N]; `shift_mean=False` adds the mean back (used for rewards).

    Statistics use only entries where mask == 1 (or are the given `moments`, (mean, variance), e.g. over every
    process's batch); masked-out positions are set to 0.
    """
    mean, var = moments if moments is not None else (masked_mean(x, mask), masked_var(x, mask))
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def apply_missing_eos_penalty(
    scores: torch.Tensor, has_eos: torch.Tensor, penalty: float, mode: MissingEosMode = "subtract"
) -> torch.Tensor:
    """Penalise the scores of sequences that never emitted EOS (truncated at the length limit) [N].

    `penalty` is a positive magnitude. mode "subtract": score - penalty (trl's `missing_eos_penalty`);
    mode "replace": the score becomes -penalty ([N+] replaces it with -1).
    """
    if mode == "subtract":
        penalised = scores - penalty
    elif mode == "replace":
        penalised = torch.full_like(scores, -penalty)
    else:
        raise ValueError(f"missing_eos_mode must be 'subtract' or 'replace', got {mode!r}")
    return torch.where(has_eos.bool(), scores, penalised)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position where mask == 1 in each row (0 for an all-zero row), shape [batch]."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (positions * mask).argmax(dim=-1)


def shape_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
    missing_eos_penalty: float | None = None,
    has_eos: torch.Tensor | None = None,
    missing_eos_mode: MissingEosMode = "subtract",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF reward r_t = -kl_coef * KL_t, plus the sequence score at the last real token [Z19, S20, O22].

    `scores` [batch] are the reward model's; with `missing_eos_penalty`, `has_eos` [batch] (bool) must say which
    responses emitted EOS (see `apply_missing_eos_penalty`). Returns (rewards [batch, len], zero on masked
    positions; KL(pi || pi_ref) summed over each sequence's real tokens [batch], without kl_coef).
    """
    if missing_eos_penalty is not None:
        if has_eos is None:
            raise ValueError("shape_rewards: missing_eos_penalty needs has_eos (which responses emitted EOS)")
        scores = apply_missing_eos_penalty(scores, has_eos, missing_eos_penalty, missing_eos_mode)
    kl = kl_penalty(logp, ref_logp, estimator) * mask
    rewards = -kl_coef * kl
    last = last_token_index(mask).unsqueeze(-1)
    rewards = rewards.scatter_add(-1, last, scores.to(rewards.dtype).unsqueeze(-1))
    return rewards, kl.sum(-1)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation [GAE eq. 16]: A_t = delta_t + gamma * lam * A_{t+1}, returns = A + V.

    delta_t = r_t + gamma * V_{t+1} - V_t, where V_{t+1} = 0 past the last real token (the episode ends at EOS or
    at the length limit; no bootstrapping into padding). Zeroing rewards and values outside the (prefix) mask
    makes every delta there 0, so both outputs are 0 on masked positions and nothing flows back from them.
    """
    rewards, values = rewards * mask, values * mask
    deltas = rewards + gamma * F.pad(values[:, 1:], (0, 1)) - values
    advantage = torch.zeros_like(deltas[:, 0])
    reversed_advantages = []
    for t in reversed(range(deltas.shape[-1])):
        advantage = deltas[:, t] + gamma * lam * advantage
        reversed_advantages.append(advantage)
    advantages = torch.stack(reversed_advantages[::-1], dim=-1)
    return advantages, advantages + values


def group_advantages(
    scores: torch.Tensor, group_size: int, scale_std: bool = True, leave_one_out: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """Critic-free sequence advantages from G = ``group_size`` responses per prompt; ``scores`` [batch] holds each
    prompt's G responses next to each other (rows g*G .. g*G + G - 1).

    * GRPO [GRPO eq. (4)]: A_i = (r_i - mean(r)) / std(r), std with Bessel's correction, ``eps`` added;
    * Dr. GRPO [DrG sec. 3.1]: ``scale_std=False``, A_i = r_i - mean(r) (the std scaling biases towards
      too-easy and too-hard prompts);
    * RLOO [RLOO eq. (7)]: ``leave_one_out``, A_i = r_i - 1/(G-1) sum_{j != i} r_j, the mean of the *other*
      responses (an unbiased baseline).
    Returns [batch]; each advantage is broadcast over its response's tokens by the caller.
    """
    grouped = scores.view(-1, group_size)
    if leave_one_out:
        baseline = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
        return (grouped - baseline).reshape(-1)
    advantages = grouped - grouped.mean(-1, keepdim=True)
    if scale_std:
        advantages = advantages / (grouped.std(-1, keepdim=True) + eps)
    return advantages.reshape(-1)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go G_t = sum_{s >= t} gamma^(s - t) r_s over each response's real tokens, 0 on masked positions:
    REINFORCE++'s per-token return [R++ eq. (5)], before its global whitening."""
    rewards = rewards * mask
    running = torch.zeros_like(rewards[:, 0])
    reversed_returns = []
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[:, t] + gamma * running
        reversed_returns.append(running)
    return torch.stack(reversed_returns[::-1], dim=-1) * mask


def aggregate_loss(
    per_token: torch.Tensor, mask: torch.Tensor, aggregation: LossAggregation, max_length: int | None = None
) -> torch.Tensor:
    """Reduce a per-token loss [batch, len] to a scalar:

    * ``token_mean``: sum over all real tokens / their number (every token weighs alike; PPO [N], DAPO);
    * ``seq_mean_token_mean``: the mean over sequences of each sequence's token mean [GRPO eq. (3)]
      (a long response's tokens weigh less);
    * ``seq_mean_token_sum``: the mean over sequences of each sequence's token *sum*, divided by the constant
      ``max_length`` (the response-length limit) instead of the sequence's own length [DrG sec. 3.1]: no length
      bias, and a learning-rate scale comparable to the means.
    """
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "seq_mean_token_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if aggregation == "seq_mean_token_sum":
        if not max_length:
            raise ValueError("seq_mean_token_sum needs max_length, the constant normaliser")
        return ((per_token * mask).sum(-1) / max_length).mean()
    raise ValueError(f"loss aggregation must be token_mean, seq_mean_token_mean or seq_mean_token_sum, got {aggregation!r}")


def policy_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    aggregation: LossAggregation = "token_mean",
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate [PPO eq. 7]: L = -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t).

    rho_t = pi_new / pi_old; the mean is over the real tokens of the minibatch as ``aggregation`` says
    (:func:`aggregate_loss`; PPO's is ``token_mean`` [N]). Stats (detached, token means):
    `clipfrac` (fraction of tokens where the clipped term is active, i.e. the gradient is zero), `approx_kl`
    (k3 estimate of KL(pi_old || pi_new) [KL]), `ratio_mean`.
    """
    ratio = torch.exp(logp_new - logp_old)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = aggregate_loss(torch.maximum(unclipped, clipped), mask, aggregation, max_length)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(kl_penalty(logp_old, logp_new, "k3"), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values_new: torch.Tensor,
    values_old: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss [N]: 0.5 * mean_t max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2).

    Stats (detached): `value_clipfrac`, the fraction of real tokens where the clipped error is the larger one.
    """
    values_clipped = values_old + torch.clamp(values_new - values_old, -clip_range_value, clip_range_value)
    unclipped_error = (values_new - returns).square()
    clipped_error = (values_clipped - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((clipped_error > unclipped_error).float(), mask)}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over real tokens.

    1 for perfect values, 0 for predicting the mean of R, negative for worse; undefined when Var[R] = 0.
    """
    residual_var = masked_var(returns - values, mask, unbiased=False)
    return 1.0 - residual_var / masked_var(returns, mask, unbiased=False)


class KLController:
    """Holds the KL coefficient beta of the reward r_t = score - beta * KL_t; `update` after each rollout batch."""

    def __init__(self, kl_coef: float) -> None:
        self.kl_coef = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt `kl_coef` to `current_kl`, the mean per-sequence KL of the `n_steps` sequences just collected."""

    def state_dict(self) -> dict[str, float]:
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.kl_coef = float(state["kl_coef"])


class FixedKLController(KLController):
    """Constant KL coefficient [S20, O22]."""


class AdaptiveKLController(KLController):
    """Adaptive KL coefficient [Z19 sec. 2.2]: beta <- beta * (1 + e * n_steps / horizon), e = clip(KL/target - 1).

    e is clipped to [-0.2, 0.2]; `n_steps` is the number of sequences in the batch (the paper's batch size).
    Raises beta when the policy drifts further than `target` nats from the reference, lowers it when closer.

    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        super().__init__(init_kl_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.kl_coef *= 1.0 + proportional_error * n_steps / self.horizon


class RunningMoments:
    """Running mean and (population) variance of everything seen, merged batch by batch [Chan].

    Used to normalise reward-model scores; the state is plain floats so it resumes from `state_dict()`.
    In distributed training, update with the scores gathered from all ranks so every rank agrees.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    @property
    def std(self) -> float:
        return self.var**0.5

    def update(self, x: torch.Tensor) -> None:
        """Merge the moments of batch `x` (all elements) into the running ones."""
        batch_var, batch_mean = torch.var_mean(x.detach().double(), correction=0)
        batch_count = x.numel()
        total = self.count + batch_count
        delta = batch_mean.item() - self.mean
        m2 = self.var * self.count + batch_var.item() * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
        """(x - mean) / std with the running moments; `shift_mean=False` only rescales."""
        centred = x - self.mean if shift_mean else x
        return centred / (self.std + 1e-8)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])
