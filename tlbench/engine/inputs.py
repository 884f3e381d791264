"""What a backbone consumes: its :class:`~tlbench.types.Inputs`, and the one for images.

The engine never looks at what an example is. A built backbone's ``inputs`` turn a
dataset's examples into tensors (``transforms``) and make up a batch of inputs for
metering, the feature-cut search and the memory check (``example``). A backbone that
gives no ``inputs`` reads images: :class:`ImageInputs` from its ``data_config``
(every image to 8-bit RGB by its mode's meaning, then resize, crop, normalize).
Text backbones bring their own (tlbench-text: a tokenizer and a sequence length).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tlbench.engine import images
from tlbench.types import BadExample, BuiltBackbone, DataConfig, Inputs

if TYPE_CHECKING:  # pragma: no cover - hints only
    import torch

SIZE_UNITS = {
    "resolution": "px",
    "max_length": "tokens",
}  # config fields (backbone entry, training) an Inputs.size_field may name
SIZE_FIELDS = tuple(SIZE_UNITS)
MODALITY_NOUNS = {"image": "images", "text": "text"}  # for messages: "reads images"


def inputs_of(built: BuiltBackbone) -> Inputs:
    """The backbone's inputs: its own, or images by its data config."""
    return built.inputs if built.inputs is not None else ImageInputs(built.data_config)


def input_size(inputs: Inputs, entry: Any, training: Any) -> int:
    """The size trials use: the backbone entry's field (``resolution`` for images,
    ``max_length`` for text), else the training section's, else the backbone's own."""
    field = inputs.size_field
    return getattr(entry, field, None) or getattr(training, field, None) or int(inputs.size)


def noun(modality: str) -> str:
    """ "images", "text", or the modality's own name: for messages."""
    return MODALITY_NOUNS.get(modality, modality)


def image_batch(n: int, side: int) -> torch.Tensor:
    """``n`` made-up normalized RGB images of ``side`` px, the same every call."""
    import torch

    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0))


class ToRGB:
    """An image of any Pillow mode as 8-bit RGB (tlbench.engine.images.to_rgb)."""

    def __call__(self, image):

        try:
            return images.to_rgb(image)
        except ValueError as exc:
            raise BadExample(str(exc)) from exc

    def __repr__(self) -> str:
        return "ToRGB()"


class ImageInputs:
    """Images as a timm/torchvision backbone takes them: RGB, resized and cropped to a
    square side, normalized by the weights' mean and std; training augments with a
    random resized crop and a horizontal flip."""

    modality = "image"
    size_field = "resolution"

    def __init__(self, data_config: DataConfig):
        self.data_config = data_config
        self.size = data_config.input_size

    def transforms(self, size: int, augment: bool):
        """(train, eval): PIL image -> normalized float tensor [3, size, size]; the same
        object twice without augmentation."""
        from torchvision import transforms as T

        dc = self.data_config
        interp = T.InterpolationMode(
            dc.interpolation if dc.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        )
        tail = [T.ToTensor(), T.Normalize(dc.mean, dc.std)]
        eval_tf = T.Compose([ToRGB(), T.Resize(int(math.floor(size / dc.crop_pct)), interp), T.CenterCrop(size), *tail])
        if not augment:
            return eval_tf, eval_tf
        train_tf = T.Compose(
            [ToRGB(), T.RandomResizedCrop(size, interpolation=interp), T.RandomHorizontalFlip(), *tail]
        )
        return train_tf, eval_tf

    def example(self, n: int, size: int) -> torch.Tensor:
        return image_batch(n, size)

    def memory_probe(self, size: int) -> tuple[int, float]:
        """Activations are measured at a side of at most 64 px and grow with the pixels."""
        return min(size, 64), 2.0
