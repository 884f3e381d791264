"""MLflow: one MLflow run per trial in one experiment, through ``MlflowClient`` (no
global MLflow state is changed, no server needed).

The default store is MLflow's file store in the run folder (``<run folder>/mlruns``;
``mlflow ui --backend-store-uri <run folder>/mlruns`` shows it). MLflow 3 keeps the
file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is
true; this tracker sets that variable for its own process when it uses a file store
(``file:`` URI or a plain path) and the variable is unset. Any other tracking URI
(``sqlite:///mlflow.db``, a server) is used as given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import tlbench
from tlbench.types import TrackerRequest, TrialInfo, UserError, config_path
from tlbench_tracking.metrics import final_metrics, parameters, run_name

STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


class MLflowTracker:
    def __init__(self, request: TrackerRequest):
        from mlflow.tracking import MlflowClient

        uri = request.options.get("tracking_uri")
        if uri is None:
            if request.run.folder is None:
                raise UserError("trackers: mlflow: this process has no run folder; set 'tracking_uri:'")
            uri = (request.run.folder / "mlruns").resolve().as_uri()
        uri = _resolved(str(uri), request.base_dir)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if uri.startswith(("http:", "https:")):  # a server that goes down: an error in seconds, not minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.client = MlflowClient(tracking_uri=uri)
        name = str(request.options.get("experiment") or f"tlbench/{request.run.benchmark}/{request.run.run}")
        self.experiment = _experiment(self.client, name)
        self.uri = uri
        self.tags = {
            "tlbench.benchmark": request.run.benchmark,
            "tlbench.run": request.run.run,
            "tlbench.worker": request.run.worker,
        }
        self.runs: dict[tuple[str, int], str] = {}  # (study, trial number) -> MLflow run id
        self.steps: dict[tuple[str, int], int] = {}  # training steps logged so far, per trial

    @tlbench.hookimpl
    def tlbench_trial_started(self, trial: TrialInfo) -> None:
        tags = {
            **self.tags,
            "tlbench.dataset": trial.dataset,
            "tlbench.trial": str(trial.number),
            "tlbench.study": trial.study,
        }
        run = self.client.create_run(self.experiment, run_name=run_name(trial), tags=tags)
        self.runs[(trial.study, trial.number)] = run.info.run_id
        for key, value in parameters(trial).items():
            self.client.log_param(run.info.run_id, key, value[:6000])

    @tlbench.hookimpl
    def tlbench_epoch_done(
        self, trial: TrialInfo, epoch: int, val_accuracy: float, learning_rates: dict[str, list[float]]
    ) -> None:
        run_id = self.runs.get((trial.study, trial.number))
        if run_id is None:
            return
        self.client.log_metric(run_id, "val_accuracy", val_accuracy, step=epoch)
        done = self.steps.get((trial.study, trial.number), 0)  # the learning rates by training step, across epochs
        for name, rates in learning_rates.items():
            for i, rate in enumerate(rates):
                self.client.log_metric(run_id, f"lr.{re.sub(r'[^0-9A-Za-z_.-]+', '_', name)}", rate, step=done + i + 1)
        self.steps[(trial.study, trial.number)] = done + max((len(r) for r in learning_rates.values()), default=0)

    @tlbench.hookimpl
    def tlbench_trial_finished(self, trial: TrialInfo) -> None:
        run_id = self.runs.pop((trial.study, trial.number), None)
        self.steps.pop((trial.study, trial.number), None)
        if run_id is None:
            return  # it never started in this process (a surplus trial, another worker's)
        steps = max(len(trial.curve), 1)
        for name, value in final_metrics(trial).items():
            if name != "val_accuracy":
                self.client.log_metric(run_id, name, value, step=steps)
        self.client.set_tag(run_id, "tlbench.state", trial.state)
        if trial.reason:
            self.client.set_tag(run_id, "tlbench.reason", trial.reason[:5000])
        self.client.set_terminated(run_id, status=STATUS.get(trial.state, "FAILED"))

    def close(self) -> None:
        for run_id in self.runs.values():  # trials cut short by the end of the run (Ctrl-C)
            self.client.set_terminated(run_id, status="KILLED")
        self.runs.clear()


def _experiment(client, name: str) -> str:
    """The id of experiment ``name``, created if missing. Workers of one run open their
    trackers at the same moment: when another created it first, creating fails and
    the experiment is there to be read."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _resolved(uri: str, base: Path) -> str:
    """A relative SQLite or file path in the config resolves against the config's folder."""
    for prefix in ("sqlite:///", "file:"):
        if uri.startswith(prefix) and not uri.startswith(prefix + "/") and not uri.startswith("file://"):
            return prefix + str((base / uri[len(prefix) :]).resolve())
    if "://" not in uri and not uri.startswith("file:"):  # a plain path: MLflow's file store
        return config_path(uri, base, "trackers: mlflow: tracking_uri").resolve().as_uri()
    return uri
