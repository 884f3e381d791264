"""The trial record: written and read by one class, old runs read, newer ones refused."""

from __future__ import annotations

import optuna
import pytest

from tlbench.store.record import RECORD_VERSION, CacheUse, Failure, TrialRecord
from tlbench.types import UserError


def _frozen(**attrs) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5, user_attrs=attrs)


def test_a_record_round_trips_through_an_optuna_trial():
    study = optuna.create_study()
    trial = study.ask()
    written = TrialRecord(
        seed=3,
        params={"lr_head": 0.01},
        phases=[{"name": "head", "epochs": 2, "frozen_groups": 4, "lr_backbone": 0.0, "lr_head": 0.01}],
        n_groups=4,
        test_accuracy=0.75,
        test_correct="1101",
        cache=[CacheUse("head", "extracted", at="global_pool")],
    )
    TrialRecord().write(trial, "version")  # once, when a trial starts
    written.write(trial)
    study.tell(trial, 0.5)
    read = TrialRecord.from_trial(study.trials[0])
    assert read == written
    assert (read.frozen_groups, read.epochs, read.cache_kind, read.cache_text) == (
        4,
        2,
        "layers",
        "head: extracted at global_pool",
    )
    assert (
        study.trials[0].user_attrs["record_version"] == RECORD_VERSION
    )  # plain Optuna attributes: the dashboard reads them


def test_write_sets_only_what_the_record_holds():
    study = optuna.create_study()
    trial = study.ask()
    TrialRecord(host="h").write(trial, "host", "version")
    TrialRecord(elapsed_seconds=1.5).write(trial, "elapsed_seconds")
    TrialRecord(test_accuracy=0.5).write(trial)  # every field set but the version: one transaction each
    assert set(study.trials[0].user_attrs) == {"host", "elapsed_seconds", "test_accuracy", "record_version"}


@pytest.mark.parametrize(
    "text, kind, uses",
    [
        ("head: extracted at global_pool", "layers", [CacheUse("head", "extracted", at="global_pool")]),
        (
            "head: memory at input; finetune: memory at input",
            "inputs",
            [CacheUse("head", "memory", at="input"), CacheUse("finetune", "memory", at="input")],
        ),
        ("finetune: off (augmentation)", "off: augmentation", [CacheUse("finetune", "off", reason="augmentation")]),
    ],
)
def test_runs_written_before_the_record_had_a_version_are_read(text, kind, uses):
    """Record 1 stored the cache as text and the failure kind as a prefix of fail_reason."""
    record = TrialRecord.from_trial(_frozen(feature_cache=text))
    assert record.version == 1 and record.cache == uses and record.cache_kind == kind


@pytest.mark.parametrize(
    "attrs, kind",
    [
        ({"fail_reason": "interrupted by Ctrl-C"}, Failure.INTERRUPTED),
        ({"fail_reason": "interrupted: the process running it was killed"}, Failure.INTERRUPTED),
        ({"fail_reason": "surplus: not run, the study already had its 2 trials", "surplus": True}, Failure.SURPLUS),
        ({"fail_reason": "loss became nan in phase head (...)"}, Failure.DIVERGED),
        ({"fail_reason": "out of memory in phase head at batch size 64"}, Failure.ERROR),
    ],
)
def test_legacy_failures_get_their_kind(attrs, kind):
    assert TrialRecord.from_trial(_frozen(**attrs)).failure == kind


def test_a_record_from_a_newer_tlbench_is_refused_in_one_line():
    with pytest.raises(
        UserError,
        match=f"written by a newer tlbench \\(trial record {RECORD_VERSION + 1}, this one reads up to {RECORD_VERSION}\\)",
    ):
        TrialRecord.from_trial(_frozen(record_version=RECORD_VERSION + 1))
