"""What a plugin must return: the one set of checks the host runs on every record and
every result of plugin code, and that :mod:`tlbench.testing` (the conformance kit)
runs on a plugin author's records, so the two can never disagree.

Each check returns the problem as a short phrase (``"returned an empty head: ..."``)
or None; the host turns it into a UserError naming the plugin, the kit into a
ConformanceError. Nothing here imports torch: checks read what the objects expose.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

from tlbench.engine.inputs import SIZE_FIELDS, inputs_of
from tlbench.host.hookspecs import EVENT_HOOKS
from tlbench.types import (
    BATCHNORM,
    OPTIMIZERS,
    SCHEDULES,
    Adapted,
    Backbone,
    BuiltBackbone,
    DataConfig,
    Dataset,
    DatasetSplits,
    Phase,
    Split,
    Strategy,
    Tracker,
    UserError,
)

_CALLABLE, _OPTIONAL_CALLABLE = "a function", "a function or None"
FIELD_KINDS = {  # record type -> field -> what it must be (the dataclasses cannot check)
    Backbone: {
        "build": _CALLABLE, "description": str, "family": bool, "known": _OPTIONAL_CALLABLE, "names": _OPTIONAL_CALLABLE,
        "options": Mapping, "modality": str,
    },
    Dataset: {"load": _CALLABLE, "options": Mapping, "description": str, "modality": str},
    Strategy: {
        "suggest": _CALLABLE, "phases": _CALLABLE, "options": Mapping, "description": str, "adapt": _OPTIONAL_CALLABLE,
    },
    Tracker: {"open": _CALLABLE, "options": Mapping, "description": str},
}  # fmt: skip

# Names the host itself reads in a config entry, or draws for every trial: a plugin's
# option or parameter of the same name would be taken by the host, silently. Kept
# equal to the config schema's fields by tests/unit/test_contract.py.
RESERVED_PARAMS = ("backbone", "strategy", "batch_size", "weight_decay")  # trial parameters the host draws (training.*)
RESERVED_OPTIONS = {
    Backbone: ("name", "pretrained", "weights", "label", "resolution", "max_length"),  # fields of a backbones: entry
    Dataset: ("name", "label", "train_samples", "val_samples", "test_samples", "per_class"),  # of a datasets: entry
    Strategy: ("name", "label", *RESERVED_PARAMS),  # of a strategies: entry, and what the host draws
    Tracker: ("name", "optional"),  # of a trackers: entry
}


def plugin_call(plugin: str, what: str, fn):
    """Call plugin code. A UserError passes through; any other exception is the plugin's
    fault, and becomes one line naming the plugin and the record (``-v``: the traceback)."""
    try:
        return fn()
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"plugin {plugin}: {what} raised {type(exc).__name__}: {exc}") from exc


def record_problem(record: Any) -> str | None:
    """What is wrong with a record's fields, or None: 'build must be a function, got str'."""
    if not isinstance(record.name, str) or not record.name or ":" in record.name:
        return f"name {record.name!r} must be a non-empty string without ':'"
    for name, kind in FIELD_KINDS[type(record)].items():
        value = getattr(record, name)
        if kind is _CALLABLE:
            ok = callable(value)
        elif kind is _OPTIONAL_CALLABLE:
            ok = value is None or callable(value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            expected = kind if isinstance(kind, str) else f"a {kind.__name__}"
            return f"{name} must be {expected}, got {type(value).__name__}"
    return reserved_problem(record)


def reserved_problem(record: Any) -> str | None:
    """An option named like a field the host reads from the same config entry, or None."""
    reserved = RESERVED_OPTIONS[type(record)]
    taken = [k for k in record.options if k in reserved]
    if taken:
        kind = type(record).__name__.lower()
        return (
            f"option {taken[0]!r} is a name tlbench reserves for every {kind} "
            f"(reserved: {', '.join(reserved)}); rename the option, e.g. '{record.name}_{taken[0]}'"
        )
    return None


def built_problem(built: Any) -> str | None:
    """What is wrong with what ``build()`` returned, or None: the model's parameters must be
    named by non-empty groups and a non-empty head, each exactly once."""
    if not isinstance(built, BuiltBackbone):
        return f"returned {type(built).__name__}, expected tlbench.types.BuiltBackbone"
    if not built.groups or any(not group for group in built.groups):
        return "returned groups that are empty or hold an empty group; give parameter names by group, input to output"
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
    return inputs_problem(built)


def modality_problem(built: BuiltBackbone, record: Backbone) -> str | None:
    """A built model that reads another modality than its record says, or None."""

    reads = inputs_of(built).modality
    if reads != record.modality:
        return f"returned a model that reads {reads}, but the record says modality={record.modality!r}"
    return None


INPUTS_MEMBERS = ("modality", "size", "size_field", "transforms", "example", "memory_probe")  # tlbench.types.Inputs


def inputs_problem(built: BuiltBackbone) -> str | None:
    """What is wrong with how the built backbone says it reads its inputs, or None."""

    if built.inputs is None:
        if not isinstance(built.data_config, DataConfig):
            return f"returned data_config={type(built.data_config).__name__} and no inputs; give a DataConfig (images) or inputs"
        return None
    missing = [m for m in INPUTS_MEMBERS if not hasattr(built.inputs, m)]
    if missing:
        return f"returned inputs without {', '.join(missing)}; see tlbench.types.Inputs"
    if built.inputs.size_field not in SIZE_FIELDS:
        return f"returned inputs.size_field={built.inputs.size_field!r}; give one of {', '.join(SIZE_FIELDS)}"
    if not _whole(built.inputs.size) or built.inputs.size < 1:
        return f"returned inputs.size={built.inputs.size!r}; give the default input size, a whole number >= 1"
    return None


def adapted_problem(adapted: Any) -> str | None:
    """What is wrong with what ``adapt()`` returned, or None."""
    if not isinstance(adapted, Adapted):
        return f"returned {type(adapted).__name__}, expected tlbench.types.Adapted"
    problem = built_problem(adapted.built)
    if problem:
        return problem
    if isinstance(adapted.trainable, str) or not all(isinstance(n, str) for n in adapted.trainable):
        return f"returned trainable={adapted.trainable!r}; give a tuple of parameter names"
    known = {n for n, _ in adapted.built.model.named_parameters()}
    unknown = [n for n in adapted.trainable if n not in known]
    if unknown:
        return f"returned trainable names that are no parameters: {unknown[:3]}"
    if set(adapted.trainable) & set(adapted.built.head):
        return "returned trainable names of head parameters (the head always trains): leave them out"
    if not isinstance(adapted.extra_loss_reads_only_trainable, bool):
        return (
            f"returned extra_loss_reads_only_trainable={adapted.extra_loss_reads_only_trainable!r}; give True or False"
        )
    if adapted.extra_loss is not None and not callable(adapted.extra_loss):
        return f"returned extra_loss={type(adapted.extra_loss).__name__}; give a function (model, logits, targets) -> scalar, or None"
    return None


def group_order_problem(built: BuiltBackbone, first_use: Mapping[str, float]) -> str | None:
    """Groups that do not run from input to output, or None. ``first_use``: parameter
    name -> when, in one forward pass, the module owning it was first called
    (tlbench.engine.cost.first_use). A group's time is its earliest parameter's."""
    firsts = [(min(first_use.get(n, math.inf) for n in group), i) for i, group in enumerate(built.groups)]
    used = [(t, i) for t, i in firsts if t != math.inf]  # a group no forward pass uses has no place in the order
    for (before, j), (t, i) in zip(used, used[1:]):
        if t < before:
            return (
                f"groups must run from input to output, but group {i} ({built.groups[i][0]}, ...) is used before "
                f"group {j} ({built.groups[j][0]}, ...): freezing the first groups would not freeze the input side"
            )
    return None


def suggest_problem(params: Any) -> str | None:
    """What is wrong with what ``suggest()`` returned, or None: a dict of JSON values."""
    if not isinstance(params, Mapping):
        return f"returned {type(params).__name__}, expected a dict of parameters"
    try:
        json.dumps(dict(params))
    except (TypeError, ValueError) as exc:
        return f"returned parameters that are no JSON values (they are stored with the trial): {exc}"
    taken = [k for k in params if k in RESERVED_PARAMS]
    if taken:
        return (
            f"returned a parameter named {taken[0]!r}, a name the host draws for every trial "
            f"(reserved: {', '.join(RESERVED_PARAMS)}); rename it"
        )
    return None


def phases_problem(phases: Any, n_groups: int) -> str | None:
    """What is wrong with what ``phases(params, n_groups)`` returned, or None."""
    if not isinstance(phases, list) or not phases:
        return "returned no phases; give a list of tlbench.types.Phase"
    for phase in phases:
        problem = phase_problem(phase, n_groups)
        if problem:
            return problem
    if not any(p.epochs > 0 for p in phases):
        return "no phase has epochs > 0; set epochs to 1 or more"
    if phases[0].schedule_continues is True:
        return f"phase {phases[0].name}: schedule_continues=True on the first phase, which has no schedule to continue"
    return None


def phase_problem(phase: Any, n_groups: int) -> str | None:
    """What is wrong with one phase for a backbone of ``n_groups`` groups, or None."""
    if not isinstance(phase, Phase):
        return f"phases() returned {type(phase).__name__}, expected tlbench.types.Phase"
    if not isinstance(phase.name, str) or not phase.name:
        return f"a phase needs a name, got {phase.name!r}"
    if not _whole(phase.epochs) or phase.epochs < 0:
        return f"phase {phase.name}: epochs must be a whole number >= 0, got {phase.epochs!r}"
    if not _whole(phase.frozen_groups) or not 0 <= phase.frozen_groups <= n_groups:
        return f"phase {phase.name}: frozen_groups must be 0..{n_groups} for a backbone of {n_groups} groups, got {phase.frozen_groups!r}"
    if not isinstance(phase.schedule_continues, bool):
        return f"phase {phase.name}: schedule_continues must be True or False, got {phase.schedule_continues!r}"
    for field in ("lr_backbone", "lr_head", "momentum", "warmup_epochs"):
        if not _number(getattr(phase, field)):
            return f"phase {phase.name}: {field} must be a finite number >= 0, got {getattr(phase, field)!r}"
    if phase.weight_decay is not None and not _number(phase.weight_decay):
        return f"phase {phase.name}: weight_decay must be None or a finite number >= 0, got {phase.weight_decay!r}"
    if phase.group_lrs is not None:
        lrs = phase.group_lrs
        if (
            isinstance(lrs, (str, bytes))
            or not hasattr(lrs, "__len__")
            or len(lrs) != n_groups
            or not all(map(_number, lrs))
        ):
            return (
                f"phase {phase.name}: group_lrs must be {n_groups} finite numbers >= 0 for a backbone of {n_groups} "
                f"groups (one per group, input to output), got {lrs!r}"
            )
    for field, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("batchnorm", BATCHNORM)):
        if getattr(phase, field) not in allowed:
            return f"phase {phase.name}: {field} must be one of {', '.join(allowed)}, got {getattr(phase, field)!r}"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def splits_problem(splits: Any) -> str | None:
    """What is wrong with what ``load()`` returned, or None: disjoint, non-empty splits
    whose labels index the classes, every class in train."""
    if not isinstance(splits, DatasetSplits):
        return f"returned {type(splits).__name__}, expected tlbench.types.DatasetSplits"
    classes = splits.classes
    if (
        not isinstance(classes, tuple)
        or len(classes) < 2
        or len(set(classes)) != len(classes)
        or not all(isinstance(c, str) for c in classes)
    ):
        return f"classes must be a tuple of 2 or more distinct names, got {classes!r}"
    n = len(classes)
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        if not isinstance(split, Split):
            return f"the {name} split must be a tlbench.types.Split, got {type(split).__name__}"
        bad = next((y for y in split.labels if not _whole(y) or not 0 <= y < n), None)
        if bad is not None:
            return f"the {name} split has label {bad!r}, but there are {n} classes (labels 0..{n - 1})"
        if len(set(split.ids)) != len(split.ids):
            return f"the {name} split lists an example id twice"
    return disjoint_problem({name: getattr(splits, name) for name in ("train", "val", "test")}) or coverage_problem(
        splits
    )


def coverage_problem(splits: DatasetSplits, modality: str = "image") -> str | None:
    """Too little data, or None: an empty split, a class with no training example. With
    the built-in datasets that is the user's to fix (the host says so), with a plugin
    that makes its own splits the plugin's (the kit says so)."""
    for name in ("train", "val", "test"):
        if isinstance(getattr(splits, name), Split) and len(getattr(splits, name)) == 0:
            return f"the {name} split is empty; add {examples(modality)} or lower the held-out fractions"
    if isinstance(splits.train, Split) and isinstance(splits.classes, tuple):
        present = set(splits.train.labels)
        absent = [c for i, c in enumerate(splits.classes) if i not in present]
        if absent:
            return f"class {absent[0]!r} has no training example; add examples of it"
    return None


def example_problem(example: Any, modality: str = "image") -> str | None:
    """What is wrong with what a split's ``load(i)`` returned, or None: a PIL image for
    an image dataset, a str for a text dataset; another modality's examples are its
    backbone's transform's to check (anything but None)."""
    if modality == "image":
        from PIL import Image

        return None if isinstance(example, Image.Image) else f"returned {type(example).__name__}, expected a PIL image"
    if modality == "text":
        return None if isinstance(example, str) else f"returned {type(example).__name__}, expected a str (the text)"
    return "returned None, expected an example" if example is None else None


def disjoint_problem(parts: Mapping[str, Split]) -> str | None:
    """Splits that share an example, or None."""
    seen: dict[str, str] = {}
    for name, split in parts.items():
        for example in split.ids:
            if seen.setdefault(example, name) != name:
                return f"example {example} is in both the {seen[example]} and the {name} split; the splits must be disjoint"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def examples(modality: str) -> str:
    """What a dataset of ``modality`` is made of, for messages: images, texts."""
    return {"image": "images", "text": "texts"}.get(modality, "examples")


def event_methods_problem(obj: Any) -> str | None:
    """What is wrong with the event-hook methods of a tracker's (or plugin's) object, or
    None: a method named like a hook that is none (``tlbench_trial_finish``: a typo that
    pluggy would never call), or a hook method not marked ``@tlbench.hookimpl`` (never
    called either)."""
    import difflib

    for name in sorted(dir(obj)):
        if not name.startswith("tlbench_") or not callable(getattr(obj, name, None)):
            continue
        if name not in EVENT_HOOKS:
            close = difflib.get_close_matches(name, EVENT_HOOKS, 1)
            hint = f"did you mean {close[0]}?" if close else f"the event hooks are {', '.join(EVENT_HOOKS)}"
            return f"method {name} is no event hook, so it would never be called; {hint}"
        if getattr(getattr(obj, name), "tlbench_impl", None) is None:
            return f"method {name} is not marked @tlbench.hookimpl, so it would never be called; mark it"
    return None
