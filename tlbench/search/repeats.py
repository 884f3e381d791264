"""The seed repeats of a run: which trials they retrain (the best of each dataset x
backbone x strategy) and enqueuing the missing ones in each study's repeats study
(``<study>/repeats``). The coordinating process chooses and enqueues; every process
that works on the run runs them (:func:`tlbench.benchmark.work_repeats`)."""

from __future__ import annotations

import collections

import optuna

from tlbench.host.progress import Progress
from tlbench.results import runfolder, tables
from tlbench.search.planning import Plan
from tlbench.search.studies import (
    derived_seed,
    directions,
    out_of_retries,
    recover_interrupted,
    repeats_study_name,
    study_name,
)
from tlbench.store.record import Failure, TrialRecord
from tlbench.store.studyrecord import StudyRecord

REPEAT_SEED = 1_000_000  # repeat r trains with seed bench.seed + REPEAT_SEED + r, apart from search trials


def select_repeats(plan: Plan, store) -> dict[str, list[int]]:
    """The trials whose configurations the repeats retrain, by dataset: the best by
    validation accuracy of each dataset x backbone x strategy, read from the studies."""
    studies = {entry.key: study_name(plan.bench, entry.key) for entry, _ in plan.datasets}
    limits = plan.bench.search.constraints.model_dump()
    best = tables.best_per_group(runfolder.trials_frame(store, studies, limits))
    best = best.sort_values(["dataset", "test_accuracy"], ascending=[True, False])  # as the summary lists them
    return {key: [int(n) for n in rows["trial"]] for key, rows in best.groupby("dataset")}


def enqueue_repeats(
    plan: Plan, store, selected: dict[str, list[int]], progress: Progress, recover: bool = False
) -> int:
    """Enqueue the missing seed repeats of the selected trials; returns how many.

    The repeats live in a study of their own (``<study>/repeats``), one trial per
    (selected trial, seed); running again adds only the missing ones, and an
    interrupted one again while it has retries left. Only the coordinating process
    calls this; workers run what it enqueued.
    """
    added = 0
    for key, numbers in selected.items():
        search_study = optuna.load_study(study_name=study_name(plan.bench, key), storage=store)
        study = optuna.create_study(
            storage=store,
            study_name=repeats_study_name(plan.bench, key),
            directions=directions(plan.bench.search),
            load_if_exists=True,
        )
        if recover:  # the interrupted repeat is missing, so it is enqueued again below
            recover_interrupted(study, store, progress, key, retries=None, part="repeats")
        missing = _missing_repeats(plan, study, numbers)
        for number, r in missing:
            repeat = TrialRecord(
                recipe=True, repeat_of=number, repeat=r, seed=derived_seed(plan.bench.seed, REPEAT_SEED + r)
            )
            study.enqueue_trial(search_study.trials[number].params, user_attrs=repeat.attrs())
        added += len(missing)
    return added


def _missing_repeats(plan: Plan, study: optuna.Study, numbers: list[int]) -> list[tuple[int, int]]:
    """(trial, repeat) pairs still to run; pairs interrupted more than ``retries`` times are
    recorded as out of retries instead."""
    studied = StudyRecord.from_study(study)
    done, stopped, last = set(), collections.Counter(), {}
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(t)
        kind, _ = studied.failure(t, record)
        if kind == Failure.SURPLUS:
            continue
        which = (record.repeat_of, record.repeat)
        if kind == Failure.INTERRUPTED:
            stopped[which] += 1
            last[which] = t.number
        else:
            done.add(which)
    retries = plan.bench.search.retries
    wanted = [(n, r) for n in numbers for r in range(plan.bench.repeats) if (n, r) not in done]
    missing = [which for which in wanted if stopped[which] <= retries]
    for which in set(wanted) - set(missing):
        StudyRecord.note_gave_up(study, last[which], out_of_retries(stopped[which], retries))
    return missing
