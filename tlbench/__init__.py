"""tlbench: benchmark transfer-learning recipes with Optuna, extended by pluggy plugins.

The public API for plugin authors is this module and :mod:`tlbench.types`.
"""

import pluggy

from tlbench.types import (
    Adapted,
    Backbone,
    BackboneRequest,
    BadExample,
    BuiltBackbone,
    DataConfig,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Inputs,
    Phase,
    RunInfo,
    Space,
    Split,
    Strategy,
    Tracker,
    TrackerRequest,
    TrialInfo,
    UserError,
    frozen_groups,
)

__version__ = "0.4.0"
# The plugin API (hooks, records, tlbench.testing): (major, minor). The major number
# changes when a hook or record changes incompatibly, the minor when one gains an
# optional field or a hook is added. 1.1: Strategy.adapt and Adapted. 1.2: a plugin
# module may set TLBENCH_PLUGIN_API = (major, minor), the oldest API it works with;
# an older tlbench then refuses it in one line instead of failing somewhere later.
# 1.3: Phase's optimizer, group_lrs, schedule, warm-up, weight decay and batch-norm fields;
# Adapted.extra_loss; Backbone.options; trackers and the event hooks (docs/plugins.md).
# 1.4: modalities: Dataset.modality, Backbone.modality, BuiltBackbone.inputs (Inputs), BadExample.
PLUGIN_API = (1, 4)
PLUGIN_API_VERSION = PLUGIN_API[0]  # the major number alone, as in API 1.0

hookimpl = pluggy.HookimplMarker("tlbench")

__all__ = [
    "PLUGIN_API",
    "PLUGIN_API_VERSION",
    "Adapted",
    "Backbone",
    "BackboneRequest",
    "BadExample",
    "BuiltBackbone",
    "DataConfig",
    "Dataset",
    "DatasetRequest",
    "DatasetSplits",
    "Inputs",
    "Phase",
    "RunInfo",
    "Space",
    "Split",
    "Strategy",
    "Tracker",
    "TrackerRequest",
    "TrialInfo",
    "UserError",
    "__version__",
    "frozen_groups",
    "hookimpl",
]
