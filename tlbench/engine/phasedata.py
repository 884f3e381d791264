"""Where a phase's batches come from: examples loaded and transformed every epoch, or the
frozen prefix's features, extracted once into the feature cache (:mod:`tlbench.engine.features`)
and read back from it; the screen's ``frozen_features`` too."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlbench.base import interrupts
from tlbench.engine import cost, features
from tlbench.engine.basics import (
    EpochOrder,
    TrainSettings,
    autocast_dtype,
    is_channels_last,
    precision_name,
    set_trainable,
    to_device,
)
from tlbench.engine.inputs import inputs_of
from tlbench.engine.pipeline import ExampleSplit, Loader
from tlbench.types import BuiltBackbone, DatasetSplits, Phase


class PhaseData:
    """Where a phase's batches come from."""

    prefix_flops = 0.0  # FLOPs per example spent once, before the epochs
    channels_last = True  # 4-D batches (images, conv feature maps) are fed as channels_last

    def train(self): ...  # (x, y) batches in this epoch's order
    def eval(self, split: str): ...  # (x, y) batches in split order

    def model(self, model: nn.Module, cut: features.Cut | None):
        return contextlib.nullcontext(model)

    def step_flops(self, model: nn.Module, probe: torch.Tensor) -> float:
        return cost.train_step_flops(model, probe)

    def forward_flops(self, model: nn.Module, probe: torch.Tensor) -> float:
        """FLOPs of one evaluation forward pass per example, on what this phase feeds the model."""
        return cost.forward_flops(model, probe)


class Examples(PhaseData):
    """Examples loaded and transformed every epoch (the uncached path)."""

    def __init__(self, splits: DatasetSplits, train_tf, eval_tf, settings: TrainSettings, order: EpochOrder):
        cuda = settings.device.type == "cuda"
        common = dict(
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            pin_memory=cuda,
            persistent_workers=settings.num_workers > 0,
            generator=torch.Generator().manual_seed(settings.seed + 1),  # worker seeds; never the global RNG
        )
        self.loaders = {
            "train": Loader(ExampleSplit(splits.train, train_tf), sampler=order, **common),
            "val": Loader(ExampleSplit(splits.val, eval_tf), **common),
            "test": Loader(ExampleSplit(splits.test, eval_tf), **common),
        }

    def train(self):
        return self.loaders["train"]

    def eval(self, split: str):
        return self.loaders[split]


class Cached(PhaseData):
    """Outputs of the frozen prefix, computed once: the suffix trains on them."""

    def __init__(self, cached: features.Features, splits: DatasetSplits, settings: TrainSettings, order: EpochOrder):
        self.features, self.batch_size, self.order = cached.splits, settings.batch_size, order
        self.labels = {name: torch.tensor(getattr(splits, name).labels) for name in ("train", "val", "test")}
        self.prefix_flops = cached.flops_per_image
        self.pin = settings.device.type == "cuda"
        # feature maps go on as the prefix made them: conv outputs channels_last, a ViT's tokens untouched
        self.channels_last = cached.channels_last
        if self.pin and cached.nbytes < 0.25 * torch.cuda.mem_get_info(settings.device)[0]:
            # small enough: batches are gathered on the GPU, no copy per step
            self.features = {k: v.to(settings.device) for k, v in self.features.items()}
            self.labels = {k: v.to(settings.device) for k, v in self.labels.items()}
            self.pin = False

    def _batches(self, split: str, indices: torch.Tensor):
        x_all, y_all = self.features[split], self.labels[split]
        for chunk in indices.to(x_all.device).split(self.batch_size):
            x, y = x_all[chunk], y_all[chunk]
            yield (x.pin_memory(), y.pin_memory()) if self.pin else (x, y)

    def train(self):
        return self._batches("train", torch.tensor(list(iter(self.order)), dtype=torch.long))

    def eval(self, split: str):
        return self._batches(split, torch.arange(len(self.labels[split])))

    def model(self, model: nn.Module, cut: features.Cut | None):
        return features.stubbed(model, cut)

    def step_flops(self, model: nn.Module, probe: torch.Tensor) -> float:
        return cost.train_step_flops(model, self.features["train"][:2].to(probe.device))

    def forward_flops(self, model: nn.Module, probe: torch.Tensor) -> float:
        return cost.forward_flops(model, self.features["train"][:2].to(probe.device))


def phase_off(phase: Phase, extra_loss) -> str:
    """Why a phase must see its frozen layers run (no feature cache), or "": an extra loss
    may read any layer's activations (through hooks; not one that declares it reads only
    trainable parameters), and batch norm in "train" mode updates the frozen layers'
    statistics."""
    if extra_loss is not None:
        return "extra loss"
    if phase.batchnorm == "train":
        return "batchnorm train"
    return ""


def phase_data(
    model,
    cut,
    splits,
    examples,
    eval_tf,
    settings: TrainSettings,
    dtype,
    order,
    phase: str,
    off: str = "",
    augmenting=False,
):
    """(data for the phase, where it came from, seconds spent extracting features).

    The source is "memory" / "disk" (cache hits), "extracted" (computed now and
    cached), or "off" with the reason (``off``: the phase's own, see phase_off).
    ``augmenting``: the training transform is not the evaluation one.
    """
    reason = off or cache_off(cut, splits, settings, augmenting)
    if reason:
        return examples, features.CacheUse(phase, "off", reason=reason), 0.0
    cached, where = from_cache(model, cut, splits, eval_tf, settings, dtype)
    seconds = cached.seconds if where == "extracted" else 0.0
    return Cached(cached, splits, settings, order), features.CacheUse(phase, where, at=cut.name), seconds


def from_cache(
    model, cut, splits: DatasetSplits, eval_tf, settings: TrainSettings, dtype
) -> tuple[features.Features, str]:
    """The prefix's outputs from the feature cache ("memory", "disk"), or extracted now
    and put there ("extracted")."""
    key = features.cache_key(model, cut, settings.data_key, repr(eval_tf), precision_name(dtype), settings.device)
    cached, where = settings.cache.get(key)
    if cached is None:
        cached = _extract_splits(model, cut, splits, eval_tf, settings, dtype)
        settings.cache.put(key, cached)
        where = "extracted"
    return cached, where


def frozen_features(
    built: BuiltBackbone, splits: DatasetSplits, settings: TrainSettings
) -> tuple[features.Features, features.Cut, str]:
    """The outputs of ``built``'s frozen layers up to its head (a linear probe's cut) for
    every split, through the eval transform: from the feature cache when a trial (or an
    earlier call) put them there, else extracted and put there, so that the screen and
    the linear-probe trials after it compute them once. Returns (features, cut, where:
    "memory", "disk", "extracted", or "uncached" when the cache is off or too small)."""
    dtype = autocast_dtype(settings.device)
    model = built.model.to(settings.device, memory_format=torch.channels_last).eval()
    inputs = inputs_of(built)
    _, eval_tf = inputs.transforms(settings.size, False)
    trainable = set_trainable(model, built, len(built.groups))
    finder = features.find_cut if settings.cache is None else settings.cache.find_cut
    cut, _ = finder(model, trainable, inputs.example(2, settings.size).to(settings.device))
    if cache_off(cut, splits, settings):
        return _extract_splits(model, cut, splits, eval_tf, settings, dtype), cut, "uncached"
    cached, where = from_cache(model, cut, splits, eval_tf, settings, dtype)
    return cached, cut, where


def cache_off(cut: features.Cut, splits: DatasetSplits, settings: TrainSettings, augmenting: bool = False) -> str:
    """Why this phase cannot train on cached features, or "" if it can."""
    if settings.cache is None:
        return "disabled"
    if augmenting:
        return "augmentation"  # random crops: the frozen layers see new inputs every epoch
    n = len(splits.train) + len(splits.val) + len(splits.test)
    nbytes = n * math.prod(cut.feature_shape) * 4
    if not settings.cache.fits(nbytes):
        return f"features {nbytes / 2**20:.0f} MB > cache memory"
    return ""


def _extract_splits(model, cut, splits: DatasetSplits, eval_tf, settings: TrainSettings, dtype) -> features.Features:
    """The prefix's output for every example of every split, through the eval transform;
    the training split's pass timed (a trial that extracts counts it as training) and the
    test split's apart (the screen's own cost leaves it out: choosing never reads it)."""
    out: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    flops = 0.0
    for name in ("train", "val", "test"):
        elapsed = features.timer()
        loader = Loader(
            ExampleSplit(getattr(splits, name), eval_tf),
            batch_size=settings.batch_size,
            num_workers=settings.num_workers,
            generator=torch.Generator().manual_seed(settings.seed + 1),
        )
        out[name], counted = _extract(model, cut, loader, settings.device, dtype)
        seconds[name] = elapsed()
        if name == "train":
            flops = counted
    sample = out["train"]
    channels_last = sample.dim() == 4 and (cut.name == features.INPUT or is_channels_last(sample))
    return features.Features(out, seconds["train"], channels_last, flops_per_image=flops, test_seconds=seconds["test"])


@torch.no_grad()
def _extract(model: nn.Module, cut: features.Cut, loader: DataLoader, device, dtype) -> tuple[torch.Tensor, float]:
    """(outputs of the prefix, in order; its forward FLOPs per image, counted on the first batch)."""
    was_training = model.training
    model.eval()
    out, flops = [], 0.0
    try:
        for x, _ in loader:
            interrupts.check()  # a safe point (see tlbench.base.interrupts)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                if out:
                    out.append(features.extract_batch(model, cut, to_device(x, device)).to("cpu"))
                    continue
                with cost.counting() as counter:
                    out.append(features.extract_batch(model, cut, to_device(x, device)).to("cpu"))
                flops = counter.get_total_flops() / len(x) if cut.name != features.INPUT else 0.0
    finally:
        model.train(was_training)
    return torch.cat(out), flops
