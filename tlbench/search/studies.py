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

import optuna

from tlbench.base import interrupts
from tlbench.host import events
from tlbench.search import portfolio
from tlbench.search.planning import Plan, middle_options, recipe_params
from tlbench.search.pruning import make_pruner
from tlbench.search.sampling import dropped_backbones, make_sampler, space_exhausted
from tlbench.search.screen import probe_params, probe_strategy
from tlbench.store import storage
from tlbench.store.record import Failure, TrialRecord
from tlbench.store.studyrecord import StudyRecord, repeats_study_name, study_name  # noqa: F401  (their home was here)
from tlbench.types import UserError

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def connect_shared(url: str, heartbeat: int, retries: int) -> optuna.storages.BaseStorage:
    """A storage other processes share: running trials send heartbeats, and a trial silent
    for twice ``heartbeat`` seconds is failed by the next worker and retried (:func:`retry_lost`)."""
    return storage.connect(url, heartbeat, on_lost=functools.partial(retry_lost, retries=retries))


def enqueue_probes(plan: Plan, study: optuna.Study, kept: list[str]) -> int:
    """After the screen: one trial per kept backbone with the config's head-only strategy
    at the middle of its options (none without such a strategy), outside ``n_trials``,
    best screen score first; a backbone whose probe already ran (streamed, see
    :func:`enqueue_probe`) is not probed again. They train on the features the screen
    took out, so they cost the head's training; a recipe with the same parameters
    stands in for one. Only before the study's first trial other than a probe. Returns
    how many were added."""
    record = StudyRecord.from_study(study)
    if record.probes or begun(study):
        return 0
    score = plan.bench.search.screen.score
    ranked = sorted(kept, key=lambda b: -record.score(b, score))  # the most promising backbone's probe first
    added = sum(enqueue_probe(plan, study, backbone) is not None for backbone in ranked)
    StudyRecord.mark_probes(study)
    return added


def enqueue_probe(plan: Plan, study: optuna.Study, backbone: str) -> int | None:
    """Enqueue ``backbone``'s screen probe (see :func:`enqueue_probes`); the trial number
    added, or None (no head-only strategy in the config, a trial with these parameters
    exists: a probe that ran; or one of the config's recipes has them: it stands in for
    the probe, in the recipes' place and within ``n_trials``)."""

    key = probe_strategy(plan)
    if key is None:
        return None
    searched = set(plan.strategies[key].searched)
    params = recipe_params(plan, backbone, key, {k: v for k, v in probe_params(plan, key).items() if k in searched})
    planned = plan.backbones[backbone]  # its searched options at their middle, as the screen built it: its features
    params |= {f"{backbone}.{k}": v for k, v in middle_options(planned).items() if k in planned.searched}
    recipes = [recipe_params(plan, r.backbone, r.strategy, r.params) for r in plan.bench.search.enqueue]
    if params in recipes:
        return None
    before = {t.number for t in study.get_trials(deepcopy=False)}
    study.enqueue_trial(params, user_attrs=TrialRecord(probe=True).attrs(), skip_if_exists=True)
    added = {t.number for t in study.get_trials(deepcopy=False)} - before
    return min(added) if added else None


def enqueue_recipes(plan: Plan, study: optuna.Study, dataset_key: str) -> None:
    """The config's ``search.enqueue`` recipes for this study's dataset (a recipe runs on
    the datasets of its backbone's modality), once: by the study's creator when no run
    screens first (workers), else after the screen's probes (:func:`tlbench.benchmark.screen_all`)."""
    if StudyRecord.from_study(study).recipes:
        return
    for recipe in plan.bench.search.enqueue:
        if recipe.backbone not in plan.backbones_for(dataset_key):
            continue
        params = recipe_params(plan, recipe.backbone, recipe.strategy, recipe.params)
        study.enqueue_trial(params, user_attrs=TrialRecord(recipe=True).attrs(), skip_if_exists=True)
    StudyRecord.mark_recipes(study)


def enqueue_portfolio(
    plan: Plan, study: optuna.Study, kept: list[str], dataset_key: str, history: list[dict] = ()
) -> list[int]:
    """After the screen and its probes: the first ``search.portfolio`` entries of the
    study's :func:`tlbench.search.portfolio.for_study` ranking (shipped grids of other domains,
    ``history`` tables of its modality) that the config can run, on the kept backbone
    with the best screen score (``search.screen.score``); they count towards
    ``n_trials``. What it learnt from is stored with the study (``StudyRecord.portfolio_sources``).
    Returns the trial numbers added (none without a screened backbone, once done, or
    after the study's first trial)."""

    n, score = plan.bench.search.portfolio, plan.bench.search.screen.score
    record = StudyRecord.from_study(study)
    scores = {b: record.score(b, score) for b in kept}
    scores = {b: v for b, v in scores.items() if v != float("-inf")}
    if not n or not scores or record.portfolio or begun(study):
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
    StudyRecord.set_portfolio(study, first, warm.describe())
    return sorted({t.number for t in study.get_trials(deepcopy=False)} - before)


def begun(study: optuna.Study) -> bool:
    """Some trial other than the screen's probes has started: a run made before probes and
    portfolios existed, or one whose workers began without the screen. Nothing goes in
    front of it any more."""
    return any(
        t.state != optuna.trial.TrialState.WAITING and not TrialRecord.from_trial(t).probe
        for t in study.get_trials(deepcopy=False)
    )


def directions(search) -> list[str]:
    """Validation accuracy up; in a Pareto search (``search.objective: pareto``) also ``search.cost`` down."""
    return ["maximize", "minimize"] if search.objective == "pareto" else ["maximize"]


def derived_seed(seed: int, offset: int) -> int:
    """``seed + offset`` within numpy's 0..2**32-1 (the config's seed may be its maximum)."""
    return (seed + offset) % 2**32


READY_WAIT = 60.0  # seconds a worker waits for another to finish creating a study


def open_study(
    plan: Plan, dataset_key: str, storage: optuna.storages.BaseStorage, alone: bool = True, recipes: bool = True
) -> optuna.Study:
    """Create the dataset's study, or load it if this run already has one made from the same config.

    Several workers may start at once: the one that creates the study enqueues the
    config's recipes and then stores the config's fingerprint; the others wait for
    the fingerprint (up to ``READY_WAIT`` seconds, then take over from a creator that
    died), so recipes are enqueued once. ``alone``: no other process uses the storage.
    ``recipes``: False for ``tlbench run``, whose screen enqueues them after its probes.
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
    while StudyRecord.from_study(study).fingerprint is None and time.monotonic() < deadline:
        interrupts.check()  # a safe point
        time.sleep(0.2)
        study = optuna.create_study(**settings, load_if_exists=True)
    stored = StudyRecord.from_study(study).fingerprint
    if stored is None:  # we created it, or its creator died before finishing
        if recipes:
            enqueue_recipes(plan, study, dataset_key)
        StudyRecord.set_fingerprint(study, bench.fingerprint())
    elif stored != bench.fingerprint():
        bench.refuse_older_values(stored, f"study {name}", "study")
        raise UserError(
            f"study {name} was made from a different config (fingerprint {stored}, now {bench.fingerprint()}); "
            "set another 'run:' name (or remove it to get one from the config) to start a new study"
        )
    return study


def reseeded(plan: Plan, study: optuna.Study) -> optuna.Study:
    """``study`` with the sampler and pruner :func:`open_study` would give it now (the
    sampler's seed derived from the number of trials the study has at this point). A run
    opens each study once and calls this where its search starts, so the search draws
    the trials a study opened anew there would draw."""
    search = plan.bench.search
    study.sampler = make_sampler(search, derived_seed(plan.bench.seed, len(study.get_trials(deepcopy=False))))
    study.pruner = make_pruner(search)
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


def nothing_left(study: optuna.Study, search) -> str | None:
    """Why no further trial may start: ``search.budget`` is spent (:func:`over_budget`), or
    every configuration of the space the search keeps (the screen's dropped backbones
    left out) has run, so that a further trial could only train one of them again
    (:func:`tlbench.search.sampling.space_exhausted`: lists of choices and stepped ranges
    only). None: go on."""
    reason = over_budget(study, search)
    if reason is not None:
        return reason
    count = space_exhausted(study.get_trials(deepcopy=False), dropped_backbones(study))
    if count is None:
        return None
    return (
        f"all {count} configurations the search keeps have run, so a further trial would only train one again "
        "(search.repeats retrains the best with other seeds)"
    )


def started(study: optuna.Study) -> int:
    """Trials of the budget that are running or finished (enqueued ones still wait for a worker)."""
    return sum(t.state != optuna.trial.TrialState.WAITING for t in budget(study.get_trials(deepcopy=False)))


def budget(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards ``n_trials``: all but surplus trials (see
    :meth:`tlbench.search.trial.Objective.surplus`), the screen's linear probes (one per
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


RETRIED = (
    "recipe",
    "probe",
    "portfolio",
    "seed",
    "repeat_of",
    "repeat",
)  # what a retry keeps of the interrupted trial's record


def attempt(record: TrialRecord) -> int:
    """0 for a first run, k for its k-th retry."""
    return record.attempt if record.attempt is not None else int(record.retry_of is not None)


def recover_interrupted(
    study: optuna.Study, storage, progress, dataset: str, retries: int | None = 1, part: str = "search"
) -> list[int]:
    """Mark trials left RUNNING by a killed process as failed, and enqueue the parameters
    each interrupted trial (killed, stopped by Ctrl-C or SIGTERM, or lost by a worker)
    had drawn again, up to ``retries`` times per configuration, never twice for one
    trial (None: only mark them; the caller retries). ``dataset``: the dataset key;
    ``part``: which of its studies (search or repeats). Call only when no other process
    uses the study. Returns the numbers marked failed."""

    stale = fail_running(study, storage, "interrupted: the process running it was killed")
    trials, studied = study.get_trials(deepcopy=False), StudyRecord.from_study(study)
    for t in trials:  # a killed process sent no trial_finished for them: this run does, once
        if t.number in stale and hasattr(progress, "trial_finished"):
            progress.trial_finished(events.finished(t, dataset, study.study_name))
    retried = {TrialRecord.from_trial(t).retry_of for t in trials}
    stopped = [
        t for t in trials
        if t.state == optuna.trial.TrialState.FAIL and studied.failure(t)[0] == Failure.INTERRUPTED and t.number not in retried
    ]  # fmt: skip
    for t in stopped:
        again = retries is not None and _retry_or_give_up(study, t, retries)
        if t.number in stale or again:
            progress.trial_recovered(dataset, t.number, again, part=part)
    return stale


def _retry_or_give_up(study: optuna.Study, t: optuna.trial.FrozenTrial, retries: int) -> bool:
    """Enqueue ``t``'s configuration again if it has retries left; else record that it ran out."""
    record = TrialRecord.from_trial(t)
    if attempt(record) < retries:
        kept = {name: getattr(record, name) for name in RETRIED}
        retry = TrialRecord(**kept, retry_of=t.number, attempt=attempt(record) + 1)
        study.enqueue_trial(t.params, user_attrs=retry.attrs())
        return True
    StudyRecord.note_gave_up(study, t.number, out_of_retries(attempt(record) + 1, retries))
    return False


def retry_lost(study: optuna.Study, trial: optuna.trial.FrozenTrial, retries: int = 1) -> None:
    """Optuna's heartbeat callback: ``trial``'s worker stopped sending heartbeats (killed,
    or its machine lost) and Optuna has just marked it failed, in exactly one worker.
    Record why (on the study: a failed trial is read-only) and retry it (``retries``)."""
    worker = TrialRecord.from_trial(trial).worker or "a worker"
    reason = f"interrupted: no heartbeat from {worker} (killed or lost)"
    StudyRecord.note_lost(study, trial.number, reason)
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
    """A trial by id, for :meth:`TrialRecord.write` (which needs ``user_attrs`` and ``set_user_attr``)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id

    @property
    def user_attrs(self) -> dict:
        return self.storage.get_trial(self.trial_id).user_attrs

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


def out_of_retries(times: int, retries: int) -> str:
    """The note on an interrupted configuration that ran out of retries."""
    return f"out of retries: interrupted {times} times (search.retries = {retries})"
