"""Preflight: load every dataset, build every backbone, try every strategy on every backbone,
and check devices, folders, trackers, memory and the portfolio's tables, before any compute
is spent. ``validate`` is :func:`tlbench.search.planning.make_plan` and this, so a config it
accepts does not fail later on something they could have checked.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlbench.base import space
from tlbench.engine import basics, cachedir, cost
from tlbench.engine.inputs import SIZE_FIELDS, SIZE_UNITS, input_size, inputs_of, noun
from tlbench.host import contract
from tlbench.host.contract import plugin_call
from tlbench.host.events import run_info
from tlbench.results.runfolder import run_dir, storage_url
from tlbench.search.calls import adapt, load_splits, screen_build
from tlbench.search.planning import Plan, PlannedBackbone, _at, cache_dir, check_phases, strategy_phases
from tlbench.search.portfolio import load_history
from tlbench.store.storage import check_storage_url
from tlbench.types import (
    BadExample,
    BuiltBackbone,
    DatasetSplits,
    TrackerRequest,
    UserError,
    config_path,
)


def preflight(plan: Plan, shelf: dict | None = None) -> dict[str, DatasetSplits]:
    """Load every dataset and build every backbone once, before any compute is spent:
    folders, files, weights and devices are real, the cache folder usable, one batch
    fits in memory. ``validate`` and the start of ``run`` and ``worker`` both call it,
    so a config validate accepts does not fail later on a check it could have made.
    Returns the splits by dataset key. ``shelf``: filled with the backbones built here,
    as the screen builds them (:func:`tlbench.search.calls.screen_build`, keyed by
    (backbone key, number of classes)), for the screen of the same process to take
    instead of building each one again."""

    devices = basics.pick_devices(plan.bench.training.device)
    check_storage_url(plan.bench.search.storage)
    folder = cache_dir(plan)
    if folder is not None:
        cachedir.DiskFolder(folder / cachedir.CACHE_SUBFOLDER).check()
        check_writable(folder, "training.cache.dir")
    check_writable(config_path(plan.bench.results_dir, plan.base_dir, "results_dir"), "results_dir")
    check_trackers(plan)
    loaded = {}
    for i, (entry, record) in enumerate(plan.datasets):
        plugin = plan.dataset_plugins.get(entry.key, "?")
        load = lambda: load_splits(entry, record, plan.bench.seed, plan.base_dir, plugin)  # noqa: E731
        loaded[entry.key] = _at(f"datasets[{i}] ({entry.key})", load, (entry.name, entry.key))
    # each backbone built for the first dataset that uses it (its class count), as its screen will build it
    classes = {
        key: next((len(loaded[e.key].classes) for e, _ in plan.datasets if key in plan.backbones_for(e.key)), 2)
        for key in plan.backbones
    }
    screened = {
        key: _at(f"backbones[{i}] ({key})", lambda: screen_build(b, classes[key]), (b.entry.name, key))
        for i, (key, b) in enumerate(plan.backbones.items())
    }
    built = {key: model for key, (model, _) in screened.items()}
    for i, (key, strategy) in enumerate(plan.strategies.items()):
        params = space.dry_run(lambda s: strategy.record.suggest(s, strategy.options), key).result
        for bkey, model in built.items():
            if strategy.record.adapt is not None:  # it changes the model: try it on every backbone now (on a copy)
                _at(
                    f"strategies[{i}] ({key}) on {bkey}",
                    lambda: adapt(strategy.record, copy.deepcopy(model), params, strategy.plugin),
                )
            _at(
                f"strategies[{i}] ({key}) on {bkey}",
                lambda: check_phases(strategy_phases(strategy, params, len(model.groups)), len(model.groups)),
            )
    for i, (key, model) in enumerate(built.items()):
        _at(f"backbones[{i}] ({key})", lambda: check_size_field(plan.backbones[key], model))
    check_training_sizes(plan, built)
    for key, model in built.items():
        _at(f"backbones ({key})", lambda: check_memory(plan, plan.backbones[key], model, devices[0]), (key,))
    check_transforms(plan, loaded, built)  # after the memory check: an absurd size must not be tried on a real example
    portfolio_history(plan)  # the tables search.portfolio_from names are readable tables
    if shelf is not None:
        shelf.update({(key, classes[key]): pair for key, pair in screened.items()})
    return loaded


def check_trackers(plan: Plan) -> None:
    """Each tracker's own check (``Tracker.check``: its URIs, folders, server), before
    anything is written; an optional tracker's problem is a warning (the run leaves it out)."""

    folder = run_dir(plan.bench, plan.base_dir)
    run = run_info(plan, folder, storage_url(plan.bench.search.storage, folder))
    for i, tracker in enumerate(plan.trackers):
        if tracker.record.check is None:
            continue
        request = TrackerRequest(options=tracker.entry.options, run=run, base_dir=plan.base_dir)
        where = f"trackers[{i}] ({tracker.entry.name})"
        try:
            plugin_call(
                tracker.plugin, f"tracker '{tracker.record.name}': check()", lambda r=tracker.record: r.check(request)
            )
        except UserError as exc:
            if not tracker.entry.optional:
                raise UserError(f"{where}: {exc}; or mark it 'optional: true'") from exc
            print(f"tlbench: warning: {where} (optional): {exc}; the run goes on without it", file=sys.stderr)


def portfolio_history(plan: Plan) -> list[dict]:
    """The tables ``search.portfolio_from`` names (paths relative to the config file)."""

    paths = [
        config_path(p, plan.base_dir, f"search.portfolio_from[{i}]")
        for i, p in enumerate(plan.bench.search.portfolio_from)
    ]
    for i, path in enumerate(paths):
        if not path.exists():
            raise UserError(
                f"search.portfolio_from[{i}]: {path} does not exist; give an exported table (tlbench export) or a run folder"
            )
    return load_history(paths)


def check_size_field(backbone: PlannedBackbone, built: BuiltBackbone) -> None:
    """A backbone entry sets only the size its backbone reads (resolution for images,
    max_length for text)."""
    inputs = inputs_of(built)
    for field in SIZE_FIELDS:
        if field != inputs.size_field and getattr(backbone.entry, field) is not None:
            raise UserError(
                f"{field}: this backbone reads {noun(inputs.modality)}; its input size is {inputs.size_field}"
            )


def check_training_sizes(plan: Plan, built: Mapping[str, BuiltBackbone]) -> None:
    """``training.resolution`` / ``training.max_length`` set with no backbone that reads them."""
    used = {inputs_of(b).size_field for b in built.values()}
    for field in SIZE_FIELDS:
        if getattr(plan.bench.training, field) is not None and field not in used:
            raise UserError(
                f"training.{field}: no backbone of this config reads it ({', '.join(sorted(used))} only); remove it"
            )


def check_transforms(plan: Plan, loaded: Mapping[str, DatasetSplits], built: Mapping[str, BuiltBackbone]) -> None:
    """The first example of each split (train, val, test) of each dataset through the
    evaluation transform of every backbone that reads it, as a trial will take it: an
    example that does not decode, or a transform (a tokenizer) that cannot take the
    dataset's examples, fails validate, not a trial."""
    import torch

    for i, (entry, _) in enumerate(plan.datasets):
        splits = loaded[entry.key]
        for split_name in ("train", "val", "test"):
            split = getattr(splits, split_name)
            if not len(split):
                continue
            where = f"datasets[{i}] ({entry.key}): {split_name} example {split.ids[0]}"
            example = _loaded(split, where)
            for key in plan.backbones_for(entry.key):
                backbone, inputs = plan.backbones[key], inputs_of(built[key])
                size = input_size(inputs, backbone.entry, plan.bench.training)
                what = f"backbone '{backbone.entry.name}': inputs.transforms({size})"
                _, eval_tf = plugin_call(backbone.plugin, what, lambda: inputs.transforms(size, False))
                x = plugin_call(
                    backbone.plugin, f"{what} of {split_name} example {split.ids[0]}",
                    lambda: _transformed(eval_tf, example, where),
                )  # fmt: skip
                if not isinstance(x, torch.Tensor):
                    raise UserError(
                        f"plugin {backbone.plugin}: {what} gave {type(x).__name__} for {split_name} example "
                        f"{split.ids[0]}, expected a tensor"
                    )


def _loaded(split, where: str):
    """A split's first example; one it cannot read (BadExample) is the user's, named by ``where``."""
    try:
        return split.load(0)
    except BadExample as exc:
        raise UserError(f"{where}: {exc}") from exc


def _transformed(transform, example, where: str):
    """``transform(example)``; an example it refuses (BadExample) is the user's, named by ``where``."""
    try:
        return transform(example)
    except BadExample as exc:
        raise UserError(f"{where}: {exc}") from exc


def check_writable(folder: Path, field: str) -> None:
    """``folder`` is a folder tlbench can create files in, or can be created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{field}: {existing} is a file, not a folder; set {field} to a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{field}: cannot write in {existing} (permission denied); set {field} to a writable folder")


def check_memory(plan: Plan, backbone: PlannedBackbone, built: BuiltBackbone, device) -> None:
    """Refuse an input size and batch size whose activations cannot fit the device, and
    groups that do not run from input to output (the same forward pass shows both).

    One forward pass of one made-up input is measured (the bytes every module outputs)
    at the backbone's probe size (Inputs.memory_probe: images at a side of at most
    64 px), scaled by how activations grow with the size ((r / r0)^2 for images) and
    by the largest batch size, and doubled for the gradients of training. An estimate,
    meant to stop a 100,000-pixel typo, not to predict peak memory to the megabyte."""

    inputs = inputs_of(built)
    size, field = input_size(inputs, backbone.entry, plan.bench.training), inputs.size_field
    batch = max(_batch_sizes(plan.bench.training.batch_size))
    x, probe, power = _probe_input(backbone, inputs, size)
    try:
        activations, first_use = cost.forward_probe(built.model, x)
    except (
        RuntimeError,
        ValueError,
        TypeError,
        IndexError,
    ) as exc:  # e.g. an input too small for the network's strides
        problem = str(exc).strip().splitlines()[0][:120]
        raise UserError(
            f"plugin {backbone.plugin}: backbone '{backbone.entry.name}': a forward pass of one input at {field} {probe} {SIZE_UNITS[field]} "
            f"failed ({type(exc).__name__}: {problem}); if the input is too small, raise training.{field}"
        ) from exc
    order = contract.group_order_problem(built, first_use)  # the same pass shows the order groups run in
    if order:
        raise UserError(f"plugin {backbone.plugin}: backbone '{backbone.entry.name}': build() returned {order}")
    per_example = activations * (size / probe) ** power
    need = 2 * batch * (per_example + x.numel() * x.element_size() * (size / probe) ** power)
    have = cost.available_memory(device)
    if have is not None and need > have:
        raise UserError(
            f"{field} {size} {SIZE_UNITS[field]} with batch_size {batch} needs about {need / 2**30:.1f} GiB for one training "
            f"batch, more than the {have / 2**30:.1f} GiB available on {device}; lower training.{field} or batch_size"
        )


def _probe_input(backbone: PlannedBackbone, inputs, size: int):
    """(one made-up input at the backbone's probe size, that size, the power activations grow with)."""
    import torch

    label = f"backbone '{backbone.entry.name}'"
    probe, power = plugin_call(
        backbone.plugin, f"{label}: inputs.memory_probe({size})", lambda: inputs.memory_probe(size)
    )
    x = plugin_call(backbone.plugin, f"{label}: inputs.example(1, {probe})", lambda: inputs.example(1, probe))
    if not isinstance(x, torch.Tensor) or len(x) != 1:
        raise UserError(
            f"plugin {backbone.plugin}: {label}: inputs.example(1, {probe}) gave {type(x).__name__}, expected a tensor batch of 1"
        )
    return x, probe, power


def _batch_sizes(spec: Any) -> list[int]:
    """Every batch size a training.batch_size spec can give (its bounds or choices)."""
    return [int(v) for v in space.values_of(spec) if isinstance(v, (int, float)) and not isinstance(v, bool)] or [1]
