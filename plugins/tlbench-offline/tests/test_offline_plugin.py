"""tlbench-offline: real ImageNet weights, real datasets, and a real run through tlbench."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

from tlbench import cli
from tlbench.plugins import collect, make_plugin_manager
from tlbench.types import BackboneRequest, DatasetRequest, UserError
from tlbench_offline import weights

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "offline")
    return collect(make_plugin_manager())


def _imagenet_model(name: str):
    """The packaged weights converted into timm's model with its 1000-class head."""
    spec = weights.LITE[name]
    model = timm.create_model(spec.timm_name)
    state = torch.load(weights.packaged_weights(spec), map_location="cpu", weights_only=True)
    model.load_state_dict(weights.convert_lite(state, model), strict=True)
    return model.eval()


@pytest.mark.parametrize("name", list(weights.LITE))
def test_converted_weights_recognise_a_cat_and_an_espresso(name):
    from skimage import data

    model = _imagenet_model(name)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        cat = model(transform(Image.fromarray(data.chelsea()))[None]).argmax().item()
        coffee = model(transform(Image.fromarray(data.coffee()))[None]).argmax().item()
    assert cat in CATS and coffee == ESPRESSO


def test_converter_refuses_weights_for_another_size():
    lite0 = torch.load(weights.packaged_weights(weights.LITE["efficientnet_lite0"]), map_location="cpu", weights_only=True)
    with pytest.raises(UserError, match="weights do not fit"):
        weights.convert_lite(lite0, timm.create_model("tf_efficientnet_lite2"))
    swapped = dict(reversed(list(lite0.items())))  # right count, wrong order
    with pytest.raises(UserError, match="weights do not fit the model at"):
        weights.convert_lite(swapped, timm.create_model("tf_efficientnet_lite0"))


def test_plugin_backbone_keeps_every_pretrained_tensor_and_adds_a_fresh_head(registry):
    record, model_name = registry.backbone("efficientnet_lite0")
    built = record.build(BackboneRequest(model=model_name, num_classes=10, pretrained=True))
    reference = _imagenet_model("efficientnet_lite0").state_dict()
    state = built.model.state_dict()
    body = [k for k in reference if not k.startswith("classifier.")]
    assert len(body) == 294 and all(torch.equal(state[k], reference[k]) for k in body)
    assert built.model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    names = [n for g in built.groups for n in g] + list(built.head)
    assert sorted(names) == sorted(n for n, _ in built.model.named_parameters())
    assert built.data_config.mean == (0.5, 0.5, 0.5) and built.data_config.input_size == 224
    scratch = record.build(BackboneRequest(model=model_name, num_classes=10, pretrained=False))
    assert not torch.equal(scratch.model.state_dict()["conv_stem.weight"], reference["conv_stem.weight"])


EXPECTED = {  # name: (classes, image size, (train, val, test))
    "digits": (10, (8, 8), (1079, 359, 359)),
    "mnist5k": (10, (28, 28), (3000, 1000, 1000)),
    "lfw_faces": (2, (25, 25), (120, 40, 40)),
    "textures": (3, (32, 32), (300, 120, 120)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_dataset_shapes_classes_sizes_and_disjoint_splits(registry, name):
    classes, size, sizes = EXPECTED[name]
    splits = registry.dataset(name).load(DatasetRequest(options={}, seed=0, base_dir=Path(".")))
    assert len(splits.classes) == classes
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    for split in (splits.train, splits.val, splits.test):
        assert set(split.labels) == set(range(classes))  # every class in every split
        image = split.load(0)
        assert image.size == size and np.asarray(image).dtype == np.uint8
    ids = [set(s.ids) for s in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = registry.dataset(name).load(DatasetRequest(options={}, seed=5, base_dir=Path(".")))
    assert again.test.ids == splits.test.ids  # fixed: independent of the benchmark seed


def test_texture_patches_come_from_disjoint_row_bands(registry):
    splits = registry.dataset("textures").load(DatasetRequest(options={}, seed=0, base_dir=Path(".")))
    rows = {}
    for split_name in ("train", "val", "test"):
        for example in getattr(splits, split_name).ids:
            photo, y = re.match(r"textures:(\w+):\w+:\d+@(\d+),\d+", example).groups()
            rows.setdefault((photo, split_name), set()).update(range(int(y), int(y) + 32))
    for photo in ("brick", "grass", "gravel"):
        train, val, test = (rows[(photo, s)] for s in ("train", "val", "test"))
        assert not (train & val or train & test or val & test)


def test_quick_run_over_the_plugin_backbones(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "offline")
    names = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    config = {
        "name": "offline-quick",
        "datasets": [{"name": "lfw_faces"}],
        "backbones": [{"name": n} for n in names] + [{"name": "efficientnet_lite0", "pretrained": False}],
        "strategies": [{"name": "linear_probe", "epochs": 2}],
        "search": {
            "n_trials": 4,
            "pruner": "none",
            "enqueue": [{"backbone": b, "strategy": "linear_probe", "params": {"lr_head": 0.02}} for b in names + ["efficientnet_lite0-scratch"]],
        },
        "training": {"batch_size": 20, "resolution": 32},
    }
    path = tmp_path / "benchmarks.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["run", str(path), "--format", "csv"]) == 0, capsys.readouterr().err
    (summary,) = (tmp_path / "results" / "offline-quick").glob("*/summary.json")
    rows = {(r["backbone"], r["strategy"]): r for r in json.loads(summary.read_text())}
    assert set(rows) == {(b, "linear_probe") for b in names + ["efficientnet_lite0-scratch"]}
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["train_gflops"] > 0


def test_the_plugin_passes_the_conformance_kit(tlbench_conformance):
    # the fixture comes from tlbench's pytest11 entry point, as in any plugin author's project
    checked = tlbench_conformance.check_plugin("offline")
    assert checked == [
        "backbone efficientnet_lite0", "backbone efficientnet_lite1", "backbone efficientnet_lite2",
        "dataset digits", "dataset mnist5k", "dataset lfw_faces", "dataset textures",
    ]  # fmt: skip
