"""Run and trial events, sent to every plugin that implements the event hooks
(:mod:`tlbench.host.hookspecs`): tlbench's own progress display, the trackers a config
lists, and any installed plugin.

Events are delivered one at a time, in order, from whichever thread runs the trial
(several devices: several trial threads), so an implementation needs no lock of
its own. A hook of a third-party plugin or tracker that raises is reported once, in
one line naming it, and gets no further events in this run: the trial and the
results in the storage are unaffected. tlbench's own implementations raise.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import pluggy

from tlbench.base import interrupts
from tlbench.host import hookspecs
from tlbench.host.contract import event_methods_problem, plugin_call
from tlbench.host.plugins import validation_problem
from tlbench.store.record import WORKER, TrialRecord
from tlbench.store.studyrecord import study_name
from tlbench.types import RunInfo, TrackerRequest, TrialInfo, UserError

_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


class Events:
    """The event hooks of one run: trial events and study-level ones (API 1.6).

    ``progress`` (a :class:`tlbench.host.progress.Progress`) is registered for the run's
    events like any plugin: the display is one implementation of the hooks. ``pm``: the
    plugin manager the plan's plugins came from (None: progress alone). ``trackers``:
    (name, object) pairs opened from the config.
    """

    def __init__(self, progress, run: RunInfo | None = None, pm: pluggy.PluginManager | None = None,
                 trackers: Sequence[tuple[str, Any]] = (), warn: Callable[[str], None] | None = None):  # fmt: skip
        self.progress, self.run = progress, run
        self.pm = pm if pm is not None else _bare_manager()
        self.lock = threading.RLock()
        self.off: set[str] = set()  # plugins whose hook raised: no more events
        self.warn = warn or (lambda text: print(f"tlbench: warning: {text}", file=sys.stderr))
        self.ours = {"tlbench.host.progress"}
        self.registered: list[Any] = []
        self._register(progress, "tlbench.host.progress")
        self.trackers = list(trackers)  # (name, object): the name is unique in the run, e.g. "trackers[0] (mlflow)"
        for name, tracker in self.trackers:
            self._register(tracker, name)

    def _register(self, plugin: Any, name: str) -> None:
        if plugin is None or self.pm.is_registered(plugin):
            return
        if name not in self.ours:
            problem = event_methods_problem(plugin)
            if problem:
                raise UserError(f"{name}: {problem}")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise UserError(f"{name}: {validation_problem(exc)}") from exc
        self.registered.append(plugin)

    def close(self) -> None:
        """Unregister what this run registered and close its trackers (their ``close()``)."""
        for plugin in self.registered:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
        self.registered.clear()
        for name, tracker in self.trackers:
            closer = getattr(tracker, "close", None)
            if callable(closer) and name not in self.off:
                self._guarded(name, "close()", closer, {})

    # the events ------------------------------------------------------------------------

    def run_started(self) -> None:
        self._emit("tlbench_run_started", run=self.run)

    def run_finished(self, interrupted: bool) -> None:
        self._emit("tlbench_run_finished", run=self.run, interrupted=interrupted)

    def trial_started(self, trial: TrialInfo) -> None:
        self._emit("tlbench_trial_started", run=self.run, trial=trial)

    def epoch_done(
        self, trial: TrialInfo, epoch: int, val_accuracy: float, learning_rates: dict[str, list[float]] | None = None
    ) -> None:
        with interrupts.interruptible():  # between epochs, inside the objective: nothing is being written
            self._emit(
                "tlbench_epoch_done", run=self.run, trial=trial, epoch=epoch, val_accuracy=val_accuracy,
                learning_rates=dict(learning_rates or {}),
            )  # fmt: skip

    def trial_finished(self, trial: TrialInfo) -> None:
        self._emit("tlbench_trial_finished", run=self.run, trial=trial)

    # study-level events (API 1.6): the progress display takes them as hooks, like any plugin

    def study_started(self, dataset: str, done: int, total: int | None, part: str = "search") -> None:
        self._emit("tlbench_study_started", run=self.run, dataset=dataset, part=part, done=done, total=total)

    def trial_recovered(self, dataset: str, number: int, retried: bool, part: str = "search") -> None:
        self._emit("tlbench_trial_recovered", run=self.run, dataset=dataset, part=part, number=number, retried=retried)

    def study_finished(self, dataset: str, part: str = "search") -> None:
        self._emit("tlbench_study_finished", run=self.run, dataset=dataset, part=part)

    def note(self, text: str) -> None:
        self._emit("tlbench_note", run=self.run, text=text)

    # ------------------------------------------------------------------------------------

    def _emit(self, hook: str, **kwargs) -> None:
        with self.lock:
            for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):  # registration order
                if impl.plugin_name in self.off:
                    continue
                args = {name: kwargs[name] for name in impl.argnames}
                if impl.plugin_name in self.ours:
                    impl.function(**args)  # our own display: a bug in it is a bug
                else:
                    self._guarded(impl.plugin_name, f"{hook}()", impl.function, args)

    def _guarded(self, plugin: str, what: str, fn, args: dict) -> None:
        try:
            fn(**args)
        except Exception as exc:
            self.off.add(plugin)
            self.warn(f"{plugin}: {what} raised {type(exc).__name__}: {exc}; it gets no more events in this run")


def as_events(progress) -> Events:
    """``progress`` as the events of a run without plugins (tests, benchmark scripts)."""
    return progress if isinstance(progress, Events) else Events(progress)


def _bare_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("tlbench")
    pm.add_hookspecs(hookspecs)
    return pm


def running(trial: optuna.Trial, dataset: str, epochs: int, curve: Sequence[float] = ()) -> TrialInfo:
    """A running trial as the event hooks see it: everything stored with it so far."""
    record = TrialRecord.from_trial(trial)
    return TrialInfo(
        dataset=dataset, study=trial.study.study_name, number=trial.number,
        backbone=str(trial.params.get("backbone", "?")), strategy=str(trial.params.get("strategy", "?")),
        state="running", record=record, epochs=epochs, curve=tuple(curve),
    )  # fmt: skip


def interrupted_here(study, reported: set[int]) -> list[optuna.trial.FrozenTrial]:
    """Trials this process ran that stopped without their ``trial_finished`` event (Ctrl-C,
    SIGTERM: Optuna calls no callback for them)."""

    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)):
        if t.number not in reported and TrialRecord.from_trial(t).worker == WORKER:
            out.append(t)
    return out


def finished(trial: optuna.trial.FrozenTrial, dataset: str, study: str) -> TrialInfo:
    """A finished trial as the event hooks see it; one still RUNNING in storage (interrupted
    before Optuna marked it) is failed, as the run then records it."""
    record = TrialRecord.from_trial(trial)
    state = _STATES.get(trial.state.name, trial.state.name.lower())
    if state == "running":
        state = "failed"
        record = dataclasses.replace(record, failure=record.failure or "interrupted",
                                     fail_reason=record.fail_reason or f"interrupted by {interrupts.what()}")  # fmt: skip
    curve = tuple(record.val_curve or ()) or tuple(
        trial.intermediate_values[k] for k in sorted(trial.intermediate_values)
    )
    reason = ""
    if state == "failed":
        reason = record.fail_reason or "see -v"
    elif state == "pruned":
        reason = f"not trained: {record.infeasible}" if record.infeasible else f"pruned after epoch {len(curve)}"
    return TrialInfo(
        dataset=dataset, study=study, number=trial.number,
        backbone=str(trial.params.get("backbone", "?")), strategy=str(trial.params.get("strategy", "?")),
        state=state, record=record, epochs=sum(p.get("epochs", 0) for p in record.phases or ()),
        curve=curve, values=tuple(trial.values or ()) if state == "complete" else (), reason=reason,
        seconds=trial.duration.total_seconds() if trial.duration else 0.0,
    )  # fmt: skip


def start(plan, progress, folder, storage_url: str) -> Events:
    """The events of a run of ``plan``: its trackers opened (a UserError from one stops
    the run before any trial), its plugins' event hooks and ``progress`` registered."""

    run = run_info(plan, folder, storage_url)
    opened = []
    for i, tracker in enumerate(plan.trackers):  # the same tracker may be listed twice (two MLflow stores)
        request = TrackerRequest(options=tracker.entry.options, run=run, base_dir=plan.base_dir)
        what = f"tracker '{tracker.record.name}': open()"
        try:
            if tracker.entry.optional and tracker.record.check is not None:  # validate warned; do not wait on it again
                plugin_call(
                    tracker.plugin,
                    f"tracker '{tracker.record.name}': check()",
                    lambda r=tracker.record: r.check(request),
                )
            opened.append(
                (
                    f"trackers[{i}] ({tracker.entry.name})",
                    plugin_call(tracker.plugin, what, lambda r=tracker.record: r.open(request)),
                )
            )
        except UserError as exc:
            if not tracker.entry.optional:
                raise
            progress.note(f"trackers[{i}] ({tracker.entry.name}): optional, left out: {exc}")
    return Events(progress, run, plan.pm, opened)


def run_info(plan, folder, storage_url: str | None) -> RunInfo:
    """What trackers and event hooks are told about the run."""

    return RunInfo(
        benchmark=plan.bench.name, run=plan.bench.run_name, folder=folder, fingerprint=plan.bench.fingerprint(),
        datasets=tuple(entry.key for entry, _ in plan.datasets),
        studies={entry.key: study_name(plan.bench, entry.key) for entry, _ in plan.datasets},
        storage=storage_url, worker=WORKER, config=plan.bench.model_dump(mode="json"),
    )  # fmt: skip
