"""Progress of a running search: a live rich display on a terminal, plain lines otherwise."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from tlbench import hookimpl
from tlbench.types import TrialInfo


class Progress:
    """What a running benchmark tells the user; the CLI passes a rich or a plain-text one.

    Every event reaches it through the event hooks (tlbench.host.events registers it for
    each run like any plugin): the hook implementations below turn them into these
    methods. Several devices run trials in parallel threads, but events arrive one at a
    time; tell trials apart by number. Every method may be left out.
    """

    def study_started(self, dataset: str, done: int, total: int | None) -> None: ...
    def trial_started(self, number: int, summary: str, epochs: int) -> None: ...
    def epoch_done(self, number: int, epoch: int, val_accuracy: float) -> None: ...
    def trial_finished(self, trial: TrialInfo) -> None: ...
    def trial_recovered(self, dataset: str, number: int, retried: bool) -> None: ...
    def study_finished(self, dataset: str) -> None: ...
    def note(self, text: str) -> None: ...  # a line about the search itself (the screen's decision, a spent budget)

    @hookimpl
    def tlbench_trial_started(self, trial: TrialInfo) -> None:
        self.trial_started(trial.number, f"{trial.backbone} · {trial.strategy}", trial.epochs)

    @hookimpl
    def tlbench_epoch_done(self, trial: TrialInfo, epoch: int, val_accuracy: float) -> None:
        self.epoch_done(trial.number, epoch, val_accuracy)

    @hookimpl
    def tlbench_trial_finished(self, trial: TrialInfo) -> None:
        self.trial_finished(trial)

    @hookimpl
    def tlbench_study_started(self, dataset: str, part: str, done: int, total: int | None) -> None:
        self.study_started(_label(dataset, part), done, total)

    @hookimpl
    def tlbench_study_finished(self, dataset: str, part: str) -> None:
        self.study_finished(_label(dataset, part))

    @hookimpl
    def tlbench_trial_recovered(self, dataset: str, part: str, number: int, retried: bool) -> None:
        self.trial_recovered(_label(dataset, part), number, retried)

    @hookimpl
    def tlbench_note(self, text: str) -> None:
        self.note(text)


def _label(dataset: str, part: str) -> str:
    """How the display names a part of a dataset's study: the repeats apart."""
    return f"{dataset} repeats" if part == "repeats" else dataset


def outcome(trial: TrialInfo) -> str:
    """'val 0.812 (test 0.800) in 12.3 s' or the failure or pruning reason."""
    record = trial.record
    if trial.state == "complete":
        test = record.test_accuracy if record.test_accuracy is not None else float("nan")
        return f"val {trial.values[0]:.3f} (test {test:.3f}) in {trial.seconds:.1f} s"
    if trial.state == "failed":
        return f"FAILED: {trial.reason}"
    if trial.state == "pruned" and record.infeasible:
        return trial.reason
    if trial.state == "pruned":
        last = trial.curve[-1] if trial.curve else float("nan")
        return f"pruned after epoch {len(trial.curve)} (val {last:.3f})"
    return trial.state.upper()


class PlainProgress(Progress):
    """One line per event, for logs and pipes."""

    def __init__(self, console: Console, name: str | None = None):
        self.console = console
        self.prefix = f"{name} " if name else ""  # which worker, when several print to one terminal
        self.dataset = ""
        self.epochs: dict[int, int] = {}
        self.lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self.lock:
            self.console.print(f"[{self.prefix}{self.dataset}] {text}", markup=False, highlight=False, soft_wrap=True)

    def study_started(self, dataset, done, total):
        self.dataset = dataset
        self._say(f"study: {done} of {total if total is not None else '∞'} trials already done")

    def trial_started(self, number, summary, epochs):
        self.epochs[number] = epochs
        self._say(f"trial {number}: {summary}, {epochs} epochs")

    def epoch_done(self, number, epoch, val_accuracy):
        self._say(f"  trial {number} epoch {epoch}/{self.epochs.get(number, '?')}: val accuracy {val_accuracy:.3f}")

    def trial_finished(self, trial):
        self._say(f"trial {trial.number} {outcome(trial)}")

    def trial_recovered(self, dataset, number, retried):
        self.dataset = dataset
        self._say(f"trial {number} was interrupted: marked failed" + (", retrying it" * retried))

    def study_finished(self, dataset):
        self._say("study done")

    def note(self, text):
        with self.lock:
            self.console.print(f"{self.prefix}{text}", markup=False, highlight=False, soft_wrap=True)


class RichProgress(Progress):
    """Live bars for trials and epochs, and a line per finished trial."""

    def __init__(self, console: Console):
        self.bars = Bars(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self.console = console
        self.running: dict[int, int] = {}  # trial number -> its epochs bar (several with parallel trials)
        self.lock = threading.Lock()

    def study_started(self, dataset, done, total):
        self.dataset = dataset
        self.bars.start()
        self.trials = self.bars.add_task(f"[bold]{escape(dataset)}[/] trials", total=total, completed=done)

    def trial_started(self, number, summary, epochs):
        with self.lock:
            self.running[number] = self.bars.add_task(f"trial {number}: {escape(summary)}", total=epochs)

    def epoch_done(self, number, epoch, val_accuracy):
        with self.lock:
            if number in self.running:
                self.bars.update(self.running[number], completed=epoch)

    def trial_finished(self, trial):
        with self.lock:
            task = self.running.pop(trial.number, None)
            if task is not None:
                self.bars.remove_task(task)
            self.bars.advance(self.trials)
            self.bars.console.print(
                f"[{self.dataset}] trial {trial.number} {outcome(trial)}", markup=False, highlight=False
            )

    def trial_recovered(self, dataset, number, retried):
        message = f"trial {number} was interrupted: marked failed" + (", retrying it" * retried)
        self.console.print(f"[{dataset}] {message}", markup=False, highlight=False)

    def note(self, text):
        self.console.print(text, markup=False, highlight=False)

    def study_finished(self, dataset):
        self.bars.stop()
        for task in list(self.bars.tasks):
            self.bars.remove_task(task.id)


def make_progress(console: Console, name: str | None = None) -> Progress:
    """Live bars on a terminal, plain lines otherwise or for a named worker (several share the terminal)."""
    return RichProgress(console) if console.is_terminal and name is None else PlainProgress(console, name)
