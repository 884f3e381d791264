"""The checks on a plugin's records: the plugin as a whole, backbones, datasets, strategies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tlbench.engine.inputs import inputs_of
from tlbench.testing._common import ConformanceError, _call, _check_record, _fail
from tlbench.testing.trackers import check_tracker
from tlbench.types import (
    Backbone,
    BackboneRequest,
    BuiltBackbone,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Strategy,
    Tracker,
    UserError,
)


def records(plugin: str | ModuleType) -> tuple[str, list[Any]]:
    """(plugin name, the records its hooks yield), each record's fields checked.

    ``plugin``: a module, an importable module name, a ``.py`` file, or the name of
    an installed entry point in group ``tlbench``.
    """
    import importlib.metadata

    import pluggy

    from tlbench.host import hookspecs, plugins

    if isinstance(plugin, ModuleType):
        module, name = plugin, plugin.__name__
    elif str(plugin).endswith(".py"):
        module, name = plugins.import_file(Path(plugin)), str(plugin)
    else:
        eps = [ep for ep in importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP) if ep.name == plugin]
        module, name = (eps[0].load(), plugin) if eps else (importlib.import_module(plugin), plugin)
    problem = plugins.api_problem(getattr(module, "TLBENCH_PLUGIN_API", None))
    if problem:
        raise ConformanceError(f"plugin {name}: {problem}")
    pm = pluggy.PluginManager(plugins.ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    try:
        pm.register(module, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConformanceError(f"plugin {name}: {plugins.validation_problem(exc)}") from exc
    found: list[Any] = []
    for hook_name, record_type in plugins.HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                found += plugins.hook_records(impl, hook_name, record_type)
            except UserError as exc:
                raise ConformanceError(str(exc)) from exc
    if not found:
        raise ConformanceError(f"plugin {name}: its hooks yield no record; implement one of {', '.join(plugins.HOOKS)}")
    return name, found


def check_plugin(
    plugin: str | ModuleType,
    *,
    dataset_options: Mapping[str, Mapping[str, Any]] | None = None,
    dataset_sizes: Mapping[str, Sequence[int]] | None = None,
    backbone_models: Mapping[str, Iterable[str]] | None = None,
    backbone_options: Mapping[str, Mapping[str, Any]] | None = None,
    strategy_options: Mapping[str, Mapping[str, Any]] | None = None,
    tracker_options: Mapping[str, Mapping[str, Any]] | None = None,
    num_classes: int = 3,
    resolution: int | None = None,
    strategy_modalities: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Check every record a plugin yields; returns what was checked, one line each.

    ``dataset_options``: per dataset name, the config options to load it with
    (a dataset that needs a path cannot be loaded without). ``backbone_models``:
    per backbone family, the model names to build (families only). ``backbone_options``,
    ``strategy_options``, ``tracker_options``: per record name, config options to use.
    ``strategy_modalities``: per strategy name, the modalities its ``adapt`` is checked
    on (default: image and text; say ``("image",)`` for a strategy only for images).
    """
    name, found = records(plugin)
    checked = []
    for record in found:
        if isinstance(record, Backbone):
            if record.family:
                models = list((backbone_models or {}).get(record.name, ()))
                if not models:
                    raise _fail(
                        name,
                        f"backbone family '{record.name}'",
                        "give model names to build: backbone_models={'%s': ['<model>']}" % record.name,
                    )
                for model in models:
                    options = (backbone_options or {}).get(
                        f"{record.name}:{model}", (backbone_options or {}).get(record.name)
                    )
                    check_backbone(
                        record, model, num_classes=num_classes, resolution=resolution, options=options, plugin=name
                    )
                    checked.append(f"backbone {record.name}:{model}")
            else:
                options = (backbone_options or {}).get(record.name)
                check_backbone(record, num_classes=num_classes, resolution=resolution, options=options, plugin=name)
                checked.append(f"backbone {record.name}")
        elif isinstance(record, Dataset):
            sizes = (dataset_sizes or {}).get(record.name)
            check_dataset(record, (dataset_options or {}).get(record.name, {}), sizes=sizes, plugin=name)
            checked.append(f"dataset {record.name}")
        elif isinstance(record, Tracker):
            check_tracker(record, (tracker_options or {}).get(record.name), plugin=name)
            checked.append(f"tracker {record.name}")
        else:
            modalities = (strategy_modalities or {}).get(record.name, MODALITIES)
            check_strategy(record, (strategy_options or {}).get(record.name), plugin=name, modalities=modalities)
            checked.append(f"strategy {record.name}")
    return checked


# --------------------------------------------------------------------------- backbones


def check_backbone(
    record: Backbone,
    model: str | None = None,
    *,
    num_classes: int = 3,
    resolution: int | None = None,
    pretrained: bool = False,
    weights: Path | None = None,
    options: Mapping[str, Any] | None = None,
    plugin: str = "?",
) -> BuiltBackbone:
    """Build ``record`` (``model``: the model name, for a family; ``options``: config fields
    it declares in ``options``) and check the result."""

    from tlbench.engine import cost
    from tlbench.host import contract

    label = f"backbone '{record.name}:{model}'" if record.family else f"backbone '{record.name}'"
    _check_record(record, options, plugin, label)
    if record.family and record.known is not None and model is not None and not record.known(model):
        raise _fail(plugin, label, f"known('{model}') is False for a model it is asked to build")
    request = BackboneRequest(
        model=model or record.name,
        num_classes=num_classes,
        pretrained=pretrained,
        weights=weights,
        options=dict(options or {}),
    )
    built = _call(plugin, f"{label}: build()", lambda: record.build(request))
    problem = contract.built_problem(built) or contract.modality_problem(built, record)
    if problem:
        raise _fail(plugin, f"{label}: build()", problem)
    inputs = inputs_of(built)
    x = _call(plugin, f"{label}: inputs.example()", lambda: inputs.example(2, resolution or inputs.size))
    model_ = built.model.eval()
    order = cost.first_use(model_, x)
    out = _call(plugin, f"{label}: forward", lambda: model_(x))
    if tuple(out.shape) != (2, num_classes):
        raise _fail(
            plugin,
            label,
            f"output has shape {tuple(out.shape)} for 2 inputs, expected (2, {num_classes}): one logit per class",
        )
    _check_group_order(built, order, plugin, label)
    n = len(built.groups)
    for frozen in sorted({0, n // 2, n}):
        _check_gradients(built, x, frozen, plugin, label)
    return built


def _check_group_order(built: BuiltBackbone, order: Mapping[str, float], plugin: str, label: str) -> None:
    from tlbench.host.contract import group_order_problem

    problem = group_order_problem(built, order)
    if problem:
        raise _fail(plugin, label, problem)


def _check_gradients(built: BuiltBackbone, x, frozen: int, plugin: str, label: str) -> None:
    import torch

    from tlbench.engine import basics

    model = built.model.train()
    trainable = basics.set_trainable(model, built, frozen)  # freezing as training does it
    params = dict(model.named_parameters())
    for p in params.values():
        p.grad = None
    model(torch.cat([x, x])).float().sum().backward()  # 4 inputs: batch norm trains on more than one
    with_grad = {n for n, p in params.items() if p.grad is not None}
    for name, p in params.items():
        p.requires_grad_(True)
        p.grad = None
    model.eval()
    missing = sorted(trainable - with_grad)
    if missing:
        raise _fail(
            plugin, label,
            f"with the first {frozen} of {len(built.groups)} groups frozen, {missing[0]} (and {len(missing) - 1} more) got no "
            "gradient: is it used in forward(), and is it in the right group?",
        )  # fmt: skip
    leaked = sorted(with_grad - trainable)
    if leaked:
        raise _fail(
            plugin, label, f"with the first {frozen} groups frozen, frozen parameter {leaked[0]} got a gradient"
        )


# --------------------------------------------------------------------------- datasets


def check_dataset(
    record: Dataset,
    options: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    base_dir: str | Path = ".",
    sizes: Sequence[int] | None = None,
    plugin: str = "?",
) -> DatasetSplits:
    """Load ``record`` with the config ``options`` and check its splits. ``sizes``:
    the (train, val, test) sizes the dataset declares, if it does."""

    from tlbench.host import contract

    label = f"dataset '{record.name}'"
    _check_record(record, options, plugin, label)

    def load():
        return record.load(DatasetRequest(options=dict(options or {}), seed=seed, base_dir=Path(base_dir)))

    splits = _call(plugin, f"{label}: load()", load)
    problem = contract.splits_problem(splits)
    if problem:
        raise _fail(plugin, label, problem)
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        for i in {0, len(split) - 1}:
            example = _call(plugin, f"{label}: {name}.load({i})", lambda i=i, split=split: split.load(i))
            problem = contract.example_problem(example, record.modality)
            if problem:
                raise _fail(plugin, label, f"{name}.load({i}) {problem}")
    if sizes is not None and tuple(sizes) != (len(splits.train), len(splits.val), len(splits.test)):
        raise _fail(
            plugin,
            label,
            f"splits have {len(splits.train)}/{len(splits.val)}/{len(splits.test)} examples, declared {tuple(sizes)}",
        )
    again = load()
    if any(
        getattr(again, n).ids != getattr(splits, n).ids or getattr(again, n).labels != getattr(splits, n).labels
        for n in ("train", "val", "test")
    ):
        raise _fail(
            plugin,
            label,
            f"loading twice with seed {seed} gave different splits; seed every random choice with request.seed",
        )
    return splits


# --------------------------------------------------------------------------- strategies


def check_strategy(
    record: Strategy,
    options: Mapping[str, Any] | None = None,
    *,
    n_groups: Sequence[int] = (1, 4, 12),
    samples: int = 5,
    plugin: str = "?",
    modalities: Sequence[str] = ("image", "text"),
) -> None:
    """Sample ``record``'s search space and check the phases it gives, and its ``adapt``
    (and ``extra_loss``) on a backbone of each of ``modalities``: timm's ``test_resnet``
    for images, a tiny BERT-like encoder (embeddings, attention with query/key/value
    projections, layer norms) for text."""
    import optuna

    from tlbench.base.space import TrialSpace
    from tlbench.host import contract

    label = f"strategy '{record.name}'"
    _check_record(record, options, plugin, label)
    merged = {**record.options, **(options or {})}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    drawn = []
    for i in range(samples):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=i))
        space = TrialSpace(study.ask(), "", label)
        params = _call(plugin, f"{label}: suggest()", lambda: record.suggest(space, merged))
        problem = contract.suggest_problem(params)
        if problem:
            raise _fail(plugin, f"{label}: suggest()", problem)
        drawn.append(params)
        for n in n_groups:
            phases = _call(plugin, f"{label}: phases(params, {n})", lambda: list(record.phases(params, n)))
            problem = contract.phases_problem(phases, n)
            if problem:
                raise _fail(plugin, f"{label}: phases(params, {n})", problem)
            if list(record.phases(params, n)) != phases:
                raise _fail(plugin, label, "phases() gave different phases for the same parameters")
    if record.adapt is not None:
        for modality in modalities:
            _check_adapt(record, drawn[0], plugin, label, modality)


MODALITIES = ("image", "text")  # what check_strategy checks a strategy's adapt on by default


def _check_adapt(record: Strategy, params: Mapping[str, Any], plugin: str, label: str, modality: str = "image") -> None:
    from tlbench.engine import basics
    from tlbench.search import calls
    from tlbench.testing.models import kit_backbone  # torch: only when a check needs it

    built, example, what = kit_backbone(modality)
    try:
        adapted = calls.adapt(record, built, params, plugin)
    except UserError as exc:
        raise ConformanceError(
            f"{exc} (on {what}; a strategy only for images says so: "
            f"check_plugin(strategy_modalities={{'{record.name}': ('image',)}}))"
        ) from exc
    head = set(adapted.built.head)
    n = len(adapted.built.groups)
    trainable = basics.set_trainable(adapted.built.model, adapted.built, n, adapted.trainable)
    if trainable != head | set(adapted.trainable):
        raise _fail(plugin, label, "adapt(): with every group frozen, more than the head and trainable would train")
    if adapted.extra_loss is not None:
        _check_extra_loss(adapted, plugin, label, example)


def _check_extra_loss(adapted, plugin: str, label: str, x=None) -> None:
    """``extra_loss`` gives one finite value for a batch (``x``; default: two images), and gradients flow from it."""
    import torch

    from tlbench.engine import basics

    model = adapted.built.model.train()
    basics.set_trainable(model, adapted.built, 0, adapted.trainable)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) if x is None else x
    logits = model(x)
    value = _call(
        plugin, f"{label}: extra_loss()", lambda: adapted.extra_loss(model, logits.float(), torch.tensor([0, 1]))
    )
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not torch.isfinite(value).all():
        raise _fail(plugin, f"{label}: extra_loss()", f"returned {value!r}; return a finite scalar tensor")
    if value.requires_grad:
        value.reshape(()).backward()
