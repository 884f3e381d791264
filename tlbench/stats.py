"""Bootstrap confidence intervals of accuracy, over test examples and seeds."""

from __future__ import annotations

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


def decode(bits: str) -> list[bool]:
    """The stored '0101…' string of a trial's test results."""
    return [b == "1" for b in bits]
