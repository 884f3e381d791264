"""The opening of a run's studies, before their search (:func:`screen_all`): the screen,
streamed with the probes of pretrained backbones, then the drop rule, the probes of the
kept backbones from random init, the config's recipes and the portfolio."""

from __future__ import annotations

import optuna

from tlbench.host.progress import Progress
from tlbench.search import screen
from tlbench.search.planning import Plan
from tlbench.search.preflight import portfolio_history
from tlbench.search.studies import (
    begun,
    enqueue_portfolio,
    enqueue_probe,
    enqueue_probes,
    enqueue_recipes,
    open_study,
)
from tlbench.search.trial import TrialResources
from tlbench.store.studyrecord import StudyRecord
from tlbench.types import DatasetSplits


def screen_all(
    plan: Plan,
    splits: dict[str, DatasetSplits],
    store,
    resources: TrialResources,
    progress: Progress,
    run_waiting=None,
    studies: dict[str, optuna.Study] | None = None,
) -> None:
    """The opening of every dataset's study, before its search: the screen (scores of
    every backbone, see :func:`tlbench.search.screen.screen_backbones`), streamed: each
    pretrained backbone's linear probe is trained as soon as that backbone is screened
    (on the features the screen took out: a result after one backbone's screen instead
    of all of them), by ``run_waiting(study, dataset_key)`` (None: only enqueued). Then
    the rule (which backbones the sampler skips), the probes of kept backbones not yet
    probed (from random init), the config's recipes and the portfolio, in that order.
    ``studies``: the run's studies, opened once; else each is opened here."""

    settings = plan.bench.search.screen
    history = portfolio_history(plan) if plan.bench.search.portfolio else []
    for entry, _ in plan.datasets:
        study = (
            studies[entry.key] if studies and entry.key in studies else open_study(plan, entry.key, store, alone=False)
        )
        StudyRecord.note_test_split(study, splits[entry.key].classes, splits[entry.key].test.labels)
        if not settings.enabled:
            StudyRecord.set_decision(study, "off (search.screen: false)", {})
            enqueue_recipes(plan, study, entry.key)
            continue

        def probe_now(backbone: str, study=study, key=entry.key) -> None:
            if (
                not screen.loaded_weights(plan.backbones[backbone])
                or StudyRecord.from_study(study).probes
                or begun(study)
            ):
                return  # from random init: only if kept; or the probes are done (a resume)
            enqueue_probe(plan, study, backbone)
            if run_waiting is not None:
                run_waiting(study, key)

        screen.screen_backbones(plan, study, splits[entry.key], resources, entry.key, after=probe_now)
        dropped = StudyRecord.from_study(study).dropped
        for backbone, why in dropped.items():
            progress.note(f"[{entry.key}] screen: the search skips {backbone} ({why}; recipes on it still run)")
        kept = [b for b in plan.backbones_for(entry.key) if b not in dropped]
        enqueue_probes(plan, study, kept)
        enqueue_recipes(plan, study, entry.key)
        added = enqueue_portfolio(plan, study, kept, entry.key, history)
        if added:
            record = StudyRecord.from_study(study)
            progress.note(f"[{entry.key}] portfolio: {len(added)} configurations that did best on earlier benchmarks go first, "
                          f"on {record.portfolio} (the screen's first); {record.portfolio_sources}")  # fmt: skip
    resources.shelf.clear()  # what the screen did not take (a resume screens nothing again)
