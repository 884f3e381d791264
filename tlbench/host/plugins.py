"""Finding, loading and validating plugins; the registry of names they provide.

Built-ins, installed entry points (group ``tlbench``) and paths listed in a
config all go through :func:`make_plugin_manager`. ``TLBENCH_LOAD_PLUGINS``
(comma-separated entry-point or distribution names; empty for none) restricts
which installed plugins load. Built-ins always load.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from tlbench import PLUGIN_API, __version__
from tlbench.host import hookspecs
from tlbench.host.contract import record_problem
from tlbench.types import Backbone, Dataset, Strategy, Tracker, UserError, config_path

ENTRY_POINT_GROUP = "tlbench"
RESTRICT_ENV = "TLBENCH_LOAD_PLUGINS"
BUILTINS = (
    "tlbench.host.builtins.backbones",
    "tlbench.host.builtins.datasets",
    "tlbench.host.builtins.strategies",
)
HOOKS = {  # hook name -> record type it must yield
    "tlbench_backbones": Backbone,
    "tlbench_datasets": Dataset,
    "tlbench_strategies": Strategy,
    "tlbench_trackers": Tracker,
}
KINDS = {Backbone: "backbone", Dataset: "dataset", Strategy: "strategy", Tracker: "tracker"}


@dataclass(frozen=True)
class PluginInfo:
    """Where a registered plugin came from."""

    name: str  # pluggy name: module path, entry-point name or file path
    origin: str  # "builtin", "entry point", or "path"
    version: str  # distribution version, or tlbench's for built-ins, or "" for paths
    location: str  # module file


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be imported or registered."""

    name: str
    origin: str
    error: BaseException


@dataclass
class PluginHost:
    """The plugin manager plus what happened while loading it."""

    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    excluded: list[importlib.metadata.EntryPoint] = field(
        default_factory=list
    )  # installed, left out by TLBENCH_LOAD_PLUGINS
    restrict_problem: str = ""  # TLBENCH_LOAD_PLUGINS names something that is not installed: what to tell the user


def make_plugin_manager(
    paths: Sequence[str | Path] = (), *, base_dir: Path | None = None, entry_points: bool = True
) -> PluginHost:
    """Load built-ins, installed entry points and the plugin ``paths`` of a config."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)

    for modname in BUILTINS:
        _register(host, lambda m=modname: importlib.import_module(m), modname, "builtin", __version__)
    if entry_points:
        _load_entry_points(host)
    for path in paths:
        _load_path(host, config_path(path, base_dir, "plugins"))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise UserError(f"plugin {_plugin_name(pm, exc.plugin)}: {validation_problem(exc)}") from exc
    return host


def validation_problem(exc: pluggy.PluginValidationError) -> str:
    """pluggy's several-line complaint about a hook implementation, as one line."""
    text = " ".join(str(exc).split())
    args = re.search(
        r"for hook '(\w+)'.*Argument\(s\) \{(.*?)\} are declared in the hookimpl but can not be found", text
    )
    if args:
        hook = args[1]
        spec = getattr(hookspecs, hook, None)
        given = list(inspect.signature(spec).parameters) if spec is not None else []
        if not given:
            return f"hook {hook}() takes {args[2]}, but tlbench calls it without arguments; define it as {hook}()"
        return f"hook {hook}() takes {args[2]}, but tlbench passes only {', '.join(given)}; take any of those, by name"
    unknown = re.search(r"unknown hook '(\w+)'", text)
    if unknown:
        return f"unknown hook '{unknown[1]}'; hooks are named {', '.join([*HOOKS, *hookspecs.EVENT_HOOKS])}"
    return re.sub(r"^Plugin '[^']*' ", "", text)


class PluginAPIError(Exception):
    """A plugin needs a newer plugin API than this tlbench provides."""


def api_problem(needed: Any) -> str | None:
    """Why a plugin that declares ``TLBENCH_PLUGIN_API = (major, minor)`` (the oldest API
    it works with) cannot load here, or None. Same major, and a minor no newer than ours."""

    if needed is None:
        return None
    if not (isinstance(needed, tuple) and len(needed) == 2 and all(isinstance(v, int) for v in needed)):
        return f"TLBENCH_PLUGIN_API must be a (major, minor) tuple such as {PLUGIN_API}, got {needed!r}"
    if needed[0] != PLUGIN_API[0] or needed[1] > PLUGIN_API[1]:
        have = ".".join(map(str, PLUGIN_API))
        return f"it needs plugin API {needed[0]}.{needed[1]}, this tlbench provides {have}; upgrade tlbench (pip install -U tlbench)"
    return None


def _register(host: PluginHost, importer, name: str, origin: str, version: str) -> None:
    try:
        module = importer()
        problem = api_problem(getattr(module, "TLBENCH_PLUGIN_API", None))
        if problem:
            raise PluginAPIError(problem)
        host.pm.register(module, name=name)
    except pluggy.PluginValidationError as exc:
        raise UserError(f"plugin {name}: {validation_problem(exc)}") from exc
    except (Exception, SystemExit) as exc:  # a broken plugin must not take down the others (Ctrl-C still does)
        host.failures.append(PluginFailure(name, origin, exc))
        return
    host.info[name] = PluginInfo(name, origin, version, getattr(module, "__file__", "") or "")


def _load_entry_points(host: PluginHost) -> None:
    allowed = os.environ.get(RESTRICT_ENV)
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    for ep in eps:
        dist = ep.dist.name if ep.dist else ""
        if allowed_names is not None and ep.name not in allowed_names and dist not in allowed_names:
            host.excluded.append(ep)
            continue
        if host.pm.has_plugin(ep.name):
            continue
        version = ep.dist.version if ep.dist else ""
        _register(host, ep.load, ep.name, "entry point", version)
    if allowed_names:
        host.restrict_problem = restrict_problem(allowed_names, eps)


def restrict_problem(allowed: set[str], eps: Sequence[importlib.metadata.EntryPoint]) -> str:
    """What is wrong with TLBENCH_LOAD_PLUGINS: names no installed plugin has ("" if none)."""
    known = {ep.name for ep in eps} | {ep.dist.name for ep in eps if ep.dist}
    unknown = sorted(allowed - known)
    if not unknown:
        return ""
    close = difflib.get_close_matches(unknown[0], sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"installed: {', '.join(sorted(known)) or 'none'}"
    return (
        f"{RESTRICT_ENV} names {', '.join(map(repr, unknown))}, which is no installed plugin (entry point or "
        f"distribution name); {hint} (unset {RESTRICT_ENV} to load every installed plugin)"
    )


def _load_path(host: PluginHost, path: Path) -> None:
    if path.is_dir():
        try:
            names = os.listdir(path)  # Path.glob would return nothing for a folder it cannot read
        except OSError as exc:
            raise UserError(f"plugins: cannot read folder {path} ({exc.strerror}); check its permissions") from exc
        files = sorted(path / n for n in names if n.endswith(".py") and not n.startswith("_"))
    elif path.suffix == ".py" and path.is_file():
        files = [path]
    else:
        raise UserError(f"plugins: {path} is not a .py file or a folder; fix the path under 'plugins:'")
    for file in files:
        _register(host, lambda f=file: import_file(f), str(file), "path", "")


def import_file(path: Path) -> ModuleType:
    modname = "tlbench_local_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(modname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _plugin_name(pm: pluggy.PluginManager, plugin: Any) -> str:
    return pm.get_name(plugin) or repr(plugin)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Provided:
    """A record and the plugin that yielded it."""

    record: Any
    plugin: str


@dataclass
class Registry:
    """Every name the loaded plugins provide, validated."""

    backbones: dict[str, Provided] = field(default_factory=dict)
    families: dict[str, Provided] = field(default_factory=dict)
    datasets: dict[str, Provided] = field(default_factory=dict)
    strategies: dict[str, Provided] = field(default_factory=dict)
    trackers: dict[str, Provided] = field(default_factory=dict)
    excluded: tuple[importlib.metadata.EntryPoint, ...] = ()  # installed plugins TLBENCH_LOAD_PLUGINS left out
    failed: tuple[str, ...] = ()  # installed plugins that failed to load
    pm: pluggy.PluginManager | None = None  # the manager the records came from: a run sends its event hooks through it

    def backbone(self, name: str, base_dir: Path | None = None) -> tuple[Backbone, str]:
        """The record that builds ``name`` and the model name to pass to it. A model name
        that is a file or folder (``hf:encoders/mine``, ``hf:~/models/x``) follows the rule
        of every config path (:func:`tlbench.types.config_path`): it is passed absolute,
        resolved against the config's folder ``base_dir``."""
        if name in self.backbones:
            return self.backbones[name].record, name
        prefix, sep, model = name.partition(":")
        model = _local(model, base_dir) if sep else model
        family = self.families.get(prefix) if sep else None
        if family is not None and model and (family.record.known is None or family.record.known(model)):
            return family.record, model
        raise UserError(
            f"unknown backbone '{name}'{self._suggest_backbone(name)}{self._missing_plugin('backbone', name)}"
        )

    def plugin_of(self, record: Any) -> str:
        """The name of the plugin that yielded ``record``."""
        for table in (self.backbones, self.families, self.datasets, self.strategies, self.trackers):
            for provided in table.values():
                if provided.record is record:
                    return provided.plugin
        return "?"

    def dataset(self, name: str) -> Dataset:
        return self._lookup(self.datasets, name, "dataset").record

    def strategy(self, name: str) -> Strategy:
        return self._lookup(self.strategies, name, "strategy").record

    def tracker(self, name: str) -> Tracker:
        return self._lookup(self.trackers, name, "tracker").record

    def _lookup(self, table: dict[str, Provided], name: str, kind: str) -> Provided:
        if name not in table:
            raise UserError(f"unknown {kind} '{name}'{_did_you_mean(name, table)}{self._missing_plugin(kind, name)}")
        return table[name]

    def _missing_plugin(self, kind: str, name: str) -> str:
        """Why an installed plugin that would provide ``name`` is not loaded, if one is not."""
        owner = excluded_owner(self.excluded, kind, name)
        if owner:
            return (
                f"; it is provided by the installed plugin {owner}, which {RESTRICT_ENV}="
                f"{os.environ.get(RESTRICT_ENV, '')!r} leaves out: add {owner} to it, or unset it"
            )
        if self.failed:
            return f"; the installed plugin(s) {', '.join(self.failed)} failed to load and may provide it (see the warning above)"
        return ""

    def _suggest_backbone(self, name: str) -> str:
        prefix, sep, model = name.partition(":")
        candidates = list(self.backbones)
        for family, provided in self.families.items():
            if provided.record.names is not None and (not sep or family == prefix):
                candidates += [f"{family}:{m}" for m in provided.record.names()]
        if not sep:  # a bare model name: compare it with the model part of family names
            close = difflib.get_close_matches(name, [c.partition(":")[2] or c for c in candidates], n=3, cutoff=0.8)
            full = [c for c in candidates if (c.partition(":")[2] or c) in close][:3]
            if full:
                return "; did you mean " + " or ".join(f"'{c}'" for c in full) + "?"
        families = [f"{f}:<model>" for f in self.families]
        return _did_you_mean(name, candidates) or f"; installed: {', '.join(list(self.backbones) + families)}"


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    options = list(options)
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if 0 < len(options) <= 12:
        return f"; known: {', '.join(sorted(options))}"
    return ""


def collect(host: PluginHost) -> Registry:
    """Call every hook of every plugin, check the records, and index them by name. An
    installed plugin whose records are refused (a stale plugin declaring an option a newer
    API reserves, a hook that raises) is isolated: recorded as a failure (a warning naming
    it), unregistered, and left out; every command that does not use it works. A plugin
    the config lists by path stays strict: its problem is the user's to fix."""
    for name, info in list(host.info.items()):
        if info.origin != "entry point":
            continue
        plugin = host.pm.get_plugin(name)
        try:
            for hook_name, record_type in HOOKS.items():
                for impl in getattr(host.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name == name:
                        hook_records(impl, hook_name, record_type)
        except UserError as exc:
            host.failures.append(PluginFailure(name, "entry point", exc))
            host.pm.unregister(plugin=plugin, name=name)
            del host.info[name]
    failed = tuple(f.name for f in host.failures if f.origin == "entry point")
    registry = Registry(excluded=tuple(host.excluded), failed=failed, pm=host.pm)
    for hook_name, record_type in HOOKS.items():
        hook = getattr(host.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            for record in hook_records(impl, hook_name, record_type):
                _add(registry, record, impl.plugin_name)
    return registry


def hook_records(impl, hook_name: str, record_type: type) -> list:
    """Call one plugin's hook implementation; its records, each checked (UserError naming the plugin)."""
    try:
        returned = impl.function()
        if isinstance(returned, tuple(KINDS)):
            raise UserError(
                f"plugin {impl.plugin_name}: {hook_name}() returned a {type(returned).__name__}; hooks yield their records: "
                f"write 'yield {type(returned).__name__}(...)' instead of 'return'"
            )
        records = list(returned or ())
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"plugin {impl.plugin_name}: {hook_name}() raised {type(exc).__name__}: {exc}") from exc
    for record in records:
        if not isinstance(record, record_type):
            raise UserError(
                f"plugin {impl.plugin_name}: {hook_name}() yielded {type(record).__name__}, "
                f"expected tlbench.types.{record_type.__name__}"
            )
        problem = record_problem(record)
        if problem:
            raise UserError(f"plugin {impl.plugin_name}: {KINDS[record_type]} '{record.name}': {problem}")
    return records


def _add(registry: Registry, record: Any, plugin: str) -> None:
    if isinstance(record, Backbone):
        table = registry.families if record.family else registry.backbones
        kind = "backbone family" if record.family else "backbone"
    else:
        kind = KINDS[type(record)]
        table = {"dataset": registry.datasets, "strategy": registry.strategies, "tracker": registry.trackers}[kind]
    if record.name in table:
        raise UserError(
            f"{kind} '{record.name}' is provided by two plugins: {table[record.name].plugin} and {plugin}; "
            f"uninstall one or restrict loading with {RESTRICT_ENV}"
        )
    table[record.name] = Provided(record, plugin)


def excluded_owner(excluded: Iterable[importlib.metadata.EntryPoint], kind: str, name: str) -> str | None:
    """The entry-point name of an excluded plugin that provides ``name``, or None. Called
    only to explain an unknown name: it imports the excluded plugins (and ignores any
    that fail; a family is matched by its prefix)."""
    hook = next(h for h, t in HOOKS.items() if KINDS[t] == kind)
    for ep in excluded:
        try:
            records = list(getattr(ep.load(), hook, lambda: ())() or ())
        except (Exception, SystemExit):  # noqa: S112 - a broken excluded plugin explains nothing
            continue
        for record in records:
            family = getattr(record, "family", False)
            if record.name == name or (family and name.partition(":")[0] == record.name):
                return ep.name
    return None


def _local(model: str, base_dir: Path | None) -> str:
    """``model`` as an absolute path where it names an existing file or folder (relative to
    ``base_dir``, ``~`` and variables expanded); else as written (a hub or timm name)."""
    if base_dir is None or "://" in model:
        return model
    try:
        path = config_path(model, base_dir, "backbones")
    except UserError:
        return model  # an unset variable: the plugin names what it could not find
    try:
        return str(path) if path.exists() else model
    except OSError:  # a name too long to be a path
        return model
