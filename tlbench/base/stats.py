"""Bootstrap confidence intervals of accuracy, over test examples and seeds; Kendall's tau
between a screen's ranking of backbones and what the search found, with its interval; a
finished trial's value from its validation curve."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    correct: Sequence[Sequence[bool]] | np.ndarray, confidence: float = 0.95, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy.

    ``correct`` holds one row per seed (training run) and one column per test
    example. Each bootstrap sample draws seeds and examples with replacement,
    so the interval covers both the test set's sampling noise and the
    run-to-run noise of training.
    """
    m = np.asarray(correct, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"expected a non-empty seeds x examples matrix, got shape {m.shape}")
    rng = np.random.default_rng(seed)
    n_seeds, n_examples = m.shape
    chunk = max(1, 2_000_000 // (n_seeds * n_examples))  # bounds memory for large test sets
    means = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        cols = rng.integers(0, n_examples, size=(size, n_examples))
        rows = rng.integers(0, n_seeds, size=(size, n_seeds))
        per_seed = m[:, cols].mean(axis=2).T  # [size, n_seeds]: each seed's accuracy on the drawn examples
        means.append(np.take_along_axis(per_seed, rows, axis=1).mean(axis=1))
    means = np.concatenate(means)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def trial_value(curve: Sequence[float], last: int) -> float:
    """A finished trial's value: the mean validation accuracy of its last ``last`` epochs
    (all of them when it trained fewer; 1: the final epoch's accuracy). Averaging epochs
    weighs the validation split's noise: with 250 examples one standard error is about
    3 points, and the epoch-to-epoch wobble of one configuration is of that size."""
    if not curve:
        raise ValueError("a finished trial has a validation curve")
    tail = list(curve)[-last:]
    return sum(tail) / len(tail)


def decode(bits: str) -> list[bool]:
    """The stored '0101…' string of a trial's test results."""
    return [b == "1" for b in bits]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (nan with fewer than 2, or no order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator else float("nan")


def tau_interval(
    screen: Sequence[Sequence[float]], final: Sequence[Sequence[float]], draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean tau, 2.5 %, 97.5 %): Kendall's tau between screen and final scores of the same
    backbones, averaged over groups (datasets, or seeds), with a bootstrap over groups."""
    taus = np.array([kendall_tau(s, f) for s, f in zip(screen, final)])
    taus = taus[~np.isnan(taus)]
    if len(taus) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = taus[rng.integers(0, len(taus), (draws, len(taus)))].mean(1)
    return float(taus.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def agreement(
    screen, summary, trials, score: str = "logme", draws: int = 1000, seed: int = 0
) -> tuple[float, float, float] | None:
    """Kendall's tau between a screen score and the best test accuracy across backbones
    (per dataset, averaged over datasets), with a 95 % interval from resampling each
    dataset's test examples (the best trials' per-example results, one draw for all
    backbones) — or None with fewer than 3 screened backbones on every dataset."""
    rng = np.random.default_rng(seed)
    taus, resampled_taus = [], []
    for dataset, rows in screen.dropna(subset=[score, "best_test"]).groupby("dataset"):
        if len(rows) < 3:
            continue
        best = (
            summary[summary["dataset"] == dataset]
            .sort_values("val_accuracy", ascending=False)
            .drop_duplicates("backbone")
        )
        mine = trials[trials["dataset"] == dataset].set_index("trial")["test_correct"]
        bits = {b: np.asarray(decode(mine[t]), dtype=float) for b, t in zip(best["backbone"], best["trial"])}
        taus.append(kendall_tau(rows[score], rows["best_test"]))
        n = len(next(iter(bits.values())))
        picks = rng.integers(0, n, (draws, n))
        accuracy = np.array([bits[b][picks].mean(1) for b in rows["backbone"]])  # [backbones, draws]
        resampled_taus.append([kendall_tau(rows[score], accuracy[:, i]) for i in range(draws)])
    if not taus:
        return None
    with warnings.catch_warnings():  # a resample where every backbone ties has no order: nan, left out
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(np.array(resampled_taus), axis=0)
        return float(np.mean(taus)), float(np.nanquantile(means, 0.025)), float(np.nanquantile(means, 0.975))
