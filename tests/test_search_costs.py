"""Cost steers the search in real runs: constraints known before training refuse a
configuration at zero compute, those known after mark it infeasible for the sampler
and the tables, a compute budget stops the study; and a finished run exports as a
replayable table."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
from conftest import one_line, snapshot, tiny_benchmark

from tlbench import cli
from tlbench.store.record import TrialRecord


def _run(write_config, capsys, **search):
    # the screen's probe trials are tested in test_screen_run.py; here every trial is the sampler's
    config = write_config(
        tiny_benchmark(run="r", search={"n_trials": 3, "startup_trials": 1, "screen": False} | search)
    )
    code = cli.main(["run", str(config), "--format", "csv"])
    out = capsys.readouterr()
    assert code == 0, out.err
    folder = config.parent / "results" / "tiny" / "r"
    return config, folder, out


def _study(folder):
    return optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}")


def test_a_configuration_over_a_constraint_known_before_training_is_never_trained(write_config, capsys):
    _, folder, out = _run(write_config, capsys, constraints={"forward_gflops": 1e-9})
    trials = _study(folder).trials
    assert [t.state.name for t in trials] == ["PRUNED"] * 3
    for t in trials:
        assert (
            TrialRecord.from_trial(t).infeasible.startswith("search.constraints: forward_gflops ")
            and "> 1e-09" in TrialRecord.from_trial(t).infeasible
        )
        assert (
            TrialRecord.from_trial(t).train_gflops == 0.0 and t.intermediate_values == {}
        )  # zero compute: not one epoch
        assert t.constraints["refused"] == 1.0  # the sampler sees it as infeasible
    assert "not trained: search.constraints: forward_gflops" in out.err
    table = pd.read_csv(folder / "trials.csv")
    assert table["infeasible"].notna().all()
    assert pd.read_csv(folder / "summary.csv").empty  # nothing feasible to recommend
    assert "No feasible completed trials" in (folder / "report.md").read_text()


def test_a_constraint_known_after_training_marks_the_trial_for_the_sampler_and_the_tables(write_config, capsys):
    _, folder, _ = _run(write_config, capsys, constraints={"train_seconds": 1e-6})
    trials = _study(folder).trials
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert all(t.constraints["train_seconds"] == TrialRecord.from_trial(t).train_seconds - 1e-6 > 0 for t in trials)
    table = pd.read_csv(folder / "trials.csv")
    assert table["infeasible"].str.startswith("search.constraints: train_seconds").all()
    assert pd.read_csv(folder / "summary.csv").empty  # the Pareto front and the best are over feasible trials
    assert cli.main(["report", str(folder)]) == 0
    assert "No feasible completed trials" in capsys.readouterr().out


def test_a_compute_budget_stops_the_study_and_a_new_run_starts_nothing(write_config, capsys):
    config, folder, out = _run(write_config, capsys, n_trials=6, budget={"gflops": 1e-6})
    assert "the study stopped: search.budget.gflops:" in out.err  # said on the run that spent it
    trials = _study(folder).trials
    assert len(trials) == 1 and TrialRecord.from_trial(trials[0]).train_gflops > 1e-6  # the first trial spent it all
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    assert "no new trials: search.budget.gflops:" in capsys.readouterr().err
    assert len(_study(folder).trials) == 1


def test_a_pruned_trial_records_what_it_spent(write_config, capsys, monkeypatch):
    """The budget and the replay count pruned trials' compute up to where they stopped."""
    from tlbench.search.trial import Objective

    def prune_after_the_first_epoch(self, trial, epoch, accuracy, start, so_far):
        raise optuna.TrialPruned("the pruner said so")  # what should_prune() leads to

    monkeypatch.setattr(Objective, "_epoch", prune_after_the_first_epoch)
    strategies = [{"name": "linear_probe", "epochs": 3}]
    config = write_config(
        tiny_benchmark(run="r", strategies=strategies, search={"n_trials": 1, "startup_trials": 1, "screen": False})
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    (trial,) = _study(config.parent / "results" / "tiny" / "r").trials
    assert trial.state.name == "PRUNED"
    assert TrialRecord.from_trial(trial).train_gflops > 0 and TrialRecord.from_trial(trial).train_seconds > 0
    assert TrialRecord.from_trial(trial).test_accuracy is None  # it did not finish: the spend is one epoch's


def test_the_envelope_pruner_stops_a_trial_that_cannot_catch_up_in_a_real_run(write_config, capsys):
    """search.pruner: envelope in a run: a probe whose head does not learn (lr 1e-9) is stopped
    once the finished probe (the recipe, never pruned) says its flat curve cannot catch up."""
    strategies = [{"name": "linear_probe", "epochs": 4, "lr_head": [0.1, 1.0e-9, 2.0e-9]}]  # choices: 3 values or more
    recipe = {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": 0.1}}
    search = {
        "n_trials": 2, "startup_trials": 1, "screen": False, "portfolio": 0, "sampler": "local", "local_share": 1.0,
        "pruner": "envelope", "warmup_epochs": 1, "prune_startup": 1, "enqueue": [recipe],
    }  # fmt: skip
    dataset = {"name": "synthetic", "classes": 2, "size": 16, "train_per_class": 24, "val_per_class": 12,
               "test_per_class": 4}  # fmt: skip
    config = write_config(tiny_benchmark(run="r", strategies=strategies, search=search, datasets=[dataset]))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    good, flat = _study(config.parent / "results" / "tiny" / "r").trials
    assert good.params["linear_probe.lr_head"] == 0.1 and flat.params["linear_probe.lr_head"] < 1.0e-8  # one step away
    assert good.state.name == "COMPLETE" and len(good.intermediate_values) == 4
    assert flat.state.name == "PRUNED" and sorted(flat.intermediate_values) == [1, 2]  # after the warm-up epoch
    assert flat.intermediate_values[2] + good.value - good.intermediate_values[2] < good.value


def test_untried_draws_in_a_real_run_never_train_a_configuration_twice(write_config, capsys):
    """search.untried_draws in a run: a grid of five probe rates, five trials, five configurations
    (with the option off the random half repeats some: tests/unit/test_search_rules.py)."""
    strategies = [{"name": "linear_probe", "epochs": 1, "lr_head": [0.001, 0.003, 0.01, 0.03, 0.1]}]
    search = {"n_trials": 5, "screen": False, "portfolio": 0, "untried_draws": True}
    config = write_config(tiny_benchmark(run="r", strategies=strategies, search=search))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    drawn = [t.params["linear_probe.lr_head"] for t in _study(config.parent / "results" / "tiny" / "r").trials]
    assert sorted(drawn) == [0.001, 0.003, 0.01, 0.03, 0.1]


def test_a_study_stops_once_every_configuration_of_its_lists_ran(write_config, capsys):
    """Three probe rates and n_trials 8: three trials, then the study stops (as Optuna's
    GridSampler does) and says why; run again, it trains nothing more."""
    strategies = [{"name": "linear_probe", "epochs": 1, "lr_head": [0.001, 0.01, 0.1]}]
    search = {"n_trials": 8, "screen": False, "portfolio": 0, "untried_draws": True}
    config = write_config(tiny_benchmark(run="r", strategies=strategies, search=search))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "the study stopped: all 3 configurations the search keeps have run" in err, err
    folder = config.parent / "results" / "tiny" / "r"
    trials = _study(folder).trials
    assert sorted(t.params["linear_probe.lr_head"] for t in trials) == [0.001, 0.01, 0.1]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0  # resumed: nothing left to train
    assert "no new trials: all 3 configurations the search keeps have run" in capsys.readouterr().err
    assert len(_study(folder).trials) == 3


def test_a_run_exports_as_a_replayable_table(write_config, capsys, tmp_path):
    _, folder, _ = _run(write_config, capsys, screen=True)
    assert cli.main(["export", str(folder)]) == 0
    table = json.loads((folder / "table.json").read_text())
    assert table["format"] == "tlbench-table" and table["version"] == 1 and table["run"]["run"] == "r"
    assert (
        table["run"]["select_epochs"] == 5
    )  # 0.9's default (each trial here trains one epoch: its value is that one's)
    rows = table["datasets"]["synthetic"]["trials"]
    assert len(rows) == 4 and set(table["datasets"]["synthetic"]["screen"]) == {"timm:test_resnet-scratch"}
    assert [r["probe"] for r in rows] == [True, False, False, False]  # the screen's probe, then the 3 of n_trials
    for row in rows:
        assert row["params"]["strategy"] == "linear_probe" and "linear_probe.lr_head" in row["distributions"]
        assert len(row["val_curve"]) == 1 and row["train_gflops"] > 0
        # one epoch: the validation split through the whole network once (the probe's features: cached or not)
        assert 0 < row["val_gflops"] <= row["train_gflops"] * 2
        if row["state"] == "COMPLETE":
            assert row["val_accuracy"] == row["val_curve"][-1] and 0 <= row["test_accuracy"] <= 1
    assert cli.main(["export", str(folder)]) == 0  # its own table: replaced
    theirs = tmp_path / "notes.json"
    theirs.write_text('{"mine": true}')
    before = snapshot(tmp_path)
    one_line(
        capsys,
        cli.main(["export", str(folder), "--out", str(theirs)]),
        "--out:",
        "notes.json exists and is not a tlbench table",
    )
    one_line(
        capsys,
        cli.main(["export", str(folder), "--out", str(tmp_path / "typo" / "t.json")]),
        "--out: folder",
        "does not exist",
    )
    assert snapshot(tmp_path) == before and not (tmp_path / "typo").exists()


def test_export_of_a_run_whose_config_is_no_mapping_is_one_line_and_writes_nothing(write_config, capsys):
    _, folder, _ = _run(write_config, capsys)
    (folder / "config.yaml").write_text("- not\n- settings\n")
    before = snapshot(folder)
    one_line(capsys, cli.main(["export", str(folder)]), "config.yaml: damaged (not a mapping of settings)")
    assert snapshot(folder) == before


def test_export_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    one_line(capsys, cli.main(["export", str(tmp_path)]), str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    one_line(capsys, cli.main(["export", str(tmp_path / "r2")]), "r2: not a tlbench run folder")  # not --out's fault


def test_export_to_standard_output_a_pipe_or_a_device_never_reads_it(write_config, capsys, tmp_path):
    import os
    import threading

    _, folder, _ = _run(write_config, capsys, screen=False)
    assert cli.main(["export", str(folder), "--out", "-"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["format"] == "tlbench-table" and not (Path.cwd() / "-").exists()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()  # export writes into the pipe as a reader would consume it (jq, less); it never reads it
    assert cli.main(["export", str(folder), "--out", str(fifo)]) == 0
    reader.join(timeout=60)
    assert json.loads(got[0])["format"] == "tlbench-table" and fifo.exists()
    assert cli.main(["export", str(folder), "--out", "/dev/null"]) == 0  # a character device: written, not read
    one_line(capsys, cli.main(["export", str(folder), "--out", str(tmp_path)]), "--out:", "is a folder")


def test_a_pareto_search_trades_accuracy_against_cost_and_reports_its_hypervolume(write_config, capsys):
    strategies = [{"name": "linear_probe", "epochs": 2}, {"name": "finetune", "epochs": 2}]
    config = write_config(
        tiny_benchmark(
            run="r", strategies=strategies, search={"n_trials": 4, "startup_trials": 2, "objective": "pareto"}
        )
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    study = _study(folder)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all(t.values[1] == TrialRecord.from_trial(t).train_gflops for t in done)
    assert all(
        len(TrialRecord.from_trial(t).val_curve) == 2 for t in done
    )  # the curve, since Optuna cannot take reports
    report = (folder / "report.md").read_text()
    assert "Pareto search (val accuracy vs train_gflops): hypervolume after training GFLOPs spent" in report
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["val_accuracy"]) <= {t.values[0] for t in done}
    assert (
        cli.main(["export", str(folder)]) == 0
    )  # its curves come from the record: Optuna holds none for Pareto trials
    rows = {r["number"]: r for r in json.loads((folder / "table.json").read_text())["datasets"]["synthetic"]["trials"]}
    assert all(
        rows[t.number]["val_curve"] == TrialRecord.from_trial(t).val_curve and len(rows[t.number]["val_curve"]) == 2
        for t in done
    )


def test_test_curve_records_test_accuracy_after_every_epoch_and_exports_it(write_config, capsys):
    """training.test_curve (recorded grids): one test accuracy per epoch, the last one the trial's."""
    strategies = [{"name": "linear_probe", "epochs": 3}, {"name": "two_stage", "head_epochs": 1, "epochs": 2}]
    bench = tiny_benchmark(run="r", strategies=strategies, search={"n_trials": 2, "startup_trials": 2, "screen": False})
    config = write_config({**bench, "training": {**bench["training"], "test_curve": True}})
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    assert cli.main(["export", str(folder)]) == 0
    rows = json.loads((folder / "table.json").read_text())["datasets"]["synthetic"]["trials"]
    assert rows and all(r["state"] == "COMPLETE" for r in rows)
    for row in rows:
        assert len(row["test_curve"]) == len(row["val_curve"]) == 3  # across both phases of two_stage too
        assert row["test_curve"][-1] == row["test_accuracy"] and all(0 <= a <= 1 for a in row["test_curve"])
        assert isinstance(row["seed"], int)
    plain = write_config(tiny_benchmark(run="plain", search={"n_trials": 1, "screen": False}), filename="plain.yaml")
    assert cli.main(["run", str(plain), "--format", "csv"]) == 0
    store = f"sqlite:///{plain.parent / 'results' / 'tiny' / 'plain' / 'study.db'}"
    trials = optuna.load_study(study_name="tiny/plain/synthetic", storage=store).trials
    assert trials and all(TrialRecord.from_trial(t).test_curve is None for t in trials)


def test_select_epochs_makes_a_trials_value_its_last_epochs_mean_and_the_table_says_so(write_config, capsys):
    """search.select_epochs (design step 7): a finished trial's value, which the sampler follows
    and the best trial is chosen by, is the mean validation accuracy of its last k epochs (all
    of them for a trial that trained fewer); the tables and the export carry that value."""
    from tlbench.base.stats import trial_value

    key = "timm:test_resnet-scratch"
    strategies = [{"name": "linear_probe", "epochs": 3}, {"name": "finetune", "epochs": 1}]
    enqueue = [
        {"backbone": key, "strategy": "linear_probe", "params": {"lr_head": 0.05}},
        {"backbone": key, "strategy": "finetune", "params": {"freeze": 0.0, "lr_backbone": 0.001, "lr_head": 0.01}},
    ]
    search = {"n_trials": 2, "screen": False, "select_epochs": 2, "enqueue": enqueue}
    config = write_config(tiny_benchmark(run="r", strategies=strategies, search=search))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    trials = _study(folder).trials
    curves = [[t.intermediate_values[k] for k in sorted(t.intermediate_values)] for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 and [len(c) for c in curves] == [3, 1]
    assert trials[0].value == (curves[0][1] + curves[0][2]) / 2 != curves[0][2]  # the probe's last two epochs
    assert trials[1].value == curves[1][0]  # one epoch trained: its only one
    assert _study(folder).best_trial.value == max(t.value for t in trials)
    assert cli.main(["export", str(folder)]) == 0
    table = json.loads((folder / "table.json").read_text())
    assert table["run"]["select_epochs"] == 2
    rows = table["datasets"]["synthetic"]["trials"]
    assert [r["val_accuracy"] for r in rows] == [trial_value(r["val_curve"], 2) for r in rows]
    assert list(pd.read_csv(folder / "trials.csv")["val_accuracy"]) == [t.value for t in trials]
    assert cli.main(["report", str(folder)]) == 0
    assert "Val: each trial's mean validation accuracy over its last 2 epochs" in capsys.readouterr().out


def test_report_trials_marks_the_infeasible_ones(write_config, capsys):
    _, folder, _ = _run(write_config, capsys, constraints={"train_seconds": 1e-6})
    assert cli.main(["report", str(folder), "--trials"]) == 0
    assert capsys.readouterr().out.count("infeasible: search.constraints: train_seconds") == 3
