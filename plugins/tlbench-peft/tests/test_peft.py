"""BitFit and LoRA train exactly what they claim, start from the pretrained function,
pass the conformance kit and run end to end through an installed entry point."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before timm is imported: no hub in tests

import pandas as pd
import pytest
import torch
import yaml
from tlbench_peft import plugin
from torch import nn

from tlbench import cli, testing
from tlbench.host.builtins.backbones import build_timm
from tlbench.types import BackboneRequest, Phase

NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _built(model: str = "test_resnet"):
    torch.manual_seed(0)
    return build_timm(BackboneRequest(model=model, num_classes=3, pretrained=False))


def _expected_bitfit(built) -> set[str]:
    head = set(built.head)
    names = set()
    for module_name, module in built.model.named_modules():
        for p, _ in module.named_parameters(recurse=False):
            name = f"{module_name}.{p}" if module_name else p
            if name not in head and (isinstance(module, NORMS) or p == "bias"):
                names.add(name)
    return names


def _train_one_step(built, trainable: set[str]) -> set[str]:
    """A step of tlbench's training with every group frozen (as both strategies' phases do);
    checks that exactly the head and ``trainable`` require grad, returns the parameters that moved."""
    from tlbench.engine import basics

    before = copy.deepcopy(built.model.state_dict())
    basics.set_trainable(built.model, built, len(built.groups), trainable)
    assert {n for n, p in built.model.named_parameters() if p.requires_grad} == set(built.head) | trainable
    params = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    built.model.train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(built.model(x), y).backward()
    optimizer.step()
    after = built.model.state_dict()
    return {k for k in after if k in dict(built.model.named_parameters()) and not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
def test_bitfit_trains_only_biases_and_norms(model):
    built = _built(model)
    adapted = plugin.bitfit(built, {})
    assert set(adapted.trainable) == _expected_bitfit(built) and adapted.trainable
    changed = _train_one_step(adapted.built, set(adapted.trainable))
    assert changed <= set(adapted.trainable) | set(built.head)  # nothing else moves
    assert (
        set(built.head) < changed
    )  # some biases/norms do (some get no gradient: timm zero-inits the last norm of a block)


def _lora_size(module: nn.Module, rank: int) -> int:
    if isinstance(module, nn.Conv2d):
        return rank * module.in_channels * module.kernel_size[0] * module.kernel_size[1] + module.out_channels * rank
    return rank * module.in_features + module.out_features * rank


@pytest.mark.parametrize(
    "model, layers", [("test_resnet", "all"), ("test_vit", "linear"), ("test_efficientnet", "conv")]
)
def test_lora_adds_rank_r_factors_to_the_layers_asked_for_and_trains_only_them(model, layers):
    built = _built(model)
    x = torch.randn(2, 3, 32, 32)
    reference = copy.deepcopy(built.model).eval()(x)
    head_modules = {n.rsplit(".", 1)[0] for n in built.head}
    kinds = {"all": (nn.Linear, nn.Conv2d), "linear": (nn.Linear,), "conv": (nn.Conv2d,)}[layers]
    targets = [
        (n, m) for n, m in built.model.named_modules()
        if isinstance(m, kinds) and n not in head_modules and getattr(m, "groups", 1) == 1
    ]  # fmt: skip
    before = sum(p.numel() for p in built.model.parameters())

    adapted = plugin.lora(built, {"rank": 4, "alpha": 8, "layers": layers})
    model_ = adapted.built.model
    added = sum(p.numel() for p in model_.parameters()) - before
    assert added == sum(_lora_size(m, 4) for _, m in targets) > 0
    assert set(adapted.trainable) == {f"{n}.lora_{f}" for n, _ in targets for f in "AB"}
    torch.testing.assert_close(model_.eval()(x), reference)  # B starts at zero: the pretrained function
    changed = _train_one_step(adapted.built, set(adapted.trainable))
    assert changed <= set(adapted.trainable) | set(built.head)  # no original weight moves
    assert {n for n in changed if n.endswith("lora_B")}  # the updates do
    assert not any(n in changed for n, _ in built.model.named_parameters() if "lora_" not in n and n not in built.head)


def test_lora_without_a_layer_to_adapt_is_a_user_error():
    from tlbench.types import UserError

    built = _built("test_efficientnet")
    with pytest.raises(UserError, match="lora: the backbone has no linear layer to adapt"):
        plugin.lora(built, {"rank": 2, "alpha": 4, "layers": "linear"})


def test_both_strategies_pass_the_conformance_kit():
    assert testing.check_plugin("peft") == ["strategy bitfit", "strategy lora"]


def test_phases_freeze_every_group():
    records = {r.name: r for r in plugin.tlbench_strategies()}
    assert records["bitfit"].phases({"epochs": 2, "lr_bias": 0.01, "lr_head": 0.1}, 5) == [
        Phase("bitfit", 2, 5, 0.01, 0.1)
    ]
    assert records["lora"].phases({"epochs": 1, "lr_lora": 0.001, "lr_head": 0.1}, 3) == [
        Phase("lora", 1, 3, 0.001, 0.1)
    ]


def test_a_benchmark_runs_them_and_records_their_trainable_parameters(tmp_path, capsys, monkeypatch):
    config = tmp_path / "b.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "peft",
                "run": "r",
                "datasets": [
                    {
                        "name": "synthetic",
                        "classes": 3,
                        "size": 16,
                        "train_per_class": 8,
                        "val_per_class": 4,
                        "test_per_class": 4,
                    }
                ],
                "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
                "strategies": [
                    {"name": "bitfit", "epochs": 1},
                    {"name": "lora", "epochs": 1, "rank": 4},
                    {"name": "linear_probe", "epochs": 1},
                ],
                "search": {"n_trials": 5, "startup_trials": 5, "sampler": "random"},
                "training": {"batch_size": 8, "resolution": 32},
            }
        )
    )
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "peft")  # the installed package's entry point, as a user has it
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    trials = pd.read_csv(tmp_path / "results" / "peft" / "r" / "trials.csv")
    assert trials["state"].eq("COMPLETE").all()
    built = _built()
    head = sum(p.numel() for n, p in built.model.named_parameters() if n in built.head)
    params = dict(built.model.named_parameters())
    expected = {
        "bitfit": head + sum(params[n].numel() for n in _expected_bitfit(built)),
        "lora": head + sum(
            _lora_size(m, 4) for n, m in built.model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and f"{n}.weight" not in built.head and getattr(m, "groups", 1) == 1
        ),
        "linear_probe": head,
    }  # fmt: skip
    for strategy, rows in trials.groupby("strategy"):
        assert rows["trainable_params"].eq(expected[strategy]).all(), strategy
    summary = capsys.readouterr().out
    assert "bitfit" in summary and "lora" in summary


@pytest.mark.parametrize("same", [False, True])
def test_lora_equals_the_merged_weight_also_for_convs_that_pad_in_forward(same):
    from timm.layers import Conv2dSame

    from tlbench.types import BuiltBackbone, DataConfig

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            # timm's Conv2dSame pads in forward() (padding=0 on the module); the plain conv takes the low-rank path
            self.stem = Conv2dSame(3, 8, 3, stride=2) if same else nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.stem(x).mean((2, 3)))

    torch.manual_seed(0)
    net = Net()
    built = BuiltBackbone(
        net, (("stem.weight", "stem.bias"),), ("head.weight", "head.bias"), DataConfig(15, (0.5,) * 3, (0.5,) * 3)
    )
    plain = copy.deepcopy(net.stem)
    adapted = plugin.lora(built, {"rank": 2, "alpha": 6})
    stem = adapted.built.model.stem
    nn.init.normal_(stem.lora_B)  # a trained update
    merged = copy.deepcopy(plain)
    with torch.no_grad():
        merged.weight += 3.0 * (stem.lora_B.flatten(1) @ stem.lora_A.flatten(1)).view_as(
            plain.weight
        )  # alpha / rank = 3
    x = torch.randn(2, 3, 15, 15)
    torch.testing.assert_close(stem(x), merged(x))
