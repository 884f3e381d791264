"""Turning any Pillow image into the 8-bit RGB a pretrained backbone expects.

``image.convert("RGB")`` is what most training scripts call, and it is wrong for
images people really have: a 16-bit greyscale PNG (X-ray, microscopy, satellite
data) is clipped to 0..255 first, so every pixel above 255 — nearly all of them —
becomes white and the network trains on blank images with no warning; float
images (mode ``F``) are clipped the same way; transparent pixels of palette and
grey+alpha images take whatever colour happens to sit under them.

:func:`to_rgb` converts every mode by its meaning:

- 8-bit colour and grey modes (``RGB``, ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``,
  ``HSV``): Pillow's own conversion; ``LAB`` through a colour transform to sRGB;
- modes with transparency (``RGBA``, ``LA``, ``PA``, ``La``, ``RGBa``, and ``P`` or
  ``L``/``RGB`` with a transparency key): composited over white, the background
  they are shown on;
- more than 8 bits (``I;16*``, ``I``, ``F``): scaled linearly from the image's own
  minimum..maximum to 0..255 (a constant image becomes black), then grey to RGB.
  Each image is scaled by its own range, so a scan that uses 12 of its 16 bits keeps
  its full contrast; images whose absolute intensities matter need a dataset plugin
  that scales them itself (and returns an 8-bit image).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")  # modes with more than 8 bits per pixel
BACKGROUND = (255, 255, 255)  # what transparent pixels become


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB with the image's content; raises ValueError for a mode Pillow cannot convert."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in WIDE:
        return _scaled(image).convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "LAB":  # Pillow's convert() would treat L*a*b* as if it were RGB
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        return ImageCms.applyTransform(image, ImageCms.buildTransform(lab, srgb, "LAB", "RGB"))
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"Pillow cannot convert its mode {mode} to RGB ({exc}); save it as 8-bit RGB or greyscale"
        ) from exc


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _scaled(image: Image.Image) -> Image.Image:
    """A wide-range grey image as 8-bit ``L``, scaled by its own minimum and maximum."""
    values = np.asarray(image, dtype=np.float64)
    if values.ndim != 2:
        values = values.reshape(image.size[1], image.size[0])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Image.new("L", image.size, 0)
    low, high = float(finite.min()), float(finite.max())
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    span = high - low
    scaled = np.zeros_like(values) if span == 0 else (values - low) * (255.0 / span)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
