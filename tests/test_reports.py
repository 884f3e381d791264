"""Reports people read: repeats with bootstrap intervals, compare, plots, cross-dataset ranking."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_benchmark

from tlbench import cli
from tlbench.base.stats import bootstrap_ci
from tlbench.results import runfolder

TWO_DATASETS = tiny_benchmark(
    name="reports",
    repeats=2,
    datasets=[
        {
            "name": "synthetic",
            "label": "easy",
            "classes": 3,
            "size": 16,
            "train_per_class": 8,
            "val_per_class": 4,
            "test_per_class": 10,
            "noise": 0.1,
        },
        {
            "name": "synthetic",
            "label": "hard",
            "classes": 3,
            "size": 16,
            "train_per_class": 8,
            "val_per_class": 4,
            "test_per_class": 10,
            "noise": 0.6,
        },
    ],
    backbones=[
        {"name": "timm:test_resnet", "pretrained": False},
        {"name": "timm:test_efficientnet", "pretrained": False},
    ],
    strategies=[{"name": "finetune", "epochs": 2, "freeze": 0.0}],
    search={
        "n_trials": 2,
        "pruner": "none",
        "enqueue": [
            {"backbone": "timm:test_resnet-scratch", "strategy": "finetune"},
            {"backbone": "timm:test_efficientnet-scratch", "strategy": "finetune"},
        ],
    },
)


def test_bootstrap_interval_on_known_cases():
    assert bootstrap_ci([[True] * 50]) == (1.0, 1.0)
    low, high = bootstrap_ci([[1] * 200 + [0] * 200])  # p = 0.5, n = 400: normal approx ±0.049
    assert abs(low - 0.451) < 0.01 and abs(high - 0.549) < 0.01
    # seeds disagree (0.9, 0.8, 0.7): the interval must cover the run-to-run spread, not just the examples
    runs = np.array([[1] * 90 + [0] * 10, [1] * 80 + [0] * 20, [1] * 70 + [0] * 30])
    low, high = bootstrap_ci(runs)
    assert low < 0.75 and high > 0.85
    assert bootstrap_ci(runs, seed=1) != (low, high) and bootstrap_ci(runs) == (low, high)  # seeded


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A (two datasets, 2 repeats) and run B (one backbone fewer, another machine)."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "a.yaml").write_text(yaml.safe_dump(TWO_DATASETS | {"run": "a"}))
    b = TWO_DATASETS | {"run": "b", "repeats": 0, "backbones": TWO_DATASETS["backbones"][:1]}
    b["search"] = b["search"] | {"n_trials": 1, "enqueue": b["search"]["enqueue"][:1]}
    (folder / "b.yaml").write_text(yaml.safe_dump(b))
    assert cli.main(["run", str(folder / "a.yaml"), "--format", "csv"]) == 0
    assert cli.main(["run", str(folder / "b.yaml"), "--format", "csv"]) == 0
    env_b = folder / "results" / "reports" / "b" / "environment.json"
    env_b.write_text(json.dumps(json.loads(env_b.read_text()) | {"device": "NVIDIA H200"}))
    return folder / "results" / "reports" / "a", folder / "results" / "reports" / "b"


def test_repeats_give_mean_std_and_an_interval(two_runs):
    run = runfolder.load_run(two_runs[0])
    assert len(run.repeats) == 2 * 2 * 2  # 2 datasets x 2 selected configs x 2 seeds
    assert (run.summary["repeats"] == 2).all()
    for _, row in run.summary.iterrows():
        mine = run.repeats[(run.repeats["dataset"] == row["dataset"]) & (run.repeats["repeat_of"] == row["trial"])]
        assert row["test_mean"] == pytest.approx(mine["test_accuracy"].mean())
        assert row["ci_low"] <= row["test_mean"] <= row["ci_high"]
    seeds = {json.loads(p)["batch_size"] for p in run.repeats["params"]}
    assert seeds == {8}  # the selected configuration, retrained


def test_running_again_adds_no_repeats(two_runs, capsys):
    config = two_runs[0].parent.parent.parent / "a.yaml"
    before = len(runfolder.load_run(two_runs[0]).repeats)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    assert len(runfolder.load_run(two_runs[0]).repeats) == before


def test_without_repeats_the_interval_covers_test_examples(two_runs):
    summary = runfolder.load_run(two_runs[1]).summary
    assert (summary["repeats"] == 0).all() and summary["ci_low"].notna().all()
    assert (summary["ci_low"] <= summary["test_accuracy"]).all() and (
        summary["test_accuracy"] <= summary["ci_high"]
    ).all()


def test_cross_dataset_ranking(two_runs):
    run = runfolder.load_run(two_runs[0])
    ranking = run.ranking
    assert set(ranking["backbone"]) == {"timm:test_resnet-scratch", "timm:test_efficientnet-scratch"}
    assert (ranking["datasets"] == 2).all()
    for _, row in ranking.iterrows():
        mine = run.summary[run.summary["backbone"] == row["backbone"]]
        assert row["mean_test"] == pytest.approx(mine["test_accuracy"].mean())
        assert 1 <= row["mean_rank"] <= 2
    assert sorted(ranking["mean_rank"]) == list(ranking["mean_rank"])
    assert ranking["train_gflops"].sum() == pytest.approx(run.trials["train_gflops"].sum())


def test_markdown_report_has_per_dataset_and_cross_dataset_tables(two_runs, capsys):
    assert cli.main(["report", str(two_runs[0]), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "### easy" in out and "### hard" in out and "### Across datasets" in out
    table = [line for line in out.split("### Across datasets")[1].splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 and len({len(re.split(r"(?<!\\)\|", line)) for line in table}) == 1
    assert re.search(r"\| 0\.\d{3}±0\.\d{3} \| 0\.\d{3}–\d\.\d{3} \|", out)  # mean±std, then the interval


def test_plots_and_report_md_are_written(two_runs, capsys):
    for name in ("plot-easy.png", "plot-hard.png", "report.md"):
        path = two_runs[0] / name
        assert path.stat().st_size > 1000 or (name == "report.md" and path.stat().st_size > 200), name
    assert (two_runs[0] / "plot-easy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report_md = (two_runs[0] / "report.md").read_text()
    assert "![plot-easy](plot-easy.png)" in report_md and "| Pareto |" in report_md
    (two_runs[0] / "plot-easy.png").unlink()
    assert cli.main(["plot", str(two_runs[0])]) == 0
    assert (two_runs[0] / "plot-easy.png").stat().st_size > 1000


def test_compare_aligns_rows_flags_hardware_and_missing_rows(two_runs, capsys):
    a, b = two_runs
    assert cli.main(["compare", str(a), str(b), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    rows = pd.DataFrame(json.loads(out))
    assert len(rows) == 4  # 2 datasets x 2 backbones, aligned
    missing = rows[rows["backbone"] == "timm:test_efficientnet-scratch"]
    assert missing["test_1"].isna().all() and missing["test_0"].notna().all()
    present = rows[rows["backbone"] == "timm:test_resnet-scratch"]
    assert list(present["d_test_1"]) == pytest.approx(list(present["test_1"] - present["test_0"]))
    overlap = (present["ci_low_1"] <= present["ci_high_0"]) & (present["ci_low_0"] <= present["ci_high_1"])
    assert (present["noise_1"] == overlap).all()
    assert "different hardware: device" in err and "NVIDIA H200" in err
    assert cli.main(["compare", str(a), str(b), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "⚠ different hardware" in out and out.count("| ") > 10


def test_compare_flags_runs_that_value_their_trials_differently(two_runs, tmp_path, capsys):
    """A run of tlbench 0.8 (its config.yaml has no select_epochs: last-epoch values) against
    one of 0.9 (the mean of the last 5): the Val columns mean different things."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(two_runs[1], old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["search"]["select_epochs"]
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["compare", str(two_runs[0]), str(old), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "different trial values: search.select_epochs = 5 vs 1" in err
    assert cli.main(["compare", str(two_runs[0]), str(two_runs[1]), "--format", "csv"]) == 0
    assert "different trial values" not in capsys.readouterr().err


def test_compare_needs_two_runs(two_runs, capsys):
    assert cli.main(["compare", str(two_runs[0])]) == 2
    assert "two or more run folders" in capsys.readouterr().err


def test_terminal_table_fits_80_columns_and_keeps_the_essentials(two_runs):
    import io

    from rich.console import Console

    from tlbench.results import report

    run = runfolder.load_run(two_runs[0])
    for width in (80, 200):
        out = io.StringIO()
        report.print_summary(run, Console(file=out, width=width, force_terminal=False))
        lines = out.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        header = next(line for line in lines if "Backbone" in line and "Test" in line)
        for heading in ("Strategy", "95% CI", "Trainable"):
            assert heading in header, (width, heading)
        shown_or_named = header + next((line for line in lines if "not shown at" in line), "")
        assert all(h in shown_or_named for h in ("Train", "Img/s")), (width, header)  # names stay whole: columns go
        assert any("timm:test_efficientnet-scratch" in line for line in lines)
        assert ("Best config" in header) is (width >= 160)
        assert any("budget 2 trials x2 seeds" in line for line in lines)
    assert "Across datasets" in out.getvalue() and "Mean rank" in out.getvalue()


def test_each_datasets_caption_counts_its_own_trials_and_what_the_study_never_ran(write_config, capsys):
    """n_trials smaller than the enqueued recipes: the study stops with recipes still waiting,
    and the caption says so instead of showing fewer rows without a word; a second dataset's
    trials are not counted under the first one's table."""
    recipes = [
        {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": lr}}
        for lr in (0.01, 0.02, 0.03)
    ]
    bench = tiny_benchmark(
        datasets=[
            {
                "name": "synthetic",
                "label": "a",
                "classes": 3,
                "size": 16,
                "train_per_class": 8,
                "val_per_class": 4,
                "test_per_class": 4,
            },
            {
                "name": "synthetic",
                "label": "b",
                "classes": 3,
                "size": 16,
                "train_per_class": 8,
                "val_per_class": 4,
                "test_per_class": 4,
            },
        ],
        search={"n_trials": 1, "screen": False, "enqueue": recipes},
    )
    config = write_config(bench)
    assert cli.main(["run", str(config), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    captions = [line.split(" · ", 1)[1] for line in out.splitlines() if " · budget " in line]
    assert captions == ["budget 1 trials · 1 complete · not run yet: 2 recipes"] * 2
    (folder,) = (config.parent / "results" / "tiny").iterdir()
    assert "1 complete · not run yet: 2 recipes" in (folder / "report.md").read_text()


def test_progress_counts_the_screens_probes_with_the_trials(write_config, capsys):
    bench = tiny_benchmark(
        backbones=[{"name": "timm:test_resnet"}, {"name": "timm:test_efficientnet"}],
        search={"n_trials": 1, "screen": {"drop": False}},
    )
    bench["backbones"] = [
        {"name": "timm:test_resnet", "pretrained": False},
        {"name": "timm:test_efficientnet", "pretrained": False},
    ]
    config = write_config(bench)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "study: 0 of 3 trials already done" in err  # 2 probes + 1 trial of n_trials


def test_the_summary_table_keeps_names_whole_at_80_and_120_columns():
    """Rows as the default benchmark has them: the longest backbone name stays on one line,
    no line is wider than the terminal, and a column left out is named under the table."""
    import io

    from rich.console import Console

    from tlbench.results import report

    row = {
        "pareto": False, "strategy": "linear_probe", "test_accuracy": 0.444, "ci_low": 0.413, "ci_high": 0.473,
        "val_accuracy": 0.433, "trainable_params": 3.38e6, "total_params": 3.38e6, "forward_gflops": 0.0627,
        "train_gflops": 559.0, "train_seconds": 13.5, "throughput": 1258.0, "peak_memory_mb": 1411.0, "trials": 1,
        "config": "freeze=0 (0/17 frozen) lr_backbone=0.001 lr_head=0.01",
    }  # fmt: skip
    rows = pd.DataFrame(
        [row | {"backbone": "efficientnet_lite0-scratch"}, row | {"backbone": "efficientnet_lite2", "pareto": True}]
    )
    for width in (80, 120):
        out = io.StringIO()
        Console(file=out, width=width).print(report.rich_table("t", report.SUMMARY, rows, width, "caption"))
        lines = out.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        assert any("efficientnet_lite0-scratch" in line for line in lines)  # on one line, not folded
        header = next(line for line in lines if "Backbone" in line)
        assert all(h in header for h in ("Strategy", "Test", "95% CI", "Trainable")), header
        if width == 80:
            assert "not shown at 80 columns: Img/s" in out.getvalue() and "Img/s" not in header
        else:
            assert (
                "Img/s" in header and "Train GFLOP" in header and "not shown at 120 columns: Trials" in out.getvalue()
            )


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "rich"])
def test_report_trials_honours_format(two_runs, capsys, fmt):
    import io

    n = len(runfolder.load_run(two_runs[1]).trials)
    assert cli.main(["report", str(two_runs[1]), "--trials", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "csv":
        frame = pd.read_csv(io.StringIO(out))
        assert list(frame.columns[:4]) == ["dataset", "trial", "state", "origin"] and len(frame) == n
    elif fmt == "json":
        rows = json.loads(out)
        assert len(rows) == n and {"dataset", "trial", "state", "fail_reason"} <= set(rows[0])
    elif fmt == "markdown":
        lines = out.splitlines()
        assert (
            lines[0].startswith("| dataset | trial | state |") and lines[1].startswith("|---|") and len(lines) == n + 2
        )
    else:
        assert out.split()[:3] == ["dataset", "trial", "state"]
