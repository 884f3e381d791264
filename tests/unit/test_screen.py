"""Screening scores against direct computations and cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlbench.search.screen import kendall_tau, knn_accuracy, logme, ridge_probe_accuracy, tau_interval


def _evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence of LogME's model, computed directly (no SVD): eq. 2 of the paper."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * float(((f @ m - y) ** 2).sum()) - alpha / 2 * float(m @ m) - logdet / 2)  # fmt: skip


@pytest.mark.parametrize("n, d", [(60, 8), (12, 30)])  # more examples than features, and fewer
def test_logme_is_the_maximum_evidence_over_alpha_and_beta(n, d):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    f = rng.normal(size=(n, d)) + labels[:, None] * 0.5
    grid = np.logspace(-4, 4, 81)
    best = np.mean(
        [max(_evidence(f, (labels == k).astype(float), a, b) for a in grid for b in grid) / n for k in range(3)]
    )
    score = logme(f, labels)
    assert score >= best - 1e-6  # the fixed point is at least as good as any grid point
    assert score - best < 0.05  # and close to the grid's best


def test_logme_prefers_features_that_carry_the_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    informative = np.eye(4)[labels] * 3 + rng.normal(size=(200, 4))
    noise = rng.normal(size=(200, 4))
    assert logme(informative, labels) > logme(noise, labels) + 0.1


def test_knn_and_the_ridge_probe_separate_separable_clusters():
    rng = np.random.default_rng(2)
    centres = np.eye(3) * 10
    train_y, val_y = rng.integers(0, 3, 60), rng.integers(0, 3, 30)
    train, val = centres[train_y] + rng.normal(size=(60, 3)), centres[val_y] + rng.normal(size=(30, 3))
    assert knn_accuracy(train, train_y, val, val_y) == 1.0
    assert ridge_probe_accuracy(train, train_y, val, val_y) == 1.0
    assert knn_accuracy(train, train_y, val, (val_y + 1) % 3) == 0.0


def test_a_knn_tie_goes_to_the_nearest_of_the_tied_classes():
    train = np.array([[1.0, 0.1], [1.0, -0.3], [0.1, 1.0], [-0.3, 1.0]])
    labels = [0, 0, 1, 1]
    val = np.array([[1.0, 0.12]])  # two of each among its 4 neighbours; the nearest is class 0
    assert knn_accuracy(train, labels, val, [0], k=4) == 1.0


@pytest.mark.parametrize(
    "a, b, tau",
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2, 3], [1, 1, 2], 2 / math.sqrt(6)),  # tau-b with a tie (scipy.stats.kendalltau: 0.8165)
        ([1, 2, 3, 4], [1, 3, 2, 4], 4 / 6),
    ],
)
def test_kendall_tau_b(a, b, tau):
    assert math.isclose(kendall_tau(a, b), tau)


def test_the_tau_interval_averages_groups_and_brackets_the_mean():
    screen = [[1, 2, 3], [1, 2, 3], [3, 2, 1]]
    final = [[1, 2, 3], [1, 2, 3], [1, 2, 3]]
    mean, low, high = tau_interval(screen, final)
    assert math.isclose(mean, 1 / 3) and low <= mean <= high and low >= -1 and high <= 1
    assert all(math.isnan(v) for v in tau_interval([[1]], [[1]]))
