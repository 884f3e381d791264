"""A strategy that changes the model: ``adapt`` (plugin API 1.1).

Trains only the head and the last normalization layer's parameters of any
backbone: a minimal example of the hook that tlbench-peft's BitFit and LoRA use.
"""

from torch import nn

import tlbench
from tlbench.types import Adapted, Phase, Strategy


def adapt(built, params):
    head = set(built.head)
    norms = [name for name, module in built.model.named_modules() if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm))]
    last = [f"{norms[-1]}.{p}" for p, _ in built.model.get_submodule(norms[-1]).named_parameters()] if norms else []
    return Adapted(built=built, trainable=tuple(n for n in last if n not in head))


@tlbench.hookimpl
def tlbench_strategies():
    yield Strategy(
        name="head_and_last_norm",
        options={"lr": [1e-3, 1e-1], "epochs": 2},
        suggest=lambda space, o: {
            "lr": space.suggest("lr", o["lr"], log=True),
            "epochs": space.suggest("epochs", o["epochs"]),
        },
        # every group frozen: only the head and the adapted parameters train
        phases=lambda p, n_groups: [Phase("head+norm", p["epochs"], n_groups, p["lr"], p["lr"])],
        adapt=adapt,
        description="the head and the last normalization layer",
    )
