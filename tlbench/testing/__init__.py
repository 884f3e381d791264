"""Conformance checks for plugin authors: run them with pytest against your own plugin.

``pip install tlbench`` registers this module as a pytest plugin (entry point
``pytest11``), so in a plugin's own test suite the fixture ``tlbench_conformance``
is this module::

    def test_my_plugin_conforms(tlbench_conformance):
        tlbench_conformance.check_plugin("my_package.plugin", dataset_options={"leaves": {"path": "tests/data"}})

or, without the fixture, ``from tlbench.testing import check_plugin``. Each check
raises :class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a
failure) with one line naming the plugin, the record and the problem.

What is checked (see docs/plugins.md):

- every record: the fields have the right types (a function where one is expected, ...);
- a backbone builds for a given number of classes; its groups and head name every
  parameter exactly once; the output has one logit per class; the groups run from
  input to output; every parameter gets a gradient when everything trains, and
  freezing the first k groups leaves exactly the rest and the head with gradients;
- a dataset's splits are disjoint (no shared example id), non-empty, sized as
  declared (when you declare sizes), with labels in range, every class in the
  training split, examples that load as their modality says (images, or texts for a
  ``modality="text"`` dataset), and the same splits for the same seed;
- a strategy's search space samples (several random draws) and gives parameters
  its phases accept for several group counts: phases are :class:`~tlbench.types.Phase`
  records with whole, non-negative epochs (some > 0), freeze depths within the
  backbone, finite non-negative learning rates, the same for the same parameters;
  a strategy with ``adapt`` returns a valid :class:`~tlbench.types.Adapted` on a
  small timm model, with exactly the head and its ``trainable`` parameters training,
  and its ``extra_loss`` (if any) gives one finite scalar;
- a tracker (:func:`check_tracker`) opens for a run and takes one trial's events.
"""

from __future__ import annotations

from tlbench.testing._common import ConformanceError
from tlbench.testing.plugins import check_backbone, check_dataset, check_plugin, check_strategy, records
from tlbench.testing.trackers import check_tracker

__all__ = [
    "ConformanceError",
    "check_backbone",
    "check_dataset",
    "check_plugin",
    "check_strategy",
    "check_tracker",
    "records",
]


# --------------------------------------------------------------------------- pytest


try:
    import pytest
except ImportError:  # pragma: no cover - only the pytest plugin needs it
    pytest = None

if pytest is not None:

    @pytest.fixture
    def tlbench_conformance():
        """This module: ``tlbench_conformance.check_plugin("my_package.plugin", ...)``."""
        import sys

        return sys.modules[__name__]
