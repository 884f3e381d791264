"""Screening scores: how well a backbone's frozen features suit a dataset, without fine-tuning.

The scores, on feature matrices (the frozen prefix's output up to the linear probe's
cut, averaged over space or tokens: one row per example), are computed for every
backbone before a run's search (``search.screen``), stored with the study and reported
with their agreement with what the search found. :func:`dropped` is the rule that takes
clearly worse backbones out of the search (the sampler skips them, see
:mod:`tlbench.sampling`); recipes on them still run. The kept ones then get one
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
import warnings
from collections.abc import Sequence

import numpy as np

from tlbench.studyrecord import StudyRecord


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

def screen_backbones(plan, study, splits, resources, dataset_key: str) -> None:
    """Score every backbone of ``plan`` on the study's dataset from its frozen features
    (the frozen prefix up to the linear probe's cut, at the trials' resolution), once:
    stored as study attributes, skipped when already there (a resume). The features
    come from the trials' feature cache (:func:`tlbench.train.frozen_features`), so the
    screen's linear-probe trials (:func:`probe_params`) train on them without computing
    them again. A backbone whose features cannot be cut out (no module boundary before
    the head) is recorded as not screened, with why. Nothing is trained. Then
    :func:`apply_rule` decides which backbones the sampler skips."""
    import torch

    from tlbench import features, planning, train
    from tlbench.inputs import input_size, inputs_of

    device = resources.devices[0]
    for key in plan.backbones_for(dataset_key):
        backbone = plan.backbones[key]
        if key in StudyRecord.from_study(study).screen:
            continue
        start = time.perf_counter()
        torch.manual_seed(0)
        built = planning.build_backbone(backbone, len(splits.classes))
        size = input_size(inputs_of(built), backbone.entry, plan.bench.training)
        settings = train.TrainSettings(
            batch_size=64, weight_decay=0.0, augment=False, size=size, device=device, seed=0,
            num_workers=plan.bench.training.num_workers, cache=resources.cache, data_key=resources.data_keys[dataset_key],
        )  # fmt: skip
        try:  # the screen only reports: a model it cannot take apart is recorded as not screened, with why
            taken, cut, where = train.frozen_features(built, splits, settings)
            if cut.name == features.INPUT:
                StudyRecord.note_screen(study, key, {"skipped": "no cut before the head: its features cannot be taken out"})
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
        StudyRecord.note_screen(
            study, key, scores | {"seconds": time.perf_counter() - start, "at": cut.name, "examples": examples, "features": where}
        )
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
    from tlbench.planning import strategy_phases

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
    from tlbench.space import TrialSpace

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


def screen_frame(studies: dict[str, StudyRecord], trials, summary):
    """One row per dataset x backbone: its scores, what screening cost, the best test
    accuracy the search found for it (the best-by-validation trial's), and whether the
    screen's rule dropped it from the search (why, and the rule)."""
    import pandas as pd

    rows = []
    for dataset, record in studies.items():
        best = (
            summary[summary["dataset"] == dataset]
            .sort_values("val_accuracy", ascending=False)
            .drop_duplicates("backbone")
        )
        found = dict(zip(best["backbone"], best["test_accuracy"]))
        rule = record.decision.rule if record.decision else None
        for backbone, value in record.screen.items():
            rows.append({"dataset": dataset, "backbone": backbone, **value, "best_test": found.get(backbone),
                         "dropped": record.dropped.get(backbone), "rule": rule, "portfolio": record.portfolio_sources})  # fmt: skip
    columns = [
        "dataset",
        "backbone",
        "logme",
        "knn",
        "ridge",
        "seconds",
        "at",
        "skipped",
        "best_test",
        "dropped",
        "rule",
        "portfolio",
    ]
    return pd.DataFrame(rows).reindex(columns=columns)


def agreement(
    screen, summary, trials, score: str = "logme", draws: int = 1000, seed: int = 0
) -> tuple[float, float, float] | None:
    """Kendall's tau between a screen score and the best test accuracy across backbones
    (per dataset, averaged over datasets), with a 95 % interval from resampling each
    dataset's test examples (the best trials' per-example results, one draw for all
    backbones) — or None with fewer than 3 screened backbones on every dataset."""
    from tlbench.stats import decode

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
