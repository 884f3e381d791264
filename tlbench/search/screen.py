"""Screening scores: how well a backbone's frozen features suit a dataset, without fine-tuning.

The scores, on feature matrices (the frozen prefix's output up to the linear probe's
cut, averaged over space or tokens: one row per example), are computed for every
backbone before a run's search (``search.screen``), stored with the study and reported
with their agreement with what the search found. :func:`dropped` is the rule that takes
clearly worse backbones out of the search (the sampler skips them, see
:mod:`tlbench.search.sampling`); recipes on them still run. The kept ones then get one
linear-probe trial each (:func:`probe_strategy`, :func:`probe_params`), trained on
the features the screen took out.

- :func:`logme` — LogME (You, Liu, Wang, Long: "LogME: Practical Assessment of
  Pre-trained Models for Transfer Learning", ICML 2021). For each class, the log
  evidence of a Bayesian linear regression from the features to the class's
  one-hot column, maximised over the prior precision alpha and the noise precision
  beta by the paper's fixed-point iteration, divided by the number of examples and
  averaged over classes. Higher is better; training-free (one SVD).
- :func:`knn_accuracy` — accuracy of a k-nearest-neighbour classifier (cosine
  similarity, majority vote, ties to the nearest) from the training features to
  the validation features: the "kNN on features" transferability baseline.
- :func:`ridge_probe_accuracy` — a linear probe in closed form: ridge regression to
  one-hot targets, argmax, on validation.
- :func:`kendall_tau` and :func:`tau_interval` — agreement of a screen's ranking of
  backbones with the fine-tuned ranking, with a bootstrap interval over datasets or
  seeds (Kendall's tau-b: ties count as neither agreement nor disagreement).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from tlbench.base.space import TrialSpace
from tlbench.base.stats import agreement, kendall_tau, tau_interval  # noqa: F401  (their home was here)
from tlbench.engine import basics, features, phasedata
from tlbench.engine.inputs import input_size, inputs_of
from tlbench.search import calls
from tlbench.search.planning import strategy_phases
from tlbench.store.studyrecord import StudyRecord


def logme(features: np.ndarray, labels: Sequence[int], iterations: int = 100, tol: float = 1e-5) -> float:
    """LogME of ``features`` [n, d] for integer ``labels`` [n] (see the module docstring)."""
    f = np.asarray(features, dtype=np.float64)
    y_all = np.asarray(labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)  # f = u diag(s) v^T, rank r = min(n, d)
    sigma = s**2  # eigenvalues of f^T f (the rest, d - r of them, are 0)
    scores = []
    for k in np.unique(y_all):
        y = (y_all == k).astype(np.float64)
        uty = u.T @ y
        outside = max(float(y @ y - uty @ uty), 0.0)  # the part of y outside the features' span
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            mm = float((sigma * uty**2 / (sigma + t) ** 2).sum())  # m^T m, m the posterior mean of the weights
            res = float(((t / (sigma + t)) ** 2 * uty**2).sum()) + outside  # ||f m - y||^2
            alpha, beta = gamma / max(mm, 1e-12), max(n - gamma, 1e-12) / max(res, 1e-12)
            if abs(alpha / beta - t) / t < tol:
                break
        t = alpha / beta
        mm = float((sigma * uty**2 / (sigma + t) ** 2).sum())
        res = float(((t / (sigma + t)) ** 2 * uty**2).sum()) + outside
        logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * math.log(alpha)
        evidence = (
            n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res - alpha / 2 * mm - logdet / 2
        )  # fmt: skip
        scores.append(evidence / n)
    return float(np.mean(scores))


def knn_accuracy(
    train: np.ndarray, train_labels: Sequence[int], val: np.ndarray, val_labels: Sequence[int], k: int = 5
) -> float:
    """Accuracy on ``val`` of a cosine k-nearest-neighbour vote over ``train``; ties go to
    the class of the nearest neighbour among the tied ones."""
    a, b = _unit(train), _unit(val)
    similarity = b @ a.T  # [n_val, n_train]
    k = min(k, len(a))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    train_labels, val_labels = np.asarray(train_labels), np.asarray(val_labels)
    correct = 0
    for row, truth in zip(nearest, val_labels):
        votes = train_labels[row]
        counts = np.bincount(votes)
        best = np.flatnonzero(counts == counts.max())
        predicted = next(label for label in votes if label in best)  # the nearest of the tied classes
        correct += int(predicted == truth)
    return correct / len(val_labels)


def ridge_probe_accuracy(
    train: np.ndarray, train_labels: Sequence[int], val: np.ndarray, val_labels: Sequence[int], l2: float = 1e-2
) -> float:
    """Validation accuracy of ridge regression (``l2`` times the mean squared feature as
    the penalty, a bias column unpenalised) from features to one-hot targets."""
    x = np.asarray(train, dtype=np.float64)
    mean, scale = x.mean(0), x.std(0) + 1e-8
    x = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    classes = int(max(max(train_labels), max(val_labels))) + 1
    y = np.eye(classes)[np.asarray(train_labels)]
    penalty = l2 * len(x) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    v = np.hstack([(np.asarray(val, dtype=np.float64) - mean) / scale, np.ones((len(val), 1))])
    return float(((v @ w).argmax(1) == np.asarray(val_labels)).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


# --------------------------------------------------------------------------- the rule the search applies


def dropped(scores: dict[str, dict], score: str = "knn", margin: float = 0.10) -> dict[str, str]:
    """Backbones the screen drops: those whose ``score`` is more than ``margin`` below the
    best backbone's (knn, ridge: validation accuracy, so 0.10 is 10 points; logme: log
    evidence per example, whose scale differs between datasets). Conservative by construction: the best is
    never dropped, nor a backbone that was not screened, nor any with fewer than two
    screened backbones to compare."""
    usable = {b: float(s[score]) for b, s in scores.items() if isinstance(s.get(score), (int, float))}
    if len(usable) < 2:
        return {}
    leader, best = max(usable.items(), key=lambda item: item[1])
    return {
        b: f"{score} {value:.3f} is more than {margin:g} below {leader}'s {best:.3f}"
        for b, value in usable.items()
        if value < best - margin
    }


def rule_text(settings) -> str:
    """The rule of ``search.screen`` in words, as the report prints it."""
    if not settings.drop:
        return "off (search.screen.drop: false): nothing dropped"
    what = "LogME" if settings.score == "logme" else f"{settings.score} accuracy"
    return f"drop a backbone whose {what} is more than {settings.margin:g} below the best backbone's"


# --------------------------------------------------------------------------- screening a run's backbones


def loaded_weights(backbone) -> bool:
    """A backbone whose weights are loaded (pretrained, or a weights file), not drawn at
    random: every build gives the same features, so its probe can train on the screen's."""
    return bool(backbone.entry.pretrained or backbone.weights is not None)


def screen_order(plan, dataset_key: str) -> list[str]:
    """The order the screen takes backbones in: those with loaded weights first, in the
    config's order, then those from random init (likely dropped: their probe, built with
    another seed, cannot use the screen's features)."""
    keys = plan.backbones_for(dataset_key)
    loaded = [k for k in keys if loaded_weights(plan.backbones[k])]
    return loaded + [k for k in keys if k not in loaded]


def screen_backbones(plan, study, splits, resources, dataset_key: str, after=lambda key: None) -> None:
    """Score every backbone of ``plan`` on the study's dataset from its frozen features
    (the frozen prefix up to the linear probe's cut, at the trials' resolution), once:
    stored as study attributes, skipped when already there (a resume), in
    :func:`screen_order`. The features come from the trials' feature cache
    (:func:`tlbench.engine.phasedata.frozen_features`), so the screen's linear-probe trials
    (:func:`probe_params`) train on them without computing them again: ``after(key)``
    is called once a backbone is screened (or was, on a resume) so that its probe can
    run at once. A backbone whose features cannot be cut out (no module boundary
    before the head) is recorded as not screened, with why. Nothing is trained. Then
    :func:`apply_rule` decides which backbones the sampler skips."""
    import torch

    device = resources.devices[0]
    for key in screen_order(plan, dataset_key):
        backbone = plan.backbones[key]
        stored = StudyRecord.from_study(study).screen.get(key)
        if stored is not None:  # screened before (a resume): its probe may still be owed
            if "skipped" not in stored:
                after(key)
            continue
        start = time.perf_counter()
        torch.manual_seed(calls.SCREEN_SEED)
        shelved = resources.shelf.pop((key, len(splits.classes)), None)  # built by this process's preflight
        if shelved is None:
            built = calls.build_backbone(backbone, len(splits.classes))
        else:
            built, state = shelved
            torch.set_rng_state(state)  # as if it had been built here
        size = input_size(inputs_of(built), backbone.entry, plan.bench.training)
        settings = basics.TrainSettings(
            batch_size=64, weight_decay=0.0, augment=False, size=size, device=device, seed=0,
            num_workers=plan.bench.training.num_workers, cache=resources.cache, data_key=resources.data_keys[dataset_key],
        )  # fmt: skip
        try:  # the screen only reports: a model it cannot take apart is recorded as not screened, with why
            taken, cut, where = phasedata.frozen_features(built, splits, settings)
            if cut.name == features.INPUT:
                StudyRecord.note_screen(
                    study, key, {"skipped": "no cut before the head: its features cannot be taken out"}
                )
                continue
            x = {name: _pooled(taken.splits[name]) for name in ("train", "val")}
            train_, val = (x["train"], splits.train.labels), (x["val"], splits.val.labels)
            scores = {
                "logme": logme(*train_),
                "knn": knn_accuracy(*train_, *val),
                "ridge": ridge_probe_accuracy(*train_, *val),
            }
        except (RuntimeError, ValueError, TypeError, np.linalg.LinAlgError) as exc:
            StudyRecord.note_screen(study, key, {"skipped": f"{type(exc).__name__}: {str(exc).strip()[:150]}"})
            continue
        examples = len(splits.train) + len(splits.val)  # each passed once through the frozen prefix
        # the test split's pass, when this screen made it (for its probe's test accuracy), is
        # measuring, not choosing: kept apart, as a trial's evaluation is apart from its training
        test_seconds = taken.test_seconds if where in ("extracted", "uncached") else 0.0
        seconds = time.perf_counter() - start
        StudyRecord.note_screen(
            study,
            key,
            scores
            | {
                "seconds": seconds,
                "test_seconds": test_seconds,
                "at": cut.name,
                "examples": examples,
                "features": where,
            },
        )
        after(key)
    apply_rule(study, plan.bench.search.screen)


def _pooled(x) -> np.ndarray:
    """[n, channels]: a prefix's output averaged over space (maps) or tokens (sequences)."""
    x = x.float()
    return (x.flatten(2).mean(2) if x.dim() == 4 else x.mean(1) if x.dim() == 3 else x).cpu().numpy()


def probe_strategy(plan) -> str | None:
    """The config's first strategy that trains the head alone (it adapts nothing, as
    BitFit's biases or LoRA's adapters, and every phase freezes every group, at the
    middle of its searched options): the screen's linear probe. None if the config
    has none."""

    for key, strategy in plan.strategies.items():
        if strategy.record.adapt is not None:
            continue
        params = probe_params(plan, key)
        phases = strategy_phases(strategy, params, 8)
        if phases and all(ph.frozen_groups >= 8 for ph in phases if ph.epochs > 0):
            return key
    return None


def probe_params(plan, strategy_key: str) -> dict:
    """A strategy's parameters at the middle of its searched options (the geometric middle
    of a log range), as the screen's linear probe trains them."""

    strategy = plan.strategies[strategy_key]
    space = TrialSpace(None, "", "", middle=True)
    return strategy.record.suggest(space, strategy.options)


def apply_rule(study, settings) -> dict[str, str]:
    """Decide which backbones the sampler skips (from the stored scores and today's rule;
    a resumed run may change the rule) and store the decision with the study."""
    scores = StudyRecord.from_study(study).screen
    out = dropped(scores, settings.score, settings.margin) if settings.drop else {}
    StudyRecord.set_decision(study, rule_text(settings), out)
    return out
