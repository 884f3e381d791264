"""The search benchmark's arithmetic (benchmarks/replay.py) on hand-made grids: regret,
its area on a log-compute axis, reach and keep, successive halving, seeds merged, a trial's
value from its last epochs, and design step 7's incumbent rules (benchmarks/noise_rules.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import replay  # noqa: E402


def _row(backbone: str, lr: float, val: list[float], test: float, gflops: float = 100.0, seed: int = 0) -> dict:
    params = {"backbone": backbone, "strategy": "finetune", "finetune.lr_backbone": lr, "finetune.freeze": 0.0}
    return {"params": params, "state": "COMPLETE", "val_curve": val, "val_accuracy": val[-1], "test_accuracy": test,
            "train_gflops": gflops, "train_seconds": 1.0, "forward_gflops": 0.01, "seed": seed}  # fmt: skip


def _grid(rows: list[dict], **kw) -> replay.Grid:
    return replay.Grid("toy", [{"trials": rows, "screen": {}}], **kw)


def test_the_screen_is_charged_at_its_least_loaded_recording_at_that_recordings_own_rate():
    def table(seconds: float, train_seconds: float, seed: int) -> dict:
        rows = [_row("a", 0.1, [0.5], 0.5, seed=seed), _row("a", 0.2, [0.9], 0.9, seed=seed)]
        for r in rows:
            r["train_seconds"] = train_seconds  # 100 GFLOPs each: a rate of 100 / train_seconds
        return {"trials": rows, "screen": {"a": {"seconds": seconds, "test_seconds": 0.0, "examples": 10}}}

    one = replay.Grid("toy", [table(30.0, 1.0, 0)])
    assert one.screen_cost("a") == pytest.approx(3000.0)  # 30 s at 100 GFLOPs/s
    # the same screen recorded again beside less load: the lesser charge, each at its own table's rate
    both = replay.Grid("toy", [table(30.0, 1.0, 0), table(10.0, 2.0, 1)])
    assert both.screen_cost("a") == pytest.approx(500.0) and both.screen_charge() == pytest.approx(500.0)
    # never below the screen's own extraction GFLOPs
    assert replay.Grid("toy", [table(0.0, 1.0, 0)]).screen_cost("a") == pytest.approx(0.01 * 10)


def test_the_screens_pass_over_the_test_split_is_not_charged():
    """Decided after look 10: the screen also passes the test split (for its probe's test
    accuracy); nothing chooses on it, and no trial is charged its test evaluation. Recorded
    apart since 0.9.2 (``test_seconds``); in older tables the seconds' share of the test
    examples, the test split's size read off the recorded test accuracies."""
    rows = [_row("a", 0.1 * k, [k / 10], k / 8) for k in range(1, 8)]  # test accuracies in eighths
    recorded = {"a": {"seconds": 30.0, "test_seconds": 12.0, "examples": 24}}
    assert replay.Grid("toy", [{"trials": rows, "screen": recorded}]).screen_cost("a") == pytest.approx(1800.0)
    assert replay.test_examples(rows) == 8
    older = {"a": {"seconds": 32.0, "examples": 24, "features": "extracted"}}  # 8 of 32 examples were tests
    estimated = replay.Grid("toy", [{"trials": rows, "screen": older}])
    assert estimated.screen_cost("a") == pytest.approx(2400.0) and estimated.screen_test_share == {"a": 0.25}
    cached = {"a": {"seconds": 32.0, "examples": 24, "features": "disk"}}  # no pass at all: nothing to leave out
    assert replay.Grid("toy", [{"trials": rows, "screen": cached}]).screen_cost("a") == pytest.approx(3200.0)
    few = [_row("a", 0.1, [0.5], 0.5), _row("a", 0.2, [0.9], 0.75)]  # halves and quarters: the size is not pinned
    assert replay.test_examples(few) is None
    with pytest.raises(ValueError, match="cannot tell the screen's test pass apart"):
        replay.Grid("toy", [{"trials": few, "screen": older}])


def test_regret_is_normalized_between_the_best_and_worst_point_and_clipped():
    grid = _grid([_row("a", 0.1, [0.5], 0.5), _row("a", 0.2, [0.9], 0.9)])
    assert (grid.y_best, grid.y_worst) == (0.9, 0.5)
    assert grid.regret(0.9) == 0 and grid.regret(0.5) == 1 and grid.regret(0.7) == pytest.approx(0.5)
    assert grid.regret(0.95) == 0 and grid.regret(0.1) == 1  # a lucky seed above the best mean; below the worst


def test_area_is_mean_regret_over_log_compute_from_a_tenth_to_ten_units():
    grid = _grid([_row("a", 0.1, [0.5], 0.5, gflops=100.0), _row("a", 0.2, [0.9], 0.9, gflops=100.0)])
    assert grid.unit == 100.0
    trace = replay.Trace(grid)
    trace.events = [(0.0, 1.0), (100.0, 0.0)]  # regret 1 up to 1 F, then 0: half the log axis
    assert replay.area(trace, grid) == pytest.approx(0.5)
    trace.events = [(0.0, 1.0), (1.0, 0.0)]  # before F/10: nothing counted
    assert replay.area(trace, grid) == 0
    trace.events = [(0.0, 1.0), (10_000.0, 0.0)]  # after 10 F: all of it
    assert replay.area(trace, grid) == 1
    assert replay.regret_at(trace, 9_999.0) == 1 and replay.regret_at(trace, 10_000.0) == 0


def test_reach_is_the_first_time_within_a_point_and_keep_the_time_it_stays():
    grid = _grid([_row("a", 0.1, [0.5], 0.5), _row("a", 0.2, [0.9], 0.9)])
    trace = replay.Trace(grid)
    trace.events = [(0.0, 1.0), (50.0, 0.0), (80.0, 0.5), (120.0, 0.0)]
    assert replay.reach_keep(trace, grid) == (50.0, 120.0)
    trace.events = [(0.0, 1.0), (2_000.0, 0.0)]  # past the horizon: never
    assert replay.reach_keep(trace, grid) == (None, None)


def test_the_incumbent_is_the_best_by_validation_trial_not_the_best_by_test():
    grid = _grid([_row("a", 0.1, [0.9], 0.5), _row("a", 0.2, [0.8], 0.9)])
    trace = replay.in_order(grid, replay.Draw(grid, 0), grid.points())
    assert [r for _, r in trace.events] == [1.0, 1.0, 1.0]  # the val-best trial tests worst, and stays incumbent


def test_successive_halving_pays_each_epoch_once_and_promotes_the_best():
    rows = [
        _row("a", lr, [v, v, v], v, gflops=30.0)
        for lr, v in zip([1, 2, 3, 4, 5, 6, 7, 8, 9], [0.1 * k for k in range(1, 10)])
    ]
    grid = _grid(rows)
    assert replay.rungs(3) == [1, 3] and replay.rungs(10) == [1, 3, 10] and replay.rungs(1) == [1]
    trace = replay.successive_halving(grid, replay.Draw(grid, 0), seed=0)
    # 9 points one epoch (10 GFLOPs each), the best 3 two more epochs (20 each): 150 GFLOPs, best point found
    assert trace.spent == pytest.approx(9 * 10 + 3 * 20) and trace.events[-1][1] == 0


def test_two_recorded_seeds_of_a_point_are_drawn_per_replay_seed():
    rows = [_row("a", 0.1, [0.5], 0.5, seed=0), _row("a", 0.1, [0.6], 0.7, seed=1), _row("a", 0.2, [0.9], 0.9)]
    grid = _grid(rows)
    assert len(grid.by_point) == 2 and grid.y_worst == pytest.approx(0.6)  # the point's mean over its seeds
    drawn = {replay.Draw(grid, s).row(rows[0]["params"])["seed"] for s in range(40)}
    assert drawn == {0, 1}
    draw = replay.Draw(grid, 3)
    assert draw.row(rows[0]["params"]) is draw.row(dict(rows[0]["params"]))  # one seed per point within a replay


def test_every_held_out_grid_is_a_valid_config_of_ten_epochs_five_log_rates_and_test_curves():
    import search  # benchmarks/search.py

    from tlbench.config import parse_config

    domains = {search.HELD_OUT[t][0] for t in search.HELD_OUT}
    modalities = {search.HELD_OUT[t][1] for t in search.HELD_OUT}
    assert len(search.HELD_OUT) >= 4 and len(domains) >= 3 and modalities == {"image", "text"}
    assert not set(search.HELD_OUT) & set(search.DATASETS)  # no design grid is held out
    seen = {t[0] for t in [*search.HELD_OUT.values(), *search.DEV.values()]} | set(search.DOMAINS.values())
    for later in (
        search.HELD_OUT_2,
        search.HELD_OUT_3,
        search.HELD_OUT_4,
        search.HELD_OUT_5,
        search.HELD_OUT_6,
        search.HELD_OUT_7,
        search.HELD_OUT_8,
        search.HELD_OUT_9,
    ):  # looks 5, 7, 9, 10, 12, 17, 18, 19: domains no earlier grid has
        domains = {t[0] for t in later.values()}
        assert len(later) >= 4 and {t[1] for t in later.values()} == {"image", "text"}
        assert not domains & seen and len(domains) == len(later)
        seen |= domains
    tasks = [(task, kind) for kind, (_, grids) in search.GRID_SETS.items() for task in grids]
    assert {kind for _, kind in tasks} == {
        "heldout-grid",
        "heldout2-grid",
        "heldout3-grid",
        "heldout4-grid",
        "heldout5-grid",
        "heldout6-grid",
        "heldout7-grid",
        "heldout8-grid",
        "heldout9-grid",
        "dev-grid",
    }
    for task, kind in tasks:
        configs = [search.held_out_config(task, seed, kind) for seed in search.HELD_OUT_SEEDS]
        assert len(configs) >= 2 and configs[0]["run"] != configs[1]["run"]
        roomy = kind in search.ROOMY_SETS  # nine rates, 1.5-2 apart, recorded with one training seed
        bench = parse_config(configs[0])
        assert bench.training.test_curve and bench.search.pruner == "none" and bench.search.portfolio == 0
        assert all(s.options.get("epochs", 0) >= 10 for s in bench.strategies)
        for strategy in bench.strategies:
            rates = [v for k, v in strategy.options.items() if k.startswith("lr_") and isinstance(v, list)]
            # 1-3-10 steps: half a decade each (ratios 3 and 3.33), two decades in all; the eighth set's
            # nine values put one between each two of those (ratios 1.5-2), the same two decades
            steps = (1.4, 2.1) if roomy else (2.5, 4)
            assert all(len(r) >= (9 if roomy else 5) for r in rates)
            assert all(steps[0] <= b / a <= steps[1] for r in rates for a, b in zip(r, r[1:]))
            assert all(abs(r[-1] / r[0] - 100) < 1e-6 for r in rates)
        points = {(r.backbone, r.strategy, tuple(sorted(r.params.items()))) for r in bench.search.enqueue}
        assert len(points) == len(bench.search.enqueue) == bench.search.n_trials  # every grid point once per seed


def test_held_out_tables_of_one_task_are_merged_across_seeds(tmp_path):
    import json

    for seed in (0, 1):
        rows = [_row("a", 0.1, [0.5], 0.5 + seed / 10, seed=seed), _row("a", 0.2, [0.9], 0.9, seed=seed)]
        (tmp_path / f"elpv-s{seed}.json").write_text(json.dumps({"datasets": {"elpv": {"trials": rows, "screen": {}}}}))
    grids = replay.load_held_out(tmp_path)
    assert list(grids) == ["elpv"] and grids["elpv"].domain == "inspection" and grids["elpv"].modality == "image"
    assert len(grids["elpv"].trials) == 4 and len(grids["elpv"].by_point) == 2
    # a seed kept apart in seed<k>/ (the second set's seed 1): read only when merged
    (tmp_path / "seed2").mkdir()
    rows = [_row("a", 0.1, [0.4], 0.6, seed=2), _row("a", 0.2, [0.8], 0.8, seed=2)]
    (tmp_path / "seed2" / "elpv-s2.json").write_text(json.dumps({"datasets": {"elpv": {"trials": rows, "screen": {}}}}))
    assert len(replay.load_held_out(tmp_path)["elpv"].trials) == 4
    merged = replay.load_held_out(tmp_path, merge=True)["elpv"]
    assert len(merged.trials) == 6 and sorted({t["seed"] for t in merged.trials}) == [0, 1, 2]


def test_each_held_out_set_has_its_tasks_and_its_own_count_of_looks(tmp_path):
    import json

    second = tmp_path / "heldout2-grid"
    second.mkdir()
    rows = [_row("a", 0.1, [0.5], 0.5), _row("a", 0.2, [0.9], 0.9)]
    for task in ("fortunes", "elpv"):  # elpv is the first set's: not read as the second's
        (second / f"{task}-s0.json").write_text(json.dumps({"datasets": {task: {"trials": rows, "screen": {}}}}))
    kind, looks = replay.held_out_set(second)
    assert kind == "heldout2-grid" and looks == second / "looks.json"
    grids = replay.load_held_out(second, kind)
    assert (
        list(grids) == ["fortunes"]
        and grids["fortunes"].domain == "quotations"
        and grids["fortunes"].modality == "text"
    )
    assert replay.held_out_set(second / "seed1") == ("heldout2-grid", second / "seed1" / "looks.json")
    assert replay.held_out_set(tmp_path / "heldout3-grid") == (
        "heldout3-grid",
        tmp_path / "heldout3-grid" / "looks.json",
    )
    assert replay.held_out_set(tmp_path / "heldout4-grid")[0] == "heldout4-grid"
    assert replay.held_out_set(tmp_path) == ("heldout-grid", tmp_path / "looks.json")
    assert replay.held_out_set(tmp_path / "dev-grid")[0] == "heldout-grid"  # never judged as a held-out set


def test_the_figures_do_not_depend_on_how_many_processes_replay_the_seeds(monkeypatch):
    """Each replay seed is its own seeded computation, and every study has a name of its own
    that is the same on every run (Hyperband's brackets hash it): one process or two give
    the same traces."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = [
        _row(b, lr, [0.3 + i / 20 + lr, 0.4 + i / 20 + lr], 0.5 + i / 20 + lr)
        for i, b in enumerate("ab")
        for lr in (0.1, 0.2, 0.3)
    ]
    for i, b in enumerate("ab"):  # the screen's probes
        probe = _row(b, 0.1, [0.3 + i / 10, 0.35 + i / 10], 0.4 + i / 10, gflops=10.0)
        probe["params"] = {"backbone": b, "strategy": "linear_probe", "linear_probe.lr_head": 0.01}
        rows.append(probe)
    grid = _grid(rows)
    runs = {}
    for processes in ("1", "2"):
        monkeypatch.setenv("TLBENCH_REPLAY_PROCESSES", processes)
        runs[processes] = replay.seed_runs(grid, 4, [])
    for one, two in zip(runs["1"], runs["2"]):
        assert {m: t.events for m, t in one.items()} == {m: t.events for m, t in two.items()}


def test_a_trials_value_is_the_mean_of_its_last_epochs_and_the_replay_chooses_on_it():
    from tlbench.base.stats import trial_value

    assert trial_value([0.2, 0.4, 0.9], 1) == 0.9
    assert trial_value([0.2, 0.4, 0.9], 2) == pytest.approx(0.65)
    assert trial_value([0.5], 5) == 0.5  # fewer epochs than asked: all of them
    with pytest.raises(ValueError):
        trial_value([], 1)
    # a: one lucky last epoch; b: steadily good. The last epoch picks a (which tests worse), the last two pick b
    grid = _grid([_row("a", 0.1, [0.5, 0.6, 0.9], 0.5), _row("a", 0.2, [0.5, 0.85, 0.85], 0.9)])
    plain = replay.in_order(grid, replay.Draw(grid, 0), grid.points())
    two = replay.in_order(grid, replay.Draw(grid, 0), grid.points(), select=2)
    assert [r for _, r in plain.events] == [1.0, 1.0, 1.0] and [r for _, r in two.events] == [1.0, 1.0, 0.0]


def test_design_step_7s_rules_keep_an_incumbent_within_the_margin_and_race_a_close_challenger():
    import noise_rules

    # validation accuracies in steps of 1/100: n = 100, one standard error at 0.8 is 0.04
    rows = [_row("a", 0.1, [0.80], 0.90, seed=s) for s in (0, 1)]
    rows += [_row("a", 0.2, [0.83], 0.50, seed=0), _row("a", 0.2, [0.71], 0.50, seed=1)]
    grid = _grid(rows)
    assert noise_rules.validation_size(grid) == 100
    a, b = (replay._key(p) for p in grid.points())
    draw = replay.Draw(grid, 0)
    plain, margin = (noise_rules.Judged(grid, noise_rules.RULES[n], 100) for n in ("plain", "margin1"))
    for trace in (plain, margin):
        trace.done(a, draw.row(dict(a)))
        trace.done(b, draw.row(dict(b)))
    assert plain.incumbent == b and margin.incumbent == a  # 0.03 ahead: within one standard error
    race = noise_rules.Judged(grid, noise_rules.RULES["race1"], 100)
    assert race.done(a, grid.by_point[a][0]) == []
    assert race.done(b, grid.by_point[b][0]) == [a, b] and race.incumbent == a  # both trained again first
    race.done(a, grid.by_point[a][1])
    race.done(b, grid.by_point[b][1])
    assert race.incumbent == a and race.events[-1][1] == 0.0  # b's two runs: 0.77 on average, a's 0.80


def test_no_search_after_the_opening_goes_below_the_bound_after_the_opening():
    """bound_after_opening (design step 7) bounds every method that starts with tlbench's
    opening and values trials as tlbench does, at every compute, on a recorded grid."""
    grid = replay.load_held_out(replay.ROOT / "benchmarks" / "dev-grid", "dev-grid")["docstrings"]
    others = replay.portfolio_without(grid.domain)
    for seed in range(2):
        out = replay.methods(grid, seed, others)
        bound = out["bound_after_opening"]
        xs = [grid.unit * 10 ** (k / 10) for k in range(-10, 11)]
        for name in ("tlbench", "opening_then_random_select5", "opening"):
            assert all(replay.regret_at(bound, x) <= replay.regret_at(out[name], x) + 1e-12 for x in xs), name
        assert replay.area(bound, grid) < replay.area(out["opening"], grid)  # docstrings has room after its opening


def test_design_step_9_gives_text_a_portfolio_and_can_run_it_before_the_random_init_screen():
    """A pretrained backbone p and one from random init r: 0.9's text opening has no portfolio;
    ``text_portfolio`` adds its entries on the screen's first backbone after every screen and
    probe; ``portfolio_first`` runs them right after p's probe, and r's screen is paid after them."""
    from tlbench.config import SearchConfig

    rows = [_row(b, lr, [0.5 + lr], 0.5 + lr) for b in "pr" for lr in (0.1, 0.2, 0.3)]
    for b in "pr":
        probe = _row(b, 0.0, [0.4], 0.4, gflops=10.0)
        probe["params"] = {"backbone": b, "strategy": "linear_probe", "linear_probe.lr_head": 0.01}
        rows.append(probe)
    for r in rows:
        r["pretrained"] = r["params"]["backbone"] == "p"
    screen = {
        b: {"knn": score, "logme": score, "seconds": 0.0, "examples": 1000} for b, score in (("p", 0.6), ("r", 0.5))
    }
    grid = replay.Grid("toy", [{"trials": rows, "screen": screen}], modality="text")
    others = [{"strategy": "finetune", "params": {"lr_backbone": lr, "freeze": 0.0}} for lr in (0.3, 0.2, 0.1)]
    search = SearchConfig()

    def shape(opening):
        return [(s["backbone"], s["strategy"], s.get("finetune.lr_backbone"), owed) for s, owed in opening.steps]

    cost = grid.screen_cost("p")  # both: 0.01 GFLOPs x 1000 examples
    assert shape(replay.tlbench_opening(grid, search, others)) == [
        ("p", "linear_probe", None, cost),
        ("r", "linear_probe", None, cost),
    ]
    assert shape(replay.tlbench_opening(grid, search, others, text_portfolio=True)) == [
        ("p", "linear_probe", None, cost),
        ("r", "linear_probe", None, cost),
        ("p", "finetune", 0.3, 0.0),
        ("p", "finetune", 0.2, 0.0),
    ]
    first = replay.tlbench_opening(grid, search, others, text_portfolio=True, portfolio_first=True)
    assert shape(first) == [
        ("p", "linear_probe", None, cost),
        ("p", "finetune", 0.3, 0.0),
        ("p", "finetune", 0.2, 0.0),
        ("r", "linear_probe", None, cost),
    ]
    image = replay.Grid("toy", [{"trials": rows, "screen": screen}], modality="image")
    assert len(replay.tlbench_opening(image, search, others).steps) == 4  # images had a portfolio in 0.9 already


def test_flops_throughout_charges_every_trials_validation_passes_and_the_screens_extraction():
    """--charge flops (decided after look 9): a trial costs its training and validation GFLOPs,
    the screen its extraction over the training and validation splits, not its wall-clock; a
    table recorded before val_gflops existed is refused, not charged a made-up figure."""
    rows = [_row("a", 0.1, [0.5, 0.6], 0.5), _row("a", 0.2, [0.7, 0.9], 0.9)]
    for r in rows:
        r["val_gflops"] = 20.0
    # 50 s at 100 GFLOP/s: 5,000 GFLOPs of wall-clock
    screen = {"a": {"seconds": 50.0, "test_seconds": 0.0, "examples": 1000}}
    wall = replay.Grid("toy", [{"trials": rows, "screen": screen}])
    flops = replay.Grid("toy", [{"trials": rows, "screen": screen}], flops=True)
    assert wall.unit == 100.0 and flops.unit == 120.0  # F: the dearest trial, its validation passes included
    assert wall.screen_cost("a") == pytest.approx(5000.0) and flops.screen_cost("a") == pytest.approx(0.01 * 1000)
    trace = replay.in_order(flops, replay.Draw(flops, 0), flops.points())
    assert [spent for spent, _ in trace.events] == [0.0, 120.0, 240.0]
    del rows[0]["val_gflops"]
    with pytest.raises(ValueError, match="no val_gflops"):
        replay.Grid("toy", [{"trials": rows, "screen": screen}], flops=True)
    assert replay.Grid("toy", [{"trials": rows, "screen": screen}]).unit == 100.0  # look 8's charge reads no val_gflops


def test_a_design_replay_of_an_unknown_candidate_is_refused_before_any_grid_is_read(tmp_path, capsys):
    out = tmp_path / "design.json"
    assert replay.design(tmp_path / "no-grids", tmp_path / "no-dev", 1, ["select1", "nosuch"], out) == 2
    assert "unknown candidate nosuch; choose from defaults" in capsys.readouterr().out
    assert not out.exists() and "select1" in replay.CANDIDATES
