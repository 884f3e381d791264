"""tlbench: benchmark transfer-learning recipes with Optuna, extended by pluggy plugins.

The public API for plugin authors is the names in ``__all__`` below and the modules in
``PUBLIC_MODULES`` (a unit test keeps first-party plugins and the guide's examples to
them). ``build_timm`` and ``TIMM_OPTIONS`` (a timm model as a backbone) load torch and
timm when first used, so that ``import tlbench`` stays light.
"""

import pluggy

from tlbench import _moved
from tlbench.store.record import TrialRecord  # a trial's stored record (TrialInfo.record): fields in docs/plugins.md
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

__version__ = "0.9.5"
_moved.install()  # old module paths (0.6) keep importing, with a DeprecationWarning
# The plugin API (hooks, records, tlbench.testing): (major, minor). The major number
# changes when a hook or record changes incompatibly, the minor when one gains an
# optional field or a hook is added. 1.1: Strategy.adapt and Adapted. 1.2: a plugin
# module may set TLBENCH_PLUGIN_API = (major, minor), the oldest API it works with;
# an older tlbench then refuses it in one line instead of failing somewhere later.
# 1.3: Phase's optimizer, group_lrs, schedule, warm-up, weight decay and batch-norm fields;
# Adapted.extra_loss; Backbone.options; trackers and the event hooks (docs/plugins.md).
# 1.4: modalities: Dataset.modality, Backbone.modality, BuiltBackbone.inputs (Inputs), BadExample.
PLUGIN_API = (1, 6)
PLUGIN_API_VERSION = PLUGIN_API[0]  # the major number alone, as in API 1.0

hookimpl = pluggy.HookimplMarker("tlbench")

# the modules a plugin may import from (besides this one): records, seeded splits, the conformance kit
PUBLIC_MODULES = ("tlbench", "tlbench.types", "tlbench.splits", "tlbench.testing")
_LAZY = {"build_timm": "tlbench.host.builtins.backbones", "TIMM_OPTIONS": "tlbench.host.builtins.backbones"}


def __getattr__(name: str):
    """``build_timm`` and ``TIMM_OPTIONS``, imported on first use (they need torch and timm);
    a module of tlbench 0.6's flat folder by its old name, with a DeprecationWarning."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _moved.MOVED:
        new = _moved.new_name(f"tlbench.{name}")
        _moved.warn(f"tlbench.{name}", new, stacklevel=3)
        return importlib.import_module(new)
    raise AttributeError(f"module 'tlbench' has no attribute {name!r}")


__all__ = [
    "PLUGIN_API",
    "PLUGIN_API_VERSION",
    "PUBLIC_MODULES",
    "TIMM_OPTIONS",
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
    "TrialRecord",
    "UserError",
    "__version__",
    "build_timm",
    "frozen_groups",
    "hookimpl",
]
