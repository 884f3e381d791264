"""Studies without training: recipes enqueued once, fingerprints, the budget, surplus
trials, recovery and retries, on in-memory Optuna storages and create_trial fixtures."""

from __future__ import annotations

import optuna
import pytest
from conftest import tiny_benchmark

from tlbench.config import parse_config
from tlbench.host import plugins
from tlbench.results import report, runfolder, tables
from tlbench.search import studies
from tlbench.search.planning import make_plan
from tlbench.store.record import Failure, TrialRecord
from tlbench.store.studyrecord import StudyRecord
from tlbench.types import UserError

COMPLETE, FAIL, WAITING = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.WAITING,
)


def _plan(tmp_path, **overrides):
    bench = parse_config(tiny_benchmark(**overrides))
    return make_plan(bench, plugins.collect(plugins.make_plugin_manager(entry_points=False)), tmp_path)


RECIPES = {"n_trials": 4, "startup_trials": 1, "enqueue": [
    {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": 0.01}},
    {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": 0.05}},
]}  # fmt: skip


def test_a_study_is_created_once_with_its_recipes_and_refuses_another_config(tmp_path):
    store = optuna.storages.InMemoryStorage()
    plan = _plan(tmp_path, run="r", search=RECIPES)
    study = studies.open_study(plan, "synthetic", store)
    studies.open_study(plan, "synthetic", store)  # a second worker, or a resume: nothing enqueued twice
    waiting = study.get_trials(states=(WAITING,))
    assert [t.system_attrs["fixed_params"]["linear_probe.lr_head"] for t in waiting] == [0.01, 0.05]
    assert all(TrialRecord.from_trial(t).recipe for t in waiting)
    other = _plan(tmp_path, run="r", seed=1, search=RECIPES)
    with pytest.raises(UserError, match="study tiny/r/synthetic was made from a different config"):
        studies.open_study(other, "synthetic", store)


def test_a_study_made_before_select_epochs_is_named_with_the_setting_that_goes_on_with_it(tmp_path):
    """0.8 valued a trial on its last epoch: its studies have the fingerprint of select_epochs 1
    (left out of the hash at 1), so 0.9's default refuses them with the fix, and 1 goes on."""
    store = optuna.storages.InMemoryStorage()
    studies.open_study(_plan(tmp_path, run="r", search=RECIPES | {"select_epochs": 1}), "synthetic", store)
    with pytest.raises(UserError, match="made by tlbench 0.8 or earlier .* add search.select_epochs: 1 to the config"):
        studies.open_study(_plan(tmp_path, run="r", search=RECIPES), "synthetic", store)
    with pytest.raises(UserError, match="was made from a different config"):  # another change too: the plain message
        studies.open_study(_plan(tmp_path, run="r", seed=1, search=RECIPES), "synthetic", store)
    studies.open_study(_plan(tmp_path, run="r", search=RECIPES | {"select_epochs": 1}), "synthetic", store)


def _trial(state=COMPLETE, **attrs):
    return optuna.trial.create_trial(
        state=state, value=0.5 if state == COMPLETE else None, user_attrs=TrialRecord(**attrs).attrs()
    )


def test_the_budget_leaves_out_surplus_trials_and_retried_interrupted_ones():
    trials = [
        _trial(),
        _trial(FAIL, failure=Failure.INTERRUPTED, fail_reason="interrupted by Ctrl-C"),
        _trial(retry_of=1, attempt=1),
        _trial(FAIL, failure=Failure.SURPLUS, fail_reason="surplus: not run"),
        _trial(FAIL, failure=Failure.DIVERGED, fail_reason="loss became nan"),
    ]
    study = optuna.create_study()
    for t in trials:
        study.add_trial(t)
    assert [t.number for t in studies.budget(study.trials)] == [0, 2, 4]
    assert studies.started(study) == 3


def test_a_heartbeat_lost_trial_is_interrupted_by_the_studys_note():
    study = optuna.create_study()
    study.add_trial(_trial(FAIL, worker="h:1"))
    studies.retry_lost(study, study.trials[0], retries=1)
    assert StudyRecord.from_study(study).failure(study.trials[0]) == (
        Failure.INTERRUPTED,
        "interrupted: no heartbeat from h:1 (killed or lost)",
    )
    (retry,) = study.get_trials(states=(WAITING,))
    assert TrialRecord.from_trial(retry).retry_of == 0


def _interrupt(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """Run the next trial (an enqueued retry if there is one) and stop it as a Ctrl-C would."""
    trial = study.ask()
    if "x" not in trial.params:
        trial.suggest_float("x", 0, 1)
    TrialRecord(failure=Failure.INTERRUPTED, fail_reason="interrupted by Ctrl-C").write(trial)
    study.tell(trial, state=FAIL)
    return study.trials[trial.number]


class Heard:
    """The run's events as recover_interrupted sends them (tlbench.host.events.Events' methods)."""

    def __init__(self):
        self.recovered, self.finished = [], []

    def trial_recovered(self, dataset, number, retried, part="search"):
        self.recovered.append((dataset, part, number, retried))

    def trial_finished(self, trial):
        self.finished.append((trial.dataset, trial.number))


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_an_interrupted_configuration_runs_again_retries_times_then_is_marked_out_of_retries(retries):
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    first = _interrupt(study)
    for k in range(1, retries + 1):
        studies.recover_interrupted(study, study._storage, Heard(), "d", retries)
        again = _interrupt(study)  # the retry, interrupted too
        record = TrialRecord.from_trial(again)
        assert again.params == first.params and (record.attempt, record.retry_of) == (k, again.number - 1)
    assert studies.recover_interrupted(study, study._storage, Heard(), "d", retries) == []
    assert not study.get_trials(states=(WAITING,))  # nothing more enqueued
    assert StudyRecord.from_study(study).gave_up == {
        retries: f"out of retries: interrupted {retries + 1} times (search.retries = {retries})"
    }
    studies.recover_interrupted(study, study._storage, Heard(), "d", retries)  # idempotent
    assert len(study.trials) == retries + 1


def test_a_trial_left_running_is_marked_interrupted_and_retried():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    running = study.ask()
    running.suggest_float("x", 0, 1)
    assert studies.recover_interrupted(study, study._storage, Heard(), "d", retries=1) == [0]
    record = TrialRecord.from_trial(study.trials[0])
    assert study.trials[0].state == FAIL and record.failure == Failure.INTERRUPTED
    assert record.fail_reason == "interrupted: the process running it was killed"
    assert [t.system_attrs["fixed_params"] for t in study.get_trials(states=(WAITING,))] == [study.trials[0].params]


@pytest.mark.parametrize("part", ["search", "repeats"])
def test_a_recovered_trial_is_told_with_its_dataset_and_the_part_of_its_study(part):
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.ask().suggest_float("x", 0, 1)  # left running by a killed process
    heard = Heard()
    studies.recover_interrupted(
        study, study._storage, heard, "digits", retries=None if part == "repeats" else 1, part=part
    )
    assert heard.recovered == [("digits", part, 0, part == "search")]  # the repeats' caller retries itself
    assert heard.finished == [("digits", 0)]


def test_the_report_says_which_configurations_ran_out_of_retries(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="b/r/d", storage=url)
    _interrupt(study)
    studies.recover_interrupted(study, study._storage, Heard(), "d", retries=0)
    frame = runfolder.trials_frame(url, {"d": "b/r/d"})
    assert frame["gave_up"].tolist() == ["out of retries: interrupted 1 times (search.retries = 0)"]
    assert frame["failure"].tolist() == [Failure.INTERRUPTED]
    run = runfolder.Run(tmp_path, {}, {}, {}, frame, frame.iloc[0:0], tables.summary_frame(frame))
    assert any(line.startswith("⚠ Out of retries") and "d trial 0" in line for line in report.notes(run))


def test_a_budget_counts_a_retry_chain_once():
    """Killed, retried, killed again, retried: one configuration of the budget."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    _interrupt(study)
    for _ in range(2):
        studies.recover_interrupted(study, study._storage, Heard(), "d", retries=2)
        _interrupt(study)
    assert [t.number for t in studies.budget(study.trials)] == [2]
