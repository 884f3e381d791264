"""Planning and the plugin contract without training: names, options, the searched-value
grammar at config load, recipes, and the checks host and kit share."""

from __future__ import annotations

import pytest
from conftest import tiny_benchmark

from tlbench.config import parse_config
from tlbench.host import contract, plugins
from tlbench.search.planning import check_recipe, make_plan, recipe_params, searched_options
from tlbench.types import DatasetSplits, Phase, Split, UserError


def _plan(tmp_path, **overrides):
    bench = parse_config(tiny_benchmark(**overrides))
    return make_plan(bench, plugins.collect(plugins.make_plugin_manager(entry_points=False)), tmp_path)


def test_a_plan_keys_everything_by_its_config_key(tmp_path):
    plan = _plan(tmp_path, strategies=[{"name": "finetune", "epochs": 1}, {"name": "linear_probe", "label": "probe"}])
    assert list(plan.backbones) == ["timm:test_resnet-scratch"] and list(plan.strategies) == ["finetune", "probe"]
    assert plan.strategies["finetune"].searched == ("freeze", "lr_backbone", "lr_head")
    assert plan.training_searched == ()


def test_an_ambiguous_pair_in_a_config_is_refused_with_both_spellings(tmp_path):
    with pytest.raises(UserError, match=r"strategies\[0\] \(finetune\): epochs: \[3, 10\] could be the range 3..10"):
        _plan(tmp_path, strategies=[{"name": "finetune", "epochs": [3, 10]}])
    with pytest.raises(
        UserError, match=r"training.batch_size: \[16, 32\] could be the range 16..32 or one of the two values"
    ):
        parse_config(tiny_benchmark(training={"batch_size": [16, 32]}))
    plan = _plan(tmp_path, strategies=[{"name": "finetune", "epochs": {"low": 3, "high": 10}}])
    assert "epochs" in plan.strategies["finetune"].searched


def test_config_options_are_parsed_once_numbers_from_text_included():
    defaults = {"lr_head": [1e-3, 1e-1], "epochs": 3, "layers": "all"}
    assert searched_options({"lr_head": ["1e-4", "1e-2"], "epochs": "2", "layers": "1e-3"}, defaults) == {
        "lr_head": [1e-4, 1e-2], "epochs": 2, "layers": "1e-3",  # layers takes text: left as written
    }  # fmt: skip


def test_recipe_params_are_the_names_optuna_stores(tmp_path):
    plan = _plan(
        tmp_path, strategies=[{"name": "finetune", "epochs": 1}], training={"batch_size": {"choices": [8, 16]}}
    )
    params = recipe_params(plan, "timm:test_resnet-scratch", "finetune", {"lr_head": "1e-2", "batch_size": 8})
    assert params == {
        "backbone": "timm:test_resnet-scratch",
        "strategy": "finetune",
        "finetune.lr_head": 0.01,
        "batch_size": 8,
    }
    check_recipe(plan, params)
    with pytest.raises(UserError, match="params.epochs: not a searched parameter of finetune"):
        recipe_params(plan, "timm:test_resnet-scratch", "finetune", {"epochs": 2})


PHASE = Phase("p", 1, 0, 0.0, 0.1)


@pytest.mark.parametrize(
    "phases, n, problem",
    [
        ([PHASE], 4, None),
        ([], 4, "returned no phases"),
        ([Phase("p", 0, 0, 0.0, 0.1)], 4, "no phase has epochs > 0"),
        ([Phase("p", 1, 5, 0.0, 0.1)], 4, "frozen_groups must be 0..4 for a backbone of 4 groups, got 5"),
        ([Phase("p", 1, 0, float("nan"), 0.1)], 4, "lr_backbone must be a finite number >= 0, got nan"),
        ([Phase("p", 1.5, 0, 0.0, 0.1)], 4, "epochs must be a whole number >= 0, got 1.5"),
        ([Phase("", 1, 0, 0.0, 0.1)], 4, "a phase needs a name"),
        (["head"], 4, "expected tlbench.types.Phase"),
    ],
)
def test_the_phase_contract(phases, n, problem):
    found = contract.phases_problem(phases, n)
    assert (found is None) if problem is None else (problem in found), found


def _split(labels, prefix):
    return Split(labels=tuple(labels), ids=tuple(f"{prefix}{i}" for i in range(len(labels))), load=lambda i: None)


@pytest.mark.parametrize(
    "splits, problem",
    [
        (DatasetSplits(_split([0, 1], "a"), _split([0], "b"), _split([1], "c"), ("x", "y")), None),
        (
            DatasetSplits(_split([0, 1], "a"), _split([0], "a"), _split([1], "c"), ("x", "y")),
            "example a0 is in both the train and the val split",
        ),
        (
            DatasetSplits(_split([0, 2], "a"), _split([0], "b"), _split([1], "c"), ("x", "y")),
            "the train split has label 2, but there are 2 classes",
        ),
        (
            DatasetSplits(_split([0, 0], "a"), _split([0], "b"), _split([1], "c"), ("x", "y")),
            "class 'y' has no training example",
        ),
        (DatasetSplits(_split([0, 1], "a"), _split([0], "b"), _split([1], "c"), ("x",)), "2 or more distinct names"),
        ("splits", "returned str, expected tlbench.types.DatasetSplits"),
    ],
)
def test_the_dataset_contract(splits, problem):
    found = contract.splits_problem(splits)
    assert (found is None) if problem is None else (problem in found), found


def test_a_plugin_that_needs_a_newer_api_is_refused_by_name():
    from tlbench import PLUGIN_API

    assert plugins.api_problem(None) is None and plugins.api_problem(PLUGIN_API) is None
    newer = (PLUGIN_API[0], PLUGIN_API[1] + 1)
    assert f"it needs plugin API {newer[0]}.{newer[1]}, this tlbench provides" in plugins.api_problem(newer)
    assert "must be a (major, minor) tuple" in plugins.api_problem("1.2")
    assert plugins.api_problem((PLUGIN_API[0] + 1, 0)) is not None


def test_backbone_options_are_parsed_once_by_the_searched_value_grammar():
    """A range or choices is searched; a number YAML read as text is the number (issue 25:
    "0.5" stayed a string and [0.5, 1] reached the plugin as a list)."""
    from tlbench.search.planning import backbone_searched

    options, searched = backbone_searched(
        {"width": [0.5, 1.0], "rate": "1e-3", "pooling": "mean", "depth": {"choices": ["2", 4]}}
    )
    assert options == {"width": [0.5, 1.0], "rate": 0.001, "pooling": "mean", "depth": {"choices": [2, 4]}}
    assert searched == ("width", "depth")
    with pytest.raises(UserError, match=r"width: \[16, 32\] could be the range"):
        backbone_searched({"width": [16, 32]})
    with pytest.raises(UserError, match="rate: '0,5' is not a number"):
        backbone_searched({"rate": "0,5"})
