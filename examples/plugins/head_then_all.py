"""A strategy plugin: train the head alone, then everything at a tenth of its rate.

``suggest`` draws the parameters from the options (Optuna underneath: a single
value is fixed, ``[low, high]`` is searched); ``phases`` turns them into training
phases for a backbone of ``n_groups`` groups.
"""

import tlbench
from tlbench.types import Phase, Strategy


def suggest(space, options):
    return {
        "lr": space.suggest("lr", options["lr"], log=True),
        "head_epochs": space.suggest("head_epochs", options["head_epochs"]),
        "epochs": space.suggest("epochs", options["epochs"]),
    }


def phases(params, n_groups):
    return [
        Phase("head", params["head_epochs"], frozen_groups=n_groups, lr_backbone=0.0, lr_head=params["lr"]),
        Phase("all", params["epochs"], frozen_groups=0, lr_backbone=params["lr"] / 10, lr_head=params["lr"]),
    ]


@tlbench.hookimpl
def tlbench_strategies():
    yield Strategy(
        name="head_then_all",
        options={"lr": [1e-4, 1e-2], "head_epochs": 1, "epochs": 2},
        suggest=suggest,
        phases=phases,
        description="the head alone, then every layer at a tenth of the head's learning rate",
    )
