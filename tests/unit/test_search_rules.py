"""The search's own rules, on real Optuna studies without training: like-with-like
pruning, the screen's drop rule and the sampler that honours it, constraints, budgets."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from tlbench.config import SearchConfig
from tlbench.search import pruning, sampling, screen, studies
from tlbench.store.record import TrialRecord
from tlbench.store.studyrecord import StudyRecord

CAT = optuna.distributions.CategoricalDistribution
DISTS = {"backbone": CAT(["a", "b", "c"]), "strategy": CAT(["linear_probe", "finetune"])}


def _finished(study, strategy: str, curve: list[float], backbone: str = "a", attrs: dict | None = None) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            params={"backbone": backbone, "strategy": strategy}, distributions=DISTS, value=curve[-1],
            intermediate_values=dict(enumerate(curve, 1)), user_attrs=attrs or {},
        )
    )  # fmt: skip


@pytest.fixture
def probes_ahead():
    """Probes are near their end at epoch 2; fine-tunes are still climbing."""
    study = optuna.create_study(direction="maximize")
    for top in (0.90, 0.91, 0.92):
        _finished(study, "linear_probe", [top - 0.01, top, top])
    for top in (0.95, 0.96):
        _finished(study, "finetune", [0.40, 0.60, top])
    return study


def _median(within: str):
    return pruning.GroupedPruner(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2), within)


def _running(strategy: str, curve: list[float]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"backbone": "a", "strategy": strategy}, distributions=DISTS,
        intermediate_values=dict(enumerate(curve, 1)), state=optuna.trial.TrialState.RUNNING,
    )  # fmt: skip


def test_a_fine_tune_is_compared_with_fine_tunes_not_with_probes(probes_ahead):
    climbing = _running("finetune", [0.45, 0.65])  # ahead of the other fine-tunes at epoch 2, behind every probe
    assert pruning.GroupedPruner(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2), "study").prune(
        probes_ahead, climbing
    )  # what Optuna alone does: pruned against the probes
    assert not _median("strategy").prune(probes_ahead, climbing)
    assert _median("strategy").prune(probes_ahead, _running("finetune", [0.30, 0.50]))  # behind its own kind: pruned


def test_a_probe_is_still_pruned_against_probes(probes_ahead):
    assert _median("strategy").prune(probes_ahead, _running("linear_probe", [0.70, 0.72]))
    assert not _median("strategy").prune(probes_ahead, _running("linear_probe", [0.90, 0.93]))


def test_a_group_is_not_judged_before_it_has_its_startup_trials(probes_ahead):
    study = optuna.create_study(direction="maximize")
    _finished(study, "finetune", [0.9, 0.9, 0.9])
    assert not _median("strategy").prune(study, _running("finetune", [0.1, 0.1]))  # one completed fine-tune only


def test_within_strategy_and_backbone_splits_groups_further(probes_ahead):
    pruner = _median("strategy_backbone")
    trial = optuna.trial.create_trial(
        params={"backbone": "b", "strategy": "finetune"}, distributions=DISTS,
        intermediate_values={1: 0.1, 2: 0.1}, state=optuna.trial.TrialState.RUNNING,
    )  # fmt: skip
    assert not pruner.prune(probes_ahead, trial)  # no completed fine-tune on backbone b yet
    assert _median("strategy").prune(probes_ahead, trial)


def test_successive_halving_keeps_rungs_per_group(probes_ahead):
    pruner = pruning.make_pruner(SearchConfig(pruner="asha", warmup_epochs=1))
    assert isinstance(pruner, pruning.GroupedPruner) and isinstance(
        pruner.inner, optuna.pruners.SuccessiveHalvingPruner
    )
    # through a real study: the grouped view forwards what successive halving reads (rungs in storage)
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        strategy = trial.suggest_categorical("strategy", ["linear_probe", "finetune"])
        quality = trial.suggest_float("q", 0.0, 1.0)
        for epoch in range(1, 10):
            trial.report(quality * epoch / 9 + (0.5 if strategy == "finetune" else 0.0), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return quality

    study.optimize(objective, n_trials=30)
    states = {t.state.name for t in study.trials}
    assert states == {"COMPLETE", "PRUNED"}


def test_the_grouped_view_forwards_only_what_optuna_pruners_read(probes_ahead):
    view = pruning._GroupView(probes_ahead, lambda t: t.params["strategy"] == "finetune")
    assert len(view.trials) == 2 and view.direction == probes_ahead.direction
    with pytest.raises(AttributeError, match="forwards only"):
        view.optimize  # noqa: B018


def test_the_envelope_pruner_stops_only_what_this_tasks_curves_say_cannot_catch_up(probes_ahead):
    pruner = pruning.make_pruner(SearchConfig(pruner="envelope", warmup_epochs=1))
    assert isinstance(pruner, pruning.EnvelopePruner)
    # finished fine-tunes gained 0.35 from epoch 2 to their value (0.60 -> 0.95): one at 0.55 at epoch 2
    # could still reach 0.90 < 0.96 (the best) with a flat curve, and its own rise adds nothing
    assert pruner.prune(probes_ahead, _running("finetune", [0.55, 0.55]))
    # the same epoch-2 accuracy, rising by 0.45 per epoch: continued to epoch 3 it could pass the best
    assert not pruner.prune(probes_ahead, _running("finetune", [0.10, 0.55]))
    # where the median rule stops it (behind both fine-tunes at epoch 2), the envelope lets it go on
    climbing = _running("finetune", [0.45, 0.62])
    assert _median("strategy").prune(probes_ahead, _running("finetune", [0.30, 0.50]))
    assert not pruner.prune(probes_ahead, climbing)
    # a probe far below the best, near its own kind's end: stopped; never during the warm-up epochs
    assert pruner.prune(probes_ahead, _running("linear_probe", [0.70, 0.70]))
    assert not pruner.prune(probes_ahead, _running("linear_probe", [0.10]))
    assert pruning.EnvelopePruner(warmup=0).prune(probes_ahead, _running("linear_probe", [0.10]))


def test_the_envelope_pruner_waits_for_its_groups_startup_trials():
    study = optuna.create_study(direction="maximize")
    _finished(study, "linear_probe", [0.9, 0.9, 0.9])
    _finished(study, "finetune", [0.2, 0.5, 0.95])
    pruner = pruning.EnvelopePruner(warmup=0, startup=2)
    assert not pruner.prune(study, _running("finetune", [0.1, 0.1]))  # one completed fine-tune only
    _finished(study, "finetune", [0.3, 0.4, 0.5])
    assert pruner.prune(study, _running("finetune", [0.1, 0.1]))  # 0.1 + at most 0.45 < 0.95
    assert not pruning.EnvelopePruner(startup=2, within="strategy_backbone").prune(
        study, optuna.trial.create_trial(
            params={"backbone": "b", "strategy": "finetune"}, distributions=DISTS,
            intermediate_values={1: 0.1, 2: 0.1}, state=optuna.trial.TrialState.RUNNING,
        ),
    )  # fmt: skip  # no completed fine-tune on backbone b


def test_the_envelope_pruner_runs_in_a_real_study():
    pruner = pruning.make_pruner(SearchConfig(pruner="envelope", warmup_epochs=1))
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        strategy = trial.suggest_categorical("strategy", ["linear_probe", "finetune"])
        quality = trial.suggest_float("q", 0.0, 1.0)
        for epoch in range(1, 10):
            trial.report(quality * min(1.0, epoch / 3) + (0.2 if strategy == "finetune" else 0.0), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return quality + (0.2 if strategy == "finetune" else 0.0)

    study.optimize(objective, n_trials=40)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(max(t.intermediate_values) >= 2 for t in pruned)  # never in the warm-up epoch
    best = study.best_value
    # a stopped trial could not have beaten the best: its quality is known from its curve (flat from epoch 3)
    assert all(
        t.intermediate_values[max(t.intermediate_values)] < best for t in pruned if max(t.intermediate_values) >= 3
    )


def test_hyperband_needs_the_whole_study():
    with pytest.raises(ValueError, match="use pruner: asha"):
        SearchConfig(pruner="hyperband")
    assert isinstance(
        pruning.make_pruner(SearchConfig(pruner="hyperband", prune_within="study")), optuna.pruners.HyperbandPruner
    )


# --------------------------------------------------------------------------- the screen's rule


def test_the_rule_drops_only_what_is_clearly_behind_the_best():
    scores = {"good": {"knn": 0.90}, "close": {"knn": 0.81}, "bad": {"knn": 0.70}, "skipped": {"skipped": "no cut"}}
    out = screen.dropped(scores, "knn", 0.10)
    assert list(out) == ["bad"] and "0.700 is more than 0.1 below good's 0.900" in out["bad"]
    assert screen.dropped({"only": {"knn": 0.1}}, "knn", 0.10) == {}  # nothing to compare with
    assert screen.dropped({"a": {"knn": 0.5}, "b": {"knn": 0.5}}, "knn", 0.10) == {}


def test_the_rule_is_stored_with_the_study_and_can_be_switched_off():
    study = optuna.create_study()
    study.set_user_attr("screen:a", {"knn": 0.9})
    study.set_user_attr("screen:b", {"knn": 0.2})
    assert screen.apply_rule(study, SearchConfig().screen) == {"b": "knn 0.200 is more than 0.1 below a's 0.900"}
    assert sampling.dropped_backbones(study) == {"b"}
    assert screen.apply_rule(study, SearchConfig(screen={"drop": False}).screen) == {}
    assert sampling.dropped_backbones(study) == set() and "off" in StudyRecord.from_study(study).decision.rule


@pytest.mark.parametrize("kind", ["tpe", "random", "local", "groups"])
def test_the_sampler_never_proposes_a_dropped_backbone(kind):
    search = SearchConfig(sampler=kind, startup_trials=3)
    study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=1))
    StudyRecord.set_decision(study, "test", {"a": "why", "c": "why"})
    study.enqueue_trial({"backbone": "a"})  # a recipe on a dropped backbone still runs

    def objective(trial):
        backbone = trial.suggest_categorical("backbone", ["a", "b", "c"])
        x = trial.suggest_float("x", 0, 1)
        return x + (backbone == "a")  # the dropped backbone would even be the best

    study.optimize(objective, n_trials=30)
    drawn = [t.params["backbone"] for t in study.trials]
    assert drawn[0] == "a" and set(drawn[1:]) == {"b"}


def _grid_objective(trial):
    """A small grid with a continuous and an integer setting: backbone c, lr 0.01 and depth 3 are best."""
    backbone = trial.suggest_categorical("backbone", ["a", "b", "c"])
    strategy = trial.suggest_categorical("strategy", ["linear_probe", "finetune"])
    if strategy == "linear_probe":
        lr = trial.suggest_categorical("linear_probe.lr_head", [0.001, 0.003, 0.01, 0.03, 0.1])
        return {"a": 0.5, "b": 0.6, "c": 0.7}[backbone] - abs(lr - 0.01)
    lr = trial.suggest_float("finetune.lr_backbone", 1e-5, 1e-1, log=True)
    depth = trial.suggest_int("finetune.depth", 1, 9)
    return {"a": 0.6, "b": 0.7, "c": 0.8}[backbone] - abs(lr - 0.01) - abs(depth - 3) / 100


def test_the_local_sampler_moves_one_setting_of_the_best_trial_one_step():
    moves = set()
    for seed in range(12):
        search = SearchConfig(sampler="local", local_share=1.0)
        study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=seed))
        study.enqueue_trial({"backbone": "b", "strategy": "linear_probe", "linear_probe.lr_head": 0.003})
        study.optimize(_grid_objective, n_trials=2)
        first, second = study.trials[0].params, study.trials[1].params
        if second["strategy"] != first["strategy"]:  # the other strategy's settings drawn at random
            assert second["backbone"] == "b"
            moves.add("strategy")
            continue
        (name,) = {k for k in first if second[k] != first[k]}
        assert second[name] in {"linear_probe.lr_head": (0.001, 0.01), "backbone": ("a", "c")}[name]
        moves.add(name)
    assert moves == {"strategy", "backbone", "linear_probe.lr_head"}  # each setting gets moved


def test_the_local_sampler_steps_log_floats_by_three_and_never_reruns_a_configuration():
    assert sampling._steps(optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True), 1e-3) == pytest.approx(
        [1e-3 / 3, 3e-3]
    )
    assert sampling._steps(optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True), 1e-1) == pytest.approx(
        [1e-1 / 3]
    )
    assert sampling._steps(optuna.distributions.IntDistribution(1, 9), 1) == [3]
    assert sampling._steps(optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25), 0.5) == [0.25, 0.75]
    assert sampling._steps(CAT([0.1, 0.001, 0.01]), 0.01) == [0.001, 0.1]  # the list's order does not matter
    assert sampling._steps(CAT(["x", "y", "z"]), "y") == ["x", "z"]
    sampler = sampling.LocalSampler(1.0, seed=3)
    planned = {}  # trial number -> its plan, kept before after_trial drops it
    follow = sampler.sample_independent

    def sample_independent(study, trial, name, dist):
        planned.setdefault(trial.number, dict(sampler._plans.get(trial.number, {})))
        return follow(study, trial, name, dist)

    sampler.sample_independent = sample_independent
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for lr in (0.001, 0.003, 0.01, 0.03, 0.1):  # every probe of every backbone has run
        for backbone in "abc":
            study.enqueue_trial({"backbone": backbone, "strategy": "linear_probe", "linear_probe.lr_head": lr})
    study.optimize(_grid_objective, n_trials=15 + 40)
    plans = {n: p for n, p in planned.items() if p}
    assert len(plans) >= 30  # best-first: when the best's neighbours have run, the next best's
    for number, plan in plans.items():  # a neighbour never repeats a configuration that ran before it
        assert not any(all(t.params.get(k) == v for k, v in plan.items()) for t in study.trials[:number]), plan
        assert all(study.trials[number].params[k] == v for k, v in plan.items())
    assert sum(p["strategy"] == "linear_probe" for p in plans.values()) == 0  # every probe had run
    best = study.best_trial.params
    assert best["backbone"] == "c" and best["strategy"] == "finetune" and abs(best["finetune.depth"] - 3) <= 2


def test_the_local_sampler_follows_only_feasible_trials_and_pareto_fronts():
    limits = {"train_seconds": 1.0}
    sampler = sampling.LocalSampler(1.0, limits, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for backbone, value, seconds in (("a", 0.9, 5.0), ("b", 0.5, 0.5)):  # the better one is over the limit
        study.add_trial(
            optuna.trial.create_trial(
                params={"backbone": backbone}, distributions={"backbone": CAT(["a", "b", "c"])}, value=value,
                user_attrs=TrialRecord(train_seconds=seconds).attrs(),
            )
        )  # fmt: skip
    assert [t.params for t in sampler._incumbents(study, study.trials)] == [
        {"backbone": "b"}
    ]  # the better one is infeasible
    pareto = optuna.create_study(directions=["maximize", "minimize"], sampler=sampling.LocalSampler(1.0, seed=0))
    pareto.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=12)
    assert len(pareto.trials) == 12  # plans from a trial of the front


def _categorical_grid(trial):
    """Every setting a list: 3 backbones x (5 probes + 4 fine-tunes); backbone b's fine-tune at 0.003 is best."""
    backbone = trial.suggest_categorical("backbone", ["a", "b", "c"])
    strategy = trial.suggest_categorical("strategy", ["linear_probe", "finetune"])
    base = {"a": 0.6, "b": 0.7, "c": 0.5}[backbone]
    if strategy == "linear_probe":
        return base - abs(trial.suggest_categorical("linear_probe.lr_head", [0.001, 0.003, 0.01, 0.03, 0.1]) - 0.01)
    lr = trial.suggest_categorical("finetune.lr_backbone", [0.0003, 0.001, 0.003, 0.01])
    return base + 0.2 - abs(lr - 0.003) * 10


def _opened(share: float, seed: int = 0) -> optuna.Study:
    """A study whose opening probed every backbone at the middle rate (b's probe best)."""
    sampler = sampling.make_sampler(SearchConfig(sampler="groups", group_share=share, group_step=False), seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for backbone in "abc":
        study.enqueue_trial({"backbone": backbone, "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
    return study


def test_the_group_sampler_goes_to_the_best_group_with_settings_it_has_not_run():
    for seed in range(5):
        study = _opened(1.0, seed)
        study.optimize(_categorical_grid, n_trials=3 + 4)
        # b's probe was best: its fine-tune group, not run yet, starts from it and has fewer trials than the
        # probe group; b's fine-tunes beat every probe, so the group is followed until it has run all four
        sampled = [t.params for t in study.trials[3:]]
        assert all(p["backbone"] == "b" and p["strategy"] == "finetune" for p in sampled), sampled
        assert sorted(p["finetune.lr_backbone"] for p in sampled) == [0.0003, 0.001, 0.003, 0.01]


def test_the_group_sampler_passes_over_groups_it_has_run_and_never_repeats_a_configuration():
    study = _opened(1.0, seed=1)
    study.optimize(_categorical_grid, n_trials=27)  # the whole grid: 3 x (5 + 4)
    configurations = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(configurations)) == 27
    order = [(t.params["backbone"], t.params["strategy"]) for t in study.trials[3:]]
    assert order[:4] == [("b", "finetune")] * 4  # then the next groups by their best
    assert order.index(("a", "finetune")) < order.index(("c", "finetune"))
    # the grid exhausted: no plan, the trial is random (Optuna's own sampler)
    assert sampling.GroupSampler(1.0, seed=0)._plan(study, study.trials) == {}


def test_the_group_sampler_with_group_step_moves_the_groups_best_one_step():
    lrs = [0.0003, 0.001, 0.003, 0.01]
    for seed in range(6):
        sampler = sampling.make_sampler(SearchConfig(sampler="groups", group_share=1.0, group_step=True), seed=seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for backbone in "abc":
            study.enqueue_trial({"backbone": backbone, "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
        study.optimize(_categorical_grid, n_trials=3 + 4)
        drawn = [t.params["finetune.lr_backbone"] for t in study.trials[3:]]
        assert all(t.params["backbone"] == "b" for t in study.trials[3:])
        # the first fine-tune of the group at random, each next one step from the group's best so far
        for i in range(1, 4):
            best = max(study.trials[3 : 3 + i], key=lambda t: t.value).params["finetune.lr_backbone"]
            if any(abs(lrs.index(x) - lrs.index(best)) == 1 for x in lrs if x not in drawn[:i]):
                assert abs(lrs.index(drawn[i]) - lrs.index(best)) == 1, (seed, drawn)
        assert sorted(drawn) == lrs


def test_the_group_sampler_draws_continuous_settings_and_leaves_a_share_to_chance():
    study = optuna.create_study(
        direction="maximize",
        sampler=sampling.make_sampler(SearchConfig(sampler="groups", group_share=1.0, group_step=False), seed=2),
    )
    study.enqueue_trial({"backbone": "c", "strategy": "finetune", "finetune.lr_backbone": 0.01, "finetune.depth": 3})
    study.optimize(_grid_objective, n_trials=12)  # a float and an int setting: the group is never used up
    groups = [(t.params["backbone"], t.params["strategy"]) for t in study.trials]
    # backbones with no result first (a, b: each tried once), then c's untried probe group, then c's fine-tunes
    assert {g[0] for g in groups[1:3]} == {"a", "b"}
    assert groups[3] == ("c", "linear_probe") and set(groups[4:]) == {("c", "finetune")}, groups
    assert len({t.params["finetune.lr_backbone"] for t in study.trials if "finetune.lr_backbone" in t.params}) == 9
    shared = _opened(0.5, seed=3)
    shared.optimize(_categorical_grid, n_trials=3 + 40)
    groups = {(t.params["backbone"], t.params["strategy"]) for t in shared.trials[3:]}
    assert ("c", "finetune") in groups  # the random half reaches the worst group early
    pareto = optuna.create_study(directions=["maximize", "minimize"], sampler=sampling.GroupSampler(1.0, seed=0))
    pareto.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    assert len(pareto.trials) == 6  # several objectives: random


@pytest.mark.parametrize("kind,share", [("local", 0.5), ("local", 0.0), ("groups", 0.5)])
def test_untried_draws_run_every_configuration_once_before_any_twice(kind, share):
    """search.untried_draws: a grid of choices (3 backbones x (5 probes + 4 fine-tunes): 27) is
    run whole, each configuration once, in 27 trials; its draws are random, not in an order."""
    orders = set()
    for seed in range(4):
        search = SearchConfig(sampler=kind, local_share=share, group_share=share, untried_draws=True)
        study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=seed))
        study.enqueue_trial({"backbone": "b", "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
        study.optimize(_categorical_grid, n_trials=27)
        configurations = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(configurations)) == 27, seed
        orders.add(tuple(configurations))
        study.optimize(_categorical_grid, n_trials=3)  # every configuration has run: random again, repeats
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 27
    assert len(orders) == 4


def test_untried_draws_off_repeat_configurations_as_optuna_random_does():
    repeats = 0
    for seed in range(4):
        search = SearchConfig(sampler="local", local_share=0.0)
        study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=seed))
        study.optimize(_categorical_grid, n_trials=27)
        repeats += 27 - len({tuple(sorted(t.params.items())) for t in study.trials})
    assert repeats > 20  # with replacement: about a third of 27 draws from 27 configurations repeat one


def test_untried_draws_are_uniform_over_configurations_and_respect_the_screen():
    """Fine-tunes are 4 of 9 configurations per backbone: about 4/9 of the draws (Optuna's random: 1/2 of
    strategies); a backbone the screen dropped is never drawn; a strategy no trial has run weighs
    as much as an average one, and is drawn with its settings at random."""
    counts = {"finetune": 0, "linear_probe": 0}
    for seed in range(40):
        search = SearchConfig(sampler="local", local_share=0.0, untried_draws=True)
        study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=seed))
        StudyRecord.set_decision(study, "test", {"c": "why"})
        study.enqueue_trial({"backbone": "a", "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
        study.enqueue_trial({"backbone": "a", "strategy": "finetune", "finetune.lr_backbone": 0.001})
        study.optimize(_categorical_grid, n_trials=2 + 4)
        drawn = study.trials[2:]
        assert all(t.params["backbone"] in "ab" for t in drawn)
        for t in drawn:
            counts[t.params["strategy"]] += 1
    assert 0.34 < counts["finetune"] / sum(counts.values()) < 0.55, counts
    study = optuna.create_study(
        direction="maximize", sampler=sampling.make_sampler(SearchConfig(local_share=0.0, untried_draws=True), seed=1)
    )
    study.enqueue_trial({"backbone": "a", "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
    study.optimize(_categorical_grid, n_trials=1 + 12)
    assert any(t.params["strategy"] == "finetune" for t in study.trials)  # never run before, still drawn


def test_untried_draws_on_a_continuous_space_or_stepped_ranges():
    # a continuous setting: no list of configurations, the draws are Optuna's random ones
    search = SearchConfig(sampler="local", local_share=0.0, untried_draws=True)
    study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=0))
    study.optimize(_grid_objective, n_trials=20)
    assert len(study.trials) == 20
    # stepped ranges are lists: an int range and a stepped float, 5 x 3 configurations, once each
    study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=0))
    study.optimize(
        lambda t: t.suggest_int("depth", 1, 9, step=2) + t.suggest_float("x", 0.0, 0.2, step=0.1), n_trials=15
    )
    assert len({(t.params["depth"], round(t.params["x"], 9)) for t in study.trials}) == 15
    trials = study.trials
    assert sampling.untried_draw(trials, set(), np.random.default_rng(0)) == {}  # all run
    assert sampling.untried_draw([], set(), np.random.default_rng(0)) == {}  # nothing run: no space yet


def _model_opened(step: str, seed: int) -> optuna.Study:
    """_categorical_grid after an opening: every backbone's probe at 0.01 (b's best), b's fine-tune at
    0.0003 and 0.001 (rising towards its best, 0.003); every sampled trial planned."""
    search = SearchConfig(local_share=1.0, local_step=step)
    study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=seed))
    for backbone in "abc":
        study.enqueue_trial({"backbone": backbone, "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
    for lr in (0.0003, 0.001):
        study.enqueue_trial({"backbone": "b", "strategy": "finetune", "finetune.lr_backbone": lr})
    return study


def _point(trial) -> tuple:
    return trial.params["backbone"], trial.params["strategy"], trial.params.get("finetune.lr_backbone")


def test_the_model_step_tries_the_neighbour_the_studys_own_trials_favour():
    # the incumbent (b's fine-tune at 0.001) has three untried neighbours: 0.003 on b, and 0.001 on a or c,
    # whose probes were worse than b's. A random step takes b's in about a third of the seeds; the model in all
    chosen = {"random": [], "model": []}
    for step, picks in chosen.items():
        for seed in range(8):
            study = _model_opened(step, seed)
            study.optimize(_categorical_grid, n_trials=6)
            picks.append(_point(study.trials[5]))
    assert set(chosen["model"]) == {("b", "finetune", 0.003)}
    assert set(chosen["random"]) > {("b", "finetune", 0.003)}  # the random step also goes to a and c
    assert all(p[1] == "finetune" and p[2] == 0.001 for p in chosen["random"] if p[0] != "b")


def test_the_model_over_every_configuration_never_reruns_one_and_reads_the_best_group():
    for seed in range(4):
        study = _model_opened("model_any", seed)
        study.optimize(_categorical_grid, n_trials=27)
        points = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(points)) == 27  # the whole space, each configuration once
        assert study.trials[5].params["backbone"] == "b"  # the backbone whose trials are best
        assert max(t.value for t in study.trials[:10]) == pytest.approx(0.9)  # b's fine-tune at 0.003 among them


def test_the_model_step_on_continuous_ranges_and_pareto_studies_moves_one_setting_one_step():
    sampler = sampling.LocalSampler(1.0, seed=0, step="model")
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        depth = trial.suggest_int("depth", 1, 9)
        return -abs(np.log10(lr) + 3) - 0.1 * abs(depth - 5)

    study.enqueue_trial({"lr": 1e-5, "depth": 1})
    study.optimize(objective, n_trials=25)

    def one_step(params, t) -> bool:
        moved = [k for k in params if params[k] != t.params[k]]
        steps = sampling._steps(t.distributions[moved[0]], t.params[moved[0]]) if len(moved) == 1 else []
        return any(np.isclose(params[moved[0]], v) for v in steps)

    for number in range(4, 25):  # from the third finished trial on, each a neighbour of an earlier best
        assert any(one_step(study.trials[number].params, t) for t in study.trials[:number])
    assert study.best_value > -0.5
    pareto = optuna.create_study(
        directions=["maximize", "minimize"], sampler=sampling.LocalSampler(1.0, seed=0, step="model")
    )
    pareto.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=8)
    assert len(pareto.trials) == 8  # a front has no single best: the step is drawn as before


def test_the_model_reads_at_most_its_cap_the_best_half_and_the_latest_half():
    sampler = sampling.LocalSampler(1.0, seed=0, step="model")
    study = optuna.create_study(direction="minimize", sampler=sampler)  # smaller is better here
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    values = np.random.default_rng(0).permutation(300).astype(float)
    study.add_trials([optuna.trial.create_trial(params={"x": v / 300}, distributions=dist, value=v) for v in values])
    model = sampler._model(study, study.trials)
    assert len(model.y) == sampling.MODEL_TRIALS == 256
    read = set((model.x[:, 0] * 300).round().astype(int).tolist())
    assert set(range(128)) <= read  # the 128 best (smallest) values
    assert {int(v) for v in values[-128:]} <= read  # and the latest trials
    small = optuna.create_study(direction="minimize", sampler=sampler)
    small.add_trials(
        [optuna.trial.create_trial(params={"x": v / 300}, distributions=dist, value=v) for v in values[:40]]
    )
    assert len(sampler._model(small, small.trials).y) == 40  # below the cap: every finished trial


def test_a_space_of_lists_is_exhausted_once_every_kept_configuration_ran():
    """space_exhausted: 3 backbones x (5 probes + 4 fine-tunes) = 27 configurations, or 18 once the
    screen dropped one; a waiting trial or a failed one keeps the study going; a continuous
    setting never runs out."""
    search = SearchConfig(sampler="local", local_share=0.0, untried_draws=True)
    study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=0))
    study.optimize(_categorical_grid, n_trials=26)
    assert sampling.space_exhausted(study.trials, set()) is None  # one configuration left
    study.optimize(_categorical_grid, n_trials=1)
    assert sampling.space_exhausted(study.trials, set()) == 27
    study.enqueue_trial({"backbone": "a", "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
    assert sampling.space_exhausted(study.get_trials(), set()) is None  # an enqueued trial still waits to run
    # a failed trial's configuration may be drawn again: not run
    failed = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=0))
    failed.optimize(_categorical_grid, n_trials=27)
    first = failed.trials[0]
    trials = [optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=first.params,
                                        distributions=first.distributions)] + failed.trials[1:]  # fmt: skip
    assert sampling.space_exhausted(trials, set()) is None
    # the screen dropped c: a and b's 18 configurations are the space
    screened = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=1))
    StudyRecord.set_decision(screened, "test", {"c": "why"})
    screened.enqueue_trial({"backbone": "c", "strategy": "linear_probe", "linear_probe.lr_head": 0.01})
    screened.optimize(_categorical_grid, n_trials=1 + 17)
    assert sampling.space_exhausted(screened.trials, {"c"}) is None
    screened.optimize(_categorical_grid, n_trials=1)
    assert sampling.space_exhausted(screened.trials, {"c"}) == 18
    assert sampling.space_exhausted(screened.trials, set()) is None  # c's other 8 never ran
    assert studies.nothing_left(screened, SearchConfig()).startswith("all 18 configurations the search keeps")
    # a continuous setting, and no trial at all
    continuous = optuna.create_study(direction="maximize")
    continuous.optimize(_grid_objective, n_trials=5)
    assert sampling.space_exhausted(continuous.trials, set()) is None
    assert studies.nothing_left(continuous, SearchConfig()) is None
    assert sampling.space_exhausted([], set()) is None


# --------------------------------------------------------------------------- constraints and budget


def _with_costs(**costs) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=0.5, user_attrs=TrialRecord(**costs).attrs())


def test_constraint_values_are_value_minus_limit_and_unknown_is_feasible():
    values = sampling.constraint_values({"train_seconds": 10.0, "peak_memory_mb": 100.0})
    assert list(values(_with_costs(train_seconds=12.0, peak_memory_mb=50.0))) == [2.0, -50.0]
    assert list(values(_with_costs())) == [0.0, 0.0]
    assert list(values(_with_costs(infeasible="over")))[-1] == 1.0
    assert sampling.infeasible(TrialRecord(train_seconds=12.0), {"train_seconds": 10.0, "latency_ms": None}) == (
        "search.constraints: train_seconds 12 > 10"
    )
    assert sampling.infeasible(TrialRecord(train_seconds=8.0), {"train_seconds": 10.0}) is None


def test_tpe_learns_from_the_constraints():
    """A real TPE study with constraints_func: it stores each trial's constraint values."""
    search = SearchConfig(constraints={"train_seconds": 1.0}, startup_trials=2)
    study = optuna.create_study(direction="maximize", sampler=sampling.make_sampler(search, seed=0))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        TrialRecord(train_seconds=2 * x).write(trial)
        sampling.tell_constraints(trial, {"train_seconds": 1.0})
        return x

    study.optimize(objective, n_trials=12)
    assert all(t.constraints["train_seconds"] == pytest.approx(2 * t.params["x"] - 1.0) for t in study.trials)
    assert {t.constraints["train_seconds"] > 0 for t in study.trials} == {True, False}


def test_the_budget_counts_what_trials_spent():
    study = optuna.create_study()
    for gflops in (10.0, 15.0):
        study.add_trial(
            optuna.trial.create_trial(value=0.1, user_attrs=TrialRecord(train_gflops=gflops, train_seconds=1.0).attrs())
        )
    assert studies.spent(study) == {"gflops": 25.0, "seconds": 2.0}
    assert studies.over_budget(study, SearchConfig(budget={"gflops": 30})) is None
    assert studies.over_budget(study, SearchConfig(budget={"gflops": 25})) == "search.budget.gflops: 25.0 of 25 spent"
    assert (
        studies.over_budget(study, SearchConfig(budget={"seconds": 1.5})) == "search.budget.seconds: 2.0 of 1.5 spent"
    )


# --------------------------------------------------------------------------- Pareto mode


def _pareto_study(*done):
    """A two-objective study (accuracy up, cost down) with completed trials (strategy, curve, cost)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for strategy, curve, cost in done:
        study.add_trial(
            optuna.trial.create_trial(
                params={"backbone": "a", "strategy": strategy}, distributions=DISTS, values=[curve[-1], cost],
                user_attrs=TrialRecord(val_curve=curve).attrs(),
            )
        )  # fmt: skip
    return study


def _asking(study, strategy):
    """A running trial of ``strategy``, as the objective sees it."""
    study.enqueue_trial({"backbone": "a", "strategy": strategy})
    return study.ask(fixed_distributions=DISTS)


def test_a_pareto_trial_is_pruned_only_when_dominated_within_its_strategy():
    study = _pareto_study(
        ("finetune", [0.5, 0.8, 0.9], 100.0),
        ("finetune", [0.6, 0.85, 0.92], 120.0),
        ("linear_probe", [0.9, 0.9, 0.9], 10.0),
    )
    search = SearchConfig(objective="pareto", warmup_epochs=1, pruner="asha")
    trial = _asking(study, "finetune")
    assert "dominated at epoch 2 by 2 completed trials" in pruning.dominated_by(trial, 2, 0.7, 150.0, search)
    assert pruning.dominated_by(trial, 2, 0.7, 110.0, search) is None  # only one of them is as cheap: not enough
    assert pruning.dominated_by(trial, 2, 0.82, 150.0, search) is None  # ahead of one: not dominated by two
    assert pruning.dominated_by(trial, 1, 0.1, 150.0, search) is None  # warm-up epoch
    assert pruning.dominated_by(trial, 2, 0.7, 150.0, SearchConfig(objective="pareto", pruner="none")) is None
    probe = _asking(study, "linear_probe")
    assert pruning.dominated_by(probe, 2, 0.5, 50.0, search) is None  # one probe ahead; fine-tunes are not its group


def test_hypervolume_is_the_area_the_front_dominates():
    import pandas as pd

    from tlbench.results.tables import hypervolume, hypervolume_history

    points = pd.DataFrame({"val_accuracy": [0.5, 0.8, 0.4], "train_gflops": [1.0, 2.0, 3.0]})  # the last is dominated
    assert hypervolume(points, "train_gflops", 4.0) == pytest.approx(3 * 0.5 + 2 * 0.3)
    trials = points.assign(trial=[0, 1, 2], state="COMPLETE", infeasible=None)
    reference, history = hypervolume_history(trials, "train_gflops", fractions=(0.5, 1.0))
    assert reference == pytest.approx(3.3) and history[0][0] == pytest.approx(3.0)
    assert history[0][1] == pytest.approx(2.3 * 0.5 + 1.3 * 0.3)  # the first two trials spent 3 of 6 GFLOPs
    assert history[1][1] == history[0][1]  # the third added nothing to the front


# --------------------------------------------------------------------------- the portfolio


def _table(name, screen_scores, rows):
    trials = [
        {
            "state": "COMPLETE",
            "val_accuracy": v,
            "params": {"backbone": b, "strategy": s, **{f"{s}.{k}": x for k, x in p.items()}},
        }
        for b, s, p, v in rows
    ]
    return {"datasets": {name: {"screen": {b: {"knn": k} for b, k in screen_scores.items()}, "trials": trials}}}


def test_the_portfolio_ranks_points_on_each_datasets_screen_first_backbone():
    from tlbench.search import portfolio

    a = _table("a", {"good": 0.9, "bad": 0.5}, [
        ("good", "finetune", {"freeze": 0.5}, 0.90), ("good", "finetune", {"freeze": 0.0}, 0.80),
        ("bad", "finetune", {"freeze": 0.0}, 0.99),  # not the screen's first: not counted
        ("good", "linear_probe", {"lr_head": 0.01}, 0.95),  # head-only: the probes cover it
    ])  # fmt: skip
    b = _table(
        "b", {"good": 0.7}, [("good", "finetune", {"freeze": 0.5}, 0.60), ("good", "finetune", {"freeze": 0.0}, 0.70)]
    )
    built = portfolio.build([a, b])
    assert [e["params"] for e in built] == [
        {"freeze": 0.0},
        {"freeze": 0.5},
    ]  # (0.8/0.99 + 1)/2 > (0.9/0.99 + 0.6/0.7)/2
    assert built[0]["datasets"] == ["a", "b"] and built[0]["relative_val"] == pytest.approx(
        (0.8 / 0.99 + 1) / 2, abs=1e-4
    )


def test_a_study_leaves_its_own_domain_out_of_the_shipped_portfolio():
    """The default benchmark's mnist5k study must not learn from mnist5k or its sibling digits."""
    from tlbench.search import portfolio

    doc = portfolio.shipped_document()
    assert {s["domain"] for n, s in doc["sources"].items() if n in ("mnist5k", "digits")} == {"digits"}
    mine = portfolio.for_study("mnist5k", "image")
    assert mine.left_out == ["digits", "mnist5k", "mnist5k (10 epochs)"]  # the development grid of mnist5k too
    others = {"lfw_faces", "lfw_faces (10 epochs)", "textures", "textures (10 epochs)"}
    assert set(mine.learnt_from) == others and all(set(e["datasets"]) <= others for e in mine.entries)
    assert "left out" in mine.describe() and "lfw_faces, lfw_faces (10 epochs), textures" in mine.describe()
    other = portfolio.for_study("my_xrays", "image")  # a dataset no grid holds: every grid counts
    assert other.left_out == [] and other.learnt_from == sorted(doc["sources"])
    assert other.entries == portfolio.shipped()
    assert portfolio.for_study("bbc_news", "text").entries == []  # the shipped grids are images


def test_the_users_history_joins_the_ranking_for_its_modality_only():
    from tlbench.search import portfolio

    mine = _table("xrays", {"good": 0.9}, [("good", "finetune", {"freeze": 0.9, "lr_backbone": 0.1}, 0.99),
                                           ("good", "finetune", {"freeze": 0.0, "lr_backbone": 0.1}, 0.50)])  # fmt: skip
    warm = portfolio.for_study("xrays", "image", history=[mine])
    assert "xrays (portfolio_from)" in warm.learnt_from
    assert warm.entries[0]["params"] == {"freeze": 0.9, "lr_backbone": 0.1}  # 1.0 on its only dataset
    for t in mine["datasets"]["xrays"]["trials"]:
        t["modality"] = "text"
    assert "xrays (portfolio_from)" not in portfolio.for_study("xrays", "image", history=[mine]).learnt_from
    assert portfolio.for_study("reviews", "text", history=[mine]).learnt_from == ["xrays (portfolio_from)"]


def test_portfolio_entries_outside_the_configs_space_are_skipped(tmp_path):
    from conftest import tiny_benchmark

    from tlbench.config import parse_config
    from tlbench.host import plugins
    from tlbench.search import portfolio
    from tlbench.search.planning import make_plan

    strategies = [{"name": "finetune", "epochs": 1, "freeze": [0.0, 0.6]}, {"name": "linear_probe", "epochs": 1}]
    plan = make_plan(
        parse_config(tiny_benchmark(strategies=strategies)),
        plugins.collect(plugins.make_plugin_manager(entry_points=False)),
        tmp_path,
    )
    entries = [
        {"strategy": "finetune", "params": {"freeze": 0.75, "lr_backbone": 0.001}},  # freeze outside [0, 0.6]
        {"strategy": "bitfit", "params": {"lr_bias": 0.01}},  # not in this config
        {"strategy": "finetune", "params": {"freeze": 0.5, "lr_backbone": 0.003}},
        {"strategy": "finetune", "params": {"freeze": 0.0, "lr_backbone": 0.001}},
    ]
    assert portfolio.entries_for(plan, 1, entries) == [("finetune", {"freeze": 0.5, "lr_backbone": 0.003})]
    assert len(portfolio.entries_for(plan, 5, entries)) == 2
    assert portfolio.shipped()[0]["strategy"] == "finetune"  # the packaged one loads


ADAPTING = """
from tlbench import hookimpl
from tlbench.types import Phase, Strategy

TLBENCH_PLUGIN_API = (1, 1)  # uses Strategy.adapt


@hookimpl
def tlbench_strategies():  # trains adapters inside frozen groups, as BitFit and LoRA do: not a probe
    yield Strategy(name="adapters", options={"epochs": 1}, suggest=lambda s, o: {"epochs": s.suggest("epochs", o["epochs"])},
                   phases=lambda p, n: [Phase("a", p["epochs"], n, 0.01, 0.01)], adapt=lambda built, params: built)
"""


def test_the_probe_is_the_first_strategy_that_trains_the_head_alone(tmp_path):
    from conftest import tiny_benchmark

    from tlbench.config import parse_config
    from tlbench.host import plugins
    from tlbench.search import screen
    from tlbench.search.planning import make_plan

    (tmp_path / "adapting.py").write_text(ADAPTING)

    def plan(strategies):
        bench = parse_config(tiny_benchmark(strategies=strategies, plugins=["adapting.py"]))
        return make_plan(
            bench,
            plugins.collect(plugins.make_plugin_manager(bench.plugins, base_dir=tmp_path, entry_points=False)),
            tmp_path,
        )

    lp = {"name": "linear_probe", "epochs": 1, "lr_head": {"choices": [0.1, 0.2, 0.3]}}
    both = plan([{"name": "adapters"}, {"name": "finetune", "epochs": 1}, lp])
    assert screen.probe_strategy(both) == "linear_probe" and screen.probe_params(both, "linear_probe")["lr_head"] == 0.2
    assert screen.probe_strategy(plan([{"name": "finetune", "epochs": 1}])) is None
    assert screen.probe_params(plan([{"name": "linear_probe", "epochs": 1}]), "linear_probe")[
        "lr_head"
    ] == pytest.approx(0.01)  # geometric
