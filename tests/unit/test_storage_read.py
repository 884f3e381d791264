"""The lean reader of a finished run's trials (tlbench.store.storage.read_trials) gives exactly
what Optuna's own read gives, on a real SQLite storage: every state, every kind of
distribution, infinities and NaN, nested attributes, two studies side by side, a
multi-objective study; and declines (None) where it cannot be exact."""

from __future__ import annotations

import math
import sqlite3

import optuna
import pytest

from tlbench.store import storage


def _fill(study: optuna.Study, objectives: int) -> None:
    def objective(trial: optuna.Trial):
        trial.set_user_attr("record", {"nested": [1, 2.5, None], "text": "é#?"})
        kind = trial.suggest_categorical("kind", ["a", 1, 2.5, None, True])
        trial.suggest_int("n", 1, 9, step=2)
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_float("frac", 0.0, 1.0, step=0.25)
        trial.set_user_attr("z_last", trial.number)
        if objectives == 1:  # Optuna reports single-objective trials only
            for step, value in enumerate([0.1, math.nan, math.inf, -math.inf]):
                trial.report(value, step)
        if trial.number % 5 == 1:
            raise optuna.TrialPruned()
        if trial.number % 5 == 2:
            raise ValueError("failed on purpose")
        first = math.inf if trial.number % 5 == 3 else 0.5 + trial.number / 100
        return first if objectives == 1 else (first, -math.inf if kind == "a" else 1.0)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=15, catch=(ValueError,))
    study.enqueue_trial({"kind": "a", "n": 3, "lr": 0.01, "frac": 0.5})
    study.enqueue_trial({"kind": 1, "n": 5, "lr": 0.001, "frac": 0.25})  # WAITING
    study.ask()  # RUNNING (the first enqueued one)


def _same(lean, full) -> None:
    assert [t.number for t in lean] == [t.number for t in full]
    for a, b in zip(lean, full):
        assert (a.number, a.state) == (b.number, b.state)
        assert list(a.params.items()) == list(b.params.items())  # the order a trial drew them in, too
        assert a.distributions == b.distributions
        assert list(a.user_attrs.items()) == list(b.user_attrs.items())
        assert (a.values is None) == (b.values is None)
        if a.values is not None:
            assert [repr(v) for v in a.values] == [repr(v) for v in b.values]
        assert list(a.intermediate_values) == list(b.intermediate_values)
        assert [repr(v) for v in a.intermediate_values.values()] == [repr(v) for v in b.intermediate_values.values()]


def test_the_lean_read_equals_optunas(tmp_path):
    store = storage.connect(storage.sqlite_url(tmp_path / "study.db"))
    one = optuna.create_study(study_name="one", storage=store, sampler=optuna.samplers.RandomSampler(seed=0))
    two = optuna.create_study(study_name="two", storage=store, directions=["maximize", "minimize"],
                              sampler=optuna.samplers.RandomSampler(seed=1))  # fmt: skip
    _fill(one, 1)
    _fill(two, 2)
    states = {t.state for t in one.get_trials(deepcopy=False)}
    assert states == {optuna.trial.TrialState[s] for s in ("COMPLETE", "PRUNED", "FAIL", "WAITING", "RUNNING")}
    reader = storage.connect(storage.sqlite_url(tmp_path / "study.db", read_only=True))
    for study in (one, two):
        lean = storage.read_trials(reader, study.study_name)
        assert lean is not None and len(lean) == 17
        _same(lean, optuna.load_study(study_name=study.study_name, storage=reader).get_trials(deepcopy=False))
    with pytest.raises(KeyError):
        storage.read_trials(reader, "three")


def test_it_declines_where_it_cannot_be_exact(tmp_path):
    assert storage.read_trials(optuna.storages.InMemoryStorage(), "x") is None  # not an RDB storage
    path = tmp_path / "study.db"
    store = storage.connect(storage.sqlite_url(path))
    optuna.create_study(study_name="x", storage=store)
    with sqlite3.connect(path) as db:  # tables of a later Optuna: read through Optuna instead
        db.execute("UPDATE version_info SET schema_version = ?", (storage.READ_SCHEMA + 1,))
    assert storage.read_trials(storage.connect(storage.sqlite_url(path)), "x") is None
