"""Like-with-like pruning: a trial is judged only against trials of its own group.

Optuna's pruners compare a trial's intermediate value with every other trial's at
the same step. In a tlbench study those are different kinds of training: a linear
probe is near its final accuracy after one epoch, a fine-tune (whose whole backbone
is still moving) or the head-only first epoch of a two-stage recipe is not, and a
model trained from scratch is lower still. Compared with all of them, good
fine-tunes are pruned because probes are ahead at epoch 2 (docs/performance.md).

:class:`GroupedPruner` gives the wrapped Optuna pruner a view of the study holding only
the trials of the judged trial's group (``search.prune_within``):

- ``strategy`` (default): the same strategy. Backbones still compete inside a
  group, so a weak backbone's fine-tune is stopped when other fine-tunes are ahead.
- ``strategy_backbone``: the same strategy on the same backbone.
- ``study``: every trial, as Optuna does on its own.

Within the view the rule is the wrapped pruner's: the median rule (stop below the
median of the group's completed trials at the same epoch) or successive halving,
whose rungs are then per group. :class:`EnvelopePruner` (``pruner: envelope``) compares
across epochs instead: a trial is stopped when even an optimistic continuation of its
curve, read from this study's own finished curves, cannot beat the best finished trial. Steps are 1-based epochs, so "the same step" is the
same epoch. A Pareto search (``search.objective: pareto``) cannot use Optuna's pruners
(they take one objective): :func:`dominated_by` applies the same grouping to dominance. Recipes from the config report too (they are the group's baseline) but
are never pruned (see :meth:`tlbench.search.trial.Objective._epoch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from tlbench.store.record import TrialRecord

WITHIN = ("strategy", "strategy_backbone", "study")


def group_of(params: Mapping[str, Any], within: str) -> tuple:
    """The group a trial with these Optuna params belongs to."""
    if within == "study":
        return ()
    if within == "strategy":
        return (params.get("strategy"),)
    return (params.get("strategy"), params.get("backbone"))


class GroupedPruner(optuna.pruners.BasePruner):
    """``inner``'s decision on a view of the study that holds only the judged trial's group."""

    def __init__(self, inner: optuna.pruners.BasePruner, within: str = "strategy"):
        if within not in WITHIN:
            raise ValueError(f"within must be one of {WITHIN}, got {within!r}")
        self.inner, self.within = inner, within

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        key = group_of(trial.params, self.within)
        return self.inner.prune(_GroupView(study, lambda t: group_of(t.params, self.within) == key), trial)


class _GroupView:
    """A study whose trial lists hold only the trials ``keep`` accepts. Like Optuna's own
    ``_BracketStudy`` (HyperbandPruner), it forwards a fixed list of the study's attributes
    and refuses the rest: what Optuna's pruners read (the median and successive-halving
    rules: trials, direction, and ``_storage`` for successive halving's rung attributes)."""

    FORWARDED = ("direction", "directions", "_storage", "study_name", "sampler", "pruner", "user_attrs")

    def __init__(self, study: optuna.Study, keep: Callable[[optuna.trial.FrozenTrial], bool]):
        self._study, self._keep = study, keep

    def get_trials(self, deepcopy: bool = True, states=None):
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if self._keep(t)]

    @property
    def trials(self):
        return self.get_trials()

    def __getattr__(self, name: str):
        if name not in self.FORWARDED:
            raise AttributeError(f"the grouped view of a study forwards only {', '.join(self.FORWARDED)}, not {name!r}")
        return getattr(self._study, name)


class EnvelopePruner(optuna.pruners.BasePruner):
    """Stop a trial after epoch e when even an optimistic continuation of its curve cannot
    beat the best completed trial's value (design step 8, docs/performance.md).

    The continuation is the larger of the most any completed trial of its group gained from
    epoch e to its value (``value - intermediate value at e``: a trial's value is what
    ``search.select_epochs`` makes of its curve, so both sides are on the same scale) and the
    trial's own rise per epoch over its last two epochs, continued to the group's last
    epoch. Never during the first ``warmup`` epochs, nor before ``startup`` completed
    trials of the group reached epoch e. Unlike the median rule and successive halving it
    does not stop a slow starter because faster ones are ahead at the same epoch: only when
    nothing seen on this task says it could still catch up."""

    def __init__(self, warmup: int = 0, startup: int = 2, within: str = "strategy"):
        if within not in WITHIN:
            raise ValueError(f"within must be one of {WITHIN}, got {within!r}")
        self.warmup, self.startup, self.within = warmup, startup, within

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        epoch = trial.last_step
        if epoch is None or epoch <= self.warmup:
            return False
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None
        ]
        if not done:
            return False
        key = group_of(trial.params, self.within)
        group = [t for t in done if group_of(t.params, self.within) == key and epoch in t.intermediate_values]
        if len(group) < self.startup:
            return False
        values = trial.intermediate_values
        now = values[epoch]
        gained = max(t.value - t.intermediate_values[epoch] for t in group)
        last = max(max(t.intermediate_values) for t in group)
        back = 2 if epoch - 2 in values else 1  # its rise per epoch over its last two epochs (one, at epoch 2)
        rise = max(0.0, (now - values[epoch - back]) / back) if epoch - back in values else 0.0
        return now + max(gained, rise * max(0, last - epoch)) < max(t.value for t in done)


def make_pruner(search) -> optuna.pruners.BasePruner:
    """The config's pruner, grouped by ``search.prune_within``. Steps are 1-based epochs;
    no trial is pruned during its first ``warmup_epochs``, nor before its group has
    ``prune_startup`` completed trials."""
    if search.pruner == "median":
        # Optuna may prune once step >= n_warmup_steps
        inner = optuna.pruners.MedianPruner(
            n_startup_trials=search.prune_startup, n_warmup_steps=search.warmup_epochs + 1
        )
    elif search.pruner == "asha":
        # asynchronous successive halving: rungs from warmup + 1 epochs, the top third goes on at each
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=search.warmup_epochs + 1, reduction_factor=3)
    elif search.pruner == "envelope":  # reads whole curves; groups only for the gain a curve may still make
        return EnvelopePruner(warmup=search.warmup_epochs, startup=search.prune_startup, within=search.prune_within)
    elif search.pruner == "hyperband":  # whole-study brackets: the config allows it only with prune_within: study
        # brackets of successive halving from warmup + 1 epochs up to the longest trial's epochs
        return optuna.pruners.HyperbandPruner(min_resource=search.warmup_epochs + 1, reduction_factor=3)
    else:
        return optuna.pruners.NopPruner()
    return inner if search.prune_within == "study" else GroupedPruner(inner, search.prune_within)


def dominated_by(trial: optuna.Trial, epoch: int, value: float, cost: float, search) -> str | None:
    """The Pareto search's pruning rule (Optuna's pruners handle one objective only): a
    trial is stopped after ``epoch`` when at least ``prune_startup`` completed trials of
    its group (``prune_within``) were ahead of it at the same epoch and cost no more
    than it will (``cost``: its latency, or its training GFLOPs projected to all its
    epochs). Never during the first ``warmup_epochs``, never with ``pruner: none``.
    Returns why, or None."""
    if search.pruner == "none" or epoch <= search.warmup_epochs:
        return None

    key = group_of(trial.params, search.prune_within)
    ahead = 0
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if group_of(t.params, search.prune_within) != key:
            continue
        curve = TrialRecord.from_trial(t).val_curve or []
        if len(curve) >= epoch and curve[epoch - 1] > value and t.values[1] <= cost:
            ahead += 1
    if ahead < search.prune_startup:
        return None
    return f"dominated at epoch {epoch} by {ahead} completed trials of its group (more accurate then, no costlier)"
