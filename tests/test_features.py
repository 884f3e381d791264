"""The frozen-prefix feature cache: exact, keyed on everything it depends on, off when it cannot be exact."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import timm
import torch

from tlbench.engine import cachedir, features
from tlbench.engine.basics import TrainSettings
from tlbench.engine.inputs import ImageInputs, image_batch
from tlbench.engine.train import fit
from tlbench.host.builtins.backbones import _head_names, _timm_data_config, timm_groups
from tlbench.host.builtins.datasets import load_synthetic
from tlbench.types import BuiltBackbone, DatasetRequest, Phase, UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    options = {"classes": 3, "size": 16, "train_per_class": 12, "val_per_class": 4, "test_per_class": 4}
    return load_synthetic(DatasetRequest(options=options, seed=0, base_dir=Path(".")))


def _built(name: str = "test_efficientnet") -> BuiltBackbone:
    """A tiny real timm model with dropout before the head and stochastic depth in the blocks."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, drop_rate=0.3, drop_path_rate=0.2)
    return BuiltBackbone(
        model, timm_groups(model), _head_names(model, model.get_classifier()), _timm_data_config(model)
    )


def _settings(cache=None, **overrides) -> TrainSettings:
    values = dict(
        batch_size=8, weight_decay=1e-4, augment=False, size=32, device=CPU, seed=3, cache=cache, data_key="d"
    )
    return TrainSettings(**(values | overrides))


def _phases(kind: str, n: int) -> list[Phase]:
    return {
        "probe": [Phase("head", 3, n, 0.0, 0.05)],
        "half": [Phase("finetune", 2, n // 2, 1e-3, 1e-2)],
        "two_stage": [Phase("head", 1, n, 0.0, 0.05), Phase("unfrozen", 2, n // 2, 1e-3, 1e-3)],
    }[kind]


@pytest.mark.parametrize("model", ["test_efficientnet", "test_resnet", "test_vit"])
@pytest.mark.parametrize("kind", ["probe", "half", "two_stage"])
def test_cached_training_is_the_same_computation_as_uncached(splits, model, kind):
    plain, cached = _built(model), _built(model)
    phases = _phases(kind, len(plain.groups))
    a = fit(plain, splits, phases, _settings())
    b = fit(cached, splits, phases, _settings(cache=features.FeatureCache()))
    assert "extracted at" in b.feature_cache and "off" in a.feature_cache
    assert a.val_curve == b.val_curve and a.test_correct == b.test_correct
    for (name, p), q in zip(plain.model.named_parameters(), cached.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert b.train_flops < a.train_flops  # the frozen prefix ran once, not every epoch
    assert 0 < b.val_flops < a.val_flops  # and once over the validation split too


def test_the_validation_passes_are_counted_a_forward_per_example_and_epoch(splits):
    """val_flops: what the search's validation passes cost (test passes are not the search's):
    uncached, the whole forward pass every epoch; cached, the prefix once and the head every epoch."""
    from tlbench.engine import cost
    from tlbench.engine.inputs import inputs_of

    built = _built()
    example = inputs_of(built).example(2, 32)
    per_example = cost.forward_flops(built.model, example)
    plain = fit(built, splits, _phases("probe", len(built.groups)), _settings())
    assert plain.val_flops == pytest.approx(3 * len(splits.val) * per_example)
    cached = fit(_built(), splits, _phases("probe", len(built.groups)), _settings(cache=features.FeatureCache()))
    assert len(splits.val) * per_example <= cached.val_flops < 1.1 * len(splits.val) * per_example


def test_a_linear_probe_caches_the_pooled_features(splits):
    built = _built()
    result = fit(built, splits, _phases("probe", len(built.groups)), _settings(cache=features.FeatureCache()))
    assert result.feature_cache == "head: extracted at global_pool"


def test_later_trials_reuse_the_cache_and_a_changed_freeze_depth_extracts_again(splits):
    cache = features.FeatureCache()
    n = len(_built().groups)
    first = fit(_built(), splits, _phases("probe", n), _settings(cache))
    again = fit(_built(), splits, _phases("probe", n), _settings(cache, seed=4))
    deeper = fit(_built(), splits, _phases("half", n), _settings(cache))
    assert first.feature_cache.startswith("head: extracted")
    assert again.feature_cache.startswith("head: memory")
    assert deeper.feature_cache.startswith("finetune: extracted")
    assert (cache.hits, cache.misses) == (1, 2)


def test_augmentation_turns_the_cache_off_and_says_so(splits):
    cache = features.FeatureCache()
    built = _built()
    result = fit(built, splits, _phases("probe", len(built.groups)), _settings(cache, augment=True))
    assert result.feature_cache == "head: off (augmentation)"
    assert cache.hits == cache.misses == 0


def test_features_over_the_memory_bound_are_not_cached(splits):
    cache = features.FeatureCache(memory_mb=0.01)
    built = _built()
    result = fit(built, splits, [Phase("all", 1, 0, 1e-3, 1e-3)], _settings(cache))
    assert result.feature_cache.startswith("all: off (features") and "MB > cache memory" in result.feature_cache


def _key(built: BuiltBackbone, trainable_from: int, transform: str = "T", resolution: int = 32) -> str:
    trainable = set(built.head).union(*map(set, built.groups[trainable_from:]))
    cut, _ = features.find_cut(built.model, trainable, image_batch(2, resolution))
    return features.cache_key(built.model, cut, "data", transform, "fp32", CPU)


def test_the_key_follows_weights_transform_data_and_cut_but_not_the_head():
    built = _built()
    n = len(built.groups)
    key = _key(built, n)
    assert _key(_built(), n) == key  # a rebuilt model with the same weights
    with torch.no_grad():
        built.model.get_classifier().weight.add_(1.0)
    assert _key(built, n) == key  # the head is not part of the prefix
    assert _key(built, n, transform="other") != key
    assert _key(built, n // 2) != key  # another freeze depth, another cut
    with torch.no_grad():
        built.model.conv_stem.weight.add_(1e-3)
    assert _key(built, n) != key
    cut, _ = features.find_cut(built.model, set(built.head), image_batch(2, 32))
    assert features.cache_key(built.model, cut, "other data", "T", "fp32", CPU) != _key(built, n)
    assert features.cache_key(built.model, cut, "data", "T", "bf16", CPU) != _key(built, n)


def test_the_real_transform_repr_separates_resolutions():
    dc = _built().data_config
    assert repr(ImageInputs(dc).transforms(32, False)[1]) != repr(ImageInputs(dc).transforms(48, False)[1])


def test_data_fingerprint_follows_ids_labels_and_file_changes(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"one")
    ids, labels = {"train": [str(image)]}, {"train": [0]}
    key = features.data_fingerprint("cfg", ids, labels)
    assert features.data_fingerprint("cfg", ids, labels) == key
    assert features.data_fingerprint("cfg", ids, {"train": [1]}) != key
    assert features.data_fingerprint("other cfg", ids, labels) != key
    image.write_bytes(b"changed content")
    assert features.data_fingerprint("cfg", ids, labels) != key


@pytest.mark.parametrize("model", ["test_efficientnet", "test_resnet", "test_vit", "test_convnext"])
def test_every_cut_keeps_trainable_parameters_out_of_the_prefix(model):
    built = _built(model)
    n = len(built.groups)
    for frozen in range(n + 1):
        trainable = set(built.head).union(*map(set, built.groups[frozen:]))
        cut, _ = features.find_cut(built.model, trainable, image_batch(2, 32))
        prefix_params = {f"{m}.{p}" for m in cut.prefix for p, _ in built.model.get_submodule(m).named_parameters()}
        assert not prefix_params & trainable, (model, frozen, cut.name)
        if frozen == 0:
            assert cut.name == features.INPUT
    probe, _ = features.find_cut(built.model, set(built.head), image_batch(2, 32))
    assert probe.name != features.INPUT  # a linear probe always cuts somewhere in the network


def test_a_model_that_cannot_be_split_falls_back_to_caching_its_inputs():
    class Skip(torch.nn.Module):
        """The input skips past the frozen layer: no module boundary after it splits the model."""

        def __init__(self):
            super().__init__()
            self.frozen, self.head = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.head((x + self.frozen(x)).mean((2, 3)))

    cut, why = features.find_cut(Skip(), {"head.weight", "head.bias"}, image_batch(2, 8))
    assert cut.name == features.INPUT and "no module boundary" in why


def test_disk_cache_is_reused_bounded_and_safe_to_corrupt(splits, tmp_path):
    built = _built()
    phases = _phases("probe", len(built.groups))
    own = tmp_path / cachedir.CACHE_SUBFOLDER
    first = fit(built, splits, phases, _settings(features.FeatureCache(directory=tmp_path)))
    files = list(own.glob("*.pt"))
    assert first.feature_cache.startswith("head: extracted") and len(files) == 1
    fresh_process = features.FeatureCache(directory=tmp_path)
    assert fit(_built(), splits, phases, _settings(fresh_process)).feature_cache.startswith("head: disk")
    files[0].write_bytes(b"truncated")
    assert fit(_built(), splits, phases, _settings(features.FeatureCache(directory=tmp_path))).feature_cache.startswith(
        "head: extracted"
    )
    (old,) = own.glob("*.pt")
    one_file = features.FeatureCache(directory=tmp_path, disk_mb=old.stat().st_size / 2**20)
    resnet = _built("test_resnet")
    fit(resnet, splits, _phases("probe", len(resnet.groups)), _settings(one_file))
    (kept,) = own.glob("*.pt")  # the oldest file went to keep the folder under its bound
    assert kept != old and not list(own.glob("*.tmp*"))
    assert sorted(json.loads((own / "index.json").read_text())) == [kept.stem]


def test_the_disk_cache_never_touches_files_it_did_not_write(splits, tmp_path):
    """A cache dir that holds the user's weights (or anything else): trimming to a bound
    smaller than one file deletes only the cache's own files, never theirs."""
    weights = tmp_path / "resnet.pt"
    torch.save({"w": torch.ones(1000)}, weights)
    foreign = [weights, tmp_path / "notes.txt", tmp_path / ("0" * 32 + ".pt")]  # even one named like a cache file
    foreign[1].write_text("mine")
    foreign[2].write_bytes(b"also mine")
    (tmp_path / cachedir.CACHE_SUBFOLDER).mkdir()
    stray = tmp_path / cachedir.CACHE_SUBFOLDER / ("f" * 32 + ".pt")  # in the cache's folder, but not in its index
    before = {p: p.read_bytes() for p in foreign}
    for i in range(3):
        cache = features.FeatureCache(directory=tmp_path, disk_mb=0.001)  # smaller than any file
        built = _built("test_resnet" if i % 2 else "test_efficientnet")
        fit(built, splits, _phases("probe", len(built.groups)), _settings(cache))
        if i == 0:
            stray.write_bytes(b"put here by hand")
    assert {p: p.read_bytes() for p in foreign} == before
    assert stray.read_bytes() == b"put here by hand"


def test_a_cache_folder_tlbench_did_not_make_is_refused(tmp_path):
    theirs = tmp_path / cachedir.CACHE_SUBFOLDER
    theirs.mkdir()
    (theirs / "data.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="was not made by tlbench's feature cache"):
        cachedir.DiskFolder(theirs).check()
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        cachedir.DiskFolder(afile / cachedir.CACHE_SUBFOLDER).check()


def test_compiled_training_runs_through_the_stubbed_prefix(splits, monkeypatch):
    """torch.compile with the eager backend: dynamo traces the cached path (inductor is too slow for a test)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    built = _built("test_resnet")
    plain = fit(_built("test_resnet"), splits, _phases("probe", len(built.groups)), _settings(features.FeatureCache()))
    compiled = fit(built, splits, _phases("probe", len(built.groups)), _settings(features.FeatureCache(), compile=True))
    assert compiled.val_curve == pytest.approx(plain.val_curve, abs=0.1)
    assert compiled.feature_cache == "head: extracted at global_pool"


def test_a_second_process_with_another_hash_seed_reads_every_feature_from_disk(tmp_path):
    """The disk cache's key is content only: not the hash seed (set order), process or
    dictionary order. Two runs of one config in processes with different PYTHONHASHSEED:
    the second extracts nothing."""
    import os
    import subprocess
    import sys

    import yaml
    from conftest import tiny_benchmark

    config = tiny_benchmark(
        backbones=[{"name": "timm:test_efficientnet", "pretrained": False}],
        strategies=[{"name": "finetune", "epochs": 1, "freeze": 0.75}],
        search={"n_trials": 2, "screen": False, "portfolio": 0},
        training={"batch_size": 8, "resolution": 32, "cache": {"dir": "cache"}},
    )
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(config))
    for seed, run in (("1", "first"), ("2", "second")):
        env = os.environ | {"PYTHONHASHSEED": seed, "TLBENCH_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "tlbench", "run", str(path), "--run", run, "--format", "csv"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    import pandas as pd

    trials = pd.read_csv(tmp_path / "results" / "tiny" / "second" / "trials.csv")
    assert len(trials) == 2
    assert all(" disk at " in str(c) for c in trials["feature_cache"]), list(trials["feature_cache"])


def test_dropout_before_the_head_drops_in_a_head_only_phase():
    """torchvision-style classifier = Sequential(Dropout, Linear): the dropout is not part of
    the frozen prefix (which runs in eval mode), so a linear probe trains with it, cached
    or not; dropout inside the frozen layers stays off (frozen is frozen)."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3), nn.Dropout(0.5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
            )
            self.classifier = nn.Sequential(nn.Dropout(0.9), nn.Linear(8, 3))

        def forward(self, x):
            return self.classifier(self.features(x))

    model = Net()
    cut, _ = features.find_cut(model, {"classifier.1.weight", "classifier.1.bias"}, image_batch(2, 8))
    assert (
        "classifier.0" not in cut.prefix and "features.1" in cut.prefix
    )  # the head's dropout trains, the frozen one not
    model.train()
    features.set_prefix_eval(model, cut)
    assert model.classifier[0].training and not model.features[1].training


def test_an_extra_loss_that_reads_only_trainable_weights_keeps_the_cache_with_the_same_results(splits):
    """Adapted.extra_loss_reads_only_trainable (API 1.5): an L2-SP-like penalty on the weights
    that train leaves the frozen layers' outputs cacheable; results equal the uncached run.
    Without the declaration an extra loss turns the cache off (it may read activations)."""

    def l2sp(built):
        start = {n: p.detach().clone() for n, p in built.model.named_parameters()}

        def loss(model, logits, targets):
            total = logits.new_zeros(())
            for name, p in model.named_parameters():
                if p.requires_grad and name in start:
                    total = total + (p - start[name]).pow(2).sum()
            return 0.01 * total

        return loss

    plain, cached, undeclared = _built(), _built(), _built()
    phases = _phases("half", len(plain.groups))
    a = fit(plain, splits, phases, _settings(), extra_loss=l2sp(plain), extra_loss_cacheable=True)
    b = fit(
        cached,
        splits,
        phases,
        _settings(cache=features.FeatureCache()),
        extra_loss=l2sp(cached),
        extra_loss_cacheable=True,
    )
    c = fit(undeclared, splits, phases, _settings(cache=features.FeatureCache()), extra_loss=l2sp(undeclared))
    assert "extracted at" in b.feature_cache and "off" in c.feature_cache and "extra loss" in c.feature_cache
    assert a.val_curve == b.val_curve == c.val_curve and a.test_correct == b.test_correct == c.test_correct
    for (name, p), q in zip(plain.model.named_parameters(), cached.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert b.train_flops < a.train_flops
