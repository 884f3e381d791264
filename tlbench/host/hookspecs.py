"""The whole plugin API (guide: docs/plugins.md; conformance checks: :mod:`tlbench.testing`).

Four *record hooks*, each a generator yielding records from :mod:`tlbench.types`
(test one with ``list(tlbench_backbones())``), and nine *event hooks* (five since API
1.3, the study-level four since 1.6), called as a run goes on, whose return values are
ignored.

A plugin is a module (or installed package, entry-point group ``tlbench``) with
functions marked ``@tlbench.hookimpl`` and named like the hooks below. An event
hook implementation may take any subset of the hook's arguments, by name. The
objects a :class:`~tlbench.types.Tracker` opens receive the event hooks too.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from tlbench.types import Backbone, Dataset, RunInfo, Strategy, Tracker, TrialInfo

hookspec = pluggy.HookspecMarker("tlbench")
EVENT_HOOKS = (
    "tlbench_run_started",
    "tlbench_trial_started",
    "tlbench_epoch_done",
    "tlbench_trial_finished",
    "tlbench_run_finished",
    "tlbench_study_started",
    "tlbench_study_finished",
    "tlbench_trial_recovered",
    "tlbench_note",
)


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


@hookspec
def tlbench_trackers() -> Iterable[Tracker]:
    """Yield the trackers this plugin provides (API 1.3): what a config's ``trackers:``
    list names. ``open(request)`` returns the object that receives the event hooks below.

    Example::

        @tlbench.hookimpl
        def tlbench_trackers():
            yield Tracker(name="jsonl", open=JsonLines, options={"path": "file to append to"})
    """


# --------------------------------------------------------------------------- event hooks (API 1.3)


@hookspec
def tlbench_run_started(run: RunInfo) -> None:
    """A run (``tlbench run``, or one ``tlbench worker``) has checked everything and
    taken its run folder; its trials are about to start."""


@hookspec
def tlbench_trial_started(run: RunInfo, trial: TrialInfo) -> None:
    """A trial is about to train: ``trial.record`` has its parameters, phases and seed."""


@hookspec
def tlbench_epoch_done(
    run: RunInfo, trial: TrialInfo, epoch: int, val_accuracy: float, learning_rates: dict[str, list[float]]
) -> None:
    """A trial finished epoch ``epoch`` (1, 2, ...) with this validation accuracy, before
    the pruner decides whether it goes on. ``learning_rates`` (API 1.5): the rate each
    optimizer group applied at each of the epoch's steps, in step order, by group name:
    ``"head"``, ``"backbone"`` (``lr_backbone``), ``"group 3"`` / ``"groups 3, 4"``
    (a strategy's ``group_lrs``), joined with ``" + "`` where two share one rate (warm-up
    and schedule included). An implementation that does not name the argument does not
    get it (pluggy), so trackers written for 1.4 keep working."""


@hookspec
def tlbench_trial_finished(run: RunInfo, trial: TrialInfo) -> None:
    """A trial ended: ``trial.state`` is "complete", "pruned" or "failed" (``trial.reason``
    says why), ``trial.record`` holds everything it measured (test accuracy, costs)."""


@hookspec
def tlbench_run_finished(run: RunInfo, interrupted: bool) -> None:
    """The run's trials are done (or it was interrupted: Ctrl-C, SIGTERM, a user error
    mid-run); its tables are written."""


# --------------------------------------------------------------------------- study-level event hooks (API 1.6)


@hookspec
def tlbench_study_started(run: RunInfo, dataset: str, part: str, done: int, total: int | None) -> None:
    """This process starts working on one part of a dataset's study: ``part`` is
    "opening" (the screen's probes), "search" (the sampled trials and recipes) or
    "repeats" (the seed repeats of the best configurations); ``done`` of ``total``
    trials of that part are finished already (``total`` None: no trial limit)."""


@hookspec
def tlbench_study_finished(run: RunInfo, dataset: str, part: str) -> None:
    """This process has no more trials to run in that part of the dataset's study."""


@hookspec
def tlbench_trial_recovered(run: RunInfo, dataset: str, part: str, number: int, retried: bool) -> None:
    """A trial a killed process left running was marked failed by this run (its
    ``tlbench_trial_finished`` came just before); ``retried``: its configuration runs again."""


@hookspec
def tlbench_note(run: RunInfo, text: str) -> None:
    """A line about the search itself, as the progress display prints it: the screen's
    decision, the portfolio's configurations, a spent budget."""
