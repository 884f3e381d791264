"""The Optuna search: one study per dataset over backbone, strategy and their parameters.

:func:`plan` checks a benchmark against the loaded plugins (names, options,
search ranges) before any compute; :func:`run` runs and resumes the studies.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import difflib
import functools
import json
import math
import numbers
import os
import platform
import queue
import random
import re
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tlbench import interrupts
from tlbench.config import BackboneEntry, Benchmark, DatasetEntry, StrategyEntry
from tlbench.plugins import Registry
from tlbench.splits import subsample
from tlbench.types import (
    Adapted,
    Backbone,
    BackboneRequest,
    BuiltBackbone,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Phase,
    Strategy,
    UserError,
)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


# --------------------------------------------------------------------------- search space


class Space:
    """What a strategy's ``suggest`` draws from: Optuna define-by-run, names prefixed.

    A spec is a fixed value, ``[low, high]`` (ints: an int range), a mapping
    ``{low, high, log, step}``, ``{choices: [...]}``, or a list of other than two
    values (choices). Numeric strings such as ``"1e-3"`` (YAML reads those as
    text) count as numbers.
    """

    def __init__(self, trial: optuna.Trial | None, prefix: str, where: str, corner: int | None = None):
        self.trial, self.prefix, self.where = trial, prefix, where
        self._at = f"{where}: " if where else ""  # error prefix ("" where the caller names the place)
        self.values: dict[str, Any] = {}  # every value handed out, fixed ones too
        self.searched: list[str] = []  # names Optuna samples (without the prefix)
        self.result: Any = None  # what the suggest function returned (dry runs keep it)
        # corner k: no sampling; ranges give their low (k even) or high (k odd) end, choices choice k
        self.corner = corner
        self.widest = 2  # the most choices any searched value has (how many corners cover them all)

    def suggest(self, name: str, spec: Any, *, log: bool = False) -> Any:
        for text in _strings(spec):
            if _DECIMAL_COMMA.match(text):
                raise UserError(f"{self._at}{name}: {text!r} is not a number; write {text.replace(',', '.')} (a decimal point)")
        value = self._suggest(name, _numbers(spec), log)
        self.values[name] = value
        return value

    def _suggest(self, name: str, spec: Any, log: bool) -> Any:
        key = self.prefix + name
        if isinstance(spec, list) and len(spec) == 2 and all(_is_number(v) for v in spec):
            spec = {"low": spec[0], "high": spec[1]}
        elif isinstance(spec, list):
            spec = {"choices": spec}
        if not isinstance(spec, dict):
            return spec
        self.searched.append(name)
        try:
            if self.corner is not None:
                return self._corner(spec, log)
            if "choices" in spec:
                return self.trial.suggest_categorical(key, list(spec["choices"]))
            low, high, log = spec["low"], spec["high"], bool(spec.get("log", log))
            if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
                return self.trial.suggest_int(key, low, high, log=log, step=spec.get("step", 1))
            return self.trial.suggest_float(key, float(low), float(high), log=log, step=spec.get("step"))
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{self._at}{name}: bad search range {spec!r}: {exc}") from exc


    def _corner(self, spec: dict, log: bool) -> Any:
        """The value at this space's corner, after Optuna's own checks of the spec."""
        probe = optuna.create_study().ask()  # validates the range as a real trial would
        if "choices" in spec:
            choices = list(spec["choices"])
            probe.suggest_categorical("x", choices)
            self.widest = max(self.widest, len(choices))
            return choices[self.corner % len(choices)]
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", log))
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            probe.suggest_int("x", low, high, log=log, step=spec.get("step", 1))
            step = spec.get("step", 1)
            return low if self.corner % 2 == 0 else low + (high - low) // step * step
        probe.suggest_float("x", float(low), float(high), log=log, step=spec.get("step"))
        return float(low) if self.corner % 2 == 0 else float(high)


_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d*,\d+([eE][+-]?\d+)?\s*$")


def _strings(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list):
        return [v for v in spec if isinstance(v, str)]
    if isinstance(spec, dict):
        return [v for k, v in spec.items() if isinstance(v, str) and k in ("low", "high", "step")]
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(spec: Any) -> Any:
    if isinstance(spec, str):
        try:
            return float(spec)
        except ValueError:
            return spec
    if isinstance(spec, list):
        return [_numbers(v) for v in spec]
    if isinstance(spec, dict):
        return {k: _numbers(v) if k in ("low", "high", "step") else v for k, v in spec.items()}
    return spec


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedBackbone:
    entry: BackboneEntry
    record: Backbone
    model: str  # model name passed to the record's build
    weights: Path | None  # resolved weights file
    plugin: str = "?"  # the plugin that provides the record, for error messages


@dataclass(frozen=True)
class PlannedStrategy:
    entry: StrategyEntry
    record: Strategy
    options: dict[str, Any]  # the record's defaults overridden by the config
    searched: tuple[str, ...]  # parameter names Optuna samples
    plugin: str = "?"  # the plugin that provides the record, for error messages


@dataclass(frozen=True)
class Plan:
    """A benchmark checked against the plugins: everything :func:`run` needs."""

    bench: Benchmark
    base_dir: Path
    datasets: tuple[tuple[DatasetEntry, Dataset], ...]
    backbones: dict[str, PlannedBackbone]  # by key
    strategies: dict[str, PlannedStrategy]  # by key
    training_searched: tuple[str, ...]  # batch_size / weight_decay if searched
    dataset_plugins: Mapping[str, str] = dataclasses.field(default_factory=dict)  # dataset key -> its plugin


def plan(bench: Benchmark, registry: Registry, base_dir: Path) -> Plan:
    """Resolve every name and check every option and range; raises UserError."""
    datasets = tuple((e, _at(f"datasets[{i}]", lambda e=e: _dataset(registry, e))) for i, e in enumerate(bench.datasets))
    backbones = {
        e.key: _at(f"backbones[{i}]", lambda e=e: _backbone(registry, e, base_dir)) for i, e in enumerate(bench.backbones)
    }
    strategies = {
        e.key: _at(f"strategies[{i}] ({e.name})", lambda e=e: _strategy(registry, e))
        for i, e in enumerate(bench.strategies)
    }
    for kind, entries in (("datasets", bench.datasets), ("backbones", bench.backbones), ("strategies", bench.strategies)):
        keys = [e.key for e in entries]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise UserError(f"{kind}: '{dupes[0]}' appears twice; give one of them a distinct 'label:'")
    training = _dry_run(lambda space: _suggest_training(space, bench), "training")
    dataset_plugins = {e.key: registry.plugin_of(record) for e, record in datasets}
    result = Plan(bench, base_dir, datasets, backbones, strategies, tuple(training.searched), dataset_plugins)
    for i, recipe in enumerate(bench.search.enqueue):
        _at(f"search.enqueue[{i}]", lambda r=recipe: check_recipe(result, recipe_params(result, r.backbone, r.strategy, r.params)))
    return result


def check_recipe(p: Plan, params: dict[str, Any]) -> None:
    """A recipe's values checked the way a trial draws them: each must lie in the range or
    choices the config searches (Optuna would only warn, and run a value the search
    never allows), and the strategy's phases must accept them."""
    distributions = _draw(p, params["strategy"], None).distributions
    for name, value in params.items():
        distribution = distributions.get(name)
        try:
            ok = distribution is not None and distribution._contains(distribution.to_internal_repr(value))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            short = name.partition(".")[2] or name
            raise UserError(f"params.{short}: {value!r} is not among the values the config searches ({_searched_values(distribution)})")
    trial = _draw(p, params["strategy"], params)
    _check_phases(list(p.strategies[params["strategy"]].record.phases(trial.values, 4)))


def _draw(p: Plan, strategy_key: str, fixed: dict[str, Any] | None):
    """A throwaway trial that draws what an Objective draws for ``strategy_key``
    (``fixed``: with those values enqueued); its ``values`` are the strategy's params."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    if fixed is not None:
        study.enqueue_trial(fixed)
    trial = study.ask()
    strategy = p.strategies[strategy_key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna's "out of range": check_recipe reports it as an error
        trial.suggest_categorical("backbone", list(p.backbones))
        trial.suggest_categorical("strategy", list(p.strategies))
        trial.values = strategy.record.suggest(Space(trial, f"{strategy_key}.", ""), strategy.options)
        _suggest_training(Space(trial, "", "training"), p.bench)
    return trial


def _searched_values(distribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return "choices " + ", ".join(map(repr, distribution.choices))
    if distribution is None:
        return "none"
    return f"{distribution.low}..{distribution.high}" + (" on a log scale" * bool(getattr(distribution, "log", False)))


def _at(where: str, fn):
    try:
        return fn()
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc


def _dataset(registry: Registry, entry: DatasetEntry) -> Dataset:
    record = registry.dataset(entry.name)
    _check_options(entry.name, entry.options, record.options)
    return record


def _check_options(name: str, given: Mapping[str, Any], accepted: Mapping[str, Any]) -> None:
    for key, value in given.items():
        if value is None and key in accepted:
            raise UserError(f"{key}: no value (the line ends after the colon); give a value or remove the line")
        if key not in accepted:
            hint = difflib.get_close_matches(key, list(accepted), n=1)
            known = f"did you mean '{hint[0]}'?" if hint else f"{name} accepts: {', '.join(accepted) or 'none'}"
            raise UserError(f"{key}: unknown option; {known}")


def plugin_call(plugin: str, what: str, fn):
    """Call plugin code. A UserError passes through; any other exception is the plugin's
    fault, and becomes one line naming the plugin and the record (``-v``: the traceback)."""
    try:
        return fn()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"plugin {plugin}: {what} raised {type(exc).__name__}: {exc}") from exc


def _backbone(registry: Registry, entry: BackboneEntry, base_dir: Path) -> PlannedBackbone:
    record, model = registry.backbone(entry.name)
    weights = None
    if entry.weights is not None:
        weights = Path(entry.weights).expanduser()
        weights = weights if weights.is_absolute() else base_dir / weights
        if not weights.is_file():
            raise UserError(f"weights: file {weights} does not exist; fix the path or remove 'weights:'")
    return PlannedBackbone(entry, record, model, weights, registry.plugin_of(record))


def _strategy(registry: Registry, entry: StrategyEntry) -> PlannedStrategy:
    record = registry.strategy(entry.name)
    plugin = registry.plugin_of(record)
    _check_options(entry.name, entry.options, record.options)
    options = {**record.options, **entry.options}
    suggest = lambda s: plugin_call(plugin, f"strategy '{record.name}': suggest()", lambda: record.suggest(s, options))  # noqa: E731
    space = _dry_run(suggest, "")
    for params in [space.result, *corners(suggest)]:  # a random draw, then both ends of every range and every choice
        if not isinstance(params, Mapping):
            raise UserError(f"plugin {plugin}: strategy '{record.name}': suggest() returned {type(params).__name__}, expected a dict")
        try:
            phases = list(record.phases(params, 4))
        except UserError:
            raise
        except Exception as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise UserError(f"the options give parameters its phases reject ({shown}): {type(exc).__name__}: {exc}") from exc
        _check_phases(phases)
    return PlannedStrategy(entry, record, options, tuple(space.searched), plugin)


def corners(suggest) -> list[Any]:
    """What ``suggest`` returns at the corners of its space: every range at its low and
    at its high end, and every choice of every categorical value at least once."""
    out, k, widest = [], 0, 2
    while k < min(widest, 16):
        space = Space(None, "", "", corner=k)
        out.append(suggest(space))
        widest, k = max(widest, space.widest), k + 1
    return out


def _check_phases(phases: list[Phase], n_groups: int = 4) -> None:
    for phase in phases:
        problem = phase_problem(phase, n_groups)
        if problem:
            raise UserError(problem)
    if not any(p.epochs > 0 for p in phases):
        raise UserError("no phase has epochs > 0; set epochs to 1 or more")


def phase_problem(phase: Any, n_groups: int) -> str | None:
    """What is wrong with one phase a strategy returned for a backbone of ``n_groups`` groups, or None."""
    if not isinstance(phase, Phase):
        return f"phases() returned {type(phase).__name__}, expected tlbench.types.Phase"
    if not isinstance(phase.epochs, int) or isinstance(phase.epochs, bool) or phase.epochs < 0:
        return f"phase {phase.name}: epochs must be a whole number >= 0, got {phase.epochs!r}"
    frozen = phase.frozen_groups
    if not isinstance(frozen, int) or isinstance(frozen, bool) or not 0 <= frozen <= n_groups:
        return f"phase {phase.name}: frozen_groups must be 0..{n_groups} for a backbone of {n_groups} groups, got {frozen!r}"
    for field in ("lr_backbone", "lr_head"):
        lr = getattr(phase, field)
        if not _is_number(lr) or not math.isfinite(lr) or lr < 0:
            return f"phase {phase.name}: {field} must be a finite number >= 0, got {lr!r}"
    return None


def _dry_run(fn, where: str) -> Space:
    """Run a suggest function on a throwaway in-memory trial, to check its ranges
    (its return value is kept as ``space.result``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = Space(optuna.create_study().ask(), "", where)
    space.result = fn(space)
    return space


def _suggest_training(space: Space, bench: Benchmark) -> dict[str, Any]:
    values = {
        "batch_size": space.suggest("batch_size", bench.training.batch_size),
        "weight_decay": space.suggest("weight_decay", bench.training.weight_decay, log=True),
    }
    if not isinstance(values["batch_size"], int) or values["batch_size"] < 1:
        raise UserError(f"training.batch_size: expected a whole number >= 1, got {values['batch_size']!r}")
    if not _is_number(values["weight_decay"]) or values["weight_decay"] < 0:
        raise UserError(f"training.weight_decay: expected a number >= 0, got {values['weight_decay']!r}")
    return values


def recipe_params(p: Plan, backbone: str, strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna parameters that fix a recipe: trial params are named ``<strategy key>.<name>``."""
    for kind, key, table in (("backbone", backbone, p.backbones), ("strategy", strategy, p.strategies)):
        if key not in table:
            raise UserError(f"{kind}: '{key}' is not in this config's {kind} list ({', '.join(table)})")
    out: dict[str, Any] = {"backbone": backbone, "strategy": strategy}
    searched = p.strategies[strategy].searched
    for name, value in params.items():
        if name in p.training_searched:
            out[name] = _numbers(value)
        elif name in searched:
            out[f"{strategy}.{name}"] = _numbers(value)
        else:
            raise UserError(
                f"params.{name}: not a searched parameter of {strategy}; searched: {', '.join(searched + p.training_searched)}"
            )
    return out


# --------------------------------------------------------------------------- data


def load_splits(entry: DatasetEntry, record: Dataset, seed: int, base_dir: Path, plugin: str = "?") -> DatasetSplits:
    """Load a dataset, apply the config's subsampling, and check that the splits are disjoint."""
    request = DatasetRequest(options=entry.options, seed=seed, base_dir=base_dir)
    what = f"dataset '{record.name}': load()"
    splits = plugin_call(plugin, what, lambda: record.load(request))
    if not isinstance(splits, DatasetSplits):
        raise UserError(f"plugin {plugin}: {what} returned {type(splits).__name__}, expected tlbench.types.DatasetSplits")
    _check_labels(plugin, what, splits)
    caps = {"train": (entry.train_samples, entry.per_class), "val": (entry.val_samples, None), "test": (entry.test_samples, None)}
    parts = {}
    for name, (total, per_class) in caps.items():
        split = getattr(splits, name)
        parts[name] = split.subset(subsample(split.labels, total, per_class, seed)) if total or per_class else split
        if len(parts[name]) == 0:
            raise UserError(f"dataset {entry.key}: the {name} split is empty; add images or lower the held-out fractions")
    if len(parts["train"]) < 2:
        raise UserError(
            f"dataset {entry.key}: the train split has {len(parts['train'])} example; training needs at least 2, add images"
        )
    _check_disjoint(entry.key, parts)
    return DatasetSplits(classes=splits.classes, **parts)


def _check_labels(plugin: str, what: str, splits: DatasetSplits) -> None:
    """Every label is a class index: 0..len(classes)-1, a whole number (a plugin bug
    otherwise, found before training instead of as a crash in the loss)."""
    n = len(splits.classes)
    if n < 2:
        raise UserError(f"plugin {plugin}: {what} returned {n} class(es); a classifier needs at least 2")
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        if len(split.labels) != len(split.ids):
            raise UserError(f"plugin {plugin}: {what}: {name} has {len(split.labels)} labels for {len(split.ids)} ids")
        bad = next(
            (label for label in split.labels if not isinstance(label, numbers.Integral) or isinstance(label, bool) or not 0 <= label < n),
            None,
        )
        if bad is not None:
            raise UserError(f"plugin {plugin}: {what}: {name} has label {bad!r}, but there are {n} classes (labels 0..{n - 1})")


def _check_disjoint(key: str, parts: Mapping[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, split in parts.items():
        for example in split.ids:
            if seen.setdefault(example, name) != name:
                raise UserError(f"dataset {key}: example {example} is in both {seen[example]} and {name}; the splits must be disjoint")


def build_backbone(b: PlannedBackbone, num_classes: int) -> BuiltBackbone:
    """Build, and check that groups and head cover every parameter exactly once."""
    request = BackboneRequest(model=b.model, num_classes=num_classes, pretrained=b.entry.pretrained, weights=b.weights)
    what = f"backbone '{b.entry.name}': build()"
    built = plugin_call(b.plugin, what, lambda: b.record.build(request))
    problem = built_problem(built)
    if problem:
        raise UserError(f"plugin {b.plugin}: {what} {problem}")
    return built


def built_problem(built: Any) -> str | None:
    """What is wrong with a BuiltBackbone, or None: the model's parameters must be
    named by groups and head exactly once."""
    if not isinstance(built, BuiltBackbone):
        return f"returned {type(built).__name__}, expected tlbench.types.BuiltBackbone"
    names = [n for group in built.groups for n in group] + list(built.head)
    params = [n for n, _ in built.model.named_parameters()]
    if sorted(names) != sorted(params):
        missing, extra = set(params) - set(names), set(names) - set(params)
        repeated = sorted({n for n in names if names.count(n) > 1})
        return (
            "returned groups + head that do not name every parameter exactly once "
            f"(missing {sorted(missing)[:3]}, unknown {sorted(extra)[:3]}, repeated {repeated[:3]})"
        )
    if not built.head:
        return "returned an empty head: name the new classifier's parameters in head"
    return None


def adapt(s: PlannedStrategy, built: BuiltBackbone, params: Mapping[str, Any]) -> Adapted:
    """The strategy's ``adapt`` applied to a freshly built backbone (or the backbone
    unchanged), checked: every parameter still named once, trainable names real."""
    if s.record.adapt is None:
        return Adapted(built=built)
    what = f"strategy '{s.record.name}': adapt()"
    adapted = plugin_call(s.plugin, what, lambda: s.record.adapt(built, params))
    if not isinstance(adapted, Adapted):
        raise UserError(f"plugin {s.plugin}: {what} returned {type(adapted).__name__}, expected tlbench.types.Adapted")
    problem = built_problem(adapted.built)
    if problem:
        raise UserError(f"plugin {s.plugin}: {what} {problem}")
    if isinstance(adapted.trainable, str) or not all(isinstance(n, str) for n in adapted.trainable):
        raise UserError(f"plugin {s.plugin}: {what} returned trainable={adapted.trainable!r}; give a tuple of parameter names")
    known = {n for n, _ in adapted.built.model.named_parameters()}
    unknown = [n for n in adapted.trainable if n not in known]
    if unknown:
        raise UserError(f"plugin {s.plugin}: {what} returned trainable names that are no parameters: {unknown[:3]}")
    return adapted


# --------------------------------------------------------------------------- run


class Progress:
    """What the search tells the user; the CLI passes a rich or a plain-text one.

    With several devices, trials run in parallel threads: implementations must
    be thread-safe and tell trials apart by number.
    """

    def study_started(self, dataset: str, done: int, total: int | None) -> None: ...
    def trial_started(self, number: int, summary: str, epochs: int) -> None: ...
    def epoch_done(self, number: int, epoch: int, val_accuracy: float) -> None: ...
    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None: ...
    def trial_recovered(self, dataset: str, number: int, retried: bool) -> None: ...
    def study_finished(self, dataset: str) -> None: ...


def study_name(bench: Benchmark, dataset_key: str) -> str:
    return f"{bench.name}/{bench.run_name}/{dataset_key}"


def preflight(p: Plan) -> dict[str, DatasetSplits]:
    """Load every dataset and build every backbone once, before any compute is spent:
    folders, files, weights and devices are real, the cache folder usable, one batch
    fits in memory. ``validate`` and the start of ``run`` and ``worker`` both call it,
    so a config validate accepts does not fail later on a check it could have made.
    Returns the splits by dataset key."""
    from tlbench import features, train

    devices = train.pick_devices(p.bench.training.device)
    check_storage_url(p.bench.search.storage)
    folder = cache_dir(p)
    if folder is not None:
        features.DiskFolder(folder / features.CACHE_SUBFOLDER).check()
        check_writable(folder, "training.cache.dir")
    results_root = Path(p.bench.results_dir).expanduser()
    check_writable(_relative(results_root, p.base_dir), "results_dir")
    loaded = {}
    for i, (entry, record) in enumerate(p.datasets):
        plugin = p.dataset_plugins.get(entry.key, "?")
        loaded[entry.key] = _at(f"datasets[{i}] ({entry.key})", lambda: load_splits(entry, record, p.bench.seed, p.base_dir, plugin))
    built = {key: _at(f"backbones[{i}]", lambda: build_backbone(b, 2)) for i, (key, b) in enumerate(p.backbones.items())}
    for i, (key, strategy) in enumerate(p.strategies.items()):
        params = _dry_run(lambda s: strategy.record.suggest(s, strategy.options), key).result
        for bkey, model in built.items():
            if strategy.record.adapt is not None:  # it changes the model: try it on every backbone now (on a copy)
                _at(f"strategies[{i}] ({key}) on {bkey}", lambda: adapt(strategy, copy.deepcopy(model), params))
            _at(f"strategies[{i}] ({key}) on {bkey}", lambda: _check_phases(strategy_phases(strategy, params, len(model.groups)), len(model.groups)))
    for key, model in built.items():
        _at(f"backbones ({key})", lambda: check_memory(p, p.backbones[key], model, devices[0]))
    return loaded


def check_writable(folder: Path, field: str) -> None:
    """``folder`` is a folder tlbench can create files in, or can be created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{field}: {existing} is a file, not a folder; set {field} to a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{field}: cannot write in {existing} (permission denied); set {field} to a writable folder")


def strategy_phases(strategy: PlannedStrategy, params: Mapping[str, Any], n_groups: int) -> list[Phase]:
    """The strategy's phases for a backbone of ``n_groups`` groups (plugin errors named)."""
    what = f"strategy '{strategy.record.name}': phases()"
    phases = plugin_call(strategy.plugin, what, lambda: strategy.record.phases(params, n_groups))
    try:
        return list(phases)
    except TypeError as exc:
        raise UserError(f"plugin {strategy.plugin}: {what} returned {type(phases).__name__}, expected a list of Phase") from exc


def check_memory(p: Plan, backbone: PlannedBackbone, built: BuiltBackbone, device) -> None:
    """Refuse a resolution and batch size whose activations cannot fit the device.

    Activations grow with the pixels of the input: one forward pass at a small side
    ``r0`` is measured (the bytes every module outputs), scaled by (r / r0)^2 and the
    largest batch size, and doubled for the gradients of training. An estimate, meant
    to stop a 100,000-pixel typo, not to predict peak memory to the megabyte."""
    from tlbench import cost

    resolution = backbone.entry.resolution or p.bench.training.resolution or built.data_config.input_size
    batch = max(_batch_sizes(p.bench.training.batch_size))
    probe = min(resolution, 64)
    per_image = cost.activation_bytes(built.model, probe) * (resolution / probe) ** 2
    need = 2 * batch * (per_image + 3 * 4 * resolution**2)
    have = cost.available_memory(device)
    if have is not None and need > have:
        raise UserError(
            f"resolution {resolution} px with batch_size {batch} needs about {need / 2**30:.1f} GiB for one training "
            f"batch, more than the {have / 2**30:.1f} GiB available on {device}; lower training.resolution or batch_size"
        )


def _batch_sizes(spec: Any) -> list[int]:
    """Every batch size a training.batch_size spec can give (its bounds or choices)."""
    spec = _numbers(spec)
    if isinstance(spec, dict):
        spec = [*spec.get("choices", []), spec.get("low"), spec.get("high")]
    values = spec if isinstance(spec, list) else [spec]
    return [int(v) for v in values if _is_number(v)] or [1]


class Shared:
    """What trials of one invocation share: the devices (one trial each at a time),
    architecture-only costs measured once, and the frozen-prefix feature cache.
    Pass the same one to :func:`run` and :func:`run_repeats`."""

    def __init__(self, p: Plan, splits: dict[str, DatasetSplits]):
        from tlbench import features, train

        self.devices = train.pick_devices(p.bench.training.device)
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for device in self.devices:
            self.free.put(device)
        self.measured: dict = {}
        self.lock = threading.Lock()
        c = p.bench.training.cache
        self.cache = features.FeatureCache(c.memory_mb, cache_dir(p), c.disk_mb) if c.enabled else None
        self.data_keys = {
            entry.key: features.data_fingerprint(
                json.dumps([entry.model_dump(mode="json"), p.bench.seed], sort_keys=True),
                {name: getattr(splits[entry.key], name).ids for name in ("train", "val", "test")},
                {name: getattr(splits[entry.key], name).labels for name in ("train", "val", "test")},
            )
            for entry, _ in p.datasets
            if entry.key in splits
        }

    def measure(self, key, fn):
        """``fn()`` the first time ``key`` is asked for, its stored value afterwards."""
        with self.lock:
            if key in self.measured:
                return self.measured[key]
        value = fn()
        with self.lock:
            return self.measured.setdefault(key, value)

    @contextlib.contextmanager
    def device(self):
        device = self.free.get()
        try:
            yield device
        finally:
            self.free.put(device)


def cache_dir(p: Plan) -> Path | None:
    """``training.cache.dir`` resolved against the config's folder (None: memory only)."""
    c = p.bench.training.cache
    return None if c.dir is None or not c.enabled else _relative(Path(c.dir).expanduser(), p.base_dir)


def _relative(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


def run(
    p: Plan,
    splits: dict[str, DatasetSplits],
    storage: optuna.storages.BaseStorage,
    progress: Progress,
    on_trial=lambda: None,
    shared: Shared | None = None,
    recover: bool = False,
    should_stop=lambda: False,
) -> None:
    """Run (or resume, or join) one study per dataset until each has ``n_trials`` trials.

    ``recover``: this process is the only one using the storage, so a trial
    found RUNNING was interrupted (the process was killed): it is marked failed
    and its configuration retried once (see :func:`recover_interrupted`).
    Otherwise other workers may be running trials of the same studies: each
    process stops when the study has its trials (see :func:`budget`).

    With several devices, as many trials run at once (Optuna's ``n_jobs``),
    each on a device of its own. ``should_stop()`` is asked after each trial.
    """
    from tlbench import train

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by progress, once
    shared = Shared(p, splits) if shared is None else shared
    total = p.bench.search.n_trials
    for entry, _ in p.datasets:
        if should_stop():
            return
        study = open_study(p, entry.key, storage, alone=recover)
        if recover:
            recover_interrupted(study, storage, progress, entry.key, p.bench.search.retries)
        done = sum(t.state in FINISHED for t in budget(study.get_trials(deepcopy=False)))
        if total is not None and _started(study) >= total:
            continue  # finished, or the last trials are running in other workers

        def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            progress.trial_finished(trial)
            on_trial()
            interrupts.check()
            if should_stop() or (total is not None and _started(study) >= total):
                study.stop()

        progress.study_started(entry.key, done, total)
        try:
            study.optimize(
                Objective(p, splits[entry.key], entry.key, progress, shared),
                n_trials=None if total is None else total - done,  # at most: other workers may take some
                timeout=p.bench.search.timeout,
                n_jobs=len(shared.devices),
                catch=(train.TrialFailed,),
                callbacks=[finished],
            )
        finally:
            progress.study_finished(entry.key)
        if should_stop():
            return


def _started(study: optuna.Study) -> int:
    """Trials of the budget that are running or finished (enqueued ones still wait for a worker)."""
    return sum(t.state != optuna.trial.TrialState.WAITING for t in budget(study.get_trials(deepcopy=False)))


def budget(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards ``n_trials``: all but surplus trials (see
    :meth:`Objective.surplus`) and interrupted trials that were retried (their retry counts)."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if not t.user_attrs.get(SURPLUS) and t.number not in retried]


def derived_seed(seed: int, offset: int) -> int:
    """``seed + offset`` within numpy's 0..2**32-1 (the config's seed may be its maximum)."""
    return (seed + offset) % 2**32


REPEAT_SEED = 1_000_000  # repeat r trains with seed bench.seed + REPEAT_SEED + r, apart from search trials


def run_repeats(
    p: Plan,
    splits: dict[str, DatasetSplits],
    storage,
    selected: dict[str, list[int]],
    progress: Progress,
    on_trial=lambda: None,
    shared: Shared | None = None,
    recover: bool = False,
) -> None:
    """Retrain each selected trial's configuration with ``bench.repeats`` new seeds:
    :func:`enqueue_repeats`, then :func:`work_repeats` in this process."""
    enqueue_repeats(p, storage, selected, progress, recover)
    work_repeats(p, splits, storage, progress, on_trial, shared)


def enqueue_repeats(p: Plan, storage, selected: dict[str, list[int]], progress: Progress, recover: bool = False) -> int:
    """Enqueue the missing seed repeats of the selected trials; returns how many.

    ``selected`` maps a dataset key to trial numbers of its search study. The
    repeats live in a study of their own (``<study>/repeats``), one trial per
    (selected trial, seed); running again adds only the missing ones. Only the
    coordinating ``tlbench run`` calls this; workers run what it enqueued.
    """
    added = 0
    for key, numbers in selected.items():
        search_study = optuna.load_study(study_name=study_name(p.bench, key), storage=storage)
        study = optuna.create_study(
            storage=storage, study_name=repeats_study_name(p.bench, key), direction="maximize", load_if_exists=True
        )
        if recover:  # the interrupted repeat is missing, so it is enqueued again below
            recover_interrupted(study, storage, progress, f"{key} repeats", retries=None)
        trials = study.get_trials(deepcopy=False)
        lost = lost_trials(study)
        done, stopped, last = set(), collections.Counter(), {}
        for t in trials:
            if t.user_attrs.get(SURPLUS):
                continue
            which = (t.user_attrs.get("repeat_of"), t.user_attrs.get("repeat"))
            if fail_reason(t, lost).startswith(INTERRUPTED):
                stopped[which] += 1  # missing: runs again while it has retries left
                last[which] = t.number
            else:
                done.add(which)
        retries = p.bench.search.retries
        wanted = [(n, r) for n in numbers for r in range(p.bench.repeats) if (n, r) not in done]
        missing = [which for which in wanted if stopped[which] <= retries]
        for which in set(wanted) - set(missing):
            if f"{GAVE_UP}{last[which]}" not in study.user_attrs:
                note = f"out of retries: interrupted {stopped[which]} times (search.retries = {retries})"
                study.set_user_attr(f"{GAVE_UP}{last[which]}", note)
        for number, r in missing:
            attrs = {"recipe": True, "repeat_of": number, "repeat": r, "seed": derived_seed(p.bench.seed, REPEAT_SEED + r)}
            study.enqueue_trial(search_study.trials[number].params, user_attrs=attrs)
        added += len(missing)
    return added


def work_repeats(
    p: Plan,
    splits: dict[str, DatasetSplits],
    storage,
    progress: Progress,
    on_trial=lambda: None,
    shared: Shared | None = None,
    should_stop=lambda: False,
) -> None:
    """Run the enqueued repeats that no process has taken yet (with other workers, if any)."""
    from tlbench import train

    shared = Shared(p, splits) if shared is None else shared
    waiting = (optuna.trial.TrialState.WAITING,)
    for entry, _ in p.datasets:
        if should_stop():
            return
        try:
            study = optuna.load_study(study_name=repeats_study_name(p.bench, entry.key), storage=storage)
        except KeyError:
            continue
        left = len(study.get_trials(deepcopy=False, states=waiting))
        if not left:
            continue

        def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            progress.trial_finished(trial)
            on_trial()
            interrupts.check()
            if should_stop() or not study.get_trials(deepcopy=False, states=waiting):
                study.stop()

        progress.study_started(f"{entry.key} repeats", 0, left)
        try:
            study.optimize(
                Objective(p, splits[entry.key], entry.key, progress, shared, repeats=True),
                n_trials=left,
                n_jobs=len(shared.devices),
                catch=(train.TrialFailed,),
                callbacks=[finished],
            )
        finally:
            progress.study_finished(entry.key)
        if should_stop():
            return


RETRIED_ATTRS = ("recipe", "seed", "repeat_of", "repeat")  # what a retry keeps of the interrupted trial


INTERRUPTED = "interrupted"  # fail_reason prefix of trials a kill, Ctrl-C, SIGTERM or a lost worker stopped
SURPLUS = "surplus"  # user attr of a trial created after its study had all its trials (see Objective.surplus)
LOST = "lost:"  # study user attr prefix: "lost:<number>" -> why a trial without heartbeat was failed
GAVE_UP = "gave_up:"  # study user attr prefix: "gave_up:<number>" -> an interrupted trial out of retries


def fail_reason(trial: optuna.trial.FrozenTrial, lost: Mapping[int, str]) -> str:
    """Why a trial failed: its ``fail_reason`` attribute, or the study's record of a lost worker."""
    return str(trial.user_attrs.get("fail_reason") or lost.get(trial.number, ""))


def lost_trials(study: optuna.Study) -> dict[int, str]:
    """Trial number -> reason, for trials failed because their worker stopped sending heartbeats."""
    return {int(k[len(LOST) :]): v for k, v in study.user_attrs.items() if k.startswith(LOST)}


def gave_up(study: optuna.Study) -> dict[int, str]:
    """Trial number -> note, for interrupted trials whose configuration ran out of retries."""
    return {int(k[len(GAVE_UP) :]): v for k, v in study.user_attrs.items() if k.startswith(GAVE_UP)}


def attempt(trial: optuna.trial.FrozenTrial) -> int:
    """0 for a first run, k for its k-th retry."""
    return int(trial.user_attrs.get("attempt", 1 if "retry_of" in trial.user_attrs else 0))


def recover_interrupted(study: optuna.Study, storage, progress: Progress, where: str, retries: int | None = 1) -> list[int]:
    """Mark trials left RUNNING by a killed process as failed, and enqueue the parameters
    each interrupted trial (killed, stopped by Ctrl-C or SIGTERM, or lost by a worker)
    had drawn again, up to ``retries`` times per configuration, never twice for one
    trial (None: only mark them; the caller retries). Call only when no other process
    uses the study. Returns the numbers marked failed."""
    stale = fail_running(study, storage, f"{INTERRUPTED}: the process running it was killed")
    trials, lost = study.get_trials(deepcopy=False), lost_trials(study)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    stopped = [
        t for t in trials
        if t.state == optuna.trial.TrialState.FAIL and fail_reason(t, lost).startswith(INTERRUPTED)
        and t.number not in retried
    ]  # fmt: skip
    for t in stopped:
        again = retries is not None and _retry_or_give_up(study, t, retries)
        if t.number in stale or again:
            progress.trial_recovered(where, t.number, again)
    return stale


def _retry_or_give_up(study: optuna.Study, t: optuna.trial.FrozenTrial, retries: int) -> bool:
    """Enqueue ``t``'s configuration again if it has retries left; else record that it ran out."""
    if attempt(t) < retries:
        attrs = {k: t.user_attrs[k] for k in RETRIED_ATTRS if k in t.user_attrs}
        study.enqueue_trial(t.params, user_attrs=attrs | {"retry_of": t.number, "attempt": attempt(t) + 1})
        return True
    if f"{GAVE_UP}{t.number}" not in study.user_attrs:
        study.set_user_attr(f"{GAVE_UP}{t.number}", f"out of retries: interrupted {attempt(t) + 1} times (search.retries = {retries})")
    return False


def retry_lost(study: optuna.Study, trial: optuna.trial.FrozenTrial, retries: int = 1) -> None:
    """Optuna's heartbeat callback: ``trial``'s worker stopped sending heartbeats (killed,
    or its machine lost) and Optuna has just marked it failed, in exactly one worker.
    Record why (on the study: a failed trial is read-only) and retry it (``retries``)."""
    worker = trial.user_attrs.get("worker", "a worker")
    reason = f"{INTERRUPTED}: no heartbeat from {worker} (killed or lost)"
    study.set_user_attr(f"{LOST}{trial.number}", reason)
    trials = study.get_trials(deepcopy=False)
    again = not any(t.user_attrs.get("retry_of") == trial.number for t in trials) and _retry_or_give_up(study, trial, retries)
    print(
        f"tlbench: {study.study_name}: trial {trial.number} {reason}: marked failed" + (", retrying it" * again),
        file=sys.stderr,
    )


def fail_running(study: optuna.Study, storage, reason: str) -> list[int]:
    """Mark the study's RUNNING trials failed with ``reason``; only for a study no other process runs."""
    study_id = storage.get_study_id_from_name(study.study_name)
    numbers = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        numbers.append(t.number)
    return numbers


def fail_interrupted(p: Plan, storage) -> None:
    """After Ctrl-C or SIGTERM: a trial stopped before its objective ran (Optuna had created it) is
    still RUNNING; record it as interrupted like the others."""
    for entry, _ in p.datasets:
        for name in (study_name(p.bench, entry.key), repeats_study_name(p.bench, entry.key)):
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            fail_running(study, storage, f"{INTERRUPTED} by {interrupts.what()}")


def repeats_study_name(bench: Benchmark, dataset_key: str) -> str:
    return study_name(bench, dataset_key) + "/repeats"


def connect(url: str, heartbeat: int | None = None, retries: int = 1) -> optuna.storages.BaseStorage:
    """The Optuna storage behind ``url``; a URL that cannot be opened is a user error.

    ``heartbeat`` (seconds): for storages other processes share. Each running trial
    records a heartbeat that often; a trial silent for twice as long is failed by the
    next worker that starts a trial, and retried once (:func:`retry_lost`).
    """
    kwargs: dict[str, Any] = {}
    url = _driver_url(url)
    if url.startswith("sqlite"):  # several local processes: wait for the file lock rather than fail
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat is not None:
        callback = functools.partial(retry_lost, retries=retries)
        kwargs.update(heartbeat_interval=heartbeat, grace_period=2 * heartbeat, heartbeat_stale_trial_callback=callback)
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as exc:  # the database's driver
        extra = "postgres" if url.startswith("postgres") else "mysql" if url.startswith("mysql") else None
        fix = f"pip install 'tlbench[{extra}]'" if extra else "install the database driver SQLAlchemy names"
        raise UserError(f"search.storage: no database driver for {url}; {fix}") from exc
    except Exception as exc:  # bad URL, server down
        reason = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else ""
        raise UserError(f"search.storage: cannot open {url} ({type(exc).__name__}: {reason}); fix the URL or start the server") from exc


def check_storage_url(url: str | None) -> None:
    """What ``validate`` can know of a storage URL without connecting (connecting to a new
    database creates tables in it): it parses, names a database SQLAlchemy knows, and
    its driver is installed. Whether the server answers is known only at ``run``."""
    if url is None:
        return
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(_driver_url(url))
        parsed.get_dialect()
    except sqlalchemy.exc.ArgumentError as exc:
        raise UserError(f"search.storage: {url!r} is not a database URL; use e.g. postgresql://user@host/db or sqlite:///study.db") from exc
    except sqlalchemy.exc.NoSuchModuleError as exc:
        raise UserError(f"search.storage: {url}: SQLAlchemy knows no database '{url.partition(':')[0]}'; use postgresql, mysql or sqlite") from exc
    except ImportError as exc:
        extra = "postgres" if url.startswith("postgres") else "mysql" if url.startswith("mysql") else None
        fix = f"pip install 'tlbench[{extra}]'" if extra else "install the database driver SQLAlchemy names"
        raise UserError(f"search.storage: no database driver for {url}; {fix}") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database and not parsed.database.startswith("file:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise UserError(f"search.storage: folder {folder} of {url} does not exist; create it or fix the path")


def _driver_url(url: str) -> str:
    """The URL with the driver tlbench's extras install, whatever SQLAlchemy's default."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.partition("://")[2]
    if url.startswith("mysql://"):
        return "mysql+pymysql://" + url.partition("://")[2]
    return url


def _rdb_storage(url: str, kwargs: dict[str, Any], attempts: int = 5) -> optuna.storages.RDBStorage:
    """RDBStorage, which creates its tables on a new database. Workers starting at once
    race to create them, and PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic: the
    losers get a unique violation in the system catalog. Tables exist by the retry."""
    import sqlalchemy.exc

    for tries in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite") and "mode=ro" not in url:  # readers claim nothing
                _serialize_sqlite(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if tries == attempts - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _serialize_sqlite(engine) -> None:
    """Make every transaction on a SQLite storage take the write lock when it begins.

    Optuna claims an enqueued trial by reading its state and, if WAITING, setting it to
    RUNNING, in one transaction with ``SELECT ... FOR UPDATE``. SQLite ignores FOR
    UPDATE, and Python's sqlite3 opens the transaction only at the UPDATE, so two
    processes can both read WAITING and both run the trial (the second then dies with
    "Cannot tell a COMPLETE trial"). ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for
    pysqlite) makes the read and the write one atomic step; other processes wait for
    the lock (the connection's 60 s timeout). Connections made before this are closed.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


READY_WAIT = 60.0  # seconds a worker waits for another to finish creating a study


def open_study(p: Plan, dataset_key: str, storage: optuna.storages.BaseStorage, alone: bool = True) -> optuna.Study:
    """Create the dataset's study, or load it if this run already has one made from the same config.

    Several workers may start at once: the one that creates the study enqueues the
    config's recipes and then stores the config's fingerprint; the others wait for
    the fingerprint (up to ``READY_WAIT`` seconds, then take over from a creator that
    died), so recipes are enqueued once. ``alone``: no other process uses the storage.
    """
    bench, search = p.bench, p.bench.search
    name = study_name(bench, dataset_key)
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    done = len(existing.trials) if existing else 0
    sampler = (
        optuna.samplers.TPESampler(seed=derived_seed(bench.seed, done), n_startup_trials=search.startup_trials)
        if search.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=derived_seed(bench.seed, done))
    )
    settings = {"storage": storage, "study_name": name, "direction": "maximize", "sampler": sampler, "pruner": make_pruner(search)}
    try:
        study, created = optuna.create_study(**settings), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.create_study(**settings, load_if_exists=True), False
    deadline = time.monotonic() + (0 if alone or created else READY_WAIT)
    while "fingerprint" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)
        study = optuna.create_study(**settings, load_if_exists=True)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:  # we created it, or its creator died before finishing
        for recipe in search.enqueue:
            params = recipe_params(p, recipe.backbone, recipe.strategy, recipe.params)
            study.enqueue_trial(params, user_attrs={"recipe": True}, skip_if_exists=True)
        study.set_user_attr("fingerprint", bench.fingerprint())
    elif stored != bench.fingerprint():
        raise UserError(
            f"study {name} was made from a different config (fingerprint {stored}, now {bench.fingerprint()}); "
            "set another 'run:' name (or remove it to get one from the config) to start a new study"
        )
    return study


def make_pruner(search) -> optuna.pruners.BasePruner:
    """Steps are 1-based epochs; no trial is pruned during its first ``warmup_epochs``."""
    if search.pruner == "median":
        # Optuna may prune once step >= n_warmup_steps
        return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs + 1)
    if search.pruner == "hyperband":
        # brackets of successive halving from warmup + 1 epochs up to the longest trial's epochs
        return optuna.pruners.HyperbandPruner(min_resource=search.warmup_epochs + 1, reduction_factor=3)
    return optuna.pruners.NopPruner()


WORKER = f"{platform.node()}:{os.getpid()}"  # who runs a trial: host and process


class Objective:
    """One trial: pick backbone and strategy, draw their parameters, train, measure.

    ``repeats``: the study holds enqueued seed repeats only (see :func:`work_repeats`).
    """

    def __init__(
        self, p: Plan, splits: DatasetSplits, dataset_key: str, progress: Progress, shared: Shared, repeats: bool = False
    ):
        self.p, self.splits, self.dataset_key, self.progress, self.shared = p, splits, dataset_key, progress, shared
        self.repeats = repeats

    def __call__(self, trial: optuna.Trial) -> float:
        import torch

        from tlbench import train

        surplus = self.surplus(trial)
        if surplus:
            trial.set_user_attr(SURPLUS, True)
            trial.set_user_attr("fail_reason", f"{SURPLUS}: not run, {surplus}")  # the callback then stops the study
            raise train.TrialFailed(f"{SURPLUS}: not run, {surplus}")
        trial.set_user_attr("host", platform.node())
        trial.set_user_attr("worker", WORKER)
        with self.shared.device() as device:
            # libraries that allocate on "the current GPU" use this trial's
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                try:
                    return self._run(trial, device)
                except KeyboardInterrupt:
                    trial.set_user_attr("fail_reason", f"{INTERRUPTED} by {interrupts.what()}")  # Optuna marks it failed
                    raise

    def surplus(self, trial: optuna.Trial) -> str | None:
        """Why this trial must not run, if it must not. Workers stop once their study has
        its trials, but two may each start one more at the same moment: trial numbers
        are given out one at a time (Optuna locks the study row), so the first
        ``n_trials`` trials of the budget run and any later one is surplus."""
        if self.repeats:
            return None if "repeat_of" in trial.user_attrs else "every enqueued repeat was taken by other workers"
        total = self.p.bench.search.n_trials
        if total is None:
            return None
        ahead = [t for t in budget(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
        return f"the study already had its {total} trials (other workers took the last ones)" if len(ahead) >= total else None

    def _run(self, trial: optuna.Trial, device) -> float:
        import torch

        from tlbench import cost, train

        p = self.p
        bkey = trial.suggest_categorical("backbone", list(p.backbones))
        skey = trial.suggest_categorical("strategy", list(p.strategies))
        strategy = p.strategies[skey]
        space = Space(trial, f"{skey}.", f"strategy {skey}")
        params = plugin_call(strategy.plugin, f"strategy '{strategy.record.name}': suggest()", lambda: strategy.record.suggest(space, strategy.options))
        training = _suggest_training(Space(trial, "", "training"), p.bench)
        backbone = p.backbones[bkey]
        seed = trial.user_attrs.get("seed", derived_seed(p.bench.seed, trial.number))
        torch.manual_seed(seed)  # the fresh head's init too, whatever ran before in this process
        adapted = adapt(strategy, build_backbone(backbone, len(self.splits.classes)), params)
        built = adapted.built
        phases = strategy_phases(strategy, params, len(built.groups))
        _check_phases(phases, len(built.groups))
        resolution = backbone.entry.resolution or p.bench.training.resolution or built.data_config.input_size
        settings = train.TrainSettings(
            batch_size=training["batch_size"],
            weight_decay=float(training["weight_decay"]),
            augment=p.bench.training.augment,
            resolution=resolution,
            device=device,
            seed=seed,
            num_workers=p.bench.training.num_workers,
            compile=p.bench.training.compile,
            cache=self.shared.cache,
            data_key=self.shared.data_keys[self.dataset_key],
        )
        _describe(trial, backbone, built, phases, {**params, **training}, settings)
        # known before training, so that pruned trials have it too; a model a strategy changed is its own architecture
        arch = (bkey,) if strategy.record.adapt is None else (bkey, skey, json.dumps(params, sort_keys=True, default=str))
        gflops = self.shared.measure(
            ("forward_gflops", *arch, resolution), lambda: cost.forward_flops(built.model, resolution, device) / 1e9
        )
        trial.set_user_attr("forward_gflops", gflops)
        trial.set_user_attr("total_params", cost.count_params(built.model))
        self.progress.trial_started(trial.number, f"{bkey} · {skey}", sum(ph.epochs for ph in phases))
        cost.reset_peak_memory(device)  # so that CUDA peak memory is this trial's own
        start = time.perf_counter()
        try:
            result = train.fit(
                built,
                self.splits,
                phases,
                settings,
                on_epoch=lambda e, acc: self._epoch(trial, e, acc, start),
                always=adapted.trainable,
            )
        except train.TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except UserError as exc:  # e.g. an image that cannot be decoded: the run stops, going on retries it once
            trial.set_user_attr("fail_reason", f"{INTERRUPTED}: {exc}")
            raise
        self._record(trial, built, settings, arch, result)
        return result.val_accuracy

    def _epoch(self, trial: optuna.Trial, epoch: int, accuracy: float, start: float) -> None:
        interrupts.check()
        self.progress.epoch_done(trial.number, epoch, accuracy)
        trial.report(accuracy, epoch)
        trial.set_user_attr("elapsed_seconds", time.perf_counter() - start)  # training + evaluation so far
        # A recipe from the config runs to the end: it is the baseline the search is measured against.
        if not trial.user_attrs.get("recipe") and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at val accuracy {accuracy:.3f}")

    def _record(self, trial, built: BuiltBackbone, settings, arch: tuple, result) -> None:
        from tlbench import cost, train

        device = settings.device

        def speed() -> dict:
            throughput, latency = cost.inference_speed(
                built.model, settings.resolution, device, settings.batch_size, train.autocast_dtype(device)
            )
            return {"throughput": throughput, "latency_ms": latency}

        # per device kind: with several GPUs of one model, measured once
        measured = self.shared.measure(("speed", *arch, settings.resolution, settings.batch_size, cost.device_name(device)), speed)
        memory, memory_kind = cost.peak_memory_mb(device)
        attrs = {
            **measured,
            "val_curve": result.val_curve,
            "test_accuracy": result.test_accuracy,
            "test_correct": "".join("1" if c else "0" for c in result.test_correct),  # for bootstrap intervals
            "train_seconds": result.train_seconds,
            "train_gflops": result.train_flops / 1e9,
            "trainable_params": result.trainable_params,
            "peak_memory_mb": memory,
            "memory_kind": memory_kind,
            "device": cost.device_name(device),
            "device_index": device.index if device.index is not None else 0,
            "precision": result.precision,
            "feature_cache": result.feature_cache,
        }
        for name, value in attrs.items():
            trial.set_user_attr(name, value)


def _describe(trial, backbone: PlannedBackbone, built: BuiltBackbone, phases, params, settings) -> None:
    """Store what the trial is, so that tables need nothing but the storage."""
    from dataclasses import asdict

    trial.set_user_attr("params", params)
    trial.set_user_attr("phases", [asdict(ph) for ph in phases])
    trial.set_user_attr("n_groups", len(built.groups))
    trial.set_user_attr("backbone_name", backbone.entry.name)
    trial.set_user_attr("pretrained", bool(backbone.entry.pretrained or backbone.weights))
    trial.set_user_attr("resolution", settings.resolution)
    trial.set_user_attr("seed", settings.seed)
