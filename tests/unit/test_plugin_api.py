"""Plugin API 1.3 without a benchmark run: reserved names, backbone options, freeze
rounding, what a phase means (optimizer, rates per group, schedule, batch norm), the
extra loss under loss scaling, group order, TLBENCH_LOAD_PLUGINS and error prefixes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_benchmark
from torch import nn

from tlbench import config
from tlbench.config import parse_config
from tlbench.engine import basics, train
from tlbench.engine.inputs import image_batch
from tlbench.host import contract, plugins
from tlbench.host.builtins.backbones import build_timm
from tlbench.host.builtins.strategies import layer_rates
from tlbench.search.planning import _at, make_plan
from tlbench.types import Backbone, BackboneRequest, Dataset, Phase, Strategy, Tracker, UserError, frozen_groups


def test_reserved_names_are_the_schema_fields_and_what_the_host_draws():
    fields = lambda model: tuple(model.model_fields)  # noqa: E731
    assert contract.RESERVED_OPTIONS[Dataset] == fields(config.DatasetEntry)
    assert contract.RESERVED_OPTIONS[Backbone] == fields(config.BackboneEntry)
    assert contract.RESERVED_OPTIONS[Tracker] == fields(config.TrackerEntry)
    assert contract.RESERVED_OPTIONS[Strategy] == fields(config.StrategyEntry) + contract.RESERVED_PARAMS
    assert set(contract.RESERVED_PARAMS) == {"backbone", "strategy"} | {"batch_size", "weight_decay"}


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            Dataset("d", load=print, options={"per_class": "mine"}),
            "option 'per_class' is a name tlbench reserves for every dataset",
        ),
        (
            Dataset("d", load=print, options={"label": "mine"}),
            "option 'label' is a name tlbench reserves for every dataset",
        ),
        (
            Backbone("b", build=print, options={"resolution": "mine"}),
            "option 'resolution' is a name tlbench reserves for every backbone",
        ),
        (
            Strategy("s", print, print, options={"weight_decay": 0.1}),
            "option 'weight_decay' is a name tlbench reserves for every strategy",
        ),
        (Tracker("t", open=print, options={"name": "x"}), "option 'name' is a name tlbench reserves for every tracker"),
    ],
)
def test_an_option_named_like_a_host_field_is_refused_when_the_plugin_loads(record, expected):
    assert expected in contract.record_problem(record)


def test_a_parameter_named_like_a_training_setting_is_refused():
    assert (
        "a name the host draws for every trial (reserved: backbone, strategy, batch_size, weight_decay)"
        in contract.suggest_problem({"lr": 0.1, "batch_size": 16})
    )
    assert contract.suggest_problem({"lr": 0.1}) is None


@pytest.mark.parametrize("n, expected", [(5, 3), (7, 4), (17, 9), (4, 2), (1, 1), (2, 1), (22, 11)])
def test_half_freezes_the_input_half_rounding_a_tie_up(n, expected):
    assert frozen_groups(0.5, n) == expected


def test_freeze_rounding_is_monotone_exact_at_the_ends_and_sees_float_ties():
    assert frozen_groups(0.7, 5) == 4  # 0.7 * 5 is 3.4999999999999996 in floating point: the tie 3.5
    assert frozen_groups(0.3, 5) == 2  # 1.5
    for n in range(1, 40):
        depths = [frozen_groups(f / 100, n) for f in range(101)]
        assert depths[0] == 0 and depths[-1] == n and depths == sorted(depths)


def test_the_default_schedule_is_the_old_cosine_to_zero_at_every_step():
    factor = train.lr_factor(Phase("p", 3, 0, 0.1, 0.1), 7)
    steps = 21
    assert [factor(i) for i in range(steps)] == [0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps)]


def test_warm_up_then_each_schedule():
    for schedule in ("cosine", "linear", "constant"):
        factor = train.lr_factor(
            Phase("p", 2, 0, 0.1, 0.1, schedule=schedule, warmup_epochs=0.5), 10
        )  # 20 steps, 5 warm-up
        assert [round(factor(i), 6) for i in range(5)] == [round(k / 6, 6) for k in range(1, 6)]
        assert factor(5) == 1.0
        last = factor(19)
        assert last == 1.0 if schedule == "constant" else 0 < last < 0.1


def _built():
    torch.manual_seed(0)
    return build_timm(BackboneRequest(model="test_resnet", num_classes=3, pretrained=False))


def test_rates_per_group_reach_their_groups_and_adapters_in_frozen_groups_take_lr_backbone():
    built = _built()
    n = len(built.groups)
    rates = layer_rates(1e-2, 0.5, n)
    assert rates[-1] == 1e-2 and rates[-2] == 5e-3 and rates[0] == pytest.approx(1e-2 * 0.5 ** (n - 1))
    phase = Phase("p", 1, 1, 0.123, 0.5, group_lrs=rates)
    always = {built.groups[0][0]}  # an "adapter" in a frozen group
    trainable = basics.set_trainable(built.model, built, 1, always)
    optimizer = train.make_optimizer(built.model, built, trainable, phase, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(built.model.named_parameters())
    for i, group in enumerate(built.groups):
        for name in group:
            if name in trainable and name not in always:
                assert lr_of[id(params[name])] == rates[i], name
    assert all(lr_of[id(params[n])] == 0.5 for n in built.head)
    assert lr_of[id(params[built.groups[0][0]])] == 0.123  # the one rule: an adapter in a frozen group at lr_backbone
    assert isinstance(optimizer, torch.optim.AdamW) and {g["weight_decay"] for g in optimizer.param_groups} == {0.01}


def test_sgd_and_a_phase_weight_decay():
    built = _built()
    trainable = basics.set_trainable(built.model, built, 0)
    optimizer = train.make_optimizer(
        built.model, built, trainable, Phase("p", 1, 0, 0.1, 0.2, optimizer="sgd", momentum=0.8, weight_decay=0.0), 0.05
    )
    assert isinstance(optimizer, torch.optim.SGD)
    assert {(g["momentum"], g["nesterov"], g["weight_decay"]) for g in optimizer.param_groups} == {(0.8, True, 0.0)}
    assert sorted(g["lr"] for g in optimizer.param_groups) == [0.1, 0.2]


def test_batch_norm_modes():
    built = _built()
    basics.set_trainable(built.model, built, len(built.groups) // 2)
    norms = [m for m in built.model.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [m for m in norms if not any(p.requires_grad for p in m.parameters())]
    trained = [m for m in norms if all(p.requires_grad for p in m.parameters())]
    assert frozen and trained
    train._train_mode(built.model, None, "auto")
    assert not any(m.training for m in frozen) and all(m.training for m in trained)
    train._train_mode(built.model, None, "eval")
    assert not any(m.training for m in norms)
    train._train_mode(built.model, None, "train")
    assert all(m.training for m in norms)


def _one_step(scaler_enabled: bool, extra) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, enabled=scaler_enabled)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    train._train_step(model, x, y, optimizer, scaler, None, None if extra is None else (lambda logits, t: extra(model)))
    return model.weight.detach().clone()


def test_the_extra_loss_is_scaled_and_unscaled_with_the_cross_entropy():
    pull = lambda model: 10.0 * model.weight.pow(2).sum()  # noqa: E731 - a strong penalty, so a wrong scale shows
    with_scaling, without = _one_step(True, pull), _one_step(False, pull)
    assert torch.allclose(with_scaling, without, atol=1e-6)
    assert not torch.allclose(without, _one_step(False, None), atol=1e-3)  # the penalty changed the step


def test_groups_listed_output_first_are_caught_by_one_forward_pass():
    from tlbench.engine import cost

    built = _built()
    first = cost.forward_probe(built.model, image_batch(1, 32))[1]
    assert contract.group_order_problem(built, first) is None
    reversed_ = type(built)(built.model, tuple(reversed(built.groups)), built.head, built.data_config)
    assert "groups must run from input to output" in contract.group_order_problem(reversed_, first)


def test_a_phase_checks_its_new_fields():
    assert "group_lrs must be 4 finite numbers" in contract.phase_problem(
        Phase("p", 1, 0, 0.1, 0.1, group_lrs=(0.1, 0.1)), 4
    )
    assert "optimizer must be one of adamw, sgd" in contract.phase_problem(
        Phase("p", 1, 0, 0.1, 0.1, optimizer="lamb"), 4
    )
    assert "schedule must be one of" in contract.phase_problem(Phase("p", 1, 0, 0.1, 0.1, schedule="step"), 4)
    assert "batchnorm must be one of auto, eval, train" in contract.phase_problem(
        Phase("p", 1, 0, 0.1, 0.1, batchnorm="frozen"), 4
    )
    assert "warmup_epochs must be a finite number >= 0" in contract.phase_problem(
        Phase("p", 1, 0, 0.1, 0.1, warmup_epochs=-1), 4
    )
    assert (
        contract.phase_problem(
            Phase("p", 1, 0, 0.1, 0.1, group_lrs=(0.1,) * 4, schedule="linear", warmup_epochs=0.5), 4
        )
        is None
    )


def test_backbone_options_reach_build_and_undeclared_ones_are_refused(tmp_path):
    plan = make_plan(
        parse_config(tiny_benchmark(backbones=[{"name": "timm:test_resnet", "pretrained": False, "drop_path_rate": 0.2}])),
        plugins.collect(plugins.make_plugin_manager(entry_points=False)), tmp_path,
    )  # fmt: skip
    from tlbench.search.calls import build_backbone

    built = build_backbone(plan.backbones["timm:test_resnet-scratch"], 3)
    rates = [m.drop_prob for m in built.model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    with pytest.raises(
        UserError, match=r"backbones\[0\]: drop_pth_rate: unknown option; did you mean 'drop_path_rate'\?"
    ):
        make_plan(
            parse_config(tiny_benchmark(backbones=[{"name": "timm:test_resnet", "drop_pth_rate": 0.2}])),
            plugins.collect(plugins.make_plugin_manager(entry_points=False)), tmp_path,
        )  # fmt: skip
    with pytest.raises(UserError, match=r"drop_rate: must be a number in \[0, 1\), got 'lots'"):
        build_timm(BackboneRequest(model="test_resnet", num_classes=3, pretrained=False, options={"drop_rate": "lots"}))


def test_an_entry_named_in_its_own_message_is_named_once():
    def fail():
        raise UserError("dataset imagefolder: path: /x does not exist")

    with pytest.raises(UserError) as caught:
        _at("datasets[0] (imagefolder)", fail, ("imagefolder",))
    assert str(caught.value) == "datasets[0] (imagefolder): path: /x does not exist"


def test_a_misspelt_plugin_in_the_restriction_is_named_with_a_suggestion():
    class EP:  # what importlib.metadata gives: a name and a distribution name
        def __init__(self, name, dist):
            self.name, self.dist = name, type("D", (), {"name": dist})()

    eps = [EP("offline", "tlbench-offline"), EP("peft", "tlbench-peft")]
    assert plugins.restrict_problem({"offline", "peft"}, eps) == ""
    problem = plugins.restrict_problem({"ofline"}, eps)
    assert (
        "TLBENCH_LOAD_PLUGINS names 'ofline', which is no installed plugin" in problem
        and "did you mean 'offline'?" in problem
    )
