"""Which tasks a round of human feedback asks for: active preference selection within a judgement budget.

A round samples candidates for fresh prompts; every prompt offers one task (a ranking of ``k`` of its candidates, or
one pair). ``select`` keeps ``budget`` offers, one per prompt, the highest acquisition first:

- ``random``: a seeded shuffle, the baseline every active strategy is compared with.
- ``uncertainty``: the current reward model's own doubt about the order, the mean binary entropy of
  sigma(r_i - r_j) over the offer's candidate pairs (for a pair: the smallest |r_i - r_j|). Predictive entropy is the
  signal Muldrew et al. (2024, "Active Preference Learning for Large Language Models") found worth acquiring on.
- ``disagreement``: epistemic uncertainty, the standard deviation of r_i - r_j across an ensemble of reward heads on
  the reward model's frozen features, averaged over the offer's pairs. Each head is fit on a bootstrap resample of the
  judgements so far and anchored to its own random draw around the trained head (randomised priors, Osband et al.
  2018), so heads agree where the judgements pin the reward down and differ where they do not; Dwaracherla et al.
  (2024, "Efficient Exploration for LLMs") found such ensembles of heads on a shared base the practical source of
  exploration signal. Unlike entropy, it does not keep asking about pairs that are truly tied.

Offers already judged (the same prompt and candidate set, in any task set) are never offered again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Strategy = Literal["random", "uncertainty", "disagreement"]
STRATEGIES = ("random", "uncertainty", "disagreement")


@dataclass(frozen=True)
class Offer:
    """A task that could go to the raters: one prompt and the candidates (import rows: text, policy, sampling) it shows."""

    prompt: str
    candidates: tuple[dict[str, Any], ...]

    @property
    def key(self) -> tuple[str, frozenset[str]]:
        return self.prompt, frozenset(c["text"] for c in self.candidates)

    def as_row(self) -> dict[str, Any]:
        """The ``tasks import`` row for this offer."""
        return {"prompt": self.prompt, "candidates": list(self.candidates)}


def offers(rows: Sequence[dict[str, Any]], kind: str, k: int, taken: set[tuple[str, frozenset[str]]] = frozenset()) -> list[list[Offer]]:
    """Per prompt row (``{"prompt", "candidates"}``), every not yet judged set of ``k`` distinct candidates (2 for
    pairwise)."""
    size = 2 if kind == "pairwise" else k
    out = []
    for row in rows:
        distinct = list({c["text"]: c for c in row["candidates"]}.values())
        sets = [Offer(row["prompt"], subset) for subset in combinations(distinct, size)]
        out.append([o for o in sets if o.key not in taken])
    return out


def pair_differences(rewards: np.ndarray) -> np.ndarray:
    """[members, candidates] rewards -> [members, pairs] differences r_i - r_j over every pair i < j."""
    i, j = np.triu_indices(rewards.shape[1], k=1)
    return rewards[:, i] - rewards[:, j]


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def acquisition(strategy: Strategy, rewards: np.ndarray) -> float:
    """How much asking about one offer is worth, from its [members, candidates] rewards (members: 1 for a single RM)."""
    diffs = pair_differences(np.atleast_2d(rewards))
    if strategy == "uncertainty":
        return float(binary_entropy(1 / (1 + np.exp(-diffs.mean(axis=0)))).mean())
    if strategy == "disagreement":
        return float(diffs.std(axis=0).mean())
    raise ValueError(f"no acquisition for strategy {strategy!r}")


def select(per_prompt: list[list[Offer]], budget: int, strategy: Strategy, seed: int = 0, scorer=None) -> list[Offer]:
    """Up to ``budget`` offers, at most one per prompt, the highest acquisition first (ties and ``random`` in a seeded
    order). ``scorer(offers) -> list of [members, candidates] arrays`` is needed by every strategy but ``random``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"selection must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    rng = np.random.default_rng(seed)
    flat = [o for group in per_prompt for o in group]
    if not flat or budget <= 0:
        return []
    order = rng.permutation(len(flat))  # the tie-break, and the whole order for random
    if strategy == "random":
        value = np.zeros(len(flat))
    else:
        if scorer is None:
            raise ValueError(f"selection {strategy} needs a reward model to score the candidates")
        value = np.array([acquisition(strategy, r) for r in scorer(flat)])
    ranked = sorted(range(len(flat)), key=lambda n: (-value[n], order[n]))
    chosen, prompts = [], set()
    for n in ranked:
        if flat[n].prompt in prompts:
            continue
        chosen.append(flat[n])
        prompts.add(flat[n].prompt)
        if len(chosen) == budget:
            break
    return chosen


# ------------------------------------------------------------------------------------------------ head ensemble
@dataclass
class HeadEnsemble:
    """Linear reward heads on a shared frozen base: ``rewards(features)`` is [members, n]."""

    weight: torch.Tensor  # [members, features]
    bias: torch.Tensor  # [members]

    def rewards(self, features: torch.Tensor) -> np.ndarray:
        return (self.weight @ features.T.float() + self.bias[:, None]).numpy()


def fit_heads(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    weight: torch.Tensor,
    bias: float = 0.0,
    *,
    members: int = 8,
    prior_scale: float = 1.0,
    anchor: float = 1.0,
    steps: int = 300,
    seed: int = 0,
) -> HeadEnsemble:
    """Fit ``members`` Bradley–Terry heads on features of the chosen and rejected answers ([pairs, features]).

    Member m minimises  mean_i c_mi * -log sigma(theta_m . (f_chosen_i - f_rejected_i)) + anchor/2n * |theta_m - a_m|^2
    with Poisson(1) bootstrap counts c_mi and an anchor a_m = weight + prior_scale * |weight| / sqrt(d) * N(0, I)
    around the trained head ``weight`` ([features]); it starts at its anchor."""
    g = torch.Generator().manual_seed(seed)
    d = weight.numel()
    w0 = weight.detach().float().reshape(1, d)
    spread = prior_scale * w0.norm() / d**0.5
    anchors = w0 + spread * torch.randn(members, d, generator=g)
    counts = torch.poisson(torch.ones(members, len(chosen)), generator=g)
    delta = (chosen - rejected).float()
    theta = anchors.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=0.05)
    n = max(len(chosen), 1)
    for _ in range(steps):
        optimizer.zero_grad()
        fit = (counts * -torch.nn.functional.logsigmoid(theta @ delta.T)).sum(dim=1) / n
        prior = anchor / (2 * n) * ((theta - anchors) ** 2).sum(dim=1)
        (fit + prior).sum().backward()
        optimizer.step()
    return HeadEnsemble(theta.detach(), torch.full((members,), float(bias)))


# ------------------------------------------------------------------------------------------- scoring the offers
Scorer = Callable[[list[Offer]], list[np.ndarray]]


def reward_scorer(rm_dir: str | Path, strategy: Strategy, preferences: Sequence[dict[str, Any]] = (), *,
                  members: int = 8, seed: int = 0) -> Scorer:
    """``scorer(offers)`` for :func:`select` from a reward model run folder: its scores ([1, candidates] per offer)
    for ``uncertainty``; for ``disagreement`` the rewards of a :func:`fit_heads` ensemble ([members, candidates])
    fit on the ``preferences`` rows (``prompt``, ``chosen``, ``rejected``) the reward model was trained on."""
    from alignment.rewards import load_reward_model

    rm = load_reward_model(rm_dir)
    if strategy == "uncertainty":
        def rewards(prompts: list[str], texts: list[str]) -> np.ndarray:
            return np.asarray(rm.score(prompts, texts), dtype=float)[None]
    else:
        if not preferences:
            raise ValueError("disagreement needs the preference rows the reward model learnt from, to fit its heads")
        prompts = [r["prompt"] for r in preferences]
        chosen = rm.features(prompts, [r["chosen"] for r in preferences])
        rejected = rm.features(prompts, [r["rejected"] for r in preferences])
        weight, bias = rm.head()
        ensemble = fit_heads(chosen, rejected, weight, bias, members=members, seed=seed)

        def rewards(prompts: list[str], texts: list[str]) -> np.ndarray:
            return ensemble.rewards(rm.features(prompts, texts))

    def scorer(flat: list[Offer]) -> list[np.ndarray]:
        pairs = list(dict.fromkeys((o.prompt, c["text"]) for o in flat for c in o.candidates))  # each answer once
        table = rewards([p for p, _ in pairs], [t for _, t in pairs]) if pairs else np.zeros((1, 0))
        column = {pair: n for n, pair in enumerate(pairs)}
        return [table[:, [column[o.prompt, c["text"]] for c in o.candidates]] for o in flat]

    return scorer
