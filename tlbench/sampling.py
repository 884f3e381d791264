"""The sampler of a tlbench study: Optuna's TPE or random search, told two things
Optuna cannot know on its own.

- **The screen** (:mod:`tlbench.screen`): a backbone the screen dropped is never
  proposed. Optuna keeps a categorical parameter's choices fixed for a whole study,
  so ``backbone`` keeps every backbone of the config (recipes on a dropped backbone
  still run: the user asked for them) and :class:`ScreenedSampler` draws again when
  the wrapped sampler proposes a dropped one (after a few tries: one of the kept
  backbones at random, from the sampler's seeded generator).
- **Constraints** (``search.constraints``, known after training: train seconds, peak
  memory): each finished trial's values (value minus limit) are stored with
  ``trial.set_constraint`` (:func:`tell_constraints`; on Optuna 4, TPE's
  ``constraints_func``), so that TPE learns where the infeasible configurations are. Configurations over a constraint known
  before training are never trained (:mod:`tlbench.trial`) and count as infeasible too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna

from tlbench.record import TrialRecord, infeasible, measured_costs  # noqa: F401  (infeasible: its home was here)
from tlbench.studyrecord import StudyRecord

REDRAWS = 20  # times the wrapped sampler is asked again before a kept backbone is drawn uniformly


class ScreenedSampler(optuna.samplers.BaseSampler):
    """``base``, except that it never proposes a backbone the study's screen dropped."""

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int | None = None):
        self.base = base
        self._rng = np.random.default_rng(seed)

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        out = self.base.sample_relative(study, trial, search_space)
        if out.get("backbone") in dropped_backbones(study):  # drawn again, alone, below
            out = {k: v for k, v in out.items() if k != "backbone"}
        return out

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name != "backbone":
            return value
        gone = dropped_backbones(study)
        kept = [c for c in param_distribution.choices if c not in gone]
        for _ in range(REDRAWS):
            if not kept or value in kept:
                return value
            value = self.base.sample_independent(study, trial, param_name, param_distribution)
        return kept[int(self._rng.integers(len(kept)))]

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = np.random.default_rng()


def dropped_backbones(study) -> set[str]:
    """Backbone keys the study's screen dropped (none before the screen ran, or with it off)."""
    return set(StudyRecord.from_study(study).dropped)


def constraint_values(limits: dict[str, float]):
    """Optuna's ``constraints_func`` for these limits: value minus limit per constraint (a
    trial is feasible when every one is <= 0); a cost the trial did not get to measure is
    0 (unknown is not a violation); a trial refused before training is infeasible."""

    def values(trial: optuna.trial.FrozenTrial | optuna.Trial) -> Sequence[float]:
        record = TrialRecord.from_trial(trial)
        measured = measured_costs(record)
        out = [measured[k] - limit if measured.get(k) is not None else 0.0 for k, limit in limits.items()]
        if record.infeasible:
            out.append(1.0)
        return out or [0.0]

    return values


SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna 5; before it, TPE's constraints_func


def tell_constraints(trial: optuna.Trial, limits: dict[str, float]) -> None:
    """Store a finished (or refused) trial's constraint values on it, where Optuna 5's
    samplers read them (``trial.constraints``)."""
    if SET_CONSTRAINT and limits:
        # the running trial's user attributes are its record (Trial.user_attrs reads them from storage)
        for key, value in zip([*limits, "refused"], constraint_values(limits)(trial)):
            trial.set_constraint(key, value)


def make_sampler(search, seed: int) -> optuna.samplers.BaseSampler:
    """The config's sampler, seeded, wrapped so that it respects the screen and constraints."""
    limits = search.constraints.model_dump(exclude_none=True)
    if search.sampler == "tpe":
        legacy = {} if SET_CONSTRAINT or not limits else {"constraints_func": constraint_values(limits)}
        base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials, **legacy)
    else:
        base = optuna.samplers.RandomSampler(seed=seed)
    return ScreenedSampler(base, seed=seed)
