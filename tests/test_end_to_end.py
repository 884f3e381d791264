"""Real `tlbench run` on synthetic data with tiny timm models: results, report, resume, failures."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from conftest import snapshot, tiny_benchmark

from tlbench import cli
from tlbench.results import runfolder

BENCH = tiny_benchmark(
    name="e2e",
    backbones=[
        {"name": "timm:test_resnet", "pretrained": False},
        {"name": "timm:test_efficientnet", "pretrained": False},
    ],
    strategies=[{"name": "linear_probe", "epochs": 1}, {"name": "finetune", "epochs": 2}],
    search={
        "n_trials": 3,
        "startup_trials": 1,
        "enqueue": [
            {
                "backbone": "timm:test_efficientnet-scratch",
                "strategy": "finetune",
                "params": {"freeze": 0.5, "lr_head": 0.02},
            }
        ],
    },
)


def _run_folder(config_path):
    folders = list((config_path.parent / "results" / "e2e").iterdir())
    assert len(folders) == 1
    return folders[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run through the installed console entry point, as a user types it."""
    folder = tmp_path_factory.mktemp("e2e")
    config = folder / "benchmarks.yaml"
    import yaml

    config.write_text(yaml.safe_dump(BENCH))
    proc = subprocess.run(
        [sys.executable, "-m", "tlbench", "run", str(config)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return config, _run_folder(config), proc.stdout


def test_run_writes_every_results_file(finished_run):
    _, folder, stdout = finished_run
    for name in (
        "config.yaml",
        "run.json",
        "environment.json",
        "study.db",
        "trials.csv",
        "summary.csv",
        "summary.json",
    ):
        assert (folder / name).stat().st_size > 0, name
    env = json.loads((folder / "environment.json").read_text())
    assert env["torch"] and env["timm"] and env["optuna"] and env["device"]
    assert set(pd.read_csv(folder / "trials.csv")["device"].dropna()) == {env["device"]}
    assert "e2e / cfg-" in stdout and "synthetic" in stdout


def test_trials_have_measured_costs(finished_run):
    _, folder, _ = finished_run
    everything = pd.read_csv(folder / "trials.csv")
    probes = int((everything["origin"] == "probe").sum())  # one per backbone the screen kept: outside n_trials
    # the opening: the screen's probes, then the config's recipes, then the portfolio
    assert 1 <= probes <= 2 and list(everything["origin"]) == ["probe"] * probes + ["recipe"] + ["portfolio"] * 2
    trials = everything[everything["origin"] != "probe"]
    assert len(trials) == 3 and set(everything["state"]) <= {"COMPLETE", "PRUNED"}
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) >= 1
    for column in (
        "total_params",
        "trainable_params",
        "forward_gflops",
        "train_gflops",
        "train_seconds",
        "throughput",
        "latency_ms",
        "peak_memory_mb",
    ):
        assert (done[column] > 0).all(), column
    assert (done["trainable_params"] <= done["total_params"]).all()
    first = trials.iloc[0]  # the enqueued recipe runs first
    assert first["backbone"] == "timm:test_efficientnet-scratch" and first["strategy"] == "finetune"
    assert json.loads(first["params"])["freeze"] == 0.5


def test_summary_selects_by_validation_only(finished_run):
    _, folder, _ = finished_run
    trials = pd.read_csv(folder / "trials.csv")
    summary = pd.read_csv(folder / "summary.csv")
    done = trials[trials["state"] == "COMPLETE"]
    for _, row in summary.iterrows():
        group = done[(done["backbone"] == row["backbone"]) & (done["strategy"] == row["strategy"])]
        assert row["val_accuracy"] == group["val_accuracy"].max()
        chosen = group[group["trial"] == row["trial"]].iloc[0]
        assert row["test_accuracy"] == chosen["test_accuracy"]
    assert summary["pareto"].any()


def test_report_formats(finished_run, capsys):
    _, folder, _ = finished_run
    assert cli.main(["report", str(folder), "--format", "markdown"]) == 0
    tables: list[list[str]] = []
    previous = ""
    for line in capsys.readouterr().out.splitlines():  # consecutive "|" lines make one table
        if line.startswith("|"):
            tables.append([line]) if not previous.startswith("|") else tables[-1].append(line)
        previous = line
    assert len(tables) == 2  # the summary, then the screen
    for lines in tables:
        assert len(lines) >= 3 and lines[1].startswith("|---")
        assert len({len(re.split(r"(?<!\\)\|", line)) for line in lines}) == 1  # every row has the header's cells
    assert cli.main(["report", str(folder), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"backbone", "strategy", "test_accuracy", "train_gflops", "pareto"} <= set(rows[0])
    assert cli.main(["report", str(folder), "--format", "csv"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == len(rows)
    assert cli.main(["report", str(folder), "--trials"]) == 0
    assert "COMPLETE" in capsys.readouterr().out


def test_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not a tlbench run folder" in capsys.readouterr().err


def _trials(folder):
    meta = json.loads((folder / "run.json").read_text())
    study = optuna.load_study(study_name=meta["studies"]["synthetic"], storage=f"sqlite:///{folder / 'study.db'}")
    return [(t.number, t.state.name, t.params) for t in study.trials]


def test_running_again_resumes_and_extends(write_config, capsys):
    config = write_config(BENCH | {"search": BENCH["search"] | {"n_trials": 2, "screen": False}})
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    folder = _run_folder(config)
    before = _trials(folder)
    assert len(before) == 2
    assert cli.main(["run", str(config), "--format", "csv"]) == 0  # nothing left to do
    assert _trials(folder) == before
    assert cli.main(["run", str(config), "--n-trials", "3", "--format", "csv"]) == 0
    after = _trials(folder)
    assert after[:2] == before and len(after) == 3
    assert "study: 2 of 3 trials already done" in capsys.readouterr().err


def test_changed_config_with_the_same_run_name_is_refused_and_changes_no_byte(write_config, capsys):
    config = write_config(BENCH | {"run": "fixed", "search": BENCH["search"] | {"n_trials": 1}})
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    folder = config.parent / "results" / "e2e" / "fixed"
    before = snapshot(folder)
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    assert cli.main(["run", str(config), "--format", "csv"]) == 2
    assert "holds a run of a different config" in capsys.readouterr().err
    assert snapshot(folder) == before  # config.yaml, run.json, environment.json, study.db, .lock: all as they were


def test_a_run_made_before_select_epochs_is_refused_with_the_setting_that_goes_on_with_it(write_config, capsys):
    """A run folder of tlbench 0.8 (each trial valued on its last epoch: select_epochs 1, which the
    fingerprint leaves out) is not resumed under 0.9's default value rule: one line with the fix,
    exit 2, no byte changed; the config with select_epochs: 1 goes on with it."""
    old = BENCH | {"run": "fixed", "search": BENCH["search"] | {"n_trials": 1, "select_epochs": 1}}
    config = write_config(old)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    folder = config.parent / "results" / "e2e" / "fixed"
    before = snapshot(folder)
    capsys.readouterr()
    write_config(old | {"search": BENCH["search"] | {"n_trials": 1}})
    assert cli.main(["run", str(config), "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert (
        "made by tlbench 0.8 or earlier" in err and "add search.select_epochs: 1" in err and len(err.splitlines()) == 1
    )
    assert snapshot(folder) == before
    write_config(old)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0


def test_failed_trial_is_recorded_and_the_study_goes_on(write_config, capsys):
    config = write_config(
        BENCH
        | {
            "strategies": [{"name": "finetune", "epochs": 2, "freeze": 0.0, "lr_backbone": 1.0e9, "lr_head": 1.0e9}],
            "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
            "search": {"n_trials": 2, "pruner": "none"},
        }
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    trials = runfolder.load_run(_run_folder(config)).trials
    assert list(trials["state"]) == ["FAIL", "FAIL"]
    assert trials["fail_reason"].str.contains("learning rate is likely too high").all()
    err = capsys.readouterr().err
    assert err.count("FAILED: loss became") == 2


def test_storage_that_cannot_be_opened_is_a_user_error(write_config, capsys):
    config = write_config(BENCH | {"search": {"n_trials": 1, "storage": "sqlite:////no/such/folder/x.db"}})
    assert cli.main(["run", str(config)]) == 2
    assert (
        "search.storage: folder /no/such/folder of sqlite:////no/such/folder/x.db does not exist"
        in capsys.readouterr().err
    )


def test_enqueued_recipes_are_never_pruned(write_config, capsys):
    recipe = {"backbone": "timm:test_resnet-scratch", "strategy": "finetune"}
    config = write_config(
        BENCH
        | {
            "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
            "strategies": [
                {
                    "name": "finetune",
                    "epochs": 3,
                    "freeze": 0.0,
                    "lr_backbone": [1.0e-8, 1.0e-2],
                    "lr_head": [1.0e-8, 1.0e-1],
                }
            ],
            "search": {
                "n_trials": 2,
                "startup_trials": 1,
                "screen": False,  # no probes, no portfolio: the two recipes alone
                "enqueue": [
                    recipe | {"params": {"lr_backbone": 1.0e-2, "lr_head": 1.0e-2}},
                    recipe | {"params": {"lr_backbone": 1.0e-7, "lr_head": 1.0e-7}},  # learns nothing
                ],
            },
        }
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    trials = runfolder.load_run(_run_folder(config)).trials
    good, bad = (json.loads(curve) for curve in trials["val_curve"])
    assert bad[1] < good[1]  # the median pruner would have stopped it after epoch 2
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"] and len(bad) == 3


def test_same_config_and_seed_give_the_same_trials_in_one_process(write_config, capsys):
    # the second run starts with whatever RNG state the first left behind
    for run in ("first", "second"):
        config = write_config(BENCH | {"run": run, "search": {"n_trials": 2, "pruner": "none"}}, filename=f"{run}.yaml")
        assert cli.main(["run", str(config), "--format", "csv"]) == 0
    first, second = (runfolder.load_run(config.parent / "results" / "e2e" / run).trials for run in ("first", "second"))
    columns = ["backbone", "strategy", "params", "val_curve", "test_accuracy"]
    assert first[columns].equals(second[columns])


def test_trials_record_whether_they_trained_on_cached_features(finished_run):
    config, folder, _ = finished_run
    trials = pd.read_csv(folder / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert done["feature_cache"].str.match(r"(head|finetune): (extracted|memory) at ").all()
    recipe = done[done["origin"] == "recipe"].iloc[
        0
    ]  # the first fine-tune: after the screen's probes (heads on its features)
    assert recipe["feature_cache"] == "finetune: extracted at " + recipe["feature_cache"].split(" at ")[1]
    assert done[done["origin"] == "probe"]["feature_cache"].str.startswith("head: memory at ").all()
    report = (folder / "report.md").read_text()
    assert re.search(r"Feature cache: \d+ of \d+ completed trials trained on frozen-layer outputs", report)


def test_augmentation_turns_the_cache_off_and_the_report_says_so(write_config, capsys):
    config = write_config(name="aug", training={"batch_size": 8, "resolution": 32, "augment": True})
    assert cli.main(["run", str(config), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "Feature cache off: training.augment" in out


def test_one_trial_per_device_in_parallel(write_config, capsys):
    """training.device as a list: Optuna runs that many trials at once, each on its own device."""
    config = write_config(
        name="par",
        strategies=[{"name": "linear_probe", "epochs": 2}],
        search={"n_trials": 4, "startup_trials": 4, "screen": False, "pruner": "none"},  # all four run to the end
        training={"batch_size": 8, "resolution": 32, "device": ["cpu", "cpu"]},
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    assert "2 trials at a time, one per device" in capsys.readouterr().err
    folder = next((config.parent / "results" / "par").iterdir())
    trials = pd.read_csv(folder / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE"] * 4
    study = optuna.load_study(study_name=f"par/{folder.name}/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # some trials overlapped
