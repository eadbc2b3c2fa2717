"""Inter-rater agreement, accuracy on gold items and Bradley-Terry strengths.

A *unit* is one candidate pair of one task; each rater who judged the task (not skipped) gives it a
nominal value: +1 (first candidate better), -1 (second better) or 0 (tie; pairwise "both_bad" counts
as a tie). Agreement is measured over units with at least two raters:

- pairwise agreement rate: the share of rater pairs on a unit that gave the same value, with a 95%
  percentile bootstrap interval (units resampled with replacement, 1000 resamples, seeded);
- Krippendorff's alpha, **nominal** level (1 = perfect, 0 = chance, < 0 worse than chance).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from alignment.annotations.records import Candidate, JudgementRecord


def pair_units(records: Iterable[JudgementRecord]) -> dict[tuple[int, int, int], dict[str, int]]:
    """(task id, candidate a, candidate b) with a < b -> {rater: +1 | 0 | -1}."""
    units: dict[tuple[int, int, int], dict[str, int]] = defaultdict(dict)
    for r in records:
        if r.skipped:
            continue
        for a, b in combinations(sorted(r.ranks), 2):
            units[(r.task_id, a, b)][r.rater] = r.outcome(a, b)
    return units


def pairwise_agreement(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Share of agreeing rater pairs over all units; None when no unit has two values."""
    agree = total = 0
    for values in units:
        for x, y in combinations(values, 2):
            total += 1
            agree += x == y
    return agree / total if total else None


def pairwise_agreement_ci(
    units: Iterable[Sequence[Hashable]], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> list[float] | None:
    """[lo, hi]: percentile bootstrap interval of ``pairwise_agreement`` over units; None without rater pairs."""
    counts = [
        (sum(x == y for x, y in combinations(values, 2)), len(values) * (len(values) - 1) // 2) for values in units
    ]
    counts = [c for c in counts if c[1]]
    if not counts:
        return None
    agree, total = np.array(counts, dtype=float).T
    rng = np.random.default_rng(seed)
    batch = max(1, 1_000_000 // len(counts))  # resamples per draw: at most ~10^6 indices in memory
    rates = []
    for start in range(0, resamples, batch):
        picks = rng.integers(0, len(counts), size=(min(batch, resamples - start), len(counts)))
        rates.append(agree[picks].sum(axis=1) / total[picks].sum(axis=1))
    lo, hi = np.quantile(np.concatenate(rates), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal values (units with < 2 values are ignored).

    None when it is undefined: no pairable values, or every value the same.
    """
    coincidence: Counter[tuple[Hashable, Hashable]] = Counter()
    for values in units:
        if len(values) < 2:
            continue
        counts = Counter(values)
        for c in counts:
            for k in counts:
                coincidence[c, k] += counts[c] * (counts[k] - (c == k)) / (len(values) - 1)
    marginals: Counter[Hashable] = Counter()
    for (c, _), weight in coincidence.items():
        marginals[c] += weight
    n = sum(marginals.values())
    observed = sum(w for (c, k), w in coincidence.items() if c != k)
    expected = sum(marginals[c] * marginals[k] for c in marginals for k in marginals if c != k) / max(n - 1, 1)
    return 1 - observed / expected if expected else None


def gold_accuracy(records: Iterable[JudgementRecord]) -> dict[str, dict[str, float]]:
    """Per rater ``{"items", "accuracy"}`` on gold tasks (skips left out).

    An item scores the share of the gold answer's ordered pairs the rater ordered the same way
    (a tie where gold has an order is wrong); accuracy is the mean item score.
    """
    scores: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if not r.is_gold or r.skipped or not r.gold_ranks:
            continue
        gold = r.gold_ranks
        pairs = [(a, b) for a, b in combinations(sorted(gold), 2) if gold[a] != gold[b]]
        right = sum(r.outcome(a, b) == (1 if gold[a] < gold[b] else -1) for a, b in pairs)
        scores[r.rater].append(right / len(pairs))
    return {rater: {"items": len(s), "accuracy": sum(s) / len(s)} for rater, s in sorted(scores.items())}


def bradley_terry(comparisons: Iterable[tuple[Hashable, Hashable]], l2: float = 0.01) -> dict[Hashable, float]:
    """Log-strengths s (mean 0) maximising sum log sigmoid(s_winner - s_loser) - l2/2 |s|^2.

    ``comparisons`` are (winner, loser) pairs. The small L2 term keeps items that always win or
    always lose finite; with ``l2=0`` and a connected comparison graph it is the plain MLE.
    """
    from scipy.optimize import minimize  # imported here: scipy is slow to import and only reports need it

    counts = Counter(comparisons)
    items = sorted({x for pair in counts for x in pair}, key=repr)
    if not items:
        return {}
    index = {item: i for i, item in enumerate(items)}
    winners = np.array([index[w] for w, _ in counts])
    losers = np.array([index[l] for _, l in counts])
    weights = np.array(list(counts.values()), dtype=float)

    def loss_and_grad(s: np.ndarray) -> tuple[float, np.ndarray]:
        diff = s[winners] - s[losers]
        loss = float(weights @ np.logaddexp(0.0, -diff)) + 0.5 * l2 * float(s @ s)
        pull = -weights / (1.0 + np.exp(diff))  # d loss / d diff
        grad = l2 * s
        np.add.at(grad, winners, pull)
        np.add.at(grad, losers, -pull)
        return loss, grad

    fit = minimize(loss_and_grad, np.zeros(len(items)), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    strengths = fit.x - fit.x.mean()
    return {item: float(strengths[index[item]]) for item in items}


def report(records: Sequence[JudgementRecord], candidates: dict[int, Candidate]) -> dict[str, Any]:
    """The admin report: agreement (and its CI), alpha (nominal), gold accuracy, Bradley-Terry per policy and
    candidate."""
    judged = [r for r in records if not r.skipped]
    units = [list(v.values()) for v in pair_units(judged).values() if len(v) >= 2]
    wins = [(chosen, rejected) for r in judged for chosen, rejected, _ in r.preferences()]
    policy_wins = [
        (candidates[w].policy, candidates[l].policy) for w, l in wins if candidates[w].policy != candidates[l].policy
    ]
    by_candidate = bradley_terry(wins)
    return {
        "judgements": len(judged),
        "skips": len(records) - len(judged),
        "units_with_2_or_more_raters": len(units),
        "pairwise_agreement": pairwise_agreement(units),
        "pairwise_agreement_ci": pairwise_agreement_ci(units),
        "krippendorff_alpha": krippendorff_alpha_nominal(units),
        "krippendorff_alpha_level": "nominal",
        "gold_accuracy": gold_accuracy(judged),
        "bradley_terry_policy": dict(sorted(bradley_terry(policy_wins).items(), key=lambda kv: -kv[1])),
        "bradley_terry_candidate": [
            {"candidate_id": c, "prompt_id": candidates[c].prompt_id, "policy": candidates[c].policy, "strength": s}
            for c, s in sorted(by_candidate.items(), key=lambda kv: (candidates[kv[0]].prompt_id, -kv[1]))
        ],
    }
