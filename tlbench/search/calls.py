"""The checked plugin calls a trial makes (and the preflight and screen before it): load a
dataset and subsample it, build a backbone, adapt it, each through
:func:`tlbench.host.contract.plugin_call` and checked against the contract, inside an
interruptible stretch where a plugin may take long.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlbench.base import interrupts
from tlbench.config import DatasetEntry
from tlbench.host import contract
from tlbench.host.contract import plugin_call
from tlbench.search.planning import PlannedBackbone, middle_options
from tlbench.splits import subsample
from tlbench.types import (
    Adapted,
    BackboneRequest,
    BuiltBackbone,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Strategy,
    UserError,
)


def load_splits(entry: DatasetEntry, record: Dataset, seed: int, base_dir: Path, plugin: str = "?") -> DatasetSplits:
    """Load a dataset, check it against the contract, and apply the config's subsampling."""
    request = DatasetRequest(options=entry.options, seed=seed, base_dir=base_dir)
    what = f"dataset '{record.name}': load()"
    with interrupts.interruptible():  # nothing is written to a study while a plugin loads
        splits = plugin_call(plugin, what, lambda: record.load(request))
    too_little = contract.coverage_problem(splits, record.modality) if isinstance(splits, DatasetSplits) else None
    if too_little:  # the user's to fix, not the plugin's
        raise UserError(f"dataset {entry.key}: {too_little}")
    problem = contract.splits_problem(splits)
    if problem:
        raise UserError(f"plugin {plugin}: {what}: {problem}")
    for name in ("train", "val", "test"):  # one example each, as a trial will load it (a damaged file is named then)
        split = getattr(splits, name)
        example = plugin_call(plugin, f"dataset '{record.name}': {name}.load(0)", lambda split=split: split.load(0))
        problem = contract.example_problem(example, record.modality)
        if problem:
            raise UserError(f"plugin {plugin}: dataset '{record.name}': {name}.load(0) {problem}")
    caps = {
        "train": (entry.train_samples, entry.per_class),
        "val": (entry.val_samples, None),
        "test": (entry.test_samples, None),
    }
    parts = {}
    for name, (total, per_class) in caps.items():
        split = getattr(splits, name)
        parts[name] = split.subset(subsample(split.labels, total, per_class, seed)) if total or per_class else split
        if len(parts[name]) == 0:
            raise UserError(
                f"dataset {entry.key}: the {name} split is empty; add {contract.examples(record.modality)} or lower the held-out fractions"
            )
    if len(parts["train"]) < 2:
        raise UserError(
            f"dataset {entry.key}: the train split has {len(parts['train'])} example; training needs at least 2, add {contract.examples(record.modality)}"
        )
    return DatasetSplits(classes=splits.classes, **parts)


def build_backbone(
    backbone: PlannedBackbone, num_classes: int, options: Mapping[str, Any] | None = None
) -> BuiltBackbone:
    """Build (``options``: as a trial drew them; default: :func:`middle_options`), and check
    that groups and head cover every parameter exactly once."""
    request = BackboneRequest(
        model=backbone.model, num_classes=num_classes, pretrained=backbone.entry.pretrained, weights=backbone.weights,
        options=dict(middle_options(backbone) if options is None else options),
    )  # fmt: skip
    what = f"backbone '{backbone.entry.name}': build()"
    with interrupts.interruptible():
        built = plugin_call(backbone.plugin, what, lambda: backbone.record.build(request))
    problem = contract.built_problem(built) or contract.modality_problem(built, backbone.record)
    if problem:
        raise UserError(f"plugin {backbone.plugin}: {what} {problem}")
    return built


SCREEN_SEED = 0  # the global torch seed a backbone is built under for the screen (random-init weights)


def screen_build(backbone: PlannedBackbone, num_classes: int) -> tuple[BuiltBackbone, Any]:
    """The backbone as the screen builds it: under torch seed SCREEN_SEED (a random-init
    backbone's weights, a fresh head), with the middle options. Returns it with the CPU
    random state right after the build, so that the screen can take a backbone built
    earlier (by the preflight) and go on exactly as if it had built it itself. The caller's
    own random state is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCREEN_SEED)
        built = build_backbone(backbone, num_classes)
        return built, torch.get_rng_state()


def adapt(record: Strategy, built: BuiltBackbone, params: Mapping[str, Any], plugin: str = "?") -> Adapted:
    """The strategy's ``adapt`` applied to a freshly built backbone (or the backbone
    unchanged), checked against the contract."""
    if record.adapt is None:
        return Adapted(built=built)
    what = f"strategy '{record.name}': adapt()"
    adapted = plugin_call(plugin, what, lambda: record.adapt(built, params))
    problem = contract.adapted_problem(adapted)
    if problem:
        raise UserError(f"plugin {plugin}: {what} {problem}")
    return adapted
