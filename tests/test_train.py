"""The training engine and the built-in strategies: which parameters train in which phase."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlbench.engine.basics import TrainSettings, TrialFailed, autocast_dtype, pick_devices, precision_for
from tlbench.engine.train import check_every, fit
from tlbench.host.builtins.backbones import build_timm
from tlbench.host.builtins.datasets import load_synthetic
from tlbench.host.plugins import collect, make_plugin_manager
from tlbench.types import BackboneRequest, DatasetRequest, Phase, UserError

SETTINGS = TrainSettings(batch_size=8, weight_decay=0.0, augment=False, size=32, device=torch.device("cpu"), seed=0)


@pytest.fixture(scope="module")
def splits():
    options = {"classes": 3, "size": 16, "train_per_class": 8, "val_per_class": 3, "test_per_class": 3}
    return load_synthetic(DatasetRequest(options=options, seed=0, base_dir=Path(".")))


@pytest.fixture(scope="module")
def strategies():
    return {name: p.record for name, p in collect(make_plugin_manager()).strategies.items()}


def _built():
    torch.manual_seed(0)
    return build_timm(BackboneRequest(model="test_resnet", num_classes=3, pretrained=False))


def _changed_per_phase(built, splits, phases) -> list[set[str]]:
    """Names of parameters and buffers that changed during each epoch."""
    snapshots = [{k: v.clone() for k, v in built.model.state_dict().items()}]

    def snapshot(epoch, accuracy):
        snapshots.append({k: v.clone() for k, v in built.model.state_dict().items()})

    fit(built, splits, phases, SETTINGS, on_epoch=snapshot)
    return [{k for k in a if not torch.equal(a[k], b[k])} for a, b in zip(snapshots, snapshots[1:])]


def _group_of(built) -> dict[str, int]:
    """Module prefix -> group index, so buffers (BN running stats) map to their group."""
    return {name.rsplit(".", 1)[0]: i for i, g in enumerate(built.groups) for name in g}


def _groups_touched(built, changed: set[str]) -> set[int]:
    owner = _group_of(built)
    return {owner[k.rsplit(".", 1)[0]] for k in changed if k.rsplit(".", 1)[0] in owner}


def test_linear_probe_trains_only_the_head(splits, strategies):
    built = _built()
    phases = strategies["linear_probe"].phases({"epochs": 1, "lr_head": 0.05}, len(built.groups))
    (changed,) = _changed_per_phase(built, splits, phases)
    assert changed == set(built.head)  # not even batch-norm statistics move


def test_finetune_freezes_the_first_groups(splits, strategies):
    built = _built()
    n = len(built.groups)
    phases = strategies["finetune"].phases({"epochs": 1, "freeze": 0.5, "lr_backbone": 1e-3, "lr_head": 1e-2}, n)
    k = -(-n // 2)  # half the groups, a tie rounded up (tlbench.types.frozen_groups)
    assert phases[0].frozen_groups == k
    (changed,) = _changed_per_phase(built, splits, phases)
    assert _groups_touched(built, changed) == set(range(k, n))
    assert set(built.head) <= changed


def test_two_stage_trains_head_then_the_last_groups(splits, strategies):
    built = _built()
    n = len(built.groups)
    params = {"head_epochs": 1, "epochs": 1, "lr_head": 1e-2, "freeze": 0.75, "lr_finetune": 1e-3}
    phases = strategies["two_stage"].phases(params, n)
    assert [p.name for p in phases] == ["head", "unfrozen"]
    first, second = _changed_per_phase(built, splits, phases)
    assert first == set(built.head)
    assert _groups_touched(built, second) == set(range(round(0.75 * n), n))


def test_training_learns_and_is_reproducible_on_cpu(splits):
    phases = [Phase("all", 4, 0, 1e-2, 1e-2)]
    a = fit(_built(), splits, phases, SETTINGS)
    b = fit(_built(), splits, phases, SETTINGS)
    assert a.val_curve == b.val_curve and a.test_accuracy == b.test_accuracy
    assert a.val_curve[-1] > 1 / 3 + 0.2  # well above chance on 3 classes
    assert a.train_flops > 0 and a.trainable_params == sum(p.numel() for p in _built().model.parameters())
    assert a.precision == "fp32"


def test_absurd_learning_rate_fails_the_trial_with_a_reason(splits):
    with pytest.raises(TrialFailed, match="loss became (nan|inf)"):
        fit(_built(), splits, [Phase("all", 3, 0, 1e9, 1e9)], SETTINGS)


def test_precision_selection_on_cpu_and_cuda(monkeypatch):
    assert autocast_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(torch.device("cuda")) is torch.float16


def test_precision_is_bf16_where_supported_else_fp16_and_fp32_off_cuda():
    assert precision_for("cuda", bf16_supported=True) is torch.bfloat16
    assert precision_for("cuda", bf16_supported=False) is torch.float16  # fit() then enables the grad scaler
    assert precision_for("cpu", bf16_supported=True) is None
    assert precision_for("mps", bf16_supported=True) is None


def test_devices_one_trial_each(monkeypatch):
    assert pick_devices("cpu") == [torch.device("cpu")]
    assert pick_devices(["cpu", "cpu"]) == [torch.device("cpu")] * 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert pick_devices("auto") == [torch.device("cuda", i) for i in range(3)]
    assert pick_devices("cuda:1") == [torch.device("cuda", 1)]
    with pytest.raises(UserError, match="training.device: cuda:7 .* only 3 CUDA devices"):
        pick_devices(["cuda:0", "cuda:7"])


def test_cuda_is_never_asked_for_when_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_devices("auto") == [torch.device("cpu")]
    with pytest.raises(UserError, match="training.device: cuda asked for, but CUDA is not available"):
        pick_devices("cuda")


def test_loss_checks_do_not_wait_for_the_gpu_every_step():
    assert check_every(torch.device("cpu")) == 1
    assert check_every(torch.device("cuda", 0)) > 1


def test_one_learning_rate_rule_for_adapter_parameters_under_group_lrs():
    """An Adapted.trainable parameter inside a frozen group trains at lr_backbone, whatever
    that group's group_lrs entry (a LoRA-style strategy that zeroes frozen groups' rates
    still trains its adapters); an unfrozen group's parameters at their group's rate."""
    from tlbench.engine import basics, train
    from tlbench.host.builtins.backbones import build_timm
    from tlbench.types import BackboneRequest, Phase

    built = build_timm(BackboneRequest(model="test_resnet", num_classes=3, pretrained=False))
    n = len(built.groups)
    adapter = built.groups[0][0]  # a parameter of the first (frozen) group that the strategy trains
    rates = tuple([0.0] * (n - 1) + [0.05])
    phase = Phase("p", 1, frozen_groups=n - 1, lr_backbone=0.003, lr_head=0.1, group_lrs=rates)
    trainable = basics.set_trainable(built.model, built, phase.frozen_groups, [adapter])
    optimizer = train.make_optimizer(built.model, built, trainable, phase, 0.0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(built.model.named_parameters())
    assert lr_of[id(params[adapter])] == 0.003
    assert lr_of[id(params[built.groups[-1][0]])] == 0.05 and lr_of[id(params[built.head[0]])] == 0.1


def test_a_strategy_that_only_unfreezes_parameters_keeps_the_backbones_architecture():
    """Throughput and latency are measured once per architecture: BitFit-like adapt (only
    requires_grad changes) shares the backbone's, a LoRA-like one (new modules) has its own."""
    import torch.nn as nn

    from tlbench.host.builtins.backbones import build_timm
    from tlbench.search.trial import _structure
    from tlbench.types import BackboneRequest

    built = build_timm(BackboneRequest(model="test_resnet", num_classes=3, pretrained=False))
    before = _structure(built.model)
    for p in built.model.parameters():
        p.requires_grad_(False)
    assert _structure(built.model) == before
    built.model.extra = nn.Linear(2, 2)
    assert _structure(built.model) != before


def _head_rates(splits, phases) -> list[float]:
    """The head's learning rate at every training step, read from the epoch reports (API 1.5)."""
    rates: list[float] = []
    fit(_built(), splits, phases, SETTINGS, on_rates=lambda r: rates.extend(r["head"]))
    return rates


def test_one_schedule_spans_phases_where_a_strategy_asks_for_it(splits):
    """Phase.schedule_continues (API 1.5): the second phase goes on with the first one's
    cosine over both phases' steps (one warm-up, one decay) instead of starting it again."""
    import math

    from tlbench.host import contract

    head, rest = Phase("head", 1, 4, 0.0, 0.1, warmup_epochs=1.0), Phase("all", 2, 0, 1e-3, 0.1)
    steps = 3  # 24 training examples in batches of 8, per epoch
    apart = _head_rates(splits, [head, rest])
    spanned = _head_rates(splits, [head, Phase("all", 2, 0, 1e-3, 0.1, schedule_continues=True)])
    assert len(apart) == len(spanned) == 9
    assert apart[steps] == pytest.approx(0.1)  # apart: the second phase starts its own cosine at the full rate
    total, warm = 9, 3  # spanned: a warm-up of one epoch (3 steps), then one cosine over the remaining 6 of 9 steps
    expected = [0.1 * (k + 1) / (warm + 1) for k in range(warm)]
    expected += [0.1 * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm))) for k in range(warm, total)]
    assert spanned == pytest.approx(expected)
    assert contract.phases_problem([Phase("a", 1, 0, 1e-3, 0.1, schedule_continues=True)], 4) == (
        "phase a: schedule_continues=True on the first phase, which has no schedule to continue"
    )
