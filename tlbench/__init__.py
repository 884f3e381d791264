"""tlbench: benchmark transfer-learning recipes with Optuna, extended by pluggy plugins.

The public API for plugin authors is this module and :mod:`tlbench.types`.
"""

import pluggy

from tlbench.types import (
    Adapted,
    Backbone,
    BackboneRequest,
    BuiltBackbone,
    DataConfig,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Phase,
    Space,
    Split,
    Strategy,
    UserError,
    frozen_groups,
)

__version__ = "0.2.0"
# The plugin API (hooks, records, tlbench.testing): (major, minor). The major number
# changes when a hook or record changes incompatibly, the minor when one gains an
# optional field or a hook is added. 1.1: Strategy.adapt and Adapted. 1.2: a plugin
# module may set TLBENCH_PLUGIN_API = (major, minor), the oldest API it works with;
# an older tlbench then refuses it in one line instead of failing somewhere later.
PLUGIN_API = (1, 2)
PLUGIN_API_VERSION = PLUGIN_API[0]  # the major number alone, as in API 1.0

hookimpl = pluggy.HookimplMarker("tlbench")

__all__ = [
    "PLUGIN_API",
    "PLUGIN_API_VERSION",
    "Adapted",
    "Backbone",
    "BackboneRequest",
    "BuiltBackbone",
    "DataConfig",
    "Dataset",
    "DatasetRequest",
    "DatasetSplits",
    "Phase",
    "Space",
    "Split",
    "Strategy",
    "UserError",
    "__version__",
    "frozen_groups",
    "hookimpl",
]
