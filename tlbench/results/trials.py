"""The trials of a run's studies as one table, read from the Optuna storage through
:class:`tlbench.store.record.TrialRecord` and the studies' records: one row per trial
(:func:`trials_frame`), with its per-class test accuracy (:func:`per_class`) and who
chose its configuration (:func:`origin`). What every table of a run is built from."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from tlbench.results.tables import describe_params, strategy_params
from tlbench.store import storage
from tlbench.store.record import Failure, TrialRecord, infeasible
from tlbench.store.studyrecord import StudyRecord


def trials_frame(store, studies: dict[str, str], limits: dict | None = None) -> pd.DataFrame:
    """One row per trial of the named studies (dataset key -> study name) in ``store``
    (a URL or an Optuna storage), read through :class:`tlbench.store.record.TrialRecord`;
    ``limits``: ``search.constraints``, which mark rows infeasible."""
    import optuna

    rows = []
    for dataset, name in studies.items():
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            continue  # not started yet
        record_ = StudyRecord.from_study(study)
        gave_up, test_split = record_.gave_up, record_.test_split
        stored = storage.read_trials(store, name)  # lean; None: through Optuna
        for t in stored if stored is not None else study.get_trials(deepcopy=False):
            record = TrialRecord.from_trial(t)
            kind, reason = record_.failure(t, record)
            if kind != Failure.SURPLUS:  # never ran: workers racing for a study's last trial
                row = _trial_row(dataset, t, record, kind, reason, gave_up.get(t.number))
                rows.append(
                    row | {"infeasible": infeasible(record, limits or {})} | per_class(record.test_correct, test_split)
                )
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS + ["repeat_of", "test_correct"])
    for column in INTEGER_COLUMNS:  # trial numbers stay integers where some rows have none (1, not 1.0)
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


INTEGER_COLUMNS = ("retry_of", "repeat_of")


def per_class(bits: str | None, test_split: dict | None) -> dict[str, Any]:
    """``test_balanced`` (the mean over classes of each class's test accuracy) and
    ``test_per_class`` (JSON: class -> [right, examples]) from a trial's per-example test
    results and the study's test labels; empty when either is missing (runs made before
    tlbench 0.3 stored no labels)."""
    if not bits or not test_split or len(test_split["labels"]) != len(bits):
        return {}
    classes = test_split["classes"]
    counts = {c: [0, 0] for c in classes}
    for bit, label in zip(bits, test_split["labels"]):
        counts[classes[label]][0] += bit == "1"
        counts[classes[label]][1] += 1
    present = [right / n for right, n in counts.values() if n]
    return {"test_balanced": sum(present) / len(present), "test_per_class": json.dumps(counts)}


TRIAL_COLUMNS = [
    "dataset", "trial", "state", "backbone", "strategy", "val_accuracy", "test_accuracy", "config",
    "frozen_groups", "n_groups", "epochs", "total_params", "trainable_params", "forward_gflops",
    "train_gflops", "train_seconds", "throughput", "latency_ms", "peak_memory_mb", "memory_kind",
    "device", "precision", "resolution", "elapsed_seconds", "val_curve", "failure", "fail_reason", "params",
    "modality", "max_length", "feature_cache", "cache_kind", "retry_of", "host", "worker", "pretrained", "gave_up", "infeasible", "origin",
    "test_balanced", "test_per_class",
]  # fmt: skip
MEASURED = [  # record fields copied as they are
    "total_params", "trainable_params", "forward_gflops", "train_gflops", "train_seconds", "throughput",
    "latency_ms", "peak_memory_mb", "memory_kind", "device", "precision", "resolution", "elapsed_seconds",
    "retry_of", "host", "worker", "pretrained", "test_accuracy", "n_groups", "frozen_groups", "epochs",
    "repeat_of", "test_correct", "cache_kind", "max_length",
]  # fmt: skip


def _trial_row(
    dataset: str, t, record: TrialRecord, kind: str | None, reason: str, gave_up: str | None
) -> dict[str, Any]:
    curve = record.val_curve or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    return {
        "dataset": dataset,
        "trial": t.number,
        "state": t.state.name,
        "backbone": t.params.get("backbone"),
        "strategy": t.params.get("strategy"),
        "val_accuracy": t.values[0] if t.state.name == "COMPLETE" else (curve[-1] if curve else None),
        "config": describe_params(strategy_params(t.params), record.phases or [], record.n_groups),
        **{k: getattr(record, k) for k in MEASURED},
        "modality": record.modality or "image",  # runs from before text stored no modality: they were images
        "val_curve": json.dumps(curve),
        "failure": kind,
        "fail_reason": reason or None,
        "params": json.dumps(record.params or {}, sort_keys=True),
        "feature_cache": record.cache_text,
        "gave_up": gave_up,
        "origin": origin(record),
    }


def origin(record: TrialRecord) -> str:
    """Who chose a trial's configuration: the config (recipe), a seed repeat, the screen
    (probe), the portfolio, or the sampler."""
    if record.repeat_of is not None:
        return "repeat"
    return "recipe" if record.recipe else "probe" if record.probe else "portfolio" if record.portfolio else "sampled"


def study_records(store, studies: dict[str, str]) -> dict[str, StudyRecord]:
    """Dataset key -> its study's record (screening scores among them)."""
    import optuna

    out = {}
    for dataset, name in studies.items():
        try:
            out[dataset] = StudyRecord.from_study(optuna.load_study(study_name=name, storage=store))
        except KeyError:
            continue
    return out
