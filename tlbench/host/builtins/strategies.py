"""Built-in strategies: ``linear_probe``, ``finetune``, ``two_stage`` and ``layerwise``.

Freeze depth is searched as ``freeze``, a fraction of the backbone's groups
(counted from the input) that stay frozen, so that it means the same on
backbones with different numbers of groups. Options given as ``[low, high]``
are searched (learning rates on a log scale); a single value is fixed.
"""

from __future__ import annotations

from tlbench import hookimpl
from tlbench.types import Phase, Strategy, frozen_groups


@hookimpl
def tlbench_strategies():
    yield Strategy(
        name="linear_probe",
        options={"epochs": 3, "lr_head": [1e-3, 1e-1]},
        suggest=lambda space, o: {
            "epochs": space.suggest("epochs", o["epochs"]),
            "lr_head": space.suggest("lr_head", o["lr_head"], log=True),
        },
        phases=lambda p, n: [Phase("head", p["epochs"], n, 0.0, p["lr_head"])],
        description="feature extraction: the backbone is frozen, only the new head trains",
    )
    yield Strategy(
        name="finetune",
        options={"epochs": 3, "freeze": [0.0, 0.75], "lr_backbone": [1e-5, 1e-2], "lr_head": [1e-4, 1e-1]},
        suggest=lambda space, o: {
            "epochs": space.suggest("epochs", o["epochs"]),
            "freeze": space.suggest("freeze", o["freeze"]),
            "lr_backbone": space.suggest("lr_backbone", o["lr_backbone"], log=True),
            "lr_head": space.suggest("lr_head", o["lr_head"], log=True),
        },
        phases=lambda p, n: [
            Phase("finetune", p["epochs"], frozen_groups(p["freeze"], n), p["lr_backbone"], p["lr_head"])
        ],
        description="the first groups frozen (freeze fraction searched), the rest trains with its own learning rate",
    )
    yield Strategy(
        name="two_stage",
        options={
            "head_epochs": 1,
            "epochs": 2,
            "lr_head": [1e-3, 1e-1],
            "freeze": [0.25, 0.9],
            "lr_finetune": [1e-5, 1e-3],
        },
        suggest=lambda space, o: {
            "head_epochs": space.suggest("head_epochs", o["head_epochs"]),
            "epochs": space.suggest("epochs", o["epochs"]),
            "lr_head": space.suggest("lr_head", o["lr_head"], log=True),
            "freeze": space.suggest("freeze", o["freeze"]),
            "lr_finetune": space.suggest("lr_finetune", o["lr_finetune"], log=True),
        },
        phases=_two_stage_phases,
        description="train the head on a frozen backbone, then unfreeze the last groups at a lower learning rate",
    )
    yield Strategy(
        name="layerwise",
        options={
            "epochs": 3,
            "freeze": [0.0, 0.5],
            "lr_backbone": [1e-4, 1e-2],
            "decay": [0.5, 1.0],
            "lr_head": [1e-4, 1e-1],
            "warmup_epochs": 0.0,
        },
        suggest=lambda space, o: {
            "epochs": space.suggest("epochs", o["epochs"]),
            "freeze": space.suggest("freeze", o["freeze"]),
            "lr_backbone": space.suggest("lr_backbone", o["lr_backbone"], log=True),
            "decay": space.suggest("decay", o["decay"]),
            "lr_head": space.suggest("lr_head", o["lr_head"], log=True),
            "warmup_epochs": space.suggest("warmup_epochs", o["warmup_epochs"]),
        },
        phases=_layerwise_phases,
        description="discriminative learning rates: lr_backbone on the last group, times decay per group towards the input",
    )


def _two_stage_phases(p, n_groups: int) -> list[Phase]:
    return [
        Phase("head", p["head_epochs"], n_groups, 0.0, p["lr_head"]),
        Phase("unfrozen", p["epochs"], frozen_groups(p["freeze"], n_groups), p["lr_finetune"], p["lr_finetune"]),
    ]


def layer_rates(top: float, decay: float, n_groups: int) -> tuple[float, ...]:
    """Learning rates per group, input to output: ``top`` for the last group, each group
    below it ``decay`` times the one above (fastai's discriminative rates, layer decay)."""
    return tuple(top * decay ** (n_groups - 1 - i) for i in range(n_groups))


def _layerwise_phases(p, n_groups: int) -> list[Phase]:
    rates = layer_rates(p["lr_backbone"], p["decay"], n_groups)
    return [
        Phase(
            "layerwise", p["epochs"], frozen_groups(p["freeze"], n_groups), p["lr_backbone"], p["lr_head"],
            group_lrs=rates, warmup_epochs=p["warmup_epochs"],
        )
    ]  # fmt: skip
