"""The records that plugins yield, and the error a plugin raises for a user mistake.

Everything here is plain, frozen data. Heavy work (building a model, reading
images) happens in the callables the records carry, only when the host calls them.
This module imports neither torch nor timm, so listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - hints only
    from PIL.Image import Image
    from torch import nn


class UserError(Exception):
    """A mistake the user can fix (config, paths, data, weights).

    The command line prints it as one line and exits with code 2. The message
    should name the field, file or plugin and say how to fix it.
    """


# --------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class DataConfig:
    """How a backbone expects its input images (timm's pretrained data config)."""

    input_size: int  # side of the square input in pixels, e.g. 224
    mean: tuple[float, float, float]  # per-channel mean used to normalize RGB in [0, 1]
    std: tuple[float, float, float]  # per-channel std used to normalize
    interpolation: str = "bicubic"  # resize filter: "bilinear", "bicubic" or "nearest"
    crop_pct: float = 1.0  # eval: resize to input_size / crop_pct, then center-crop


@dataclass(frozen=True)
class BackboneRequest:
    """What the host asks a backbone builder for."""

    model: str  # the model name: "resnet18" for the config name "timm:resnet18"
    num_classes: int  # outputs of the fresh classification head
    pretrained: bool  # load the model's pretrained weights (never fall back to random)
    weights: Path | None = None  # a local weights file to load instead of downloading
    options: Mapping[str, Any] = field(default_factory=dict)  # extra config fields


@dataclass(frozen=True)
class BuiltBackbone:
    """A model ready to train, with its parameters ordered for freezing."""

    model: nn.Module  # the network with a fresh head of num_classes outputs
    groups: tuple[tuple[str, ...], ...]  # parameter names by group, input -> output, head excluded
    head: tuple[str, ...]  # parameter names of the fresh head
    data_config: DataConfig  # input size and normalization the weights were trained with


@dataclass(frozen=True)
class Backbone:
    """A pretrained network a benchmark can adapt.

    A plain record provides one name (``efficientnet_lite0``). A *family* record
    (``family=True``) provides every name ``<name>:<model>`` its ``known``
    callable accepts, e.g. ``timm:resnet18``; ``build`` then gets ``model="resnet18"``.
    """

    name: str  # the name configs and results use, or the family prefix
    build: Callable[[BackboneRequest], BuiltBackbone]  # called once per trial
    description: str = ""  # one line for `tlbench plugins`
    family: bool = False  # True: ``name`` is a prefix for many models
    known: Callable[[str], bool] | None = None  # family: is this model name valid?
    names: Callable[[], Iterable[str]] | None = None  # family: all model names, for suggestions


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Split:
    """One split of a dataset: labels up front, images loaded on demand."""

    labels: tuple[int, ...]  # class index of each example
    ids: tuple[str, ...]  # stable identity of each example (file path, index): splits must not share one
    load: Callable[[int], Image]  # example index -> PIL image (any mode; the host converts to RGB)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.ids):
            raise ValueError(f"Split has {len(self.labels)} labels but {len(self.ids)} ids")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> Split:
        """The examples at ``indices``, in that order."""
        indices = tuple(indices)
        base = self.load
        return Split(
            labels=tuple(self.labels[i] for i in indices),
            ids=tuple(self.ids[i] for i in indices),
            load=lambda i: base(indices[i]),
        )


@dataclass(frozen=True)
class DatasetSplits:
    """Disjoint train/val/test splits. The test split is only ever used to report."""

    train: Split  # the model trains on this
    val: Split  # the search selects on this (pruning and the objective)
    test: Split  # reported for the selected configuration only
    classes: tuple[str, ...]  # class names; labels index into this


@dataclass(frozen=True)
class DatasetRequest:
    """What the host asks a dataset loader for."""

    options: Mapping[str, Any]  # the plugin's own fields from the config entry
    seed: int  # seed for any split the loader makes
    base_dir: Path  # the config file's folder: resolve relative paths against it


@dataclass(frozen=True)
class Dataset:
    """A source of labelled images."""

    name: str  # the name configs and results use
    load: Callable[[DatasetRequest], DatasetSplits]  # called once per benchmark run
    options: Mapping[str, str] = field(default_factory=dict)  # accepted option -> one-line help
    description: str = ""  # one line for `tlbench plugins`


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one set of trainable groups and learning rates."""

    name: str  # shown in progress and stored with the trial, e.g. "head", "finetune"
    epochs: int  # passes over the training split
    frozen_groups: int  # the first k backbone groups do not train; k = all groups: head only
    lr_backbone: float  # learning rate of the trainable backbone groups
    lr_head: float  # learning rate of the head


class Space(Protocol):
    """The search space a strategy draws from (Optuna define-by-run underneath)."""

    def suggest(self, name: str, spec: Any, *, log: bool = False) -> Any:
        """A value for ``name``: ``spec`` is a fixed value, ``[low, high]`` (a range),
        ``{"low": .., "high": .., "log": ..}``, or ``{"choices": [...]}``."""


@dataclass(frozen=True)
class Adapted:
    """A backbone as a strategy's ``adapt`` changed it for one trial (API 1.1).

    ``built.groups`` and ``built.head`` must still name every parameter of
    ``built.model`` exactly once (new parameters join the group of the layer they
    belong to). ``trainable`` parameters train in every phase, also inside groups
    the phase freezes, at the phase's ``lr_backbone``: LoRA factors, BitFit's biases.
    """

    built: BuiltBackbone  # the model to train (the same object changed in place, or a new one)
    trainable: tuple[str, ...] = ()  # parameter names that always train


@dataclass(frozen=True)
class Strategy:
    """A way to fine-tune: what it searches, and the phases it trains in."""

    name: str  # the name configs and results use
    suggest: Callable[[Space, Mapping[str, Any]], dict[str, Any]]  # (space, options) -> params
    phases: Callable[[Mapping[str, Any], int], Sequence[Phase]]  # (params, n_groups) -> phases
    options: Mapping[str, Any] = field(default_factory=dict)  # option -> default; configs override
    description: str = ""  # one line for `tlbench plugins`
    # (built, params) -> Adapted: change the freshly built backbone before training (API 1.1)
    adapt: Callable[[BuiltBackbone, Mapping[str, Any]], Adapted] | None = None


def frozen_groups(fraction: float, n_groups: int) -> int:
    """Freeze depth as a fraction of the backbone mapped to whole groups.

    0.0 trains every group, 1.0 freezes them all; the same fraction means the
    same relative depth on backbones with different numbers of groups.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze fraction must be in [0, 1], got {fraction}")
    return int(round(fraction * n_groups))
