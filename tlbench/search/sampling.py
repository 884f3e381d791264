"""The sampler of a tlbench study (the default: :class:`LocalSampler`; or
:class:`GroupSampler`, Optuna's TPE or random search), told two things Optuna cannot know
on its own.

- **The screen** (:mod:`tlbench.search.screen`): a backbone the screen dropped is never
  proposed. Optuna keeps a categorical parameter's choices fixed for a whole study,
  so ``backbone`` keeps every backbone of the config (recipes on a dropped backbone
  still run: the user asked for them) and :class:`ScreenedSampler` draws again when
  the wrapped sampler proposes a dropped one (after a few tries: one of the kept
  backbones at random, from the sampler's seeded generator).
- **Constraints** (``search.constraints``, known after training: train seconds, peak
  memory): each finished trial's values (value minus limit) are stored with
  ``trial.set_constraint`` (:func:`tell_constraints`; on Optuna 4, TPE's
  ``constraints_func``), so that TPE learns where the infeasible configurations are. Configurations over a constraint known
  before training are never trained (:mod:`tlbench.search.trial`) and count as infeasible too.

``search.sampler: local`` (:class:`LocalSampler`) is random search that spends a share of
its trials (``search.local_share``) next to the best trial so far: one of its settings moved
one step (the next value of a list of numbers, a third or three times a log-scaled rate,
another backbone or strategy), never onto a configuration the study already ran. It is the
local search of the NAS and HPO benchmark literature (e.g. White et al., "Exploring the
loss landscape in neural architecture search", UAI 2021), for a study whose opening
(screen, probes, portfolio) has already found a good region.

``search.sampler: groups`` (:class:`GroupSampler`) is best-first search over the study's
(backbone, strategy) groups: a share of its trials (``search.group_share``) goes to the
group whose best finished trial is best so far (a group not yet run counts its backbone's
best, so a fine-tune group starts where that backbone's probe ended), with settings the
group has not run (``search.group_step``: first one setting of the group's best trial
moved one step, as the local sampler moves it); the rest are random. It reads the task's
own results, where the opening reads recorded tables.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import optuna

from tlbench.store.record import TrialRecord, infeasible, measured_costs  # noqa: F401  (infeasible: its home was here)
from tlbench.store.studyrecord import StudyRecord

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
    elif search.sampler == "local":
        base = LocalSampler(search.local_share, limits, seed=seed, untried=search.untried_draws, step=search.local_step)
    elif search.sampler == "groups":
        base = GroupSampler(search.group_share, limits, seed=seed, step=search.group_step, untried=search.untried_draws)
    else:
        base = optuna.samplers.RandomSampler(seed=seed)
    return ScreenedSampler(base, seed=seed)


_UNSET = object()
LOG_STEP = 3.0  # a log-scaled value's neighbours: a third of it and three times it
LINEAR_STEP = 0.25  # a linear value's neighbours: a quarter of its range either side


class _PlannedSampler(optuna.samplers.BaseSampler):
    """Random search that plans a share (``share``) of its trials: the plan (some of the
    trial's settings) is made in ``before_trial`` by :meth:`_plan` and followed by
    ``sample_independent``; a setting the plan does not cover, or a value the
    distribution no longer holds, is drawn at random. Enqueued trials are left alone."""

    def __init__(
        self, share: float, limits: dict[str, float] | None = None, seed: int | None = None, untried: bool = False
    ):
        self.share, self.limits, self.untried = share, dict(limits or {}), untried
        self.base = optuna.samplers.RandomSampler(seed=seed)
        self._rng = np.random.default_rng(seed)
        self._plans: dict[int, dict] = {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        plan = self._plans.get(trial.number, {})
        if param_name in plan and _holds(param_distribution, plan[param_name]):
            return plan[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)
        if "fixed_params" in trial.system_attrs:
            return
        planned = self._plans_for(study) and self._rng.random() < self.share
        if not planned and not self.untried:
            return  # Optuna's random draw (the study's trials are not read: a study of thousands)
        trials = study.get_trials(deepcopy=False)
        plan = self._plan(study, trials) if planned else {}
        if not plan and self.untried:
            plan = untried_draw(trials, dropped_backbones(study), self._rng)
        if plan:
            self._plans[trial.number] = plan

    def after_trial(self, study, trial, state, values):
        self._plans.pop(trial.number, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = np.random.default_rng()

    def _plans_for(self, study) -> bool:
        """Whether this study's trials are planned at all."""
        return True

    def _plan(self, study, trials: list[optuna.trial.FrozenTrial]) -> dict:
        raise NotImplementedError


class LocalSampler(_PlannedSampler):
    """Random search, except that a share of its trials is a neighbour of the best feasible
    trial so far (on a Pareto search, of a trial on the front, drawn at random): one of its
    settings moved one step, the others kept, onto a configuration the study has not run
    (when the best one's neighbours have all run, the next best's: best-first local search).
    The plan is made in ``before_trial`` (enqueued trials are left alone) and followed
    by ``sample_independent``; a setting the plan does not cover (the parameters of a
    strategy the neighbour changed to), or a neighbour the distribution no longer holds,
    is drawn at random. With no finished trial, or every finished trial's neighbours
    already run, the trial is random.

    ``step`` (``search.local_step``): ``random`` as above (the default); ``model``: the
    neighbour with the highest expected improvement under :class:`ValueModel` fitted to the
    study's trials; ``model_any``: the configuration not run yet (of a space that can be
    listed) with the highest. Neither beat ``random`` on the development grids (design step 13)."""

    def __init__(
        self,
        share: float,
        limits: dict[str, float] | None = None,
        seed: int | None = None,
        untried: bool = False,
        step: str = "random",
    ):
        super().__init__(share, limits, seed, untried)
        self.step = step

    def _plan(self, study, trials: list[optuna.trial.FrozenTrial]) -> dict:
        seen: dict[tuple, list[dict]] = {}  # the configurations run, by (backbone, strategy): a plan names both
        for t in trials:
            if t.state != optuna.trial.TrialState.WAITING:
                seen.setdefault(_group(t.params), []).append(t.params)
        gone = dropped_backbones(study)
        model = self._model(study, trials) if self.step != "random" else None
        if model is not None and self.step == "model_any":
            left = untried_configurations(trials, gone)
            if left is not None and left[0]:
                return model.best(left[0], self._rng)
        for best in self._incumbents(study, trials):  # the best trial's neighbourhood, else the next best's
            if model is not None:
                plans = self._neighbours(best, seen, gone)
                if plans:
                    return model.best(plans, self._rng)
                continue
            plan = self._neighbour(best, seen, gone)
            if plan:
                return plan
        return {}

    def _model(self, study, trials: list[optuna.trial.FrozenTrial]) -> ValueModel | None:
        """``search.local_step: model / model_any``: a model of the value over the settings,
        fitted to the feasible finished trials, at most MODEL_TRIALS of them (None on a Pareto
        search, or with fewer than MODEL_MIN: the step is drawn at random)."""
        if len(study.directions) > 1:
            return None
        feasible = constraint_values(self.limits)
        done = [
            t
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and all(v <= 0 for v in feasible(t))
        ]
        if len(done) < MODEL_MIN:
            return None
        sign = sign_of(study)
        if len(done) > MODEL_TRIALS:  # the best half and the latest half: a fit is cubic in the trials it reads
            ranked = sorted(done, key=lambda t: (-sign * t.value, t.number))[: MODEL_TRIALS // 2]
            kept = {t.number for t in ranked}
            latest = [t for t in sorted(done, key=lambda t: -t.number) if t.number not in kept]
            done = ranked + latest[: MODEL_TRIALS - len(ranked)]
        dists: dict[str, optuna.distributions.BaseDistribution] = {}
        for t in trials:
            if t.state != optuna.trial.TrialState.WAITING:
                dists.update(t.distributions)
        return ValueModel(dists, [t.params for t in done], [sign * t.value for t in done])

    def _incumbents(self, study, trials: list[optuna.trial.FrozenTrial]) -> Iterator[optuna.trial.FrozenTrial]:
        """The feasible finished ``trials`` (the study's), best first (the earliest of equals first); on a
        Pareto search the front, in random order. Lazily: a trial's feasibility is read
        from its record only when the ones before it have been tried (a study of
        thousands of trials has its best near the front)."""
        if len(study.directions) > 1:
            front = study.best_trials
            yield from [front[int(i)] for i in self._rng.permutation(len(front))]
            return
        feasible = constraint_values(self.limits)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        sign = sign_of(study)
        for t in sorted((t for t in done if t.value is not None), key=lambda t: (-sign * t.value, t.number)):
            if all(v <= 0 for v in feasible(t)):
                yield t

    def _neighbour(self, best: optuna.trial.FrozenTrial, seen: dict[tuple, list[dict]], gone: set[str]) -> dict:
        """``best``'s parameters with one moved a step (which one, and which way, at random),
        onto a configuration no trial in ``seen`` ran, never onto a backbone in ``gone``;
        {} when every one has run."""
        moves = _moves(best, gone)
        for i in self._rng.permutation(len(moves)):
            name, value = moves[int(i)]
            plan = _moved(best.params, name, value)
            if not _ran(plan, seen):
                return plan  # (a plan that leaves a strategy's settings to chance: no trial ran that strategy there)
        return {}

    def _neighbours(self, best: optuna.trial.FrozenTrial, seen: dict[tuple, list[dict]], gone: set[str]) -> list[dict]:
        """Every plan :meth:`_neighbour` could return, in a fixed order."""
        plans = [_moved(best.params, name, value) for name, value in _moves(best, gone)]
        return [p for p in plans if not _ran(p, seen)]


def _moves(best: optuna.trial.FrozenTrial, gone: set[str]) -> list[tuple[str, object]]:
    """(setting, value) for every one-step move of ``best``'s settings, never onto a backbone in ``gone``."""
    return [
        (name, value)
        for name, dist in best.distributions.items()
        for value in _steps(dist, best.params[name])
        if not (name == "backbone" and value in gone)
    ]


def _moved(params: dict, name: str, value) -> dict:
    """``params`` with ``name`` moved to ``value``; a move to another strategy drops the old
    strategy's settings (the new one's are drawn at random)."""
    plan = {**params, name: value}
    if name == "strategy":
        plan = {k: v for k, v in plan.items() if "." not in k or k.startswith(f"{value}.")}
    return plan


def _ran(plan: dict, seen: dict[tuple, list[dict]]) -> bool:
    """Whether a trial in ``seen`` ran every setting of ``plan``."""
    return any(all(params.get(k, _UNSET) == v for k, v in plan.items()) for params in seen.get(_group(plan), ()))


MODEL_MIN = 3  # finished trials before search.local_step: model reads them
# at most this many finished trials (the best half, the latest half) are read: a fit of 256 takes
# milliseconds, of 2,000 about a minute (docs/performance.md, design step 13)
MODEL_TRIALS = 256


def sign_of(study) -> float:
    """+1 for a study that maximises, -1 for one that minimises (values times it: larger is better)."""
    return -1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0


LENGTHSCALES = (0.1, 0.2, 0.4, 0.8)  # the model's kernel widths, on settings scaled to [0, 1]; the likeliest is used
NOISE = 0.05  # the model's noise variance, on values scaled to unit variance


class ValueModel:
    """A Gaussian process over a study's settings (``search.local_step: model``): each numeric
    setting scaled to [0, 1] of its range (on a log scale where the range is log-scaled, or a
    list of positive numbers spans a decade or more), every other choice one-hot (two
    backbones, or strategies, are as far apart as a setting's whole range); a setting a
    configuration does not have (another strategy's) at the middle. A Matérn 5/2 kernel,
    its width the likeliest of LENGTHSCALES, on the values standardised. Plans are ranked by
    expected improvement over the best value (values: larger is better)."""

    def __init__(self, dists: dict, params: list[dict], values: list[float]):
        self.columns = [(name, _scale(dist)) for name, dist in sorted(dists.items())]
        x = self._encode(params)
        y = np.asarray(values, dtype=float)
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        self.y = (y - self.mean) / self.std
        self.x, self.best_y = x, float(self.y.max())
        fits = [self._fit(width) for width in LENGTHSCALES]
        self.width, self.factor, self.alpha = max(fits, key=lambda f: f[0])[1:]

    def _encode(self, params: list[dict]) -> np.ndarray:
        rows = []
        for p in params:
            row: list[float] = []
            for name, scale in self.columns:
                value = p.get(name, _UNSET)
                if isinstance(scale, list):  # one-hot, each column 1/sqrt(2): two choices are 1 apart
                    row += [math.sqrt(0.5) if value == c else 0.0 for c in scale]
                else:
                    row.append(0.5 if value is _UNSET else scale(value))
            rows.append(row)
        return np.asarray(rows, dtype=float)

    def _kernel(self, a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
        d = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0)) * math.sqrt(5) / width
        return (1 + d + d * d / 3) * np.exp(-d)

    def _fit(self, width: float) -> tuple[float, float, np.ndarray, np.ndarray]:
        k = self._kernel(self.x, self.x, width) + NOISE * np.eye(len(self.y))
        factor = np.linalg.cholesky(k)
        alpha = np.linalg.solve(factor.T, np.linalg.solve(factor, self.y))
        likelihood = -0.5 * float(self.y @ alpha) - float(np.log(np.diag(factor)).sum())
        return likelihood, width, factor, alpha

    def best(self, plans: list[dict], rng: np.random.Generator) -> dict:
        """The plan with the highest expected improvement (ties: at random)."""
        x = self._encode(plans)
        cross = self._kernel(x, self.x, self.width)
        mean = cross @ self.alpha
        v = np.linalg.solve(self.factor, cross.T)
        sd = np.sqrt(np.maximum(1.0 - (v * v).sum(0), 1e-12))
        z = (mean - self.best_y) / sd
        cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        gain = (mean - self.best_y) * cdf + sd * pdf
        top = np.flatnonzero(gain >= gain.max() - 1e-12)
        return plans[int(top[int(rng.integers(len(top)))])]


def _scale(dist):
    """A setting's encoding: a function to [0, 1], or the list of its choices (one-hot)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        choices = list(dist.choices)
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices) or len(choices) < 2:
            return choices
        low, high, log = min(choices), max(choices), min(choices) > 0 and max(choices) >= 10 * min(choices)
    elif isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        low, high, log = dist.low, dist.high, dist.log
    else:
        return []
    if high <= low:
        return lambda value: 0.5
    if log:
        span = math.log(high) - math.log(low)
        return lambda value: (math.log(max(value, low)) - math.log(low)) / span
    return lambda value: (value - low) / (high - low)


def _group(params: dict) -> tuple:
    return params.get("backbone", _UNSET), params.get("strategy", _UNSET)


def _steps(dist, value) -> list:
    """The values one step from ``value`` in ``dist``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        choices = list(dist.choices)
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        if not numeric:
            return [c for c in choices if c != value]
        ordered = sorted(choices)
        i = ordered.index(value)
        return [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
    if isinstance(dist, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
        if dist.log:
            candidates = [value / LOG_STEP, value * LOG_STEP]
        else:
            width = max((dist.high - dist.low) * LINEAR_STEP, dist.step or 0)
            candidates = [value - width, value + width]
        out = []
        for c in candidates:
            c = min(max(c, dist.low), dist.high)
            if dist.step:
                c = dist.low + round((c - dist.low) / dist.step) * dist.step
            if isinstance(dist, optuna.distributions.IntDistribution):
                c = int(round(c))
            if c != value and _holds(dist, c) and c not in out:
                out.append(c)
        return out
    return []


def _holds(dist, value) -> bool:
    """Whether ``value`` is one of ``dist``'s values (a study's choices can change between runs)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not dist.low <= value <= dist.high:
        return False
    return not dist.step or abs((value - dist.low) / dist.step - round((value - dist.low) / dist.step)) < 1e-9


ENUMERABLE = 10_000  # a group's settings are listed (to pick one it has not run) up to this many


class GroupSampler(_PlannedSampler):
    """Random search, except that a share of its trials goes to the most promising
    (backbone, strategy) group: the one whose best feasible finished trial is best (a
    group with none counts its backbone's best trial of any strategy; a backbone with no
    finished trial counts as best of all, so that every kept backbone is tried; ties: the
    group with fewer trials, then at random). The trial's settings are drawn among the
    ones the group has not run when its settings are all lists (a group that has run them
    all is passed over for the next), else at random. Backbones the screen dropped are
    never planned; enqueued trials are left alone; a search with several objectives is
    random (its front has no single best group). The plan is made in ``before_trial``
    and followed by ``sample_independent``, as :class:`LocalSampler`'s."""

    def __init__(
        self,
        share: float,
        limits: dict[str, float] | None = None,
        seed: int | None = None,
        step: bool = False,
        untried: bool = False,
    ):
        super().__init__(share, limits, seed, untried)
        self.step = step

    def _plans_for(self, study) -> bool:
        return len(study.directions) == 1  # a Pareto front has no single best group

    def _plan(self, study, trials: list[optuna.trial.FrozenTrial]) -> dict:
        """The next trial's settings: the most promising group's, {} when there is no
        group to choose (no trial has run yet, or every group has run all its settings)."""
        dists: dict[str, optuna.distributions.BaseDistribution] = {}
        for t in trials:
            dists.update(t.distributions)
        axes = [
            n
            for n in ("backbone", "strategy")
            if isinstance(dists.get(n), optuna.distributions.CategoricalDistribution)
        ]
        if not axes:
            return {}
        gone = dropped_backbones(study)
        sign = sign_of(study)
        feasible = constraint_values(self.limits)
        best: dict[tuple, float] = {}  # by group
        leader: dict[tuple, optuna.trial.FrozenTrial] = {}  # the group's best trial (the earliest of equals)
        best_backbone: dict = {}  # by backbone, of any strategy
        seen: dict[tuple, list[dict]] = {}
        for t in trials:
            if t.state == optuna.trial.TrialState.WAITING:
                continue
            key = tuple(t.params.get(n, _UNSET) for n in axes)
            seen.setdefault(key, []).append(t.params)
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and all(v <= 0 for v in feasible(t)):
                if sign * t.value > best.get(key, -np.inf):
                    leader[key] = t
                best[key] = max(best.get(key, -np.inf), sign * t.value)
                backbone = t.params.get("backbone", _UNSET)
                best_backbone[backbone] = max(best_backbone.get(backbone, -np.inf), sign * t.value)
        choices = [[c for c in dists[n].choices if not (n == "backbone" and c in gone)] for n in axes]
        ranked = []
        for key in itertools.product(*choices):
            group = dict(zip(axes, key))
            settings = self._settings(group, dists)
            untried = _untried(group, settings, seen.get(key, ()))
            if untried == []:
                continue  # every setting of the group has run
            promise = best.get(key, best_backbone.get(group.get("backbone", _UNSET), np.inf))
            ranked.append((-promise, len(seen.get(key, ())), self._rng.random(), key, group, settings, untried))
        if not ranked:
            return {}
        *_, key, group, settings, untried = min(ranked, key=lambda r: r[:3])
        if self.step and key in leader:
            moved = self._step(leader[key], settings, seen.get(key, ()))
            if moved is not None:
                return {**group, **moved}
        if untried:
            return {**group, **untried[int(self._rng.integers(len(untried)))]}
        return group

    def _step(self, best: optuna.trial.FrozenTrial, settings: dict, ran: Sequence[dict]) -> dict | None:
        """``search.group_step``: ``best``'s settings with one moved one step (which one, and
        which way, at random; as :class:`LocalSampler` moves them), onto settings no trial
        in ``ran`` has; None when every such move has run."""
        moves = [
            (name, value)
            for name, dist in settings.items()
            if name in best.params
            for value in _steps(dist, best.params[name])
        ]
        for i in self._rng.permutation(len(moves)):
            name, value = moves[int(i)]
            plan = {n: best.params[n] for n in settings if n in best.params} | {name: value}
            if not any(all(params.get(k, _UNSET) == v for k, v in plan.items()) for params in ran):
                return plan
        return None

    @staticmethod
    def _settings(group: dict, dists: dict) -> dict[str, optuna.distributions.BaseDistribution]:
        """The settings of the group's strategy that trials have shown (``strategy.name``)."""
        strategy = group.get("strategy", _UNSET)
        if strategy is _UNSET:
            return {n: d for n, d in dists.items() if n not in ("backbone", "strategy")}
        return {n: d for n, d in dists.items() if n.startswith(f"{strategy}.")}


def _untried(group: dict, settings: dict, ran: Sequence[dict]) -> list[dict] | None:
    """The group's settings it has not run, when they can be listed (every one a list of
    choices, at most ENUMERABLE combinations); None when they cannot (drawn at random)."""
    if not settings:  # one configuration (or settings no trial has shown yet: drawn when it runs)
        return [] if ran else [{}]
    if not all(isinstance(d, optuna.distributions.CategoricalDistribution) for d in settings.values()):
        return None
    names = sorted(settings)
    combos = list(itertools.product(*(settings[n].choices for n in names)))
    if len(combos) > ENUMERABLE:
        return None
    done = {tuple(p.get(n, _UNSET) for n in names) for p in ran}
    return [dict(zip(names, c)) for c in combos if c not in done]


def untried_draw(trials: Sequence[optuna.trial.FrozenTrial], gone: set[str], rng: np.random.Generator) -> dict:
    """``search.untried_draws``: a random trial's settings, drawn uniformly among the
    configurations no trial in ``trials`` has run (or is running), never on a backbone in
    ``gone``: random search without replacement, as the uniform-random baseline of
    docs/performance.md draws. The space is :func:`untried_configurations`'. A strategy no
    trial has run yet weighs as much as the average strategy run so far (its settings are
    drawn at random when it runs). {} (the trial is drawn at random) when there is no such
    space (see there) or every configuration has run."""
    left = untried_configurations(trials, gone)
    if not left or not left[0]:
        return {}
    plans, weights = left
    return plans[int(rng.choice(len(plans), p=np.asarray(weights) / sum(weights)))]


RAN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)


def space_exhausted(trials: Sequence[optuna.trial.FrozenTrial], gone: set[str]) -> int | None:
    """The number of configurations in the space the search keeps (:func:`untried_configurations`,
    without the backbones in ``gone``) when every one of them has a trial that finished,
    was pruned or is running, and no trial waits (an enqueued recipe, portfolio entry or
    retry); else None. A further trial could only train one of them again, as Optuna's
    GridSampler and BruteForceSampler stop a study then. A failed trial does not count:
    its configuration may be drawn again."""
    last = next((t for t in reversed(trials) if t.state != optuna.trial.TrialState.WAITING), None)
    if last is None or any(_values(d) is None for d in last.distributions.values()):
        return None  # a continuous range (the common case, answered without reading every trial)
    if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
        return None
    left = untried_configurations(trials, gone, ran_states=RAN)
    if left is None or left[0]:
        return None
    return len({_frozen(t.params) for t in trials if t.state in RAN and t.params.get("backbone") not in gone})


def untried_configurations(
    trials: Sequence[optuna.trial.FrozenTrial], gone: set[str], ran_states: Sequence | None = None
) -> tuple[list[dict], list[int]] | None:
    """The configurations of the space the trials show that no trial has run, with their
    weights: ([], []) when every one has run, None when the space cannot be listed. The
    space: every backbone (but those in ``gone``) and strategy choice, each strategy's
    settings (``strategy.name``), each backbone's searched options (``backbone.name``) and
    the searched training settings, every one a list of choices or a stepped range. A
    strategy no trial has run yet is one entry (its settings unknown), weighing as much as
    the average strategy run so far. None: no trial has run, a setting is a continuous
    range, or the space holds more than ENUMERABLE configurations. ``ran_states``: the
    states of a trial that has run (default: every state but WAITING)."""
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    ran: set[tuple] = set()
    shown: set = set()  # strategies some trial ran: their settings are known
    for t in trials:
        if t.state != optuna.trial.TrialState.WAITING:
            dists.update(t.distributions)
            shown.add(t.params.get("strategy", _UNSET))
            if ran_states is None or t.state in ran_states:
                ran.add(_frozen(t.params))
    values = {n: _values(d) for n, d in dists.items() if n not in ("backbone", "strategy")}
    if not dists or any(v is None for v in values.values()):
        return None
    all_backbones, strategies = _choices(dists, "backbone"), _choices(dists, "strategy")
    owner = {n: _owner(n, all_backbones + strategies) for n in values}  # _UNSET: every trial's (training)
    groups = []  # (backbone, strategy, the settings listed for it)
    for b, s in itertools.product([c for c in all_backbones if c not in gone], strategies):
        groups.append((b, s, [n for n, o in owner.items() if o is _UNSET or o == b or (o == s and o in shown)]))
    sizes = [math.prod(len(values[n]) for n in names) for _, _, names in groups]
    known = [size for (_, s, _), size in zip(groups, sizes) if s in shown]
    average = max(1, round(sum(known) / len(known))) if known else 1
    if sum(size if s in shown else average for (_, s, _), size in zip(groups, sizes)) > ENUMERABLE:
        return None
    plans, weights = [], []
    for b, s, names in groups:
        head = {k: v for k, v in (("backbone", b), ("strategy", s)) if v is not _UNSET}
        if s not in shown:  # its settings are unknown: one plan, as heavy as an average group
            plans.append(head)
            weights.append(average)
            continue
        for combo in itertools.product(*(values[n] for n in names)):
            plan = {**head, **dict(zip(names, combo))}
            if _frozen(plan) not in ran:
                plans.append(plan)
                weights.append(1)
    return plans, weights


def _frozen(params: dict) -> tuple:
    """``params`` as a key (a stepped float compared to 12 significant digits: as drawn and as listed)."""
    return tuple(sorted((k, float(f"{v:.12g}") if isinstance(v, float) else v) for k, v in params.items()))


def _choices(dists: dict, name: str) -> list:
    """The choices of the categorical ``name`` (backbone, strategy); [_UNSET] when the space has none."""
    dist = dists.get(name)
    return list(dist.choices) if isinstance(dist, optuna.distributions.CategoricalDistribution) else [_UNSET]


def _owner(name: str, keys: list):
    """The backbone or strategy whose setting ``name`` is (the longest key it starts with,
    then a dot), or _UNSET: a setting of every trial (the searched training settings)."""
    owners = [k for k in keys if isinstance(k, str) and name.startswith(f"{k}.")]
    return max(owners, key=len) if owners else _UNSET


def _values(dist) -> list | None:
    """Every value of ``dist``, or None when they are not a list of at most ENUMERABLE (a continuous range)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        count = (dist.high - dist.low) // dist.step + 1
        return list(range(dist.low, dist.high + 1, dist.step)) if count <= ENUMERABLE else None
    if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is not None:
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(count)] if count <= ENUMERABLE else None
    return None
