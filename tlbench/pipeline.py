"""From a dataset's examples to batches of tensors: transforms, conversion to RGB, loaders.

Every image becomes 8-bit RGB by its mode's meaning (:func:`tlbench.images.to_rgb`),
then the backbone's resize, crop and normalization (its :class:`~tlbench.types.DataConfig`).
A user error raised while loading an example (a damaged image) stays one line even
when DataLoader worker processes load it.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from tlbench import images
from tlbench.types import DataConfig, Split, UserError

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
    """A Split as (tensor, label) pairs; every image becomes 8-bit RGB by its mode's
    meaning (:func:`tlbench.images.to_rgb`: 16-bit and float scaled, alpha over white)."""

    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        image = self.split.load(i)
        try:
            rgb = images.to_rgb(image)
        except ValueError as exc:
            raise UserError(f"example {self.split.ids[i]}: {exc}") from exc
        return self.transform(rgb), self.split.labels[i]


class Loader(DataLoader):
    """A DataLoader whose worker processes report a user error as the one line it is.

    With ``num_workers > 0`` PyTorch re-raises an exception from a worker as the same
    type with the worker's whole traceback as its message; a damaged image would be a
    30-line error. The original message is its last line.
    """

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except UserError as exc:
                raise UserError(_worker_message(str(exc))) from None
            yield batch


def _worker_message(text: str) -> str:
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return last.partition("UserError: ")[2] or last
