"""What a fit is given and gives back (``TrainSettings``, ``FitResult``, ``TrialFailed``), the
device and precision it runs at, which parameters train, and the epoch order of examples."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tlbench.engine import features
from tlbench.types import BuiltBackbone, UserError


class TrialFailed(Exception):
    """The trial cannot go on (NaN loss, out of memory); the study continues.
    ``kind``: a :class:`tlbench.store.record.Failure` kind ("diverged", "error", ...)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int  # training batch size (evaluation uses the same)
    weight_decay: float  # AdamW weight decay for every trainable parameter
    augment: bool  # images: random resized crop + horizontal flip in training (Inputs.transforms)
    size: int  # input size: an image side in pixels, a sequence length in tokens (Inputs.size_field)
    device: torch.device  # where the model trains
    seed: int  # seeds init of the head, shuffling and augmentation
    num_workers: int = 0  # DataLoader worker processes
    compile: bool = False  # torch.compile the model for each phase
    cache: features.FeatureCache | None = None  # frozen-prefix feature cache; None: never cache
    data_key: str = ""  # identity of the examples (features.data_fingerprint), part of cache keys
    test_curve: bool = False  # also evaluate the test split after every epoch (recorded grids; never selects)


@dataclass(frozen=True)
class FitResult:
    val_curve: list[float]  # validation accuracy after each epoch
    test_correct: list[bool]  # per test example, in split order: right or wrong; reported, never used to select
    train_seconds: float  # wall clock of the training steps (and of feature extraction done here), evaluation excluded
    train_flops: float  # measured train-step FLOPs per example x examples trained on, summed over phases
    trainable_params: int  # parameters updated in at least one phase
    precision: str  # "fp32", "bf16" or "fp16"
    cache: tuple[features.CacheUse, ...] = ()  # per phase: where its inputs came from (see phase_data)
    test_curve: list[float] | None = None  # test accuracy after each epoch (TrainSettings.test_curve), else None
    val_flops: float = 0.0  # forward FLOPs of the validation passes the search reads: every epoch, a cached prefix once

    @property
    def feature_cache(self) -> str:
        """The cache uses as text: 'head: extracted at global_pool; ...'."""
        return "; ".join(map(str, self.cache)) or "off"

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
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"training.device: {name} asked for, but this machine has no Apple MPS device; use auto or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device: {name} asked for, but CUDA is not available; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"training.device: {name} asked for, but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    return device


def pick_devices(spec: str | Sequence[str]) -> list[torch.device]:
    """The devices trials run on, one trial per device at a time.

    ``auto``: every visible GPU, else the CPU. A list names them (``[cuda:0, cuda:1]``).
    """
    if isinstance(spec, str):
        if spec == "auto" and torch.cuda.device_count() > 1:
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [pick_device(spec)]
    return [pick_device(name) for name in spec]


def precision_for(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """bf16 on CUDA where supported, else fp16 (with a grad scaler); None (fp32) elsewhere."""
    if device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    return precision_for(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


class EpochOrder(torch.utils.data.Sampler):
    """A fresh permutation per epoch from one generator, whichever path reads the data:
    cached and uncached training see the same batches."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def set_trainable(model: nn.Module, built: BuiltBackbone, frozen: int, always: Collection[str] = ()) -> set[str]:
    """Freeze the first ``frozen`` groups; the other groups, the head and the ``always``
    parameters (a strategy's adapters, see tlbench.types.Adapted) train."""
    frozen = max(0, min(frozen, len(built.groups)))
    trainable = set(built.head).union(*map(set, built.groups[frozen:])) | set(always)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return trainable


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
