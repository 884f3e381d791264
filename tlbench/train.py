"""The training engine: runs a strategy's phases on a built backbone and measures them.

Device auto-selection, AMP on CUDA (bf16 where supported, else fp16 with a
grad scaler), channels_last memory format (faster convolutions on CUDA, and
with oneDNN on CPU too: +15 % training, +30 % inference for EfficientNet-Lite0
at 64 px on a 2-core EPYC), seeded and reproducible on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlbench import cost
from tlbench.types import BuiltBackbone, DataConfig, DatasetSplits, Phase, Split, UserError


class TrialFailed(Exception):
    """The trial cannot go on (NaN loss, out of memory); the study continues."""


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int  # training batch size (evaluation uses the same)
    weight_decay: float  # AdamW weight decay for every trainable parameter
    augment: bool  # random resized crop + horizontal flip on training images
    resolution: int  # input side in pixels
    device: torch.device  # where the model trains
    seed: int  # seeds init of the head, shuffling and augmentation
    num_workers: int = 0  # DataLoader worker processes


@dataclass(frozen=True)
class FitResult:
    val_curve: list[float]  # validation accuracy after each epoch
    test_correct: list[bool]  # per test example, in split order: right or wrong; reported, never used to select
    train_seconds: float  # wall clock of the training steps, evaluation excluded
    train_flops: float  # measured train-step FLOPs per image x images trained on, summed over phases
    trainable_params: int  # parameters updated in at least one phase
    precision: str  # "fp32", "bf16" or "fp16"

    @property
    def val_accuracy(self) -> float:
        return self.val_curve[-1]

    @property
    def test_accuracy(self) -> float:
        return sum(self.test_correct) / len(self.test_correct)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device: {name} asked for, but CUDA is not available; use auto or cpu")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA where supported, else fp16; None (full precision) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_transforms(dc: DataConfig, resolution: int, augment: bool):
    """(train, eval) transforms: PIL image -> normalized float tensor [3, H, W]."""
    from torchvision import transforms as T

    interp = T.InterpolationMode(dc.interpolation if dc.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear")
    tail = [T.ToTensor(), T.Normalize(dc.mean, dc.std)]
    eval_tf = T.Compose([T.Resize(int(math.floor(resolution / dc.crop_pct)), interp), T.CenterCrop(resolution), *tail])
    if not augment:
        return eval_tf, eval_tf
    train_tf = T.Compose([T.RandomResizedCrop(resolution, interpolation=interp), T.RandomHorizontalFlip(), *tail])
    return train_tf, eval_tf


class ImageSplit(torch.utils.data.Dataset):
    """A Split as (tensor, label) pairs; every image becomes RGB (grayscale to 3 channels)."""

    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.transform(self.split.load(i).convert("RGB")), self.split.labels[i]


def fit(
    built: BuiltBackbone,
    splits: DatasetSplits,
    phases: Sequence[Phase],
    settings: TrainSettings,
    on_epoch: Callable[[int, float], None] = lambda epoch, acc: None,
) -> FitResult:
    """Train through ``phases``; ``on_epoch(epoch, val_accuracy)`` may raise to stop (pruning)."""
    torch.manual_seed(settings.seed)
    device, dtype = settings.device, autocast_dtype(settings.device)
    model = built.model.to(device, memory_format=torch.channels_last)
    train_tf, eval_tf = make_transforms(built.data_config, settings.resolution, settings.augment)
    loaders = _loaders(splits, train_tf, eval_tf, settings)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    curve: list[float] = []
    seconds = flops = 0.0
    updated: set[str] = set()
    for phase in phases:
        if phase.epochs <= 0:
            continue
        trainable = _set_trainable(model, built, phase.frozen_groups)
        updated |= trainable
        step_flops = cost.train_step_flops(model, settings.resolution, device)
        optimizer = _optimizer(model, built, trainable, phase, settings.weight_decay)
        steps = phase.epochs * len(loaders["train"])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        for _ in range(phase.epochs):
            start = time.perf_counter()
            images = _train_epoch(model, loaders["train"], optimizer, schedule, scaler, device, dtype, phase)
            seconds += time.perf_counter() - start
            flops += step_flops * images
            curve.append(evaluate(model, loaders["val"], device, dtype))
            on_epoch(len(curve), curve[-1])
    if not curve:
        raise TrialFailed("the strategy gave no phase with epochs > 0")
    test = correctness(model, loaders["test"], device, dtype)
    return FitResult(
        val_curve=curve,
        test_correct=test,
        train_seconds=seconds,
        train_flops=flops,
        trainable_params=cost.count_params(model, updated),
        precision={None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
    )


def _loaders(splits: DatasetSplits, train_tf, eval_tf, settings: TrainSettings) -> dict[str, DataLoader]:
    cuda = settings.device.type == "cuda"
    common = dict(
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        pin_memory=cuda,
        persistent_workers=settings.num_workers > 0,
    )
    generator = torch.Generator().manual_seed(settings.seed)
    return {
        "train": DataLoader(ImageSplit(splits.train, train_tf), shuffle=True, generator=generator, **common),
        "val": DataLoader(ImageSplit(splits.val, eval_tf), **common),
        "test": DataLoader(ImageSplit(splits.test, eval_tf), **common),
    }


def _set_trainable(model: nn.Module, built: BuiltBackbone, frozen: int) -> set[str]:
    """Freeze the first ``frozen`` groups; the other groups and the head train."""
    frozen = max(0, min(frozen, len(built.groups)))
    trainable = set(built.head).union(*map(set, built.groups[frozen:]))
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return trainable


def _train_mode(model: nn.Module) -> None:
    """Train mode, except norm layers whose parameters are all frozen: their running
    statistics stay as loaded, as a frozen layer should."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def _optimizer(model, built: BuiltBackbone, trainable: set[str], phase: Phase, weight_decay: float):
    head = set(built.head)
    named = [(n, p) for n, p in model.named_parameters() if n in trainable]
    groups = [
        {"params": [p for n, p in named if n not in head], "lr": phase.lr_backbone},
        {"params": [p for n, p in named if n in head], "lr": phase.lr_head},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay)


def _train_epoch(model, loader, optimizer, schedule, scaler, device, dtype, phase: Phase) -> int:
    _train_mode(model)
    images = 0
    for x, y in loader:
        try:
            _train_step(model, _to(x, device), y.to(device, non_blocking=True), optimizer, scaler, dtype, phase)
        except torch.OutOfMemoryError as exc:
            raise TrialFailed(f"out of memory in phase {phase.name} at batch size {len(x)}") from exc
        schedule.step()
        images += len(x)
    return images


def _train_step(model, x, y, optimizer, scaler, dtype, phase: Phase) -> None:
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = nn.functional.cross_entropy(model(x), y)
    if not torch.isfinite(loss):
        raise TrialFailed(
            f"loss became {loss.item()} in phase {phase.name} "
            f"(lr_backbone={phase.lr_backbone:.3g}, lr_head={phase.lr_head:.3g}); the learning rate is likely too high"
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None) -> float:
    """Top-1 accuracy on ``loader``."""
    correct = correctness(model, loader, device, dtype)
    return sum(correct) / max(len(correct), 1)


@torch.no_grad()
def correctness(model: nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None) -> list[bool]:
    """Whether each example of ``loader``, in order, is classified right (for bootstrap intervals)."""
    model.eval()
    out: list[bool] = []
    for x, y in loader:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(_to(x, device))
        out += (logits.argmax(1).cpu() == y).tolist()
    return out


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last)
