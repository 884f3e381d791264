"""The tables people read, computed from the trials frame: the summary (best
configuration per dataset x backbone x strategy, with intervals), Pareto marks, the
cross-dataset ranking, and compare. Pure functions of data frames: no storage, no files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from tlbench.base.stats import bootstrap_ci, decode

if TYPE_CHECKING:  # pragma: no cover - hints only
    from tlbench.results.runfolder import Run
    from tlbench.store.studyrecord import StudyRecord


def strategy_params(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's sampled parameters without backbone/strategy and their prefix: the strategy
    key's (``finetune.lr_head``), or the backbone key's for its searched options
    (``timm:convnext_tiny.drop_path_rate``: a backbone key may itself hold dots)."""
    backbone = params.get("backbone")
    out = {}
    for k, v in params.items():
        if k in ("backbone", "strategy"):
            continue
        if isinstance(backbone, str) and k.startswith(f"{backbone}."):
            out[k[len(backbone) + 1 :]] = v
        else:
            out[k.partition(".")[2] or k] = v
    return out


def describe_params(params: dict[str, Any], phases: list[dict], n_groups: int | None) -> str:
    """A compact 'lr_head=0.012 freeze=0.5 (2/4 frozen)' string for tables."""
    parts = []
    for key, value in params.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        if key == "freeze" and phases and n_groups:
            text += f" ({phases[-1]['frozen_groups']}/{n_groups} frozen)"
        parts.append(f"{key}={text}")
    return " ".join(parts)


SUMMARY_COLUMNS = [
    "dataset", "backbone", "strategy", "trial", "trials", "val_accuracy", "test_accuracy",
    "repeats", "test_mean", "test_std", "ci_low", "ci_high", "config",
    "total_params", "trainable_params", "forward_gflops", "train_gflops", "train_seconds",
    "throughput", "latency_ms", "peak_memory_mb", "device", "pareto", "test_balanced", "test_per_class", "modality",
]  # fmt: skip


def imbalanced(rows: pd.DataFrame, ratio: float = 1.5) -> bool:
    """The test split's largest class has over ``ratio`` times the examples of its
    smallest (from any row's ``test_per_class``): plain accuracy then hides the small classes."""
    import json

    known = rows["test_per_class"].dropna() if "test_per_class" in rows else []
    if len(known) == 0:
        return False
    sizes = [n for _, n in json.loads(known.iloc[0]).values() if n]
    return len(sizes) > 1 and max(sizes) > ratio * min(sizes)


def best_per_group(trials: pd.DataFrame) -> pd.DataFrame:
    """The selection rule, one place for the tables and the repeats: per dataset x backbone
    x strategy, the completed feasible trial (within ``search.constraints``) with the best
    validation accuracy; ties to less training time, then to the earlier trial."""
    feasible = trials["infeasible"].isna() if "infeasible" in trials else True
    done = trials[(trials["state"] == "COMPLETE") & feasible].sort_values(
        ["val_accuracy", "train_seconds", "trial"], ascending=[False, True, True]
    )
    return done.groupby(["dataset", "backbone", "strategy"], sort=False).head(1)


def summary_frame(trials: pd.DataFrame, repeats: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset x backbone x strategy, the feasible trial (within ``search.constraints``)
    with the best validation accuracy (ties: less training time, then the earlier trial),
    its test accuracy and costs,
    and test accuracy over its seed repeats: mean, std and a 95 % bootstrap interval
    (over the selected trial's own test results when there are no repeats)."""
    if "modality" not in trials:  # frames from before text: every trial was an image one
        trials = trials.assign(modality="image")
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    counts = finished.groupby(["dataset", "backbone", "strategy"]).size().rename("trials")
    best = best_per_group(trials)
    best = best.join(counts, on=["dataset", "backbone", "strategy"])
    best = best.sort_values(["dataset", "test_accuracy"], ascending=[True, False]).reset_index(drop=True)
    best["pareto"] = pareto_mask(best)
    spread = [_spread(row, repeats) for _, row in best.iterrows()]
    best = pd.concat([best.reset_index(drop=True), pd.DataFrame(spread, columns=SPREAD)], axis=1)
    return best[SUMMARY_COLUMNS]


SPREAD = ["repeats", "test_mean", "test_std", "ci_low", "ci_high"]


def _spread(row, repeats: pd.DataFrame | None) -> list:
    """[repeats, mean, std, ci_low, ci_high] of test accuracy for a summary row."""

    runs = pd.DataFrame()
    if repeats is not None and not repeats.empty:
        mine = (repeats["dataset"] == row["dataset"]) & (repeats["repeat_of"] == row["trial"])
        runs = repeats[mine & (repeats["state"] == "COMPLETE")]
    if runs.empty:  # no repeats: the test examples are the only source of noise
        # runs made before per-example results were stored have no interval
        low, high = (
            bootstrap_ci([decode(row["test_correct"])]) if isinstance(row["test_correct"], str) else (None, None)
        )
        return [0, row["test_accuracy"], None, low, high]
    low, high = bootstrap_ci([decode(bits) for bits in runs["test_correct"]])
    std = float(runs["test_accuracy"].std(ddof=1)) if len(runs) > 1 else None
    return [len(runs), float(runs["test_accuracy"].mean()), std, low, high]


def pareto_mask(rows: pd.DataFrame) -> list[bool]:
    """True where no other row of the same dataset has test accuracy >= and training
    GFLOPs <= with one strictly better. A reading aid: it selects nothing."""
    out = []
    for _, row in rows.iterrows():
        same = rows[rows["dataset"] == row["dataset"]]
        dominated = (
            (same["test_accuracy"] >= row["test_accuracy"])
            & (same["train_gflops"] <= row["train_gflops"])
            & ((same["test_accuracy"] > row["test_accuracy"]) | (same["train_gflops"] < row["train_gflops"]))
        ).any()
        out.append(not dominated)
    return out


RANKING_COLUMNS = ["modality", "backbone", "mean_rank", "mean_test", "datasets", "train_gflops", "train_seconds"]


def ranking_frame(summary: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per modality, per backbone across the datasets of that modality (a text encoder is
    ranked among text encoders on text datasets only): its rank on each dataset (by the
    test accuracy of its best-by-validation strategy; 1 is best), mean rank, mean test
    accuracy, and the training compute of all its completed trials."""
    if summary.empty:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    summary = summary if "modality" in summary else summary.assign(modality="image")
    best = summary.sort_values(["val_accuracy", "train_seconds"], ascending=[False, True])
    best = best.drop_duplicates(["dataset", "backbone"]).copy()
    best["rank"] = best.groupby("dataset")["test_accuracy"].rank(ascending=False, method="min")
    table = best.groupby(["modality", "backbone"]).agg(
        mean_rank=("rank", "mean"), mean_test=("test_accuracy", "mean"), datasets=("dataset", "nunique")
    )
    spent = trials[trials["state"] == "COMPLETE"].groupby("backbone")[["train_gflops", "train_seconds"]].sum()
    table = table.reset_index().join(spent, on="backbone")
    return table.sort_values(["modality", "mean_rank", "mean_test"], ascending=[True, True, False])[RANKING_COLUMNS]


KEY = ["dataset", "backbone", "strategy"]


COMPARED = ["train_seconds", "train_gflops", "throughput", "peak_memory_mb"]  # costs compared as ratios


ENVIRONMENT_KEYS = ["device", "cuda", "torch", "torchvision", "timm", "optuna", "tlbench", "python"]


def compare_frame(runs: list[Run]) -> pd.DataFrame:
    """Summary rows of several runs aligned by dataset x backbone x strategy (a row
    missing from a run stays, with gaps); deltas are against the first run."""
    table = None
    for i, run in enumerate(runs):
        part = run.summary[KEY + ["test_accuracy", "test_mean", "ci_low", "ci_high"] + COMPARED].copy()
        part["test_accuracy"] = part["test_mean"].fillna(part["test_accuracy"])  # the repeats' mean when there are some
        part = part.drop(columns=["test_mean"]).rename(columns={"test_accuracy": "test"})
        part = part.rename(columns={c: f"{c}_{i}" for c in part.columns if c not in KEY})
        table = part if table is None else table.merge(part, on=KEY, how="outer")
    for i in range(1, len(runs)):
        table[f"d_test_{i}"] = table[f"test_{i}"] - table["test_0"]
        overlap = (table[f"ci_low_{i}"] <= table["ci_high_0"]) & (table["ci_low_0"] <= table[f"ci_high_{i}"])
        table[f"noise_{i}"] = overlap & table[f"d_test_{i}"].notna()
        for cost in COMPARED:
            table[f"d_{cost}_{i}"] = table[f"{cost}_{i}"] / table[f"{cost}_0"] - 1
    return table.sort_values(KEY).reset_index(drop=True)


def environment_flags(runs: list[Run]) -> list[str]:
    """One line per environment field that differs between runs (hardware, versions)."""
    flags = []
    for key in ENVIRONMENT_KEYS:
        values = [str(run.environment.get(key)) for run in runs]
        if len(set(values)) > 1:
            kind = "hardware" if key in ("device", "cuda") else "versions"
            flags.append(
                f"different {kind}: {key} = " + " vs ".join(values) + " (costs are not comparable as they are)"
            )
    return flags


def select_epochs(config: dict[str, Any]) -> int:
    """How a run's trials were valued (``search.select_epochs`` in its config.yaml); a run of
    tlbench 0.8 or earlier stored none: its trials were valued on their last epoch."""
    return (config.get("search") or {}).get("select_epochs", 1)


def selection_flags(runs: list[Run]) -> list[str]:
    """A line where the runs value their trials differently (``search.select_epochs``; a run
    of tlbench 0.8 or earlier stored none: its trials were valued on their last epoch)."""
    values = [select_epochs(run.config) for run in runs]
    if len(set(values)) == 1:
        return []
    return [
        "different trial values: search.select_epochs = "
        + " vs ".join(map(str, values))
        + " (each row is its run's best by its own value; Val is not comparable as it is)"
    ]


def out_of_retries(trials: pd.DataFrame) -> pd.DataFrame:
    """Interrupted trials whose configuration ran out of retries (``search.retries``)."""
    return trials[trials["gave_up"].notna()]


def hypervolume_history(
    trials: pd.DataFrame, cost: str, fractions=(0.25, 0.5, 0.75, 1.0)
) -> tuple[float, list[tuple[float, float]]]:
    """A Pareto search's progress on one dataset: the hypervolume of the front of feasible
    completed trials (validation accuracy up, ``cost`` down; reference point accuracy 0
    and 1.1 x the costliest completed trial's cost) after the given fractions of the
    training GFLOPs the study spent (pruned trials count what they spent). Returns
    (reference cost, [(GFLOPs spent, hypervolume), ...])."""
    ordered = trials.sort_values("trial")
    done = ordered[(ordered["state"] == "COMPLETE") & ordered["infeasible"].isna()].dropna(
        subset=[cost, "val_accuracy"]
    )
    if done.empty:
        return float("nan"), []
    reference = 1.1 * float(done[cost].max())
    spent = ordered["train_gflops"].fillna(0.0).cumsum()
    total = float(spent.iloc[-1])
    out = []
    for fraction in fractions:
        upto = ordered[spent <= fraction * total + 1e-9]["trial"]
        out.append((fraction * total, hypervolume(done[done["trial"].isin(upto)], cost, reference)))
    return reference, out


def hypervolume(points: pd.DataFrame, cost: str, reference: float) -> float:
    """Area dominated by ``points`` (val_accuracy up, ``cost`` down) above accuracy 0 and below ``reference`` cost."""
    area, best = 0.0, 0.0
    for _, p in points.sort_values([cost, "val_accuracy"], ascending=[True, False]).iterrows():
        if p["val_accuracy"] > best and p[cost] < reference:
            area += (reference - p[cost]) * (p["val_accuracy"] - best)
            best = p["val_accuracy"]
    return area


def screen_frame(studies: dict[str, StudyRecord], trials, summary) -> pd.DataFrame:
    """One row per dataset x backbone: its scores, what screening cost, the best test
    accuracy the search found for it (the best-by-validation trial's), and whether the
    screen's rule dropped it from the search (why, and the rule)."""
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
