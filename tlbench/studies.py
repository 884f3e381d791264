"""Studies: one Optuna study per dataset (and one for its seed repeats), created once
with the config's recipes, resumed, budgeted and recovered.

What other processes may be doing is what this module is about: several workers
may create, join and run a study at once (:func:`open_study`, :func:`budget`), a
process may be killed mid-trial (:func:`recover_interrupted`), a worker may be lost
(:func:`retry_lost`, Optuna's heartbeat callback). All coordination is Optuna's own
storage: no files, no other channel.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Mapping

import optuna

from tlbench import interrupts, storage
from tlbench.config import Benchmark
from tlbench.planning import Plan, recipe_params
from tlbench.pruning import make_pruner
from tlbench.record import Failure, TrialRecord
from tlbench.sampling import make_sampler
from tlbench.types import UserError

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def study_name(bench: Benchmark, dataset_key: str) -> str:
    return f"{bench.name}/{bench.run_name}/{dataset_key}"


def repeats_study_name(bench: Benchmark, dataset_key: str) -> str:
    return study_name(bench, dataset_key) + "/repeats"


def connect_shared(url: str, heartbeat: int, retries: int) -> optuna.storages.BaseStorage:
    """A storage other processes share: running trials send heartbeats, and a trial silent
    for twice ``heartbeat`` seconds is failed by the next worker and retried (:func:`retry_lost`)."""
    return storage.connect(url, heartbeat, on_lost=functools.partial(retry_lost, retries=retries))


def enqueue_probes(plan: Plan, study: optuna.Study, kept: list[str]) -> int:
    """After the screen: one trial per kept backbone with the config's head-only strategy
    at the middle of its options (none without such a strategy), outside ``n_trials``.
    They train on the features the screen took out, so they cost the head's training;
    a recipe with the same parameters stands in for one. Only before the study's first
    trial. Returns how many were added."""
    from tlbench.screen import probe_params, probe_strategy

    key = probe_strategy(plan)
    if key is None or study.user_attrs.get(PROBES) or _begun(study):
        return 0
    searched = set(plan.strategies[key].searched)
    params = {k: v for k, v in probe_params(plan, key).items() if k in searched}
    before = len(study.get_trials(deepcopy=False))
    score = plan.bench.search.screen.score
    ranked = sorted(kept, key=lambda b: -_score(study, b, score))  # the most promising backbone's probe first
    for backbone in ranked:
        study.enqueue_trial(
            recipe_params(plan, backbone, key, params), user_attrs=TrialRecord(probe=True).attrs(), skip_if_exists=True
        )
    study.set_user_attr(PROBES, True)
    return len(study.get_trials(deepcopy=False)) - before


PROBES = "screen_probes"  # study user attr: the screen's probes were enqueued (once)
PORTFOLIO = "portfolio"  # study user attr: the portfolio's entries were enqueued (once), on this backbone
PORTFOLIO_SOURCES = "portfolio_sources"  # study user attr: what the portfolio was learnt from, in words


def enqueue_portfolio(
    plan: Plan, study: optuna.Study, kept: list[str], dataset_key: str, history: list[dict] = ()
) -> list[int]:
    """After the screen and its probes: the first ``search.portfolio`` entries of the
    study's :func:`tlbench.portfolio.for_study` ranking (shipped grids of other domains,
    ``history`` tables of its modality) that the config can run, on the kept backbone
    with the best screen score (``search.screen.score``); they count towards
    ``n_trials``. What it learnt from is stored with the study (PORTFOLIO_SOURCES).
    Returns the trial numbers added (none without a screened backbone, once done, or
    after the study's first trial)."""
    from tlbench import portfolio

    n, score = plan.bench.search.portfolio, plan.bench.search.screen.score
    scores = {b: _score(study, b, score) for b in kept}
    scores = {b: v for b, v in scores.items() if v != float("-inf")}
    if not n or not scores or study.user_attrs.get(PORTFOLIO) or _begun(study):
        return []
    dataset = next(entry for entry, _ in plan.datasets if entry.key == dataset_key)
    warm = portfolio.for_study(dataset.name, plan.backbones[kept[0]].record.modality, score, history)
    entries = portfolio.entries_for(plan, n, warm.entries)
    if not entries:
        return []
    first = max(scores, key=scores.get)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    for key, params in entries:
        study.enqueue_trial(
            recipe_params(plan, first, key, params), user_attrs=TrialRecord(portfolio=True).attrs(), skip_if_exists=True
        )
    study.set_user_attr(PORTFOLIO_SOURCES, warm.describe())
    study.set_user_attr(PORTFOLIO, first)
    return sorted({t.number for t in study.get_trials(deepcopy=False)} - before)


def _begun(study: optuna.Study) -> bool:
    """Some trial has started: a run made before probes and portfolios existed, or one
    whose workers began without the screen. Nothing goes in front of it any more."""
    return any(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))


def _score(study: optuna.Study, backbone: str, score: str) -> float:
    from tlbench.screen import SCREEN

    value = study.user_attrs.get(f"{SCREEN}{backbone}", {}).get(score)
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def directions(search) -> list[str]:
    """Validation accuracy up; in a Pareto search (``search.objective: pareto``) also ``search.cost`` down."""
    return ["maximize", "minimize"] if search.objective == "pareto" else ["maximize"]


def derived_seed(seed: int, offset: int) -> int:
    """``seed + offset`` within numpy's 0..2**32-1 (the config's seed may be its maximum)."""
    return (seed + offset) % 2**32


READY_WAIT = 60.0  # seconds a worker waits for another to finish creating a study


def open_study(plan: Plan, dataset_key: str, storage: optuna.storages.BaseStorage, alone: bool = True) -> optuna.Study:
    """Create the dataset's study, or load it if this run already has one made from the same config.

    Several workers may start at once: the one that creates the study enqueues the
    config's recipes and then stores the config's fingerprint; the others wait for
    the fingerprint (up to ``READY_WAIT`` seconds, then take over from a creator that
    died), so recipes are enqueued once. ``alone``: no other process uses the storage.
    """
    bench, search = plan.bench, plan.bench.search
    name = study_name(bench, dataset_key)
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    done = len(existing.trials) if existing else 0
    sampler = make_sampler(search, derived_seed(bench.seed, done))
    settings = {
        "storage": storage,
        "study_name": name,
        "directions": directions(search),
        "sampler": sampler,
        "pruner": make_pruner(search),
    }
    try:
        study, created = optuna.create_study(**settings), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.create_study(**settings, load_if_exists=True), False
    deadline = time.monotonic() + (0 if alone or created else READY_WAIT)
    while "fingerprint" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)
        study = optuna.create_study(**settings, load_if_exists=True)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:  # we created it, or its creator died before finishing
        for recipe in search.enqueue:
            if recipe.backbone not in plan.backbones_for(dataset_key):
                continue  # a recipe runs on the datasets of its backbone's modality
            params = recipe_params(plan, recipe.backbone, recipe.strategy, recipe.params)
            study.enqueue_trial(params, user_attrs=TrialRecord(recipe=True).attrs(), skip_if_exists=True)
        study.set_user_attr("fingerprint", bench.fingerprint())
    elif stored != bench.fingerprint():
        raise UserError(
            f"study {name} was made from a different config (fingerprint {stored}, now {bench.fingerprint()}); "
            "set another 'run:' name (or remove it to get one from the config) to start a new study"
        )
    return study


def spent(study: optuna.Study) -> dict[str, float]:
    """Training GFLOPs and seconds the study's trials have used (pruned ones up to where
    they stopped; a trial still running counts what it has reported so far)."""
    gflops = seconds = 0.0
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(t)
        gflops += record.train_gflops or 0.0
        seconds += record.train_seconds or 0.0
    return {"gflops": gflops, "seconds": seconds}


def over_budget(study: optuna.Study, search) -> str | None:
    """Why no further trial may start under ``search.budget``, or None."""
    limits = search.budget.model_dump(exclude_none=True)
    if not limits:
        return None
    used = spent(study)
    for unit, limit in limits.items():
        if used[unit] >= limit:
            return f"search.budget.{unit}: {used[unit]:.1f} of {limit:g} spent"
    return None


def started(study: optuna.Study) -> int:
    """Trials of the budget that are running or finished (enqueued ones still wait for a worker)."""
    return sum(t.state != optuna.trial.TrialState.WAITING for t in budget(study.get_trials(deepcopy=False)))


def budget(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards ``n_trials``: all but surplus trials (see
    :meth:`tlbench.trial.Objective.surplus`), the screen's linear probes (one per
    backbone, before the search) and interrupted trials that were retried (their
    retry counts)."""
    records = [TrialRecord.from_trial(t) for t in trials]
    retried = {r.retry_of for r in records}
    return [
        t for t, r in zip(trials, records) if r.failure != Failure.SURPLUS and not r.probe and t.number not in retried
    ]


def probes_waiting(study: optuna.Study) -> int:
    """The screen's linear probes not yet started (they run first, outside ``n_trials``)."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return sum(bool(TrialRecord.from_trial(t).probe) for t in waiting)


RETRIED = ("recipe", "seed", "repeat_of", "repeat")  # what a retry keeps of the interrupted trial's record
LOST = "lost:"  # study user attr prefix: "lost:<number>" -> why a trial without heartbeat was failed
GAVE_UP = "gave_up:"  # study user attr prefix: "gave_up:<number>" -> an interrupted trial out of retries


def failure(
    trial: optuna.trial.FrozenTrial, lost: Mapping[int, str], record: TrialRecord | None = None
) -> tuple[str | None, str]:
    """(kind, reason) of a trial's failure: its record's, or the study's note of a lost worker
    (a trial Optuna failed by heartbeat is read-only, so the note is on the study)."""
    record = record or TrialRecord.from_trial(trial)
    if record.failure is None and trial.number in lost:
        return Failure.INTERRUPTED, lost[trial.number]
    return record.failure, record.fail_reason or ""


def lost_trials(study: optuna.Study) -> dict[int, str]:
    """Trial number -> reason, for trials failed because their worker stopped sending heartbeats."""
    return {int(k[len(LOST) :]): v for k, v in study.user_attrs.items() if k.startswith(LOST)}


def gave_up(study: optuna.Study) -> dict[int, str]:
    """Trial number -> note, for interrupted trials whose configuration ran out of retries."""
    return {int(k[len(GAVE_UP) :]): v for k, v in study.user_attrs.items() if k.startswith(GAVE_UP)}


def attempt(record: TrialRecord) -> int:
    """0 for a first run, k for its k-th retry."""
    return record.attempt if record.attempt is not None else int(record.retry_of is not None)


def recover_interrupted(study: optuna.Study, storage, progress, where: str, retries: int | None = 1) -> list[int]:
    """Mark trials left RUNNING by a killed process as failed, and enqueue the parameters
    each interrupted trial (killed, stopped by Ctrl-C or SIGTERM, or lost by a worker)
    had drawn again, up to ``retries`` times per configuration, never twice for one
    trial (None: only mark them; the caller retries). Call only when no other process
    uses the study. Returns the numbers marked failed."""
    stale = fail_running(study, storage, "interrupted: the process running it was killed")
    trials, lost = study.get_trials(deepcopy=False), lost_trials(study)
    retried = {TrialRecord.from_trial(t).retry_of for t in trials}
    stopped = [
        t for t in trials
        if t.state == optuna.trial.TrialState.FAIL and failure(t, lost)[0] == Failure.INTERRUPTED and t.number not in retried
    ]  # fmt: skip
    for t in stopped:
        again = retries is not None and _retry_or_give_up(study, t, retries)
        if t.number in stale or again:
            progress.trial_recovered(where, t.number, again)
    return stale


def _retry_or_give_up(study: optuna.Study, t: optuna.trial.FrozenTrial, retries: int) -> bool:
    """Enqueue ``t``'s configuration again if it has retries left; else record that it ran out."""
    record = TrialRecord.from_trial(t)
    if attempt(record) < retries:
        kept = {name: getattr(record, name) for name in RETRIED}
        retry = TrialRecord(**kept, retry_of=t.number, attempt=attempt(record) + 1)
        study.enqueue_trial(t.params, user_attrs=retry.attrs())
        return True
    if f"{GAVE_UP}{t.number}" not in study.user_attrs:
        note = f"out of retries: interrupted {attempt(record) + 1} times (search.retries = {retries})"
        study.set_user_attr(f"{GAVE_UP}{t.number}", note)
    return False


def retry_lost(study: optuna.Study, trial: optuna.trial.FrozenTrial, retries: int = 1) -> None:
    """Optuna's heartbeat callback: ``trial``'s worker stopped sending heartbeats (killed,
    or its machine lost) and Optuna has just marked it failed, in exactly one worker.
    Record why (on the study: a failed trial is read-only) and retry it (``retries``)."""
    worker = TrialRecord.from_trial(trial).worker or "a worker"
    reason = f"interrupted: no heartbeat from {worker} (killed or lost)"
    study.set_user_attr(f"{LOST}{trial.number}", reason)
    trials = study.get_trials(deepcopy=False)
    retried = any(TrialRecord.from_trial(t).retry_of == trial.number for t in trials)
    again = not retried and _retry_or_give_up(study, trial, retries)
    print(
        f"tlbench: {study.study_name}: trial {trial.number} {reason}: marked failed" + (", retrying it" * again),
        file=sys.stderr,
    )


def fail_running(study: optuna.Study, storage, reason: str) -> list[int]:
    """Mark the study's RUNNING trials failed with ``reason`` (as interrupted); only for a
    study no other process runs."""
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        TrialRecord(failure=Failure.INTERRUPTED, fail_reason=reason).write(_StorageTrial(storage, trial_id))
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        numbers.append(t.number)
    return numbers


class _StorageTrial:
    """A trial by id, for :meth:`TrialRecord.write` (which needs only ``set_user_attr``)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id

    def set_user_attr(self, key: str, value) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)


def fail_interrupted(plan: Plan, storage) -> None:
    """After Ctrl-C or SIGTERM: a trial stopped before its objective ran (Optuna had created it) is
    still RUNNING; record it as interrupted like the others."""
    for entry, _ in plan.datasets:
        for name in (study_name(plan.bench, entry.key), repeats_study_name(plan.bench, entry.key)):
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            fail_running(study, storage, f"interrupted by {interrupts.what()}")


TEST_SPLIT = "test_split"  # study attribute: {"classes": [...], "labels": [...]} of the dataset's test split


def note_test_split(study: optuna.Study, classes, labels) -> None:
    """Keep the test split's class names and labels with the study (once), so that the
    tables can give per-class and balanced accuracy from each trial's per-example results
    without loading the dataset again."""
    if TEST_SPLIT not in study.user_attrs:
        study.set_user_attr(TEST_SPLIT, {"classes": list(classes), "labels": [int(y) for y in labels]})
