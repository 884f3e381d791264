"""The searched-value grammar: one rule for every short form, an error for the ambiguous one."""

from __future__ import annotations

import pytest

from tlbench.base import space
from tlbench.base.space import Choices, Fixed, Range, TrialSpace
from tlbench.types import UserError


@pytest.mark.parametrize(
    "spec, expected",
    [
        (3, Fixed(3)),
        ("all", Fixed("all")),
        ("1e-3", Fixed(0.001)),  # YAML reads 1e-3 without a dot as text
        (True, Fixed(True)),
        ([1e-4, 1e-1], Range(1e-4, 1e-1)),
        (["1e-4", "1e-1"], Range(1e-4, 1e-1)),
        ([0, 0.75], Range(0, 0.75)),
        ({"low": 16, "high": 64, "step": 16}, Range(16, 64, None, 16)),
        ({"low": 1e-5, "high": 1e-2, "log": False}, Range(1e-5, 1e-2, False)),
        ({"choices": [16, 32]}, Choices((16, 32))),
        ([16, 32, 64], Choices((16, 32, 64))),
        (["adamw", "sgd"], Choices(("adamw", "sgd"))),
        ([8], Choices((8,))),
    ],
)
def test_each_short_form_means_one_thing(spec, expected):
    assert space.parse(spec) == expected


def test_two_whole_numbers_are_ambiguous_in_a_config_and_a_range_in_plugin_defaults():
    with pytest.raises(
        UserError,
        match=r"\[16, 32\] could be the range 16..32 or one of the two values; write \{low: 16, high: 32\} or \{choices: \[16, 32\]\}",
    ):
        space.parse([16, 32], strict=True)
    assert space.parse([16, 32]) == Range(16, 32)  # API 1.0 defaults, e.g. epochs: [3, 10]
    assert space.parse([0.5, 2], strict=True) == Range(0.5, 2)  # a float end: a range, no doubt


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("0,01", "'0,01' is not a number; write 0.01"),
        ([], "empty list of choices"),
        ({"choices": []}, "at least one value"),
        ({"choices": [1], "log": True}, "no other key"),
        ({"low": 1, "high": 2, "lgo": True}, "unknown key 'lgo'"),
        ({"low": "a", "high": 2}, "must be numbers"),
        ({"low": 1}, "a mapping is a range"),
        ({"low": 1e-3, "high": 1e-1, "log": "yes"}, "log must be true or false"),
    ],
)
def test_malformed_specs_are_user_errors(spec, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        space.parse(spec, strict=True)


def test_a_trial_space_draws_the_same_distributions_as_before():
    """Names, types and scales are what Optuna stored before the grammar was written down:
    the same config gives the same trials."""
    import optuna

    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    drawn = TrialSpace(trial, "finetune.", "strategy finetune")
    drawn.suggest("lr_head", [1e-4, 1e-1], log=True)
    drawn.suggest("freeze", [0.0, 0.75])
    drawn.suggest("epochs", {"low": 1, "high": 4})
    drawn.suggest("batch", {"choices": [16, 32]})
    drawn.suggest("fixed", 3)
    assert trial.distributions == {
        "finetune.lr_head": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "finetune.freeze": optuna.distributions.FloatDistribution(0.0, 0.75),
        "finetune.epochs": optuna.distributions.IntDistribution(1, 4),
        "finetune.batch": optuna.distributions.CategoricalDistribution([16, 32]),
    }
    assert drawn.searched == ["lr_head", "freeze", "epochs", "batch"] and drawn.values["fixed"] == 3


def test_corners_visit_both_ends_of_every_range_and_every_choice():
    seen = space.corners(
        lambda s: (
            s.suggest("lr", [1e-3, 1e-1]),
            s.suggest("k", {"low": 2, "high": 8, "step": 3}),
            s.suggest("opt", ["a", "b", "c"]),
        )
    )
    assert seen == [(1e-3, 2, "a"), (1e-1, 8, "b"), (1e-3, 2, "c")]


def test_a_reversed_range_is_caught_by_optuna_at_a_corner():
    with pytest.raises(UserError, match="lr: bad search range 0.1..0.001"):
        space.corners(lambda s: s.suggest("lr", [0.1, 0.001], log=True))
