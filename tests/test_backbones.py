"""Built-in backbones: heads, groups, local weights files, offline failures, FLOPs."""

from __future__ import annotations

import pytest
import timm
import torch

from tlbench.engine import cost
from tlbench.engine.inputs import image_batch
from tlbench.host.builtins.backbones import build_timm, build_torchvision
from tlbench.types import BackboneRequest, UserError


def _request(model: str, **kw) -> BackboneRequest:
    return BackboneRequest(
        model=model, num_classes=kw.pop("num_classes", 5), pretrained=kw.pop("pretrained", False), **kw
    )


def _covers_every_parameter_once(built) -> bool:
    names = [n for g in built.groups for n in g] + list(built.head)
    return sorted(names) == sorted(n for n, _ in built.model.named_parameters())


@pytest.mark.parametrize("model", ["test_resnet", "test_efficientnet", "test_vit"])
def test_timm_backbone_has_fresh_head_and_ordered_groups(model):
    built = build_timm(_request(model))
    assert built.model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    assert _covers_every_parameter_once(built)
    assert len(built.groups) >= 3
    order = [n for n, _ in built.model.named_parameters()]
    first_of_each = [order.index(g[0]) for g in built.groups]
    assert first_of_each == sorted(first_of_each)  # input -> output
    assert built.data_config.input_size == 160 and len(built.data_config.mean) == 3


def test_torchvision_backbone_replaces_last_linear_and_groups_stages():
    built = build_torchvision(_request("mobilenet_v3_small", num_classes=7))
    assert built.model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    assert _covers_every_parameter_once(built)
    assert built.head == ("classifier.3.weight", "classifier.3.bias")
    assert built.groups[0][0].startswith("features.0.")
    assert len(built.groups) == 14  # 13 feature stages + the classifier's hidden Linear
    assert built.data_config.input_size == 224 and built.data_config.interpolation == "bilinear"


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_every_backbone_tensor(tmp_path, suffix):
    source = timm.create_model("test_resnet", num_classes=1000)  # a "pretrained" model with its own head
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    built = build_timm(_request("test_resnet", pretrained=True, weights=path))
    loaded = built.model.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("fc."):
            assert loaded[key].shape[0] == 5  # the fresh head
        else:
            assert torch.equal(loaded[key], value), key


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    with pytest.raises(UserError, match="do not fit this architecture"):
        build_timm(_request("test_resnet", pretrained=True, weights=path))


def test_corrupt_or_missing_weights_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        build_timm(_request("test_resnet", pretrained=True, weights=bad))
    with pytest.raises(UserError, match="does not exist"):
        build_timm(_request("test_resnet", pretrained=True, weights=tmp_path / "missing.pth"))


def test_pretrained_offline_stops_with_a_message_and_never_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))  # nothing cached, HF_HUB_OFFLINE=1 (conftest)
    with pytest.raises(UserError) as info:
        build_timm(_request("test_resnet", pretrained=True))
    message = str(info.value)
    assert "timm:test_resnet" in message and "weights:" in message and "pretrained: false" in message


def test_torchvision_pretrained_offline_stops_with_a_message(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(UserError, match="torchvision:mobilenet_v3_small: pretrained weights could not be downloaded"):
        build_torchvision(_request("mobilenet_v3_small", pretrained=True))


def _no_network(*args, **kwargs):
    raise ConnectionError("network is unreachable")


def test_forward_flops_match_timm_published_gmacs():
    # timm's results table lists resnet18 at 224 px with 1.82 GMACs; FLOPs = 2 x MACs.
    model = timm.create_model("resnet18")
    flops = cost.forward_flops(model, image_batch(1, 224))
    assert abs(flops - 2 * 1.82e9) / (2 * 1.82e9) < 0.02


@pytest.mark.parametrize("groups", [1, 16])
def test_conv_backward_costs_twice_the_forward_even_when_grouped(groups):
    # torch's own formula ignores groups: it counted this depthwise backward 16x too high
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups)
    x = torch.zeros(1, 16, 8, 8, requires_grad=True)
    with cost.counting() as counter:
        conv(x)
    forward = counter.get_total_flops()
    with cost.counting() as counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward


@pytest.mark.parametrize("model_name", ["test_resnet", "test_efficientnet"])
def test_train_step_flops_shrink_when_the_backbone_is_frozen(model_name):
    model = timm.create_model(model_name, num_classes=3)
    full = cost.train_step_flops(model, image_batch(2, 64))
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    head_only = cost.train_step_flops(model, image_batch(2, 64))
    forward = cost.forward_flops(model, image_batch(1, 64))
    assert head_only < 1.1 * forward < full  # no backward through a frozen backbone
    assert 2.5 * forward < full < 3.5 * forward  # backward is about twice the forward


def test_inference_speed_is_measured(tmp_path):
    model = timm.create_model("test_resnet", num_classes=3)
    throughput, latency = cost.inference_speed(
        model, lambda n: image_batch(n, 32), torch.device("cpu"), batch_size=4, budget_s=0.05
    )
    assert throughput > 0 and latency > 0
