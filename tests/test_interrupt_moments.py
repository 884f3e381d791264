"""Ctrl-C and SIGTERM at random moments of a run (issue 24): every time the command exits
130 or 143 (or 0, when the signal came after the run's last safe point), the tables and
the report are written, every finished trial is COMPLETE with its whole record, the
stopped one is failed with its reason, and the same command goes on until the budget is
complete with each interrupted configuration retried.

One run folder, interrupted again and again: each cycle runs the same command in this
process and sends the signal to it from a timer at a random moment (seeded), so that the
moments fall everywhere — opening the run, the storage's bookkeeping, training, the
callbacks, writing the tables. Every fourth cycle the signal comes instead right after a
trial has finished complete, so that the run's progress between signals is asserted
whatever the machine's load (a timer alone asserted it only on an idle machine: 1 trial in
30 cycles beside two recorders). TLBENCH_INTERRUPT_MOMENTS sets how many: 30 in the suite
(about 45 s on 2 cores); the issue's 100 and more by hand, e.g.
``TLBENCH_INTERRUPT_MOMENTS=300 python -m pytest tests/test_interrupt_moments.py``. With the
old handler (KeyboardInterrupt wherever the signal landed) it fails within 100 moments:
"database is locked" from a storage transaction cut in the middle.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading

import optuna
import pandas as pd
from conftest import tiny_benchmark

from tlbench import cli
from tlbench.base import interrupts
from tlbench.host import events
from tlbench.store.record import TrialRecord

MOMENTS = int(os.environ.get("TLBENCH_INTERRUPT_MOMENTS", "30"))
N_TRIALS = 400  # never reached: a signal that was lost would show as exit 0 (after at most these)
CONFIG = tiny_benchmark(
    name="moments",
    strategies=[{"name": "finetune", "epochs": 2, "freeze": 0.0}],
    search={"n_trials": N_TRIALS, "pruner": "none", "retries": 100, "portfolio": 0},
)
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _trials(folder) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{folder / 'study.db'}"
    return [
        t
        for name in optuna.get_all_study_names(storage)
        for t in optuna.load_study(study_name=name, storage=storage).trials
    ]


@contextlib.contextmanager
def _signal_at(moment: float, sig: signal.Signals, monkeypatch):
    """While the command's handlers are installed, send ``sig`` to this process after
    ``moment`` seconds (never after they are removed: the lock orders the two)."""
    real = interrupts.handled
    lock, done = threading.Lock(), [False]

    def fire():
        with lock:
            if not done[0]:
                os.kill(os.getpid(), sig)

    @contextlib.contextmanager
    def handled(defer: bool = False):
        with real(defer=defer):
            timer = threading.Timer(moment, fire)
            timer.start()
            try:
                yield
            finally:
                with lock:
                    done[0] = True
                timer.cancel()

    monkeypatch.setattr(interrupts, "handled", handled)
    try:
        yield
    finally:
        monkeypatch.setattr(interrupts, "handled", real)


@contextlib.contextmanager
def _signal_after_a_complete_trial(sig: signal.Signals, monkeypatch):
    """Send ``sig`` to this process right after the run reports a trial finished complete
    (its record is in the storage): a cycle that makes progress at any load."""
    real = events.Events.trial_finished

    def trial_finished(self, trial):
        real(self, trial)
        if trial.state == "complete":
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(events.Events, "trial_finished", trial_finished)
    try:
        yield
    finally:
        monkeypatch.setattr(events.Events, "trial_finished", real)


def _check_folder(folder, cycle: str) -> list[optuna.trial.FrozenTrial]:
    trials = _trials(folder)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states, (cycle, states)
    for t in trials:
        if t.state.name == "COMPLETE":  # the whole record, never half of it
            assert t.value is not None and None not in (
                TrialRecord.from_trial(t).test_accuracy,
                TrialRecord.from_trial(t).train_gflops,
            ), (
                cycle,
                t,
            )
        elif t.state.name == "FAIL":
            assert (TrialRecord.from_trial(t).fail_reason or "").startswith("interrupted"), (
                cycle,
                t.number,
                t.user_attrs,
            )
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == sum(s != "WAITING" for s in states), (cycle, len(table), states)
    assert (folder / "report.md").exists()
    return trials


def test_ctrl_c_and_sigterm_at_random_moments_stop_at_a_safe_point_and_the_run_goes_on(write_config, monkeypatch):
    config = write_config(CONFIG)
    command = ["run", str(config), "--format", "csv"]
    rng = random.Random(24)
    assert cli.main(command + ["--n-trials", "1"]) == 0  # the run folder exists: every cycle resumes it
    (folder,) = [p.parent for p in (config.parent / "results" / "moments").glob("*/study.db")]
    stopped = 0
    for cycle in range(MOMENTS):
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        moment = rng.uniform(0.0, 1.2)
        progress = cycle % 4 == 3
        with _signal_after_a_complete_trial(sig, monkeypatch) if progress else _signal_at(moment, sig, monkeypatch):
            code = cli.main(command)
        label = f"cycle {cycle}: {sig.name} " + ("after a complete trial" if progress else f"at {moment:.3f} s")
        assert code == EXIT[sig], (label, code)  # the budget is far away: only the signal ends a cycle
        _check_folder(folder, label)
        stopped += 1
    trials = _trials(folder)
    done = sum(t.state.name == "COMPLETE" for t in trials)
    waiting = sum(t.state.name == "WAITING" for t in trials)
    assert cli.main(command + ["--n-trials", str(done + waiting + 1)]) == 0  # the same command goes on
    trials = _check_folder(folder, "the end")
    failed = {t.number for t in trials if t.state.name == "FAIL"}
    retries = {TrialRecord.from_trial(t).retry_of: t for t in trials if TrialRecord.from_trial(t).retry_of is not None}
    assert failed <= set(retries), failed - set(retries)  # every interrupted trial is retried ...
    assert all(retries[n].state.name in ("COMPLETE", "FAIL") for n in failed)  # ... and the retry ran
    assert not [t for t in trials if t.state.name == "WAITING"]
    assert stopped == MOMENTS and done >= MOMENTS // 4, (stopped, done)  # each fourth cycle finished a trial at least
