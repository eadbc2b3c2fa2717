"""Confidence intervals for policy comparisons: percentile bootstrap over prompts, paired across policies.

Every policy answers the same prompts, so a comparison resamples *prompts* (not answers) and uses the same resample
for every policy and judge: the interval of a win rate or a reward gain then carries the baseline's noise as well as
the policy's, and samples of one prompt (``samples_per_prompt``) are never treated as independent.
"""

from __future__ import annotations

import numpy as np

CI = tuple[float, float]


def bootstrap_indices(num_prompts: int, resamples: int, seed: int = 0) -> np.ndarray:
    """[resamples, num_prompts] prompt indices drawn with replacement; share them across everything compared."""
    return np.random.default_rng(seed).integers(0, num_prompts, size=(resamples, num_prompts))


def ci95(per_prompt: np.ndarray, indices: np.ndarray) -> CI:
    """95% percentile interval of the mean of ``per_prompt`` over the resamples ``indices``."""
    if len(per_prompt) == 0:
        return (float("nan"), float("nan"))
    means = np.asarray(per_prompt, dtype=float)[indices].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int = 0) -> CI:
    """95% percentile bootstrap interval of the mean of independent values."""
    return ci95(np.asarray(values, dtype=float), bootstrap_indices(len(values), resamples, seed))


def win_rates(scores: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per prompt, the fraction of (policy sample, baseline sample) pairs the policy wins, ties counting half.

    ``scores`` and ``baseline`` are [prompts, samples]; with one sample each this is 1, 0.5 or 0 per prompt."""
    s, b = np.asarray(scores, dtype=float)[:, :, None], np.asarray(baseline, dtype=float)[:, None, :]
    return ((s > b) + 0.5 * (s == b)).mean(axis=(1, 2))
