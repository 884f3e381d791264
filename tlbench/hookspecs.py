"""The whole plugin API: three hooks, each yielding records from :mod:`tlbench.types`
(guide: docs/plugins.md; conformance checks: :mod:`tlbench.testing`).

A plugin is a module (or installed package, entry-point group ``tlbench``) with
functions marked ``@tlbench.hookimpl`` and named like the hooks below. Each
hook is a generator: test one with ``list(tlbench_backbones())``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from tlbench.types import Backbone, Dataset, Strategy

hookspec = pluggy.HookspecMarker("tlbench")


@hookspec
def tlbench_backbones() -> Iterable[Backbone]:
    """Yield the backbones this plugin provides.

    Example::

        @tlbench.hookimpl
        def tlbench_backbones():
            yield Backbone(name="my_resnet", build=build_my_resnet,
                           description="ResNet-18 with our in-house weights")

    ``build(request)`` returns a :class:`~tlbench.types.BuiltBackbone`: the model
    with a fresh head of ``request.num_classes`` outputs, its parameter names in
    groups from input to output (these define freeze depth), the head's parameter
    names, and the input size and normalization the weights expect.
    """


@hookspec
def tlbench_datasets() -> Iterable[Dataset]:
    """Yield the datasets this plugin provides.

    Example::

        @tlbench.hookimpl
        def tlbench_datasets():
            yield Dataset(name="leaves", load=load_leaves,
                          options={"path": "folder with one subfolder per class"})

    ``load(request)`` returns :class:`~tlbench.types.DatasetSplits` whose
    train/val/test :class:`~tlbench.types.Split` share no example id.
    Raise :class:`~tlbench.types.UserError` for a missing folder or a bad option.
    """


@hookspec
def tlbench_strategies() -> Iterable[Strategy]:
    """Yield the fine-tuning strategies this plugin provides.

    Example::

        @tlbench.hookimpl
        def tlbench_strategies():
            yield Strategy(
                name="head_only",
                options={"lr_head": [1e-3, 1e-1], "epochs": 3},
                suggest=lambda space, o: {"lr_head": space.suggest("lr_head", o["lr_head"], log=True),
                                          "epochs": space.suggest("epochs", o["epochs"])},
                phases=lambda p, n_groups: [Phase("head", p["epochs"], n_groups, 0.0, p["lr_head"])],
            )

    ``suggest(space, options)`` draws the strategy's parameters (Optuna
    define-by-run); ``phases(params, n_groups)`` turns them into training phases.
    Optionally (API 1.1) ``adapt(built, params)`` changes the freshly built
    backbone before training and returns :class:`~tlbench.types.Adapted`: the
    model, and parameters that train in every phase (LoRA factors, BitFit's
    biases); see docs/plugins.md.
    """
