"""Screening in a real run: every backbone scored on its frozen features before the search,
stored with the study, reported with its agreement with what the search then found."""

from __future__ import annotations

import optuna
from conftest import tiny_benchmark

from tlbench import cli
from tlbench.results import runfolder
from tlbench.search import portfolio, screen
from tlbench.store.record import TrialRecord
from tlbench.store.studyrecord import StudyRecord

BACKBONES = [{"name": f"timm:{m}", "pretrained": False} for m in ("test_resnet", "test_efficientnet", "test_vit")]
RECIPES = [
    {"backbone": f"timm:{m}-scratch", "strategy": "linear_probe", "params": {"lr_head": 0.05}}
    for m in ("test_resnet", "test_efficientnet", "test_vit")
]


def test_the_screen_takes_the_backbones_the_preflight_built_and_scores_them_the_same(
    write_config, tmp_path, monkeypatch, capsys
):
    """One build per backbone before the search, not two: the screen takes the preflight's
    (built under the screen's seed, its random state restored), with the same scores as a
    screen that builds its own; random-init backbones, whose weights depend on that seed."""
    from tlbench.search import calls, trial  # trial binds its own build_backbone: trials are not counted

    assert trial.build_backbone is calls.build_backbone
    builds = []
    real = calls.build_backbone

    def counted(backbone, num_classes, options=None):
        builds.append(backbone.entry.name)
        return real(backbone, num_classes, options)

    monkeypatch.setattr(calls, "build_backbone", counted)
    scores = []
    for run, shelved in (("taken", True), ("built", False)):
        if not shelved:  # the screen builds its own: nothing left on the shelf
            from tlbench import benchmark

            real_preflight = benchmark.preflight
            monkeypatch.setattr(benchmark, "preflight", lambda plan, shelf=None: real_preflight(plan))
        builds.clear()
        config = write_config(tiny_benchmark(run=run, backbones=BACKBONES, search={"n_trials": 1, "screen": True}))
        assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
        folder = config.parent / "results" / "tiny" / run
        study = optuna.load_study(study_name=f"tiny/{run}/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
        screen_ = StudyRecord.from_study(study).screen
        scores.append({k: {m: v[m] for m in ("logme", "knn", "ridge")} for k, v in screen_.items()})
        assert len(builds) == 3 + (0 if shelved else 3), builds  # the preflight's; the screen's own when not shelved
    assert scores[0] == scores[1] and len(scores[0]) == 3


def test_a_run_screens_every_backbone_once_and_reports_the_agreement(write_config, capsys):
    config = write_config(
        tiny_benchmark(run="r", backbones=BACKBONES, search={"n_trials": 3, "startup_trials": 1, "enqueue": RECIPES})
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    study = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    scores = {k.removeprefix("screen:"): v for k, v in study.user_attrs.items() if k.startswith("screen:")}
    assert sorted(scores) == sorted(f"timm:{m}-scratch" for m in ("test_resnet", "test_efficientnet", "test_vit"))
    assert all(
        {"logme", "knn", "ridge", "seconds", "at"} <= set(v) and v["examples"] == 24 + 12 for v in scores.values()
    )
    assert scores["timm:test_vit-scratch"]["at"] == "forward_features"  # a ViT cuts at its features, tokens averaged
    # the pass over the test split (for the probe's test accuracy) is timed apart: part of the screen's seconds
    assert all(v["features"] == "extracted" and 0 < v["test_seconds"] < v["seconds"] for v in scores.values())
    run = runfolder.load_run(folder)
    assert run.screen["best_test"].notna().all() and len(run.screen) == 3
    report = (folder / "report.md").read_text()
    assert "#### synthetic: screen" in report and "Kendall τ, logme vs best test across backbones" in report
    assert cli.main(["run", str(config), "--format", "csv"]) == 0  # resumed: not screened again
    again = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}").user_attrs
    assert {k: v for k, v in again.items() if k.startswith("screen:")} == {f"screen:{k}": v for k, v in scores.items()}


def test_the_screen_can_be_switched_off(write_config, capsys):
    config = write_config(tiny_benchmark(run="r", search={"n_trials": 1, "startup_trials": 1, "screen": False}))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    study = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    assert not [k for k in study.user_attrs if k.startswith("screen:")]
    assert "screen" not in (folder / "report.md").read_text()


def test_a_backbone_the_screen_cannot_take_apart_is_listed_and_the_run_goes_on(write_config, capsys, monkeypatch):
    from tlbench.search import screen

    def fails(*args, **kwargs):
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(screen, "_pooled", fails)  # only the screen pools features this way; trials are untouched
    config = write_config(tiny_benchmark(run="r", search={"n_trials": 1, "startup_trials": 1}))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    report = (config.parent / "results" / "tiny" / "r" / "report.md").read_text()
    assert "timm:test_resnet-scratch: not screened (RuntimeError: cannot trace this model)" in report


def test_the_search_skips_the_backbones_the_screen_drops_and_the_report_says_why(write_config, capsys):
    search = {
        "n_trials": 8,
        "startup_trials": 8,
        "enqueue": RECIPES,
        "screen": {"margin": 0.001},
    }  # anything behind the best
    config = write_config(tiny_benchmark(run="r", backbones=BACKBONES, search=search))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    study = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    scores = {k.removeprefix("screen:"): v for k, v in study.user_attrs.items() if k.startswith("screen:")}
    dropped = screen.dropped(scores, "knn", 0.001)
    assert dropped and StudyRecord.from_study(study).dropped == dropped  # the synthetic data tells them apart
    sampled = [
        t.params["backbone"]
        for t in study.trials
        if not (TrialRecord.from_trial(t).recipe or TrialRecord.from_trial(t).probe)
    ]
    assert len(sampled) == 5 and not set(sampled) & set(dropped)
    probes = [
        t for t in study.trials if TrialRecord.from_trial(t).probe
    ]  # one per kept backbone, the best screened first
    in_config = [f"{b['name']}-scratch" for b in BACKBONES]  # ties keep the config's order
    kept = sorted((b for b in in_config if b not in dropped), key=lambda b: -scores[b]["knn"])
    assert [t.params["backbone"] for t in probes] == kept and all(
        t.params["linear_probe.lr_head"] == 0.01 for t in probes
    )
    assert all(
        t.number
        < min(
            u.number
            for u in study.trials
            if u.number not in {p.number for p in probes} and not TrialRecord.from_trial(u).recipe
        )
        for t in probes
    )
    assert len([t for t in study.trials if not TrialRecord.from_trial(t).probe]) == 8  # n_trials: probes are outside it
    assert not [
        t for t in study.trials if TrialRecord.from_trial(t).portfolio
    ]  # no strategy of the portfolio in this config
    recipes = {t.params["backbone"] for t in study.trials if TrialRecord.from_trial(t).recipe}
    assert set(dropped) <= recipes  # recipes on a dropped backbone still ran
    for backbone, why in dropped.items():
        assert f"screen: the search skips {backbone} ({why}" in err
        assert f"{backbone}: dropped from the search ({why})" in (folder / "report.md").read_text()
    assert (
        "search.screen rule: drop a backbone whose knn accuracy is more than 0.001 below"
        in (folder / "report.md").read_text()
    )


def test_the_portfolio_goes_first_on_the_backbone_the_screen_ranks_first(write_config, capsys):
    strategies = [{"name": "linear_probe", "epochs": 1}, {"name": "finetune", "epochs": 1}]
    config = write_config(
        tiny_benchmark(
            run="r", backbones=BACKBONES[:2], strategies=strategies, search={"n_trials": 4, "startup_trials": 4}
        )
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    folder = config.parent / "results" / "tiny" / "r"
    study = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    scores = {k.removeprefix("screen:"): v["knn"] for k, v in study.user_attrs.items() if k.startswith("screen:")}
    dropped = StudyRecord.from_study(study).dropped
    first = max(
        (f"{b['name']}-scratch" for b in BACKBONES[:2] if f"{b['name']}-scratch" not in dropped), key=scores.get
    )
    warm = [t for t in study.trials if TrialRecord.from_trial(t).portfolio]
    shipped = [e for e in portfolio.shipped() if e["strategy"] == "finetune"][:2]
    assert [(t.params["backbone"], t.params["finetune.freeze"], t.params["finetune.lr_backbone"]) for t in warm] == [
        (first, e["params"]["freeze"], e["params"]["lr_backbone"]) for e in shipped
    ]
    assert f"portfolio: 2 configurations that did best on earlier benchmarks go first, on {first}" in err
    assert (
        "learnt from digits, lfw_faces, lfw_faces (10 epochs), mnist5k, mnist5k (10 epochs), textures, textures (10 epochs)"
        in err
    )  # synthetic is no grid's domain: every grid
    assert (
        len([t for t in study.trials if not TrialRecord.from_trial(t).probe]) == 4
    )  # the portfolio's count in n_trials
    assert (
        "Portfolio (tried first on the screen's first backbone): learnt from digits"
        in (folder / "report.md").read_text()
    )


def test_portfolio_from_learns_from_an_earlier_run_folder(write_config, capsys):
    """search.portfolio_from: the user's earlier run (a folder or its export) ranks the warm start."""
    strategies = [
        {"name": "linear_probe", "epochs": 1},
        {"name": "finetune", "epochs": 1, "freeze": {"choices": [0.0, 0.6]}},
    ]
    enqueue = [{"backbone": "timm:test_resnet-scratch", "strategy": "finetune", "params": {"freeze": f, "lr_backbone": lr}}
               for f, lr in ((0.0, 1e-5), (0.6, 0.01))]  # fmt: skip
    earlier = write_config(
        tiny_benchmark(run="earlier", strategies=strategies, search={"n_trials": 2, "enqueue": enqueue, "portfolio": 0})
    )
    assert cli.main(["run", str(earlier), "--format", "csv"]) == 0
    folder = earlier.parent / "results" / "tiny" / "earlier"
    study = optuna.load_study(study_name="tiny/earlier/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.params["strategy"] == "finetune"]
    best = max(done, key=lambda t: t.value)
    now = write_config(tiny_benchmark(run="now", strategies=strategies, search={"n_trials": 2, "startup_trials": 2, "portfolio": 1,
                                                                                  "portfolio_from": ["results/tiny/earlier"]}), filename="now.yaml")  # fmt: skip
    capsys.readouterr()
    assert cli.main(["run", str(now), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert (
        "learnt from digits, lfw_faces, lfw_faces (10 epochs), mnist5k, mnist5k (10 epochs), synthetic (portfolio_from), textures, textures (10 epochs)"
        in err
    )
    later = optuna.load_study(
        study_name="tiny/now/synthetic", storage=f"sqlite:///{now.parent / 'results' / 'tiny' / 'now' / 'study.db'}"
    )
    warm = [t for t in later.trials if TrialRecord.from_trial(t).portfolio]
    # the user's best point scores 1.0 on its dataset: above every shipped point (at most 0.992 on average)
    point = lambda t: (t.params["finetune.freeze"], t.params["finetune.lr_backbone"])  # noqa: E731
    assert [point(t) for t in warm] == [point(best)]


def test_the_opening_is_streamed_each_pretrained_backbones_probe_right_after_its_screen(
    write_config, tmp_path, monkeypatch
):
    """The first result comes after one backbone's screen, not after all of them: pretrained
    backbones are screened first, in the config's order, each one's probe trained at once
    (on the screen's features); then the random-init ones, the rule, their probes if kept,
    the config's recipes and the portfolio. A resume screens and probes nothing again."""
    import timm
    import torch

    from tlbench import benchmark

    weights = {}
    for model in ("test_resnet", "test_efficientnet"):
        torch.manual_seed(1)
        weights[model] = tmp_path / f"{model}.pth"
        torch.save(timm.create_model(model, num_classes=10).state_dict(), weights[model])
    backbones = [
        {"name": "timm:test_vit", "pretrained": False},  # first in the config, screened last
        {"name": "timm:test_resnet", "weights": str(weights["test_resnet"])},
        {"name": "timm:test_efficientnet", "weights": str(weights["test_efficientnet"])},
    ]
    strategies = [{"name": "linear_probe", "epochs": 1}, {"name": "finetune", "epochs": 1}]
    recipe = {"backbone": "timm:test_vit-scratch", "strategy": "finetune", "params": {"freeze": 0.5}}
    config = write_config(tiny_benchmark(run="r", backbones=backbones, strategies=strategies,
                                         search={"n_trials": 4, "startup_trials": 4, "enqueue": [recipe]}))  # fmt: skip
    seen = []  # (backbones screened, trials finished) each time the run trains the waiting probes
    real = benchmark.screen_all

    def spy(plan, splits, store, resources, progress, run_waiting=None, studies=None):
        def watched(study, key):
            seen.append((sorted(StudyRecord.from_study(study).screen), len(study.trials)))
            run_waiting(study, key)

        return real(plan, splits, store, resources, progress, watched, studies)

    monkeypatch.setattr(benchmark, "screen_all", spy)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    assert seen == [(["timm:test_resnet"], 1), (["timm:test_efficientnet", "timm:test_resnet"], 2)]
    folder = config.parent / "results" / "tiny" / "r"
    study = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    kinds = [("probe" if TrialRecord.from_trial(t).probe else "recipe" if TrialRecord.from_trial(t).recipe
              else "portfolio" if TrialRecord.from_trial(t).portfolio else "sampled", t.params["backbone"]) for t in study.trials]  # fmt: skip
    dropped = StudyRecord.from_study(study).dropped
    scratch_probe = [] if "timm:test_vit-scratch" in dropped else [("probe", "timm:test_vit-scratch")]
    assert kinds[: 2 + len(scratch_probe) + 1] == [
        ("probe", "timm:test_resnet"), ("probe", "timm:test_efficientnet"), *scratch_probe, ("recipe", "timm:test_vit-scratch")
    ]  # fmt: skip
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert all(k in ("portfolio", "sampled") for k, _ in kinds[2 + len(scratch_probe) + 1 :])
    assert len([k for k in kinds if k[0] != "probe"]) == 4  # probes outside n_trials, the recipe within
    seen.clear()
    assert cli.main(["run", str(config), "--format", "csv"]) == 0  # resumed: finished, nothing trained again
    assert seen == [] and len(
        optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{folder / 'study.db'}").trials
    ) == len(kinds)


def test_a_run_opens_each_study_once_and_passes_it_along(write_config, monkeypatch, capsys):
    """The run opens its study once (open_studies) and hands it to the opening and the search;
    the search re-seeds its sampler where it used to reopen (the same trials: the default
    benchmark was checked against the README's run)."""
    from tlbench import benchmark
    from tlbench.search import opening, studies

    opened = []
    real = studies.open_study

    def counted(plan, key, *args, **kwargs):
        opened.append(key)
        return real(plan, key, *args, **kwargs)

    for module in (benchmark, opening, studies):
        monkeypatch.setattr(module, "open_study", counted)
    config = write_config(tiny_benchmark(run="once", backbones=BACKBONES[:2], search={"n_trials": 2}))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    assert opened == ["synthetic"]
