"""Imbalanced test splits: each trial's balanced accuracy and per-class accuracy, from
its per-example test results and the test labels kept with the study; the report shows
them when the classes are imbalanced, and only then."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import tiny_benchmark
from test_datasets import make_folder

from tlbench import cli
from tlbench.results.runfolder import per_class
from tlbench.results.tables import imbalanced


def test_balanced_accuracy_is_the_mean_of_the_per_class_accuracies():
    split = {"classes": ["ok", "bad"], "labels": [0, 0, 0, 0, 0, 0, 1, 1]}
    got = per_class("11111001", split)  # every "ok" right but one, one "bad" of two
    assert json.loads(got["test_per_class"]) == {"ok": [5, 6], "bad": [1, 2]}
    assert got["test_balanced"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert per_class("111", split) == {} and per_class(None, split) == {} and per_class("11", None) == {}


def test_imbalance_is_a_largest_class_over_one_and_a_half_times_the_smallest():
    rows = lambda counts: pd.DataFrame({"test_per_class": [json.dumps({c: [0, n] for c, n in counts.items()})]})  # noqa: E731
    assert imbalanced(rows({"a": 302, "b": 21}))
    assert not imbalanced(rows({"a": 30, "b": 21}))
    assert not imbalanced(pd.DataFrame({"test_per_class": [None]}))


def test_an_imbalanced_run_reports_balanced_and_per_class_accuracy(tmp_path, write_config, capsys):
    make_folder(tmp_path / "cells", {"good": 60, "cracked": 12})
    config = write_config(tiny_benchmark(
        datasets=[{"name": "imagefolder", "path": "cells"}], search={"n_trials": 2, "startup_trials": 1, "screen": False},
    ))  # fmt: skip
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    folder = next((tmp_path / "results" / "tiny").glob("*"))
    trials = pd.read_csv(folder / "trials.csv")
    for _, row in trials.iterrows():
        counts = json.loads(row["test_per_class"])
        assert set(counts) == {"cracked", "good"} and counts["good"][1] > 1.5 * counts["cracked"][1]
        assert row["test_balanced"] == pytest.approx(sum(r / n for r, n in counts.values()) / 2)
        assert sum(r for r, _ in counts.values()) / sum(n for _, n in counts.values()) == pytest.approx(
            row["test_accuracy"]
        )
    report = (folder / "report.md").read_text()
    assert (
        "| Balanced |" in report and "Imbalanced test split: Balanced is the mean of the per-class accuracies" in report
    )


def test_a_balanced_run_has_no_balanced_column(tmp_path, write_config, capsys):
    config = write_config(tiny_benchmark(search={"n_trials": 1, "startup_trials": 1, "screen": False}))
    assert cli.main(["run", str(config)]) == 0, capsys.readouterr().err
    report = next((tmp_path / "results" / "tiny").glob("*/report.md")).read_text()
    assert "Balanced" not in report and "per-class" not in report
