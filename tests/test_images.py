"""Images as users have them: every Pillow mode becomes the right 8-bit RGB, and a file
that cannot be used is refused by name, never skipped or trained on as a blank."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import one_line, tiny_benchmark
from PIL import Image
from test_datasets import make_folder

from tlbench import cli
from tlbench.engine.images import to_rgb
from tlbench.engine.inputs import ToRGB
from tlbench.engine.pipeline import ExampleSplit
from tlbench.host.builtins.datasets import load_imagefolder
from tlbench.types import DatasetRequest, Split, UserError


def _pixels(image: Image.Image) -> list:
    return np.asarray(to_rgb(image)).tolist()


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0  # palette entry 0 is transparent
    return image


CASES = {  # mode -> (image, the RGB pixels it must become)
    "16-bit grey (X-ray, microscopy)": (
        Image.fromarray(np.array([[0, 1000], [3000, 4095]], dtype=np.uint16)),  # 12 bits used of 16
        [[[0] * 3, [62] * 3], [[187] * 3, [255] * 3]],
    ),
    "16-bit grey, big-endian": (
        Image.fromarray(np.array([[100, 200]], dtype=np.uint16)).convert("I").convert("I;16B"),
        [[[0] * 3, [255] * 3]],
    ),
    "32-bit integer": (Image.fromarray(np.array([[-5, 0, 5]], dtype=np.int32)), [[[0] * 3, [128] * 3, [255] * 3]]),
    "float, with NaN": (
        Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)),
        [[[0] * 3, [128] * 3, [255] * 3, [0] * 3]],
    ),
    "constant 16-bit": (Image.fromarray(np.full((1, 2), 777, dtype=np.uint16)), [[[0] * 3, [0] * 3]]),
    "CMYK": (Image.new("CMYK", (1, 1), (0, 255, 255, 0)), [[[255, 0, 0]]]),
    "palette with transparency": (_palette_with_transparency(), [[[255, 255, 255], [255, 0, 0]]]),
    "grey with alpha (LA)": (
        Image.fromarray(np.array([[[10, 0], [10, 255]]], dtype=np.uint8), "LA"),
        [[[255, 255, 255], [10, 10, 10]]],
    ),
    "RGBA, half transparent": (Image.new("RGBA", (1, 1), (0, 0, 0, 128)), [[[127, 127, 127]]]),
    "1-bit": (Image.new("1", (2, 1), 1), [[[255] * 3, [255] * 3]]),
    "L*a*b*": (Image.new("LAB", (1, 1), (128, 128, 128)), [[[119, 119, 119]]]),
    "8-bit grey": (Image.new("L", (1, 1), 77), [[[77, 77, 77]]]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_image_mode_becomes_the_right_rgb(case):
    image, expected = CASES[case]
    assert _pixels(image) == expected, image.mode


def test_a_16_bit_png_from_disk_is_not_a_white_image(tmp_path):
    """The bug: .convert('RGB') clips 16-bit values to 255, so nearly every pixel was white."""
    values = np.linspace(0, 4095, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "scan.png")
    with Image.open(tmp_path / "scan.png") as image:
        image.load()
        assert image.mode == "I;16"
        assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.9  # what the old code trained on: white
        rgb = np.asarray(to_rgb(image))
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) == 64


def test_a_16_bit_dataset_trains_on_its_content(tmp_path):
    from torchvision import transforms as T

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            values = (np.random.default_rng(i).integers(0, 4096, (16, 16))).astype(np.uint16)
            Image.fromarray(values).save(tmp_path / cls / f"{i}.png")
    splits = load_imagefolder(
        DatasetRequest(
            options={"path": str(tmp_path), "val_fraction": 0.25, "test_fraction": 0.25}, seed=0, base_dir=tmp_path
        )
    )
    x, _ = ExampleSplit(splits.train, T.Compose([ToRGB(), T.ToTensor()]))[0]
    assert x.shape == (3, 16, 16) and x.std() > 0.1  # a real image, not a constant


def test_a_dangling_symlink_is_refused_by_name(tmp_path, write_config, capsys):
    make_folder(tmp_path / "images", {"a": 4, "b": 4})
    link = tmp_path / "images" / "a" / "gone.png"
    os.symlink(tmp_path / "nowhere.png", link)
    config = write_config(tiny_benchmark(datasets=[{"name": "imagefolder", "path": "images"}]))
    one_line(
        capsys,
        cli.main(["validate", str(config)]),
        f"image {link} is a link to",
        "which does not exist; fix the link or delete it",
    )


def test_hidden_files_and_folders_are_skipped_at_every_depth(tmp_path):
    """One rule: a name starting with '.' is not part of the dataset, class folder or not."""
    make_folder(tmp_path, {"a": 4, "b": 4, ".hidden_class": 4})
    make_folder(tmp_path / "a", {".ipynb_checkpoints": 3, "sub": 2})
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "._resource_fork.png")  # macOS AppleDouble files have image names
    splits = load_imagefolder(
        DatasetRequest(
            options={"path": str(tmp_path), "val_fraction": 0.25, "test_fraction": 0.25}, seed=0, base_dir=tmp_path
        )
    )
    ids = [*splits.train.ids, *splits.val.ids, *splits.test.ids]
    assert splits.classes == ("a", "b") and len(ids) == 4 + 2 + 4
    assert not [i for i in ids if "/." in i]
    assert sum("/a/sub/" in i for i in ids) == 2  # visible subfolders of a class are part of it


def test_a_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch):
    make_folder(tmp_path, {"a": 2, "b": 2}, size=32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 32 x 32 = 1024 > 2 x 200
    with pytest.raises(UserError, match=r"image .*/a/0.png has more pixels than Pillow's decompression-bomb limit"):
        load_imagefolder(DatasetRequest(options={"path": str(tmp_path)}, seed=0, base_dir=tmp_path))


def test_an_image_mode_that_cannot_become_rgb_names_the_example():
    from torchvision import transforms as T

    class Odd:  # a plugin's image whose conversion fails
        mode = "XYZ"
        info: dict = {}

        def convert(self, mode):
            raise ValueError("conversion from XYZ to RGB not supported")

    split = Split(labels=(0,), ids=("odd:0",), load=lambda i: Odd())
    with pytest.raises(UserError, match="example odd:0: Pillow cannot convert its mode XYZ to RGB"):
        ExampleSplit(split, T.Compose([ToRGB(), T.ToTensor()]))[0]


def test_an_undecodable_image_with_dataloader_workers_is_one_line(tmp_path, write_config, capsys):
    """With num_workers > 0, PyTorch re-raises a worker's error with its whole traceback as the message."""
    make_folder(tmp_path / "images", {"a": 8, "b": 8}, size=64)
    broken = tmp_path / "images" / "b" / "2.png"
    broken.write_bytes(broken.read_bytes()[:200])  # a valid header, then nothing
    config = write_config(
        tiny_benchmark(
            run="r",
            datasets=[{"name": "imagefolder", "path": "images", "val_fraction": 0.25, "test_fraction": 0.25}],
            training={"batch_size": 8, "resolution": 32, "num_workers": 1, "cache": {"enabled": False}},
            search={"n_trials": 1, "startup_trials": 1},
        )
    )
    one_line(
        capsys,
        cli.main(["run", str(config), "--format", "csv"]),
        f"image {broken} cannot be read",
        "delete or replace the file",
    )


def test_an_unreadable_subfolder_of_a_class_is_refused_not_skipped(tmp_path, write_config):
    """os.walk skips a folder it cannot read without a word: its images would silently be missing."""
    import subprocess
    import sys

    from conftest import without_root_override

    make_folder(tmp_path / "images", {"a": 4, "b": 4})
    hidden = make_folder(tmp_path / "images" / "a", {"more": 2}) / "more"
    config = write_config(tiny_benchmark(datasets=[{"name": "imagefolder", "path": "images"}]))
    hidden.chmod(0)
    try:
        proc = subprocess.run(
            [*without_root_override(), sys.executable, "-m", "tlbench", "validate", str(config)],
            capture_output=True,
            text=True,
        )
    finally:
        hidden.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tlbench: error: datasets[0] (imagefolder): cannot read folder {hidden} (Permission denied); check its permissions"
    ]
