"""Built-in datasets on real files: splits, disjointness, subsampling, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlbench.config import DatasetEntry
from tlbench.engine.inputs import ImageInputs
from tlbench.engine.pipeline import ExampleSplit
from tlbench.host.builtins.datasets import load_imagefolder, load_synthetic, load_torchvision
from tlbench.host.plugins import collect, make_plugin_manager
from tlbench.search.calls import load_splits
from tlbench.types import DataConfig, DatasetRequest, UserError


def make_folder(root: Path, counts: dict[str, int], mode: str = "RGB", size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / cls / f"{i}.png")
    return root


def _request(tmp_path, **options) -> DatasetRequest:
    return DatasetRequest(options=options, seed=0, base_dir=tmp_path)


def _ids(split) -> set[str]:
    return set(split.ids)


def test_imagefolder_stratified_split_is_disjoint_and_seeded(tmp_path):
    make_folder(tmp_path / "train", {"cat": 20, "dog": 10, "eel": 10})
    splits = load_imagefolder(_request(tmp_path, path="train"))
    assert splits.classes == ("cat", "dog", "eel")
    assert len(splits.train) + len(splits.val) + len(splits.test) == 40
    assert (len(splits.val), len(splits.test)) == (3 + 2 + 2, 3 + 2 + 2)  # 15 % per class, rounded
    assert not (
        _ids(splits.train) & _ids(splits.val)
        or _ids(splits.train) & _ids(splits.test)
        or _ids(splits.val) & _ids(splits.test)
    )
    for split in (splits.train, splits.val, splits.test):
        assert set(split.labels) == {0, 1, 2}
    again = load_imagefolder(_request(tmp_path, path="train"))
    assert again.val.ids == splits.val.ids
    other_seed = load_imagefolder(DatasetRequest(options={"path": "train"}, seed=1, base_dir=tmp_path))
    assert other_seed.val.ids != splits.val.ids


def test_imagefolder_with_separate_val_and_test_folders(tmp_path):
    make_folder(tmp_path / "train", {"a": 6, "b": 6})
    make_folder(tmp_path / "val", {"a": 2, "b": 2})
    make_folder(tmp_path / "test", {"a": 3, "b": 3})
    splits = load_imagefolder(_request(tmp_path, path="train", val_path="val", test_path="test"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 6)


def test_grayscale_images_become_three_channels(tmp_path):
    make_folder(tmp_path / "train", {"a": 5, "b": 5}, mode="L")
    splits = load_imagefolder(_request(tmp_path, path="train"))
    assert splits.train.load(0).mode == "L"
    tf, _ = ImageInputs(DataConfig(24, (0.5,) * 3, (0.5,) * 3)).transforms(24, augment=False)
    x, y = ExampleSplit(splits.train, tf)[0]
    assert x.shape == (3, 24, 24) and y in (0, 1)


@pytest.mark.parametrize(
    "layout, message",
    [
        (None, "does not exist"),
        ({}, "no class subfolders"),
        ({"only": 3}, "need at least 2"),
        ({"a": 3, "empty": 0}, "has no images"),
    ],
)
def test_imagefolder_mistakes(tmp_path, layout, message):
    if layout is not None:
        (tmp_path / "train").mkdir()
        make_folder(tmp_path / "train", layout)
    with pytest.raises(UserError, match=message):
        load_imagefolder(_request(tmp_path, path="train"))


def test_a_file_that_is_no_image_is_refused_before_any_trial(tmp_path):
    make_folder(tmp_path / "train", {"a": 4, "b": 4})
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png cannot be read"):
        load_imagefolder(_request(tmp_path, path="train"))


def test_an_image_cut_short_after_its_header_names_the_file_when_decoded(tmp_path):
    make_folder(tmp_path / "train", {"a": 4, "b": 4}, size=64)
    path = tmp_path / "train" / "a" / "0.png"
    path.write_bytes(path.read_bytes()[:200])  # the header survives, the pixels do not
    splits = load_imagefolder(_request(tmp_path, path="train"))
    everything = [splits.train, splits.val, splits.test]
    where = next((s, s.ids.index(i)) for s in everything for i in s.ids if i.endswith("0.png") and "/a/" in i)
    with pytest.raises(UserError, match="0.png cannot be read"):
        where[0].load(where[1])


def test_files_that_are_not_images_are_ignored(tmp_path):
    make_folder(tmp_path / "train", {"a": 4, "b": 4})
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\0\0")
    splits = load_imagefolder(_request(tmp_path, path="train"))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 8


def test_synthetic_is_deterministic_and_sized():
    splits = load_synthetic(DatasetRequest(options={"classes": 3, "train_per_class": 5}, seed=0, base_dir=Path(".")))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 60, 60)
    a = np.asarray(splits.train.load(4))
    b = np.asarray(
        load_synthetic(
            DatasetRequest(options={"classes": 3, "train_per_class": 5}, seed=0, base_dir=Path("."))
        ).train.load(4)
    )
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(np.asarray(splits.val.load(4)), a)


def test_torchvision_dataset_by_name_with_its_own_split():
    splits = load_torchvision(
        DatasetRequest(
            options={"dataset": "FakeData", "args": {"size": 60, "num_classes": 3, "image_size": [3, 8, 8]}},
            seed=0,
            base_dir=Path("."),
        )
    )
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60
    assert splits.train.load(0).size == (8, 8)
    assert not (_ids(splits.train) & _ids(splits.val))


def test_torchvision_missing_files_offline_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"torchvision MNIST: .* set 'download: true'"):
        load_torchvision(_request(tmp_path, dataset="MNIST", root="data"))
    with pytest.raises(UserError, match="did you mean CIFAR10"):
        load_torchvision(_request(tmp_path, dataset="CIFAR1O", root="data"))


def test_subsampling_is_balanced_and_never_crosses_splits(tmp_path):
    registry = collect(make_plugin_manager())
    entry = DatasetEntry(name="synthetic", classes=4, train_per_class=30, train_samples=10, test_samples=8)
    splits = load_splits(entry, registry.dataset("synthetic"), 0, tmp_path)
    assert len(splits.train) == 10 and len(splits.test) == 8 and len(splits.val) == 80
    counts = np.bincount(splits.train.labels)
    assert counts.max() - counts.min() <= 1
    capped = load_splits(DatasetEntry(name="synthetic", per_class=2), registry.dataset("synthetic"), 0, tmp_path)
    assert np.bincount(capped.train.labels).tolist() == [2, 2, 2, 2]
