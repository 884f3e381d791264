"""A tracker: one JSON line per finished trial, appended to a file.

A config turns it on with ``trackers: [{name: jsonl}]``. When a run starts, tlbench
calls ``open`` (here: the class) with the tracker's options and the run; the object
it returns gets the event hooks its methods implement (each optional, any subset of
the hook's arguments), one event at a time, until the run ends; then ``close()``.
"""

import json

import tlbench
from tlbench.types import Tracker, UserError, config_path


class JsonLines:
    def __init__(self, request):
        path = request.options.get("path")
        if path is None and request.run.folder is None:
            raise UserError("trackers: jsonl: this process has no run folder; set 'path:'")
        self.path = (
            config_path(path, request.base_dir, "trackers: jsonl: path")
            if path is not None
            else request.run.folder / "trials.jsonl"
        )
        self.run = request.run.run

    @tlbench.hookimpl
    def tlbench_trial_finished(self, trial):
        line = {
            "run": self.run,
            "dataset": trial.dataset,
            "trial": trial.number,
            "state": trial.state,
            "backbone": trial.backbone,
            "strategy": trial.strategy,
            "params": trial.record.params,
            "val_curve": list(trial.curve),
            "test_accuracy": trial.record.test_accuracy,
            "train_gflops": trial.record.train_gflops,
        }
        with self.path.open("a") as f:  # appended: lines of earlier runs stay
            f.write(json.dumps(line) + "\n")


@tlbench.hookimpl
def tlbench_trackers():
    yield Tracker(
        name="jsonl", open=JsonLines, options={"path": "file to append to (default: <run folder>/trials.jsonl)"}
    )
