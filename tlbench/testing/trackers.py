"""The check on a tracker: opened for a run, it takes the events a run sends."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlbench.testing._common import _call, _check_record, _fail
from tlbench.types import Tracker, UserError


def check_tracker(record: Tracker, options: Mapping[str, Any] | None = None, *, plugin: str = "?") -> Path:
    """Open ``record`` for a run in a fresh temporary run folder and send it the events a
    run sends: the study's start, one trial's (started, two epochs, finished complete),
    then a second trial's that is interrupted after one epoch (finished, state "failed",
    reason "interrupted by Ctrl-C", as a run stopped by Ctrl-C sends it), the study's end,
    a note, then the run's end (interrupted); returns the run folder, whose files a test can read back. Whatever
    its hooks raise fails the check."""
    import dataclasses
    import tempfile

    from tlbench.host import events
    from tlbench.store.record import TrialRecord
    from tlbench.types import RunInfo, TrackerRequest, TrialInfo

    label = f"tracker '{record.name}'"
    _check_record(record, options, plugin, label)
    folder = Path(tempfile.mkdtemp(prefix="tlbench-tracker-")) / "results" / "kit" / "run"
    folder.mkdir(parents=True)
    run = RunInfo(
        benchmark="kit", run="run", folder=folder, fingerprint="0" * 10, datasets=("data",), studies={"data": "kit/run/data"},
        storage=f"sqlite:///{folder}/study.db", worker="kit:0", config={"name": "kit"},
    )  # fmt: skip
    request = TrackerRequest(options=dict(options or {}), run=run, base_dir=folder.parent.parent.parent)
    opened = _call(plugin, f"{label}: open()", lambda: record.open(request))
    try:
        sink = events.Events(
            None,
            run,
            trackers=[(f"tracker {record.name}", opened)],
            warn=lambda text: _raise(_fail(plugin, label, text)),
        )
    except UserError as exc:  # a method named like an event hook that would never be called
        raise _fail(plugin, label, str(exc)) from exc
    record_ = TrialRecord(params={"lr_head": 0.01}, seed=0, phases=[{"name": "head", "epochs": 2}])
    trial = TrialInfo("data", "kit/run/data", 0, "tiny", "linear_probe", "running", record_, epochs=2)
    sink.run_started()
    sink.study_started("data", 0, 2)  # the study-level hooks (API 1.6)
    sink.trial_started(trial)
    for epoch, accuracy in ((1, 0.5), (2, 0.75)):
        sink.epoch_done(trial, epoch, accuracy, {"head": [0.01 * epoch] * 3})  # learning_rates (API 1.5): three steps
    done = dataclasses.replace(record_, val_curve=[0.5, 0.75], test_accuracy=0.7, train_seconds=1.0, train_gflops=2.0)
    sink.trial_finished(
        TrialInfo(
            "data", "kit/run/data", 0, "tiny", "linear_probe", "complete", done, 2, (0.5, 0.75), (0.75,), seconds=1.5
        )
    )
    second = TrialInfo("data", "kit/run/data", 1, "tiny", "linear_probe", "running", record_, epochs=2)
    sink.trial_started(second)
    sink.epoch_done(second, 1, 0.6, {"head": [0.01] * 3})
    stopped = dataclasses.replace(record_, val_curve=[0.6], train_seconds=0.5, train_gflops=1.0, failure="interrupted",
                                  fail_reason="interrupted by Ctrl-C")  # fmt: skip
    sink.trial_finished(TrialInfo("data", "kit/run/data", 1, "tiny", "linear_probe", "failed", stopped, 2, (0.6,),
                                  reason="interrupted by Ctrl-C", seconds=0.7))  # fmt: skip
    sink.study_finished("data")
    sink.note("[data] a note about the search")
    sink.run_finished(interrupted=True)
    sink.close()
    return folder


def _raise(exc: Exception):
    raise exc
