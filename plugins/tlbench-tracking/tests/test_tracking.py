"""The two trackers through a real run, installed as a user has them (entry point),
read back with TensorBoard's and MLflow's own readers: every trial, its validation
curve epoch by epoch, its test accuracy and costs as the results hold them."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before timm is imported: no hub in tests

import optuna
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tlbench import cli, testing
from tlbench.store.record import TrialRecord


def _config(tmp_path, trackers) -> str:
    data = {
        "name": "tracked",
        "run": "r",
        "datasets": [
            {
                "name": "synthetic",
                "classes": 3,
                "size": 16,
                "train_per_class": 8,
                "val_per_class": 4,
                "test_per_class": 4,
            }
        ],
        "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
        "strategies": [{"name": "finetune", "epochs": 2}],
        "search": {"n_trials": 3, "startup_trials": 1, "screen": False, "pruner": "none"},
        "training": {"batch_size": 8, "resolution": 32},
        "trackers": trackers,
    }
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _stored(run: "os.PathLike") -> dict[int, optuna.trial.FrozenTrial]:
    url = f"sqlite:///{run}/study.db"
    (summary,) = optuna.get_all_study_summaries(url)
    return {t.number: t for t in optuna.load_study(study_name=summary.study_name, storage=url).trials}


@pytest.fixture
def tracked_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "tracking")  # the installed package's entry point
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    config = _config(tmp_path, [{"name": "tensorboard"}, {"name": "mlflow"}])
    assert cli.main(["run", config, "--format", "csv"]) == 0, capsys.readouterr().err
    return tmp_path / "results" / "tracked" / "r"


def test_tensorboard_holds_each_trial_as_the_storage_does(tracked_run):
    stored = _stored(tracked_run)
    folders = sorted((tracked_run / "tensorboard" / "synthetic").iterdir())
    assert [f.name for f in folders] == [f"trial-{n:04d}" for n in sorted(stored)]
    for folder in folders:
        trial = stored[int(folder.name.split("-")[1])]
        record = TrialRecord.from_trial(trial)
        events = EventAccumulator(str(folder))
        events.Reload()
        curve = [(e.step, e.value) for e in events.Scalars("val_accuracy")]
        assert curve == [(i + 1, pytest.approx(v)) for i, v in enumerate(record.val_curve)]
        assert events.Scalars("test_accuracy")[0].value == pytest.approx(record.test_accuracy)
        assert events.Scalars("train_gflops")[0].value == pytest.approx(record.train_gflops, rel=1e-6)
        # the learning rates by training step (API 1.5): 3 steps per epoch, 2 epochs, the head at its drawn rate's schedule
        head = [(e.step, e.value) for e in events.Scalars("lr/head")]
        assert [step for step, _ in head] == list(range(1, 7)) and max(v for _, v in head) <= record.params[
            "lr_head"
        ] * (1 + 1e-6)


def test_mlflow_holds_each_trial_as_the_storage_does(tracked_run):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # reading MLflow's file store, as `mlflow ui` would be told to
    client = MlflowClient(tracking_uri=(tracked_run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tlbench/tracked/r")
    runs = {int(r.data.tags["tlbench.trial"]): r for r in client.search_runs([experiment.experiment_id])}
    stored = _stored(tracked_run)
    assert sorted(runs) == sorted(stored)
    for number, run in runs.items():
        record = TrialRecord.from_trial(stored[number])
        assert run.info.status == "FINISHED" and run.data.tags["tlbench.state"] == "complete"
        assert run.data.params["backbone"] == "timm:test_resnet-scratch" and float(
            run.data.params["lr_head"]
        ) == pytest.approx(record.params["lr_head"])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (i + 1, pytest.approx(v)) for i, v in enumerate(record.val_curve)
        ]
        assert run.data.metrics["test_accuracy"] == pytest.approx(record.test_accuracy)
        assert run.data.metrics["trainable_params"] == record.trainable_params
        rates = client.get_metric_history(run.info.run_id, "lr.head")
        assert sorted(m.step for m in rates) == list(range(1, 7))


def test_resuming_adds_runs_and_overwrites_none(tracked_run, tmp_path, capsys, monkeypatch):
    before = {p: p.read_bytes() for p in (tracked_run / "tensorboard").rglob("*") if p.is_file()}
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "tracking")
    assert cli.main(["run", str(tmp_path / "b.yaml"), "--n-trials", "4"]) == 0, capsys.readouterr().err
    after = {p: p.read_bytes() for p in (tracked_run / "tensorboard").rglob("*") if p.is_file()}
    assert all(after[p] == data for p, data in before.items())
    assert len(list((tracked_run / "tensorboard" / "synthetic").iterdir())) == 4


def test_a_tracker_option_that_does_not_exist_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "tracking")
    code = cli.main(["validate", _config(tmp_path, [{"name": "mlflow", "tracking_url": "x"}])])
    err = capsys.readouterr().err
    assert code == 2 and "trackers[0] (mlflow): tracking_url: unknown option; did you mean 'tracking_uri'?" in err


def test_both_pass_the_conformance_kit():
    assert testing.check_plugin("tracking") == ["tracker tensorboard", "tracker mlflow"]


def test_a_worker_that_loses_the_race_to_create_the_experiment_uses_it(tmp_path, monkeypatch):
    """Workers of one run open the tracker at the same moment; the one whose create comes
    second finds the experiment the other made instead of stopping."""
    from mlflow.tracking import MlflowClient
    from tlbench_tracking import mlflow_tracker

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    made = mlflow_tracker._experiment(client, "tlbench/x/r")
    real = client.get_experiment_by_name
    answers = iter([None])  # the loser's first look came before the winner's create
    monkeypatch.setattr(client, "get_experiment_by_name", lambda name: next(answers, None) or real(name))
    assert mlflow_tracker._experiment(client, "tlbench/x/r") == made


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize(
    "tracker, needle",
    [
        (
            {"name": "mlflow", "tracking_uri": "foo://bar"},
            "trackers[0] (mlflow): tracking_uri: 'foo://bar' is not an MLflow tracking URI",
        ),
        (
            {"name": "mlflow", "tracking_uri": f"http://127.0.0.1:{_closed_port()}"},
            "no MLflow server answers at http://127.0.0.1:",
        ),
        ({"name": "tensorboard", "dir": "a_file/tb"}, "trackers[0] (tensorboard): dir: cannot create"),
        ({"name": "mlflow", "tracking_uri": "sqlite:///missing/deeper/m.db"}, None),  # folders that can be made: fine
    ],
)
def test_validate_checks_trackers_without_writing(tmp_path, capsys, monkeypatch, tracker, needle):
    import time

    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "tracking")
    (tmp_path / "a_file").write_text("not a folder")
    config = _config(tmp_path, [tracker])
    before = sorted(tmp_path.rglob("*"))
    start = time.monotonic()
    code = cli.main(["validate", config])
    err = capsys.readouterr().err
    assert time.monotonic() - start < 60  # a server that is down: seconds, not minutes
    assert sorted(tmp_path.rglob("*")) == before  # validate wrote nothing
    if needle is None:
        assert code == 0, err
        return
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    code = cli.main(["run", config])  # run refuses it before it creates the run folder
    assert code == 2 and not (tmp_path / "results").exists()
    optional = _config(tmp_path, [tracker | {"optional": True}])
    assert cli.main(["run", optional, "--format", "csv"]) == 0
    assert "(optional)" in capsys.readouterr().err
