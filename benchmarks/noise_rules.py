"""Design step 7 (issue 21, part 3): does weighing the validation split's noise help the
search after the opening? Development grids only (in-sample by construction).

    python benchmarks/noise_rules.py [--seeds 500] [--out benchmarks/dev-grid/design-7.json]

Look 5's seed-1 check showed the search after the opening replacing a good incumbent by a
configuration with a higher validation and a lower test accuracy (250 validation texts: one
standard error is about 3 points). Three families of incumbent rules answer that, each
replayed after tlbench's own opening with tlbench's own sampler (the default, real Optuna
studies as in :mod:`replay`) and with uniform random search after the same opening:

- ``margin<k>``: a finished trial replaces the incumbent only if its validation accuracy
  beats the incumbent's by more than k standard errors (binomial, at the incumbent's
  accuracy, on the validation split's size read off the recorded accuracies).
- ``last<k>``: trials are compared on the mean of their last k epochs' validation
  accuracy (the curve is recorded; nothing more is trained).
- ``race<k>``: SMAC-style intensification over two training seeds. A new trial ahead of the
  incumbent by at most k standard errors is trained again (the grid's other recorded
  training seed) and so is the incumbent if it was trained once; the higher mean of the two
  runs takes over. Ahead by more: it takes over at once. Re-runs are charged in full and
  never pruned.

The incumbent's regret is that of the mean test accuracy of the runs it was chosen on (one
run: that run's, as everywhere in :mod:`replay`). Beside them, ``bound_after_opening``: at each
compute, the lowest regret any search after the same opening could hold while it chooses by
validation accuracy (see :func:`replay.bound_after_opening`): what is left to gain after the opening.

Grids: the six development grids (``benchmarks/dev-grid/`` and its ``seed1/``) and the
first held-out set (development data since look 5), both training seeds merged; the four
in-sample grids (3 epochs, one training seed: a race cannot re-run there, so a challenger
within its margin never takes over) are replayed too and reported apart.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))
import replay  # noqa: E402
from search import DEV_DIR, GRID_SETS, HELD_OUT_DIR  # noqa: E402

OUT = DEV_DIR / "design-7.json"
RULES = {  # name -> (score over the last k epochs, margin in standard errors, race up to k standard errors)
    "plain": (1, 0.0, None),
    "margin0.5": (1, 0.5, None),
    "margin1": (1, 1.0, None),
    "last3": (3, 0.0, None),
    "last5": (5, 0.0, None),
    "last5_margin0.5": (5, 0.5, None),
    "race0.5": (1, 0.0, 0.5),
    "race1": (1, 0.0, 1.0),
}


def validation_size(grid: replay.Grid) -> int:
    """The validation split's size: the smallest n at which every recorded accuracy is k / n."""
    values = {t["val_accuracy"] for t in grid.trials} | {v for t in grid.trials for v in t["val_curve"]}
    for n in range(10, 20_001):
        if all(abs(v * n - round(v * n)) < 1e-6 for v in values):
            return n
    raise ValueError(f"{grid.name}: no validation size explains the recorded accuracies")


class Judged(replay.Trace):
    """A trace whose incumbent follows one of RULES; ``done`` returns the points to re-run."""

    def __init__(self, grid: replay.Grid, rule: tuple, n_val: int):
        super().__init__(grid)
        self.last, self.margin, self.race = rule
        self.n_val = n_val
        self.runs: dict[tuple, list[dict]] = {}
        self.incumbent: tuple | None = None
        self.raced: set[tuple] = set()

    def score(self, row: dict) -> float:
        return statistics.mean(row["val_curve"][-self.last :])

    def value(self, key: tuple) -> float:
        return statistics.mean(self.score(r) for r in self.runs[key])

    def se(self, p: float) -> float:
        return math.sqrt(max(p * (1 - p), 1e-4) / self.n_val)

    def done(self, key: tuple, row: dict) -> list[tuple]:  # type: ignore[override]
        self.runs.setdefault(key, []).append(row)
        again: list[tuple] = []
        inc = self.incumbent
        if inc is None:
            self.incumbent = key
        elif len(self.runs[key]) == 1 and key != inc:  # a new configuration
            gap, se = self.score(row) - self.value(inc), self.se(self.value(inc))
            if self.race is None:
                if gap > self.margin * se:
                    self.incumbent = key
            elif gap > self.race * se:
                self.incumbent = key
            elif gap > 0:
                again = ([inc] if len(self.runs[inc]) < 2 else []) + [key]
                self.raced.add(key)
        if self.race is not None and len(self.runs[self.incumbent]) >= 2:  # a race decided
            for challenger in sorted(self.raced):
                if len(self.runs[challenger]) >= 2 and self.value(challenger) > self.value(self.incumbent):
                    self.incumbent = challenger
        test = statistics.mean(r["test_accuracy"] for r in self.runs[self.incumbent])
        self.events.append((self.spent, self.grid.regret(test)))
        return again


def second_run(grid: replay.Grid, draw: replay.Draw, key: tuple) -> dict | None:
    """The point's other recorded training seed (None: only one was recorded)."""
    rows = grid.by_point[key]
    if len(rows) < 2:
        return None
    return rows[(rows.index(draw.row(dict(key))) + 1) % len(rows)]


def with_sampler(grid, draw, sampler, pruner, opening: replay.Opening, rule: tuple, n_val: int) -> Judged:
    """:func:`replay.optuna_method` with the rule's incumbent and its re-runs (enqueued)."""
    from tlbench.store.studyrecord import StudyRecord

    trace = Judged(grid, rule, n_val)
    draw.studies += 1
    study = optuna.create_study(
        study_name=f"noise/{grid.name}/{draw.seed}/{draw.studies}", direction="maximize", sampler=sampler, pruner=pruner
    )
    StudyRecord.set_decision(study, "replay", opening.dropped)
    for params, charge in opening.steps:
        study.enqueue_trial(params, user_attrs={"probe": True, "charge": charge})
    left, queued = [opening.left], set()

    def objective(trial: optuna.Trial) -> float:
        params = replay._suggest_point(grid, trial)
        key, rerun = replay._key(params), trial.user_attrs.get("rerun", False)
        row = second_run(grid, draw, key) if rerun else draw.row(params)
        charge = trial.user_attrs.get("charge")
        trace.owed += left.pop() if charge is None and left else charge or 0.0
        curve, per_epoch = row["val_curve"], grid.cost(row) / len(row["val_curve"])
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if epoch < len(curve) and not trial.user_attrs.get("probe") and not rerun and trial.should_prune():
                trace.pay(per_epoch * epoch)
                trace.events.append((trace.spent, trace.events[-1][1]))
                raise optuna.TrialPruned()
        trace.pay(0.0 if trial.user_attrs.get("probe") and grid.shares_screen(params) else grid.cost(row))
        for k in trace.done(key, row):
            if k not in queued and len(trace.runs[k]) < 2 and second_run(grid, draw, k) is not None:
                queued.add(k)
                study.enqueue_trial(dict(k), user_attrs={"rerun": True})
        return trace.score(row)  # the trial's value: what the sampler follows too

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trace.over():
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=20 * len(grid.by_point), callbacks=[after])
    return trace


def with_random(grid, draw, seed: int, opening: replay.Opening, rule: tuple, n_val: int) -> Judged:
    """:func:`replay.in_order` (the opening, then uniform random) with the rule's incumbent."""
    trace, left = Judged(grid, rule, n_val), [opening.left]
    todo = [(p, c, False) for p, c in opening.steps]
    todo += [(p, None, False) for p in replay.uniform_order(grid, seed, exclude=opening.points)]
    queued: set = set()
    while todo and not trace.over():
        params, charge, rerun = todo.pop(0)
        key = replay._key(params)
        row = second_run(grid, draw, key) if rerun else draw.row(params)
        trace.owed += left.pop() if charge is None and left else charge or 0.0
        trace.pay(0.0 if charge is not None and grid.shares_screen(params) else grid.cost(row))
        for k in reversed(trace.done(key, row)):  # re-runs go first, the incumbent's first
            if k not in queued and len(trace.runs[k]) < 2 and second_run(grid, draw, k) is not None:
                queued.add(k)
                todo.insert(0, (dict(k), None, True))
    return trace


def one_seed(grid: replay.Grid, seed: int, others: list[dict]) -> dict[str, replay.Trace]:
    from tlbench.config import SearchConfig
    from tlbench.search import pruning, sampling

    draw, defaults = replay.Draw(grid, seed), SearchConfig()
    opening = replay.tlbench_opening(grid, defaults, others)
    n_val = validation_size(grid)
    out = {
        "uniform_random": replay.in_order(grid, draw, replay.uniform_order(grid, seed)),
        "opening": replay.in_order(grid, draw, [], opening),
        "bound_after_opening": replay.bound_after_opening(grid, draw, opening),
    }
    for name, rule in RULES.items():
        sampler, pruner = sampling.make_sampler(defaults, seed), pruning.make_pruner(defaults)
        out[f"tlbench[{name}]"] = with_sampler(grid, draw, sampler, pruner, opening, rule, n_val)
        out[f"opening_then_random[{name}]"] = with_random(grid, draw, seed, opening, rule, n_val)
    return out


_WORK: dict = {}


def _seed(seed: int) -> dict[str, replay.Trace]:
    out = one_seed(_WORK["grid"], seed, _WORK["others"])
    for trace in out.values():
        trace.grid = None
    return out


def load() -> dict[str, replay.Grid]:
    """Every development grid, both recorded training seeds of each task merged."""
    grids = {}
    for kind, folders, label in (
        ("dev-grid", [DEV_DIR, DEV_DIR / "seed1"], "dev"),
        ("heldout-grid", [HELD_OUT_DIR], "held-out 1"),
    ):
        tasks, tables = GRID_SETS[kind][1], {}
        for folder in folders:
            for path in sorted(folder.glob("*-s[0-9]*.json")):
                task = path.stem.rsplit("-s", 1)[0]
                tables.setdefault(task, []).extend(json.loads(path.read_text())["datasets"].values())
        for task, datas in tables.items():
            if task in tasks:
                grids[f"{task} ({label})"] = replay.Grid(task, datas, domain=tasks[task][0], modality=tasks[task][1])
    return grids | replay.load_in_sample(replay.GRID_DIR)


def main(seeds: int, out: Path) -> int:
    import os

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    results, processes = {}, int(os.environ.get("TLBENCH_REPLAY_PROCESSES", os.cpu_count() or 1))
    for name, grid in load().items():
        _WORK.update(grid=grid, others=replay.portfolio_without(grid.domain, grid.modality))
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            runs = pool.map(_seed, range(seeds), chunksize=max(1, seeds // (8 * processes)))
        for run in runs:
            for trace in run.values():
                trace.grid = grid
        aucs = {m: [replay.area(r[m], grid) for r in runs] for m in runs[0]}
        base = aucs["opening_then_random[plain]"]
        results[name] = {
            m: {"regret_auc": statistics.median(a), "regret_auc_ci": replay.bootstrap_median(a),
                "wins_vs_opening_then_random": sum(x < y for x, y in zip(a, base)),
                "losses_vs_opening_then_random": sum(x > y for x, y in zip(a, base)),
                "regret_at": {f"{b}F": statistics.median(replay.regret_at(r[m], b * grid.unit) for r in runs)
                              for b in replay.BUDGETS}}
            for m, a in aucs.items()
        }  # fmt: skip
        print(f"{name}: {len(grid.by_point)} points, {validation_size(grid)} validation examples", flush=True)
        for m, r in results[name].items():
            print(f"  {m:36s} AUC {r['regret_auc']:.3f}  @3F {r['regret_at']['3F']:.3f}  @10F {r['regret_at']['10F']:.3f}"
                  f"  vs opening+random {r['wins_vs_opening_then_random']}/{r['losses_vs_opening_then_random']}", flush=True)  # fmt: skip
    methods, means = list(next(iter(results.values()))), {}
    for part, names in (
        ("development", [n for n in results if "(" in n]),
        ("in-sample", [n for n in results if "(" not in n]),
    ):
        means[part] = {m: statistics.mean(results[n][m]["regret_auc"] for n in names) for m in methods}
        print(f"mean over the {part} grids ({len(names)}):")
        for m in methods:
            wins = sum(results[n][m]["wins_vs_opening_then_random"] for n in names)
            losses = sum(results[n][m]["losses_vs_opening_then_random"] for n in names)
            print(f"  {m:36s} {means[part][m]:.4f}  vs opening+random {wins}/{losses}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": seeds, "in_sample": True, "mean": means, "tasks": results}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=replay.SEEDS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.exit(main(args.seeds, args.out))
