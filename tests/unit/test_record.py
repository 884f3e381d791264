"""The trial record: written and read by one class, old runs read, newer ones refused."""

from __future__ import annotations

import dataclasses

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
    TrialRecord(test_accuracy=0.5).write(trial)  # every field set
    stored = study.trials[0].user_attrs
    assert set(stored) == {"record", "record_version"}  # record 3: the fields in one attribute
    assert stored["record"] == {"host": "h", "elapsed_seconds": 1.5, "test_accuracy": 0.5}


class _Counting(optuna.storages.InMemoryStorage):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def set_trial_user_attr(self, trial_id, key, value):
        self.writes += 1
        super().set_trial_user_attr(trial_id, key, value)


def test_each_step_of_a_trial_is_one_storage_write():
    """26 fields were 26 transactions (about 2 ms each on SQLite); now a step is one, the
    first two (record_version stands on its own, for older tlbench to refuse the run)."""
    storage = _Counting()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    TrialRecord(host="h", worker="h:1").write(trial, "host", "worker", "version")
    assert storage.writes == 2
    TrialRecord(params={"lr": 0.1}, n_groups=4, pretrained=True, resolution=64, forward_gflops=0.1).write(trial)
    TrialRecord(val_curve=[0.5, 0.6], test_accuracy=0.6, train_seconds=1.0, throughput=9.0).write(trial)
    assert storage.writes == 4
    read = TrialRecord.from_trial(trial)  # the live trial sees what was written (Optuna's cached copy of it)
    assert (read.host, read.n_groups, read.val_curve, read.throughput) == ("h", 4, [0.5, 0.6], 9.0)


def test_a_trial_of_record_2_resumed_keeps_its_fields():
    """An older run resumed: a running trial stored one attribute per field (record 2); a
    write moves it to record 3 with its old fields."""
    study = optuna.create_study()
    trial = study.ask()
    for key, value in {
        "record_version": 2,
        "host": "old",
        "seed": 5,
        "cache": [dataclasses.asdict(CacheUse("head", "memory", at="input"))],
    }.items():
        trial.set_user_attr(key, value)
    assert TrialRecord.from_trial(trial).seed == 5 and TrialRecord.from_trial(trial).version == 2
    TrialRecord(test_accuracy=0.9).write(trial)
    read = TrialRecord.from_trial(trial)
    assert (read.version, read.host, read.seed, read.test_accuracy) == (RECORD_VERSION, "old", 5, 0.9)
    assert read.cache == [CacheUse("head", "memory", at="input")]


def test_enqueued_attributes_are_a_record_too():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0}, user_attrs=TrialRecord(probe=True, seed=2).attrs())
    trial = study.ask()
    TrialRecord(host="h").write(trial, "host", "version")
    read = TrialRecord.from_trial(trial)
    assert (read.probe, read.seed, read.host) == (True, 2, "h")


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


def test_a_finished_trials_record_is_parsed_once_and_never_stale():
    trial = _frozen(**TrialRecord(test_accuracy=0.5).attrs())
    first = TrialRecord.from_trial(trial)
    assert TrialRecord.from_trial(trial) is first  # the same object: parsed once
    trial.set_user_attr("record", {"test_accuracy": 0.7})  # a FrozenTrial can still be changed in memory
    assert TrialRecord.from_trial(trial).test_accuracy == 0.7
    running = optuna.create_study().ask()
    TrialRecord(host="h").write(running, "host", "version")
    TrialRecord(seed=1).write(running)
    assert (TrialRecord.from_trial(running).host, TrialRecord.from_trial(running).seed) == ("h", 1)  # never cached
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.test_accuracy = 0.9  # shared between readers: frozen
