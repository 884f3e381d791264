"""Built-in datasets: ``imagefolder``, ``torchvision`` and ``synthetic``.

Each returns disjoint train/val/test splits. Where a source has no val or test
split of its own, a stratified split of its training data is made with the
benchmark's seed, so the same config always gives the same split.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math
import os
from pathlib import Path

from tlbench import hookimpl
from tlbench.splits import stratified_split
from tlbench.types import Dataset, DatasetRequest, DatasetSplits, Split, UserError, config_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@hookimpl
def tlbench_datasets():
    yield Dataset(
        name="imagefolder",
        load=load_imagefolder,
        options={
            "path": "training folder with one subfolder of images per class (required)",
            "val_path": "optional validation folder, same layout",
            "test_path": "optional test folder, same layout",
            "val_fraction": "share of the training folder held out for validation when there is no val_path (0.15)",
            "test_fraction": "share held out for testing when there is no test_path (0.15)",
        },
        description="your own images: one subfolder per class",
    )
    yield Dataset(
        name="torchvision",
        load=load_torchvision,
        options={
            "dataset": "class name in torchvision.datasets, e.g. CIFAR10 (required)",
            "root": "folder holding the files (required for datasets that read files)",
            "download": "download into root if missing (needs a network; default false)",
            "args": "extra keyword arguments for the dataset class",
            "val_fraction": "share of the training split held out for validation (0.15)",
            "test_fraction": "share held out for testing when the dataset has no test split (0.15)",
        },
        description="a torchvision dataset by class name",
    )
    yield Dataset(
        name="synthetic",
        load=load_synthetic,
        options={
            "classes": "number of classes (4)",
            "size": "image side in pixels (32)",
            "train_per_class": "training images per class (40)",
            "val_per_class": "validation images per class (20)",
            "test_per_class": "test images per class (20)",
            "noise": "pixel noise std in [0, 1] (0.25); higher is harder",
        },
        description="generated oriented-stripe images, deterministic; for tests and smoke runs",
    )


def _option(options, key: str, default, kind: type, where: str):
    value = options.get(key, default)
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(f"dataset {where}: {key}: expected {kind.__name__}, got {value!r}")
    return value


def _fraction(options, key: str, where: str) -> float:
    value = _option(options, key, 0.15, float, where)
    if not 0.0 < value < 1.0:
        raise UserError(f"dataset {where}: {key}: must be between 0 and 1 (exclusive), got {value}")
    return value


# --------------------------------------------------------------------------- imagefolder


def load_imagefolder(request: DatasetRequest) -> DatasetSplits:
    options = request.options
    if "path" not in options:
        raise UserError("dataset imagefolder: path: missing; set it to a folder with one subfolder per class")
    folders = {
        split: _resolve(request.base_dir, options[key], key)
        for split, key in (("train", "path"), ("val", "val_path"), ("test", "test_path"))
        if options.get(key) is not None
    }
    scanned = {split: _scan(folder, split) for split, folder in folders.items()}
    for files_by_class in scanned.values():  # refused now, not in the middle of a trial
        for files in files_by_class.values():
            for path in files:
                _check_header(path)
    classes = tuple(sorted(scanned["train"]))
    if len(classes) < 2:
        raise UserError(f"dataset imagefolder: {folders['train']} has {len(classes)} class folder(s); need at least 2")
    for split in ("val", "test"):
        extra = set(scanned.get(split, {})) - set(classes)
        if extra:
            raise UserError(
                f"dataset imagefolder: {folders[split]}: class folders {sorted(extra)} are not in the training folder"
            )
    splits = {split: _files_split(files, classes) for split, files in scanned.items()}
    missing = [s for s in ("val", "test") if s not in splits]
    if missing:
        fractions = [_fraction(options, f"{s}_fraction", "imagefolder") for s in missing]
        parts = stratified_split(splits["train"].labels, fractions, request.seed)
        for split, part in zip(missing, parts[:-1]):
            splits[split] = splits["train"].subset(part)
        splits["train"] = splits["train"].subset(parts[-1])
    return DatasetSplits(train=splits["train"], val=splits["val"], test=splits["test"], classes=classes)


def _resolve(base: Path, value, key: str) -> Path:
    if not isinstance(value, str):
        raise UserError(f"dataset imagefolder: {key}: expected a folder path, got {value!r}")
    path = config_path(value, base, f"dataset imagefolder: {key}")
    if not path.is_dir():
        raise UserError(f"dataset imagefolder: {key}: folder {path} does not exist; create it or fix the path")
    return path


def _scan(folder: Path, split: str) -> dict[str, list[Path]]:
    """Image files by class folder. One rule at every depth: names starting with '.'
    (hidden files and folders: ``.DS_Store``, ``.ipynb_checkpoints``, macOS ``._x.jpg``)
    are not part of the dataset; every other file with an image suffix is, and one
    that cannot be read (a dangling link, no image) is refused, never skipped."""
    out = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise UserError(
            f"dataset imagefolder: cannot read folder {folder} ({exc.strerror}); check its permissions"
        ) from exc
    for class_dir in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        files = _image_files(class_dir)
        if not files:
            raise UserError(
                f"dataset imagefolder: class folder {class_dir} has no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder"
            )
        out[class_dir.name] = files
    if not out:
        raise UserError(
            f"dataset imagefolder: {folder} ({split}) has no class subfolders; put each class's images in a subfolder"
        )
    return out


def _image_files(class_dir: Path) -> list[Path]:
    files = []

    def unreadable(error: OSError) -> None:  # os.walk would skip the folder silently
        raise UserError(
            f"dataset imagefolder: cannot read folder {error.filename} ({error.strerror}); check its permissions"
        )

    for root, dirs, names in os.walk(class_dir, onerror=unreadable, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(root) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.is_file():
                target = os.readlink(path) if path.is_symlink() else "?"
                raise UserError(
                    f"image {path} is a link to {target}, which does not exist; fix the link or delete it"
                    if path.is_symlink()
                    else f"image {path} is not a regular file; move it out of the class folder"
                )
            files.append(path)
    return sorted(files)


def _files_split(files_by_class: dict[str, list[Path]], classes: tuple[str, ...]) -> Split:
    pairs = [(path, classes.index(name)) for name, files in files_by_class.items() for path in files]
    return Split(
        labels=tuple(label for _, label in pairs),
        ids=tuple(str(path.resolve()) for path, _ in pairs),
        load=lambda i: _open_image(pairs[i][0]),
    )


def _check_header(path: Path) -> None:
    """Cheap check of every file before any compute: it opens as an image (PIL reads
    the header only). A file cut short after its header is caught when first decoded."""
    with _opened(path) as image:
        image.size  # noqa: B018 - parsed from the header


def _open_image(path: Path):
    with _opened(path) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(
                f"image {path} cannot be read ({type(exc).__name__}: {exc}); delete or replace the file"
            ) from exc
        return image


@contextlib.contextmanager
def _opened(path: Path):
    """``Image.open``, with every way a file can fail to be an image as one line naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise UserError(
            f"image {path} has more pixels than Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} x 2): "
            "shrink it, or delete it if you did not make it"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"image {path} cannot be read ({type(exc).__name__}); delete or replace the file") from exc
    with image:
        yield image


# --------------------------------------------------------------------------- torchvision


def load_torchvision(request: DatasetRequest) -> DatasetSplits:
    import torchvision.datasets as tvd

    options = request.options
    name = options.get("dataset")
    available = [n for n in tvd.__all__ if n[0].isupper()]
    if name not in available:
        close = difflib.get_close_matches(str(name), available, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UserError(f"dataset torchvision: dataset: {name!r} is not a torchvision dataset{hint}")
    cls = getattr(tvd, name)
    params = inspect.signature(cls).parameters
    kwargs = dict(_option(options, "args", {}, dict, f"torchvision {name}"))
    if "root" in params:
        if "root" not in options:
            raise UserError(
                f"dataset torchvision {name}: root: missing; set it to the folder that holds (or will hold) the files"
            )
        kwargs["root"] = str(config_path(str(options["root"]), request.base_dir, "dataset torchvision: root"))
    if "download" in params:
        kwargs["download"] = _option(options, "download", False, bool, f"torchvision {name}")

    def make(**extra):
        try:
            return cls(**kwargs, **extra)
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            raise UserError(
                f"dataset torchvision {name}: {str(exc).strip().splitlines()[0]} (root={kwargs.get('root')}); "
                "put the files there, or set 'download: true' on a machine with a network"
            ) from exc
        except TypeError as exc:
            raise UserError(f"dataset torchvision {name}: args: {exc}") from exc

    if "train" in params:
        train_full, test = make(train=True), make(train=False)
    elif "split" in params:
        train_full, test = make(split="train"), make(split="test")
    else:
        train_full, test = make(), None
    return _split_torchvision(train_full, test, name, options, request.seed)


def _split_torchvision(train_full, test, name: str, options, seed: int) -> DatasetSplits:
    where = f"torchvision {name}"
    full = _dataset_split(train_full, f"{name}:train")
    fractions = [_fraction(options, "val_fraction", where)]
    if test is None:
        fractions.append(_fraction(options, "test_fraction", where))
    parts = stratified_split(full.labels, fractions, seed)
    test_split = _dataset_split(test, f"{name}:test") if test is not None else full.subset(parts[1])
    classes = getattr(train_full, "classes", None) or [str(c) for c in sorted(set(full.labels))]
    return DatasetSplits(
        train=full.subset(parts[-1]), val=full.subset(parts[0]), test=test_split, classes=tuple(map(str, classes))
    )


def _dataset_split(ds, prefix: str) -> Split:
    labels = None
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is not None and len(value) == len(ds):
            labels = [int(v) for v in value]
            break
    if labels is None:  # the slow, general way: ask every example
        labels = [int(ds[i][1]) for i in range(len(ds))]
    return Split(
        labels=tuple(labels), ids=tuple(f"{prefix}:{i}" for i in range(len(ds))), load=lambda i: _pil(ds[i][0])
    )


def _pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    import torchvision.transforms.functional as F

    return F.to_pil_image(image)


# --------------------------------------------------------------------------- synthetic


def load_synthetic(request: DatasetRequest) -> DatasetSplits:
    o = request.options
    spec = {
        "classes": _option(o, "classes", 4, int, "synthetic"),
        "size": _option(o, "size", 32, int, "synthetic"),
        "noise": _option(o, "noise", 0.25, float, "synthetic"),
    }
    counts = {
        s: _option(o, f"{s}_per_class", d, int, "synthetic") for s, d in (("train", 40), ("val", 20), ("test", 20))
    }
    if spec["classes"] < 2 or spec["size"] < 8 or min(counts.values()) < 1 or not 0 <= spec["noise"] <= 1:
        raise UserError("dataset synthetic: need classes >= 2, size >= 8, *_per_class >= 1 and 0 <= noise <= 1")
    splits = {}
    for code, (split, per_class) in enumerate(counts.items()):
        n = per_class * spec["classes"]
        labels = tuple(i % spec["classes"] for i in range(n))
        splits[split] = Split(
            labels=labels,
            ids=tuple(f"synthetic:{split}:{i}" for i in range(n)),
            load=lambda i, code=code, labels=labels: _stripes(labels[i], spec, (request.seed, code, i)),
        )
    classes = tuple(f"class_{c}" for c in range(spec["classes"]))
    return DatasetSplits(train=splits["train"], val=splits["val"], test=splits["test"], classes=classes)


def _stripes(label: int, spec: dict, key: tuple[int, int, int]):
    """Stripes at an angle set by the class (plus jitter), random frequency and
    phase, a faint class tint and pixel noise: learnable, not trivial."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(key)
    size, classes = spec["size"], spec["classes"]
    angle = math.pi * label / classes + rng.normal(0, 0.08)
    freq = rng.uniform(2.0, 4.0) * 2 * math.pi / size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(freq * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
    tint = 0.85 + 0.15 * np.array([math.cos(2 * math.pi * (label / classes + k / 3)) for k in range(3)])
    image = wave[..., None] * tint[None, None, :] + rng.normal(0, spec["noise"], (size, size, 3))
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB")
