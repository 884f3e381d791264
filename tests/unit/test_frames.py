"""Tables from studies without training: the summary's selection rule, Pareto marks,
the cross-dataset ranking and compare, from create_trial fixtures."""

from __future__ import annotations

import math

import optuna
import pandas as pd

from tlbench.results import runfolder, tables
from tlbench.store.record import TrialRecord

COMPLETE = optuna.trial.TrialState.COMPLETE


def _study(store, name: str, rows: list[tuple]) -> None:
    """rows: (backbone, strategy, val, test, train_seconds, train_gflops)."""
    study = optuna.create_study(study_name=name, storage=store, direction="maximize")
    for backbone, strategy, val, test, seconds, gflops in rows:
        record = TrialRecord(
            test_accuracy=test,
            train_seconds=seconds,
            train_gflops=gflops,
            test_correct="1" * int(test * 10) + "0" * (10 - int(test * 10)),
        )
        study.add_trial(optuna.trial.create_trial(
            state=COMPLETE, value=val, params={"backbone": backbone, "strategy": strategy},
            distributions={"backbone": optuna.distributions.CategoricalDistribution(["a", "b"]),
                           "strategy": optuna.distributions.CategoricalDistribution(["probe", "tune"])},
            user_attrs=record.attrs(),
        ))  # fmt: skip


def _trials(rows_by_dataset: dict[str, list[tuple]]) -> pd.DataFrame:
    store = optuna.storages.InMemoryStorage()
    for dataset, rows in rows_by_dataset.items():
        _study(store, dataset, rows)
    return runfolder.trials_frame(store, {d: d for d in rows_by_dataset})


def test_the_summary_takes_the_best_by_validation_ties_to_less_training_then_the_earlier():
    trials = _trials({"d": [
        ("a", "probe", 0.8, 0.7, 10.0, 1.0),
        ("a", "probe", 0.9, 0.6, 20.0, 1.0),  # best val: selected although its test is lower
        ("a", "tune", 0.9, 0.8, 30.0, 5.0),
        ("a", "tune", 0.9, 0.9, 15.0, 5.0),  # same val, less training: selected
        ("a", "tune", 0.9, 0.5, 15.0, 5.0),  # same val and time, later: not
    ]})  # fmt: skip
    summary = tables.summary_frame(trials)
    picked = {(r["backbone"], r["strategy"]): (r["trial"], r["trials"]) for _, r in summary.iterrows()}
    assert picked == {("a", "probe"): (1, 2), ("a", "tune"): (3, 3)}
    assert summary["test_accuracy"].tolist() == [0.9, 0.6]  # sorted by test accuracy within the dataset
    low, high = summary.loc[0, ["ci_low", "ci_high"]]
    assert low < 0.9 < high or math.isclose(high, 0.9)


def test_pareto_marks_rows_no_other_beats_on_accuracy_and_training_flops():
    trials = _trials(
        {
            "d": [
                ("a", "probe", 0.8, 0.7, 1.0, 1.0),
                ("a", "tune", 0.9, 0.9, 1.0, 5.0),
                ("b", "tune", 0.9, 0.6, 1.0, 9.0),
            ]
        }
    )
    summary = tables.summary_frame(trials)
    assert dict(zip(zip(summary["backbone"], summary["strategy"]), summary["pareto"])) == {
        ("a", "tune"): True, ("a", "probe"): True, ("b", "tune"): False,
    }  # fmt: skip


def test_the_ranking_ranks_backbones_on_each_dataset_by_their_best_strategy():
    trials = _trials({
        "d1": [("a", "probe", 0.9, 0.9, 1.0, 1.0), ("b", "probe", 0.8, 0.8, 1.0, 1.0)],
        "d2": [("a", "probe", 0.7, 0.6, 1.0, 1.0), ("b", "tune", 0.8, 0.7, 1.0, 1.0)],
    })  # fmt: skip
    ranking = tables.ranking_frame(tables.summary_frame(trials), trials)
    assert ranking.set_index("backbone")["mean_rank"].to_dict() == {"a": 1.5, "b": 1.5}
    assert ranking["datasets"].tolist() == [2, 2]


def test_compare_aligns_runs_and_keeps_rows_missing_from_one():
    first = _trials({"d": [("a", "probe", 0.8, 0.7, 10.0, 1.0), ("a", "tune", 0.9, 0.9, 20.0, 2.0)]})
    second = _trials({"d": [("a", "probe", 0.8, 0.8, 5.0, 1.0)]})
    runs = [runfolder.Run(None, {}, {}, {}, t, t.iloc[0:0], tables.summary_frame(t)) for t in (first, second)]
    table = tables.compare_frame(runs).set_index("strategy")
    assert math.isclose(table.loc["probe", "d_test_1"], 0.1) and math.isclose(
        table.loc["probe", "d_train_seconds_1"], -0.5
    )
    assert pd.isna(table.loc["tune", "test_1"])


def test_the_tables_are_rewritten_during_a_run_at_most_about_a_tenth_of_its_time(tmp_path):
    """Each rewrite reads the whole storage (seconds at 20,000 trials: O(trials^2) per run if
    done after every trial). After a rewrite that took t, the next comes no sooner than 10 t
    later; a fast rewrite (a small run) still follows every trial that takes longer."""
    from tlbench.results.runfolder import TableWriter

    now = [0.0]
    written = []

    def write(folder):  # a real call's bookkeeping, with a rewrite that takes 0.5 s of a made-up clock
        written.append(now[0])
        now[0] += 0.5

    writer = TableWriter(tmp_path, write=write, clock=lambda: now[0])
    for _ in range(20):  # twenty trials, one every 1 s (plus the rewrites' own time)
        writer()
        now[0] += 1.0
    gaps = [b - a for a, b in zip(written, written[1:])]
    assert written[0] == 0.0 and all(g >= 0.5 + 10 * 0.5 for g in gaps) and len(written) < 20
    quick = TableWriter(tmp_path, write=lambda folder: written.append("quick"), clock=lambda: now[0])
    before = len(written)
    for _ in range(5):  # a rewrite that takes no time at all: after every trial
        quick()
        now[0] += 1.0
    assert len(written) - before == 5
