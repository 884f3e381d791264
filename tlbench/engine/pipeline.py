"""From a dataset's examples to batches of tensors: a split through a backbone's transform, loaders.

What a transform does is the backbone's :class:`~tlbench.types.Inputs` (images: RGB,
resize, crop, normalize; text: tokenize). A user error raised while loading or
transforming an example (a damaged image) names the example and stays one line even
when DataLoader worker processes load it.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from tlbench.types import BadExample, Split, UserError


class ExampleSplit(torch.utils.data.Dataset):
    """A Split as (tensor, label) pairs through ``transform`` (an Inputs transform)."""

    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        example = self.split.load(i)
        try:
            x = self.transform(example)
        except BadExample as exc:
            raise UserError(f"example {self.split.ids[i]}: {exc}") from exc
        return x, self.split.labels[i]


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
