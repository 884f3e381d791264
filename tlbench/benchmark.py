"""Running a benchmark: the library function behind ``tlbench run`` (a notebook calls
:func:`run_benchmark` the same way), and the loops the workers run.

A run is: check everything (:mod:`tlbench.search.planning`), take the run folder, run one
study per dataset until it has its trials (here, or in N ``tlbench worker``
processes), then retrain the best configuration of each dataset x backbone x
strategy with new seeds (the repeats, chosen from the studies), and write the
tables. It never renders: it returns the :class:`Outcome` and the CLI shows it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from tlbench.base import interrupts
from tlbench.base.threads import apply_interop, shared_gpus, worker_environment
from tlbench.engine import basics, cost
from tlbench.host import events as run_events
from tlbench.host.progress import Progress
from tlbench.results import runfolder
from tlbench.search.opening import screen_all
from tlbench.search.planning import Plan
from tlbench.search.preflight import preflight
from tlbench.search.repeats import REPEAT_SEED, enqueue_repeats, select_repeats  # noqa: F401  (REPEAT_SEED: its home was here)
from tlbench.search.screen import loaded_weights
from tlbench.search.studies import (
    FINISHED,
    budget,
    connect_shared,
    fail_interrupted,
    nothing_left,
    open_study,
    probes_waiting,
    recover_interrupted,
    repeats_study_name,
    reseeded,
    started,
    study_name,
)
from tlbench.search.trial import Objective, TrialResources
from tlbench.store import storage
from tlbench.store.record import TrialRecord
from tlbench.types import DatasetSplits, UserError

INTERRUPTED = (130, 143)  # exit codes of a worker stopped by Ctrl-C (SIGINT) or SIGTERM


@dataclass(frozen=True)
class Outcome:
    """How a run ended; its tables are written."""

    run: runfolder.Run  # the run folder, read back from the storage
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM (interrupts.received() says which)
    worker_exit: int = 0  # the first failing worker's exit code (2: a user error it printed), else 0


def run_benchmark(
    plan: Plan,
    progress: Progress,
    *,
    workers: int = 1,
    config: Path | None = None,
    verbose: bool = False,
    on_start=lambda folder, devices: None,
) -> Outcome:
    """Run (or resume) ``plan``'s benchmark into its run folder and return how it ended.

    Refuses (UserError) before writing anything if the folder holds another config's
    run or another storage's, or the storage cannot be opened. ``workers > 1`` starts
    that many ``tlbench worker`` processes on ``config`` (the file ``plan`` came from).
    ``on_start(folder, devices)`` is called once every check has passed.
    """
    shelf: dict = {}  # the backbones preflight builds, taken by the screen (one build each, not two)
    splits = preflight(plan, shelf)
    folder = runfolder.run_dir(plan.bench, plan.base_dir)
    runfolder.check_free(folder)
    runfolder.check_resumable(folder, plan.bench)
    if plan.bench.search.storage is None:
        runfolder.check_own_storage(folder)  # a killed write rolled back; a read-only file refused
    resources = TrialResources(plan, splits, shelf)
    # The run folder's own SQLite file is ours alone (the folder is locked): a RUNNING trial in it was killed.
    # A shared storage may have other workers: their trials are watched by heartbeats instead.
    alone = plan.bench.search.storage is None
    url = runfolder.storage_url(plan.bench.search.storage, folder)
    shared, studies = None, None
    if not alone:  # checked before the run folder is touched
        shared = connect_shared(url, plan.bench.search.heartbeat, plan.bench.search.retries)
        studies = open_studies(plan, shared, alone, recipes=False)
    elif _has_content(folder / runfolder.DEFAULT_STORAGE):  # the folder's own: readable? (read-only: nothing changes)
        storage.connect(runfolder.read_only_url(url, folder))
    with runfolder.locked(folder) as lock:
        runfolder.claim(lock)  # every check that can refuse this run has passed (check_resumable covers study.db)
        store = shared or storage.connect(url)
        # each study opened once, here, and passed along (recipes are enqueued after the screen's probes)
        studies = studies or open_studies(plan, store, alone, recipes=False)
        save_metadata(plan, folder, resources)
        events = (
            run_events.start(plan, progress, folder, url) if workers == 1 else run_events.as_events(progress)
        )  # workers send their own
        on_start(folder, resources.devices)
        events.run_started()
        outcome = None
        try:
            outcome = _open(plan, splits, store, resources, events, folder, alone, studies)
            if outcome is not None:  # interrupted during the screen's probes
                return outcome
            if workers > 1:
                outcome = _coordinate(plan, folder, store, url, lock, events, workers, config, verbose, studies)
            else:
                outcome = _run_here(plan, splits, resources, folder, store, events, alone, studies)
            return outcome
        finally:  # an exception (a user error mid-run) ends the run too: interrupted
            _finish(events, interrupted=outcome is None or outcome.interrupted)


def _finish(events: run_events.Events, interrupted: bool) -> None:
    """The run's end event, then its trackers closed (also when the event fails)."""
    try:
        events.run_finished(interrupted=interrupted)
    finally:
        events.close()


def _has_content(db: Path) -> bool:
    """An empty study.db is what a run killed while creating it leaves: nothing to read
    (read-only, its tables could not be made), so the locked run below makes them."""
    try:
        return db.stat().st_size > 0
    except FileNotFoundError:
        return False


def open_studies(plan: Plan, store, alone: bool, recipes: bool = True) -> dict[str, optuna.Study]:
    """Create or load each dataset's study, by dataset key: a study made from another config is refused here."""
    return {entry.key: open_study(plan, entry.key, store, alone=alone, recipes=recipes) for entry, _ in plan.datasets}


def _open(plan, splits, store, resources, progress, folder: Path, alone: bool, studies=None) -> Outcome | None:
    """The screen of every study with its probes (:func:`screen_all`), the probes trained here
    as they come; an Outcome if Ctrl-C or SIGTERM stopped it (the tables are written)."""
    write = runfolder.TableWriter(folder)  # after each trial, at most about a tenth of the run's time

    shown: list[str] = []  # the dataset whose probes are on display

    def run_waiting(study: optuna.Study, key: str) -> None:
        n = probes_waiting(study)
        if not n:
            return
        if shown != [key]:
            done_before()

            pretrained = sum(loaded_weights(plan.backbones[b]) for b in plan.backbones_for(key))
            done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False) if TrialRecord.from_trial(t).probe)
            # the streamed probes: one per pretrained backbone
            progress.study_started(key, done, max(pretrained, done + n), part="opening")
            shown[:] = [key]
        objective = Objective(plan, splits[key], key, progress, resources)
        _optimize(
            study, objective, n, None, resources, progress, write, lambda s: False, lambda: False, key, finish=False
        )

    def done_before() -> None:
        if shown:
            progress.study_finished(shown.pop(), part="opening")

    try:
        screen_all(plan, splits, store, resources, progress, run_waiting, studies)
    except KeyboardInterrupt:
        if alone:
            fail_interrupted(plan, store)
        return Outcome(runfolder.write_tables(folder), interrupted=True)
    finally:
        done_before()
    return None


def save_metadata(plan: Plan, folder: Path, resources: TrialResources, keep: bool = False) -> None:
    """config.yaml, run.json (studies by dataset) and environment.json (this machine's devices)."""

    studies = {entry.key: study_name(plan.bench, entry.key) for entry, _ in plan.datasets}
    repeat_studies = {entry.key: repeats_study_name(plan.bench, entry.key) for entry, _ in plan.datasets}
    devices = ", ".join(dict.fromkeys(cost.device_name(d) for d in resources.devices))
    runfolder.save_metadata(folder, plan.bench, plan.base_dir, studies, repeat_studies, devices, keep=keep)


def _run_here(plan, splits, resources, folder: Path, store, progress: Progress, recover: bool, studies=None) -> Outcome:
    """The studies and repeats in this process; whatever happens, the tables are written."""
    write = runfolder.TableWriter(folder)  # after each trial, at most about a tenth of the run's time
    interrupted = False
    try:
        run_studies(
            plan, splits, store, progress, on_trial=write, resources=resources, recover=recover, studies=studies
        )
        if plan.bench.repeats:
            enqueue_repeats(plan, store, select_repeats(plan, store), progress, recover=recover)
            work_repeats(plan, splits, store, progress, on_trial=write, resources=resources)
    except KeyboardInterrupt:
        interrupted = True  # Optuna has marked the running trial failed; the objective said why
        if recover:
            fail_interrupted(plan, store)
    finally:  # also when a user error (a damaged image) stops the run: the tables say what ran
        run = runfolder.write_tables(folder)
    return Outcome(run, interrupted=interrupted)


def run_studies(
    plan: Plan,
    splits: dict[str, DatasetSplits],
    store,
    progress: Progress,
    on_trial=lambda: None,
    resources: TrialResources | None = None,
    recover: bool = False,
    should_stop=lambda: False,
    studies: dict[str, optuna.Study] | None = None,
) -> None:
    """Run (or resume, or join) one study per dataset until each has ``n_trials`` trials.
    ``studies``: the run's studies, opened once (:func:`open_studies`); else each is opened here.

    ``recover``: this process is the only one using the storage, so a trial found
    RUNNING was interrupted (the process was killed): it is marked failed and its
    configuration retried (see :func:`tlbench.search.studies.recover_interrupted`).
    Otherwise other workers may be running trials of the same studies: each process
    stops when the study has its trials (see :func:`tlbench.search.studies.budget`). With
    several devices, as many trials run at once (Optuna's ``n_jobs``), each on a
    device of its own. ``should_stop()`` is asked after each trial.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by progress, once
    progress = run_events.as_events(progress)
    resources = TrialResources(plan, splits) if resources is None else resources
    total = plan.bench.search.n_trials
    for entry, _ in plan.datasets:
        if should_stop():
            return
        if studies and entry.key in studies:
            study = reseeded(plan, studies[entry.key])  # as if opened here: the same trials
        else:
            study = open_study(plan, entry.key, store, alone=recover)
        if recover:
            recover_interrupted(study, store, progress, entry.key, plan.bench.search.retries)
        done = sum(t.state in FINISHED for t in budget(study.get_trials(deepcopy=False)))
        if total is not None and started(study) >= total:
            continue  # finished, or the last trials are running in other workers
        spent_all = nothing_left(study, plan.bench.search)
        if spent_all:
            progress.note(f"[{entry.key}] no new trials: {spent_all}")
            continue
        probes = [t for t in study.get_trials(deepcopy=False) if TrialRecord.from_trial(t).probe]
        probes_done = sum(t.state in FINISHED for t in probes)
        # progress counts every trial the study runs: the screen's probes besides n_trials
        progress.study_started(entry.key, done + probes_done, None if total is None else total + len(probes))
        objective = Objective(plan, splits[entry.key], entry.key, progress, resources)
        left = None if total is None else total - done + probes_waiting(study)  # at most: other workers may take some

        def full(study: optuna.Study) -> bool:
            return (total is not None and started(study) >= total) or nothing_left(study, plan.bench.search) is not None

        _optimize(
            study,
            objective,
            left,
            plan.bench.search.timeout,
            resources,
            progress,
            on_trial,
            full,
            should_stop,
            entry.key,
        )
        spent_all = nothing_left(study, plan.bench.search)
        if spent_all:  # said on the run that spent it, not only on the next one
            progress.note(f"[{entry.key}] the study stopped: {spent_all}")
        if should_stop():
            return


def _optimize(
    study,
    objective,
    n_trials,
    timeout,
    resources,
    progress,
    on_trial,
    full,
    should_stop,
    label: str,
    finish: bool = True,
    part: str = "search",
) -> None:
    """One study's loop, for the search and the repeats alike: trials until ``n_trials``
    or ``full(study)``, each reported, Ctrl-C checked after each. ``label``: the dataset
    key; ``part``: which of its studies (search or repeats)."""

    reported: set[int] = set()

    def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        reported.add(trial.number)
        progress.trial_finished(run_events.finished(trial, label, study.study_name))
        on_trial()
        if should_stop() or full(study) or interrupts.requested():  # never raise inside Optuna's callback
            study.stop()

    try:
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, n_jobs=len(resources.devices),
            catch=(basics.TrialFailed,), callbacks=[finished],
        )  # fmt: skip
        interrupts.check()  # the safe point after a trial: the study was told to stop
    except KeyboardInterrupt:  # Optuna calls no callback for the interrupted trial: it still gets its event
        for trial in run_events.interrupted_here(study, reported):
            progress.trial_finished(run_events.finished(trial, label, study.study_name))
        raise
    finally:
        if finish:  # the screen's probes end their display once, after the last of them
            progress.study_finished(label, part=part)


def work_repeats(
    plan: Plan,
    splits: dict[str, DatasetSplits],
    store,
    progress: Progress,
    on_trial=lambda: None,
    resources: TrialResources | None = None,
    should_stop=lambda: False,
) -> None:
    """Run the enqueued repeats that no process has taken yet (with other workers, if any)."""
    progress = run_events.as_events(progress)
    resources = TrialResources(plan, splits) if resources is None else resources
    waiting = (optuna.trial.TrialState.WAITING,)
    for entry, _ in plan.datasets:
        if should_stop():
            return
        try:
            study = optuna.load_study(study_name=repeats_study_name(plan.bench, entry.key), storage=store)
        except KeyError:
            continue
        left = len(study.get_trials(deepcopy=False, states=waiting))
        if not left:
            continue
        progress.study_started(entry.key, 0, left, part="repeats")
        objective = Objective(plan, splits[entry.key], entry.key, progress, resources, repeats=True)
        empty = lambda study: not study.get_trials(deepcopy=False, states=waiting)  # noqa: E731
        _optimize(
            study, objective, left, None, resources, progress, on_trial, empty, should_stop, entry.key, part="repeats"
        )
        if should_stop():
            return


def work(plan: Plan, progress: Progress, should_stop=lambda: False, run_folder: bool = False) -> int:
    """A worker: run trials of the run's studies on its shared storage until they are done,
    then the enqueued repeats. Returns how many trials it ran. ``run_folder``: also write
    a run folder here (if there is none) for ``tlbench report`` on this machine."""

    apply_interop()  # a local worker's share of inter-op threads, before any parallel work
    splits = preflight(plan)
    resources = TrialResources(plan, splits)
    if run_folder:
        try:
            save_metadata(plan, runfolder.run_dir(plan.bench, plan.base_dir), resources, keep=True)
        except (UserError, OSError) as exc:  # a worker needs only the storage
            print(f"tlbench: warning: no run folder on this machine ({exc})", file=sys.stderr)
    store = connect_shared(plan.bench.search.storage, plan.bench.search.heartbeat, plan.bench.search.retries)
    ran = []
    folder = runfolder.run_dir(plan.bench, plan.base_dir)
    events = run_events.start(plan, progress, folder if folder.is_dir() else None, plan.bench.search.storage)
    events.run_started()
    completed = False
    try:
        run_studies(
            plan, splits, store, events, on_trial=lambda: ran.append(1), resources=resources, should_stop=should_stop
        )
        work_repeats(
            plan, splits, store, events, on_trial=lambda: ran.append(1), resources=resources, should_stop=should_stop
        )
        completed = not should_stop()
    finally:
        _finish(events, interrupted=not completed)
    return len(ran)


def _coordinate(
    plan, folder: Path, store, url: str, lock, progress: Progress, n: int, config: Path | None, verbose: bool, studies
) -> Outcome:
    """``run --workers N``: the studies are set up here, N ``tlbench worker`` processes
    run the trials (then the seed repeats), and the tables come from the storage."""
    if config is None:
        raise ValueError("run_benchmark(workers > 1) needs the config file the workers load")
    alone = plan.bench.search.storage is None
    if alone:
        for key, study in studies.items():
            recover_interrupted(study, store, progress, key, plan.bench.search.retries)
    command = [sys.executable, "-m", "tlbench", "worker", str(config), "--run", plan.bench.run_name]
    command += ["--storage", url, "--parent", str(os.getpid())]
    command += ["--n-trials", str(plan.bench.search.n_trials)] if plan.bench.search.n_trials is not None else []
    command += ["--verbose"] if verbose else []

    gpus = shared_gpus(plan.bench.training.device)
    code = _workers(command, n, lock, gpus)
    if code == 0 and plan.bench.repeats:
        if enqueue_repeats(plan, store, select_repeats(plan, store), progress, recover=alone):
            code = _workers(command, n, lock, gpus)
    if code in INTERRUPTED and alone:
        fail_interrupted(plan, store)  # a trial Optuna had created but not started
    run = runfolder.write_tables(folder)
    return Outcome(run, interrupted=code in INTERRUPTED, worker_exit=0 if code in INTERRUPTED else code)


def _workers(command: list[str], n: int, lock, gpus: list[str] = ()) -> int:
    """Start ``n`` workers and wait for them; 0, 130/143 if interrupted, else the first failing exit code.
    Each gets its share of the CPU threads and, with several ``gpus``, one of them (:mod:`tlbench.base.threads`).

    Each worker is in a session of its own, so Ctrl-C reaches this process only and is
    passed on once; each holds the run folder's lock too (the inherited descriptor),
    so the folder stays locked until the last one exits, even if this process is killed.
    """

    fds = () if lock is None else (lock.fileno(),)
    procs = [
        subprocess.Popen(
            [*command, "--name", f"worker {i + 1}"], pass_fds=fds, start_new_session=True,
            env=worker_environment(n, index=i, gpus=list(gpus)),  # its share of the cores, its GPU (tlbench/base/threads.py)
        )
        for i in range(n)
    ]  # fmt: skip
    try:
        while any(proc.poll() is None for proc in procs):
            interrupts.check()  # a safe point
            time.sleep(0.2)
        codes = [proc.returncode for proc in procs]
    except KeyboardInterrupt:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(interrupts.received())  # the signal this process got: SIGINT or SIGTERM
        for proc in procs:
            proc.wait()
        return interrupts.exit_code()
    failed = [c for c in codes if c != 0]
    stopped = [c for c in failed if c in INTERRUPTED]
    return stopped[0] if stopped else (failed[0] if failed else 0)
