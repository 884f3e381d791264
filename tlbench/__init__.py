"""tlbench: benchmark transfer-learning recipes with Optuna, extended by pluggy plugins.

The public API for plugin authors is this module and :mod:`tlbench.types`.
"""

import pluggy

from tlbench.types import (
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

__version__ = "0.1.0"
PLUGIN_API_VERSION = 1  # bumped when a hook or record changes incompatibly

hookimpl = pluggy.HookimplMarker("tlbench")

__all__ = [
    "PLUGIN_API_VERSION",
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
