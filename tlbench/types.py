"""The records that plugins yield, and the error a plugin raises for a user mistake.

Everything here is plain, frozen data. Heavy work (building a model, reading
images) happens in the callables the records carry, only when the host calls them.
This module imports neither torch nor timm, so listing plugins stays fast.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - hints only
    from PIL.Image import Image
    from torch import nn

    from tlbench.store.record import TrialRecord


class UserError(Exception):
    """A mistake the user can fix (config, paths, data, weights).

    The command line prints it as one line and exits with code 2. The message
    should name the field, file or plugin and say how to fix it.
    """


_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


def config_path(value: str | Path, base_dir: Path | None = None, field: str = "path") -> Path:
    """A path written in a config, the one rule every path follows: ``~`` and environment
    variables (``$SCRATCH/data``, ``${HOME}``) are expanded; one that is not set is a
    UserError naming ``field``; a relative path is relative to ``base_dir`` (the config
    file's folder). Plugins use it for their own path options (API 1.4)."""
    text = str(value)
    if "$" in text:
        missing = [m.group(1).strip("{}") for m in _VARIABLE.finditer(text) if m.group(1).strip("{}") not in os.environ]
        if missing:
            raise UserError(
                f"{field}: {text}: environment variable ${missing[0]} is not set; set it or write the path out"
            )
        text = os.path.expandvars(text)
    path = Path(text).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


class BadExample(ValueError):
    """Raised by an input transform for an example it cannot take (a damaged image, a
    number where text belongs): the user's to fix; the host names the example (API 1.4)."""


# --------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class DataConfig:
    """How a backbone expects its input images (timm's pretrained data config)."""

    input_size: int  # side of the square input in pixels, e.g. 224
    mean: tuple[float, float, float]  # per-channel mean used to normalize RGB in [0, 1]
    std: tuple[float, float, float]  # per-channel std used to normalize
    interpolation: str = "bicubic"  # resize filter: "bilinear", "bicubic" or "nearest"
    crop_pct: float = 1.0  # eval: resize to input_size / crop_pct, then center-crop


class Inputs(Protocol):
    """What a backbone consumes and how a dataset's examples become its tensors (API 1.4).

    A backbone whose ``BuiltBackbone.inputs`` is None reads images (tlbench.engine.inputs.ImageInputs
    from its ``data_config``). Another modality gives an object with these members;
    the engine needs nothing else (docs/plugins.md, "Another modality").
    """

    modality: str  # what it reads: "image", "text", ...; only datasets of this modality are paired with it
    size: int  # its default input size: an image side in pixels, a sequence length in tokens
    size_field: str  # the config field that sets the size: "resolution" (images) or "max_length" (text)

    def transforms(self, size: int, augment: bool) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        """(train, eval): an example as ``Split.load`` returns it -> the tensor of one input.
        Return the same object twice when training does not augment: the feature cache
        then covers the training split too. Raise tlbench.types.BadExample
        for an example it cannot take."""

    def example(self, n: int, size: int) -> Any:
        """A batch of ``n`` made-up inputs at ``size``, the same every call, as the model
        takes them (FLOPs, throughput, the feature-cut search, the memory check)."""

    def memory_probe(self, size: int) -> tuple[int, float]:
        """(a size at most ``size`` to measure one forward pass's activations at, the power
        of size / that size they grow with): images (min(size, 64), 2), text (size, 1)."""


@dataclass(frozen=True)
class BackboneRequest:
    """What the host asks a backbone builder for."""

    model: str  # the model name: "resnet18" for the config name "timm:resnet18"
    num_classes: int  # outputs of the fresh classification head
    pretrained: bool  # load the model's pretrained weights (never fall back to random)
    weights: Path | None = None  # a local weights file to load instead of downloading
    options: Mapping[str, Any] = field(default_factory=dict)  # the backbone's own config fields (Backbone.options), API 1.3


@dataclass(frozen=True)
class BuiltBackbone:
    """A model ready to train, with its parameters ordered for freezing."""

    model: nn.Module  # the network with a fresh head of num_classes outputs
    groups: tuple[tuple[str, ...], ...]  # parameter names by group, input -> output, head excluded
    head: tuple[str, ...]  # parameter names of the fresh head
    data_config: DataConfig | None = None  # images: input size and normalization the weights were trained with
    inputs: Inputs | None = None  # API 1.4: what the model reads, if not images by data_config (text: a tokenizer)


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
    options: Mapping[str, str] = field(default_factory=dict)  # accepted config field -> one-line help (API 1.3)
    modality: str = "image"  # API 1.4: what its models read; equals its BuiltBackbone's inputs.modality


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Split:
    """One split of a dataset: labels up front, examples loaded on demand."""

    labels: tuple[int, ...]  # class index of each example
    ids: tuple[str, ...]  # stable identity of each example (file path, index): splits must not share one
    load: Callable[[int], Image | str | Any]  # example index -> the example: a PIL image (any mode), a str for text

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
    """A source of labelled examples: images, or another modality's (API 1.4)."""

    name: str  # the name configs and results use
    load: Callable[[DatasetRequest], DatasetSplits]  # called once per benchmark run
    options: Mapping[str, str] = field(default_factory=dict)  # accepted option -> one-line help
    description: str = ""  # one line for `tlbench plugins`
    modality: str = "image"  # API 1.4: what its examples are ("image": PIL images, "text": str); paired with backbones of it


# --------------------------------------------------------------------------- strategies


OPTIMIZERS = ("adamw", "sgd")  # Phase.optimizer
SCHEDULES = ("cosine", "linear", "constant")  # Phase.schedule
BATCHNORM = ("auto", "eval", "train")  # Phase.batchnorm


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one set of trainable groups, learning rates and optimizer.

    Each phase gets a fresh optimizer (its state does not carry over) and a schedule
    over its own steps, or, with ``schedule_continues`` (API 1.5), the rest of the
    schedule that the phases before it began: one warm-up and one decay across them. With the defaults (API 1.0 behaviour): AdamW, weight decay
    ``training.weight_decay`` on every trainable parameter, cosine decay from the
    learning rates to 0, no warm-up, and batch-norm layers whose parameters are all
    frozen in eval mode (their running statistics stay as loaded). docs/plugins.md
    ("What a phase means") says each step exactly.
    """

    name: str  # shown in progress and stored with the trial, e.g. "head", "finetune"
    epochs: int  # passes over the training split
    frozen_groups: int  # the first k backbone groups do not train; k = all groups: head only
    lr_backbone: float  # learning rate of the trainable backbone groups without group_lrs, and of Adapted.trainable parameters in frozen groups
    lr_head: float  # learning rate of the head
    # API 1.3, each optional:
    group_lrs: tuple[float, ...] | None = None  # one learning rate per backbone group (input -> output) instead of lr_backbone
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum below, Nesterov)
    momentum: float = 0.9  # sgd only
    weight_decay: float | None = None  # None: training.weight_decay; applies to every trainable parameter
    schedule: str = "cosine"  # after warm-up: "cosine" (to 0), "linear" (to 0) or "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs (fractions allowed), then the schedule
    batchnorm: str = "auto"  # "auto": frozen norm layers eval, trained ones train; "eval": all eval; "train": all train
    # API 1.5, optional:
    schedule_continues: bool = False  # True: one schedule spans this phase and the one before (its steps counted on from there; that phase's schedule and warm-up rule both)


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
    ``extra_loss`` (API 1.3) adds a term to every training step's loss: L2-SP, DELTA.
    """

    built: BuiltBackbone  # the model to train (the same object changed in place, or a new one)
    trainable: tuple[str, ...] = ()  # parameter names that always train
    # API 1.3: (model, logits, targets) -> a scalar added to the cross-entropy of every training step, before loss
    # scaling (so fp16 scales both), outside autocast (in fp32): L2-SP, DELTA, BSS. The feature cache is off with it.
    extra_loss: Callable[[nn.Module, Any, Any], Any] | None = None
    # API 1.5: true when extra_loss reads nothing but the logits, the targets and the parameters that train (L2-SP,
    # a penalty on the head): the frozen layers' outputs can then be cached, as without an extra loss (same results)
    extra_loss_reads_only_trainable: bool = False


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
    """Freeze depth as a fraction of the backbone mapped to whole groups, counted from the input.

    0.0 trains every group, 1.0 freezes them all; the same fraction means the
    same relative depth on backbones with different numbers of groups.
    ``fraction * n_groups`` is rounded to the nearest whole group, and a tie
    (exactly half a group) freezes that group: 0.5 of 5 groups freezes 3, of 7
    freezes 4, of 17 freezes 9. (Before API 1.3, Python's round() sent ties to the
    even number: 2 of 5 but 4 of 7.) The product is rounded to 9 decimals first, so
    that 0.7 * 5, which floating point makes 3.4999999999999996, is the tie it means.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze fraction must be in [0, 1], got {fraction}")
    return math.floor(round(fraction * n_groups, 9) + 0.5)


# --------------------------------------------------------------------------- events and trackers (API 1.3)


@dataclass(frozen=True)
class RunInfo:
    """The run an event belongs to: what ``tlbench run`` (or one ``tlbench worker``) is doing."""

    benchmark: str  # the config's ``name``
    run: str  # the run's name (its folder: results_dir/benchmark/run)
    folder: Path | None  # the run folder; None for a worker on a machine without one
    fingerprint: str  # the config's fingerprint (what defines the search)
    datasets: tuple[str, ...]  # dataset keys, one study each
    studies: Mapping[str, str]  # dataset key -> Optuna study name
    storage: str  # the Optuna storage URL
    worker: str  # host:pid of the process sending the events
    config: Mapping[str, Any]  # the config as loaded (plain JSON values)


@dataclass(frozen=True)
class TrialInfo:
    """One trial at an event. ``record`` is everything stored with it so far (the
    same fields as the trials table, tlbench.store.record.TrialRecord)."""

    dataset: str  # dataset key
    study: str  # Optuna study name
    number: int  # Optuna trial number, unique within the study
    backbone: str  # backbone key
    strategy: str  # strategy key
    state: str  # "running", "complete", "pruned" or "failed"
    record: TrialRecord  # params, phases, seed, costs, curve so far, failure ...
    epochs: int = 0  # epochs the trial trains in all (0 when not known: a trial that never started)
    curve: tuple[float, ...] = ()  # validation accuracy after each epoch so far
    values: tuple[float, ...] = ()  # complete: the objective values (its value, search.select_epochs' mean validation accuracy; the cost for pareto)
    reason: str = ""  # pruned or failed: why
    seconds: float = 0.0  # finished: wall clock from its start to its end


@dataclass(frozen=True)
class TrackerRequest:
    """What the host gives a tracker when a run starts."""

    options: Mapping[str, Any]  # the tracker's own fields from the config's ``trackers:`` entry
    run: RunInfo  # the run
    base_dir: Path  # the config file's folder: resolve relative paths against it


@dataclass(frozen=True)
class Tracker:
    """Something that records a run elsewhere (TensorBoard, MLflow, a chat message).

    Listed in a config under ``trackers:``. When a run starts, the host calls
    ``open(request)`` once per process; the object it returns receives the event
    hooks (``tlbench_trial_started``, ``tlbench_epoch_done``, ... as methods marked
    ``@tlbench.hookimpl``, each optional) until the run ends, then ``close()`` if it has one.
    """

    name: str  # the name configs use
    open: Callable[[TrackerRequest], Any]  # request -> an object with event-hook methods
    options: Mapping[str, str] = field(default_factory=dict)  # accepted option -> one-line help
    description: str = ""  # one line for `tlbench plugins`
    # validate, and run before it creates anything, call it (API 1.4 addition, optional):
    # check the options without writing (URIs parse, folders can be made, a server answers
    # within seconds) and raise UserError naming what to fix. request.run.folder is where
    # the run folder will be; it may not exist yet.
    check: Callable[[TrackerRequest], None] | None = None
