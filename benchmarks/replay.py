"""Replay search methods on recorded grids (``benchmarks/search-grid/<dataset>.json``,
``tlbench export`` tables): no training, so 20 seeds of three methods take minutes.

Each method runs a real Optuna study over the grid: each parameter a choice among the
values it was recorded at (every combination of them is in the table). A trial looks its
configuration up, reports the recorded validation accuracy epoch by epoch to its
pruner, and is charged the recorded training GFLOPs up to the epoch it stopped at
(spread evenly over its epochs). Methods:

- ``random``: Optuna's RandomSampler, no pruning;
- ``tpe_median``: tlbench before issue 14: TPE (4 random startup trials) and Optuna's
  MedianPruner over the whole study (startup 4, judged from epoch 2);
- ``tlbench``: today's defaults, from the same code a run uses: the screen's rule
  (:func:`tlbench.screen.dropped` on the recorded screen scores), then the screen's
  linear probe on each kept backbone (enqueued first, never pruned, as
  :func:`tlbench.studies.enqueue_probes` does), then
  :func:`tlbench.sampling.make_sampler` and :func:`tlbench.pruning.make_pruner` (the
  median rule within each strategy). The screen's own pass over the train and
  validation examples is charged where the probes cannot share it
  (:meth:`Grid.screen_charge`).

Score: after each trial, the test accuracy of the best-by-validation completed trial
so far (ties: the earlier, as Optuna's ``best_trial``). Target: within 1 point of the
grid's best, the mean test accuracy of the grid's trials tied at the best validation
accuracy. "Compute to target": training GFLOPs spent when the score first reaches it;
a seed that has not reached it when it has spent the whole grid's compute is "never".
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
GRID_DIR = ROOT / "benchmarks" / "search-grid"
OUT = ROOT / "results" / "search-bench.json"
PLOT = ROOT / "results" / "search-bench.png"
SEEDS = 20
TARGET_POINTS = 0.01
# examples the screen passed through each backbone (train + validation) in grids recorded before the screen stored it
SCREENED_EXAMPLES = {"mnist5k": 1000 + 300, "digits": 1079 + 359, "lfw_faces": 120 + 40, "textures": 300 + 120}


class Grid:
    """One dataset's recorded table."""

    def __init__(self, name: str, data: dict):
        self.name = name
        self.trials = [t for t in data["trials"] if t["state"] == "COMPLETE" and t["test_accuracy"] is not None]
        values: dict[str, set] = {}  # the grid: every value each parameter was recorded at
        for t in self.trials:
            for k, v in t["params"].items():
                values.setdefault(k, set()).add(v)
        self.distributions = {k: optuna.distributions.CategoricalDistribution(sorted(v)) for k, v in values.items()}
        self.by_point = {_key(t["params"]): t for t in self.trials}
        self.screen = data.get("screen", {})
        best_val = max(t["val_accuracy"] for t in self.trials)
        tied = [t["test_accuracy"] for t in self.trials if t["val_accuracy"] == best_val]
        self.best_test = statistics.mean(tied)
        self.target = self.best_test - TARGET_POINTS
        self.total_gflops = sum(t["train_gflops"] for t in self.trials)
        self.forward = {t["params"]["backbone"]: t["forward_gflops"] for t in self.trials}
        self.pretrained = {t["params"]["backbone"]: t.get("pretrained", True) for t in self.trials}
        self.screen_gflops = sum(self.extraction(b) for b in self.forward)

    def extraction(self, backbone: str) -> float:
        """GFLOPs of the screen's own pass over the train and validation examples."""
        return self.forward[backbone] * (self.screen.get(backbone, {}).get("examples") or SCREENED_EXAMPLES.get(self.name, 0))

    def screen_charge(self, dropped: dict) -> float:
        """What the screen costs beyond its probes: a pretrained backbone's features are the
        ones its probe trial trains on (shared through the feature cache, and counted in
        that trial's training GFLOPs); a random-init one's differ (the probe's seed builds
        other weights), and a dropped one gets no probe."""
        return sum(self.extraction(b) for b in self.forward if b in dropped or not self.pretrained[b])

    def probes(self) -> list[dict]:
        """The screen's linear probes as tlbench enqueues them: the middle recorded value of
        each linear_probe parameter (tlbench.space's middle choice), on every backbone."""
        names = [k for k in self.distributions if k.startswith("linear_probe.")]
        middle = {k: self.distributions[k].choices[(len(self.distributions[k].choices) - 1) // 2] for k in names}
        return [{"backbone": b, "strategy": "linear_probe", **middle} for b in self.forward]

    def lookup(self, trial: optuna.Trial) -> dict:
        backbone = trial.suggest_categorical("backbone", self.distributions["backbone"].choices)
        strategy = trial.suggest_categorical("strategy", self.distributions["strategy"].choices)
        for name, dist in self.distributions.items():
            if name.startswith(f"{strategy}.") or (name not in ("backbone", "strategy") and "." not in name):
                _suggest(trial, name, dist)
        row = self.by_point.get(_key(trial.params))
        if row is None:
            raise KeyError(f"{self.name}: the grid has no trial at {trial.params} ({backbone}, {strategy})")
        return row


def _suggest(trial: optuna.Trial, name: str, dist) -> None:
    """Draw ``name`` from the grid's own recorded distribution."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        trial.suggest_categorical(name, dist.choices)
    elif isinstance(dist, optuna.distributions.IntDistribution):
        trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    else:
        trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def replay(
    grid: Grid, sampler, pruner, seed: int, dropped: dict | None = None, charge: float = 0.0, first: list[dict] = ()
) -> list[tuple[float, float]]:
    """(compute spent, score) after each trial, until the grid's total compute is spent.
    ``first``: trials enqueued before the sampler's (never pruned, like tlbench's probes)."""
    from tlbench.screen import DROPPED

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    if dropped is not None:
        study.set_user_attr(DROPPED, {"rule": "replay", "dropped": dropped})
    for params in first:
        study.enqueue_trial(params, user_attrs={"probe": True})
    spent, events, best = charge, [], None

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent
        row = grid.lookup(trial)
        curve, per_epoch = row["val_curve"], row["train_gflops"] / len(row["val_curve"])
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if epoch < len(curve) and not trial.user_attrs.get("probe") and trial.should_prune():
                spent += per_epoch * epoch
                raise optuna.TrialPruned()
        spent += row["train_gflops"]
        trial.set_user_attr("test", row["test_accuracy"])
        return row["val_accuracy"]

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal best
        if trial.state == optuna.trial.TrialState.COMPLETE and (best is None or trial.value > best.value):
            best = trial
        events.append((spent, best.user_attrs["test"] if best else float("nan")))
        if spent >= grid.total_gflops + charge:
            study.stop()

    study.optimize(objective, n_trials=20 * len(grid.trials), callbacks=[after])
    return events


def methods(grid: Grid, seed: int, others: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """The three methods the issue compares, then ablations of tlbench's search (what the
    screen, the portfolio and the grouped pruner each buy; a LogME rule, chosen after
    seeing these grids). ``others``: the portfolio built from the other datasets' grids
    only (leave one dataset out: the grid being replayed never ranks its own entries)."""
    from tlbench import pruning, sampling, screen
    from tlbench.config import SearchConfig

    def ours(search: SearchConfig, screened: bool = True):
        if not screened:
            return replay(grid, sampling.make_sampler(search, seed), pruning.make_pruner(search), seed)
        dropped = screen.dropped(grid.screen, search.screen.score, search.screen.margin)
        score = lambda b: grid.screen.get(b, {}).get(search.screen.score, float("-inf"))  # noqa: E731
        probes = sorted((p for p in grid.probes() if p["backbone"] not in dropped), key=lambda p: -score(p["backbone"]))
        first = max((b for b in grid.forward if b not in dropped), key=score)
        entries = [e for e in others if e["strategy"] in grid.distributions["strategy"].choices][: search.portfolio]
        warm = [{"backbone": first, "strategy": e["strategy"], **{f"{e['strategy']}.{k}": v for k, v in e["params"].items()}}
                for e in entries]  # fmt: skip
        return replay(grid, sampling.make_sampler(search, seed), pruning.make_pruner(search), seed,
                      dropped=dropped, charge=grid.screen_charge(dropped), first=probes + warm)  # fmt: skip

    defaults = SearchConfig()
    return {
        "random": replay(grid, optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner(), seed),
        "tpe_median": replay(
            grid,
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
            seed,
        ),
        "tlbench": ours(defaults),
        "tlbench_no_portfolio": ours(SearchConfig(portfolio=0)),  # the screen, its probes and grouped pruning
        "tlbench_no_screen": ours(defaults, screened=False),  # grouped pruning alone (no screen: no portfolio)
        "tlbench_study_pruning": ours(SearchConfig(prune_within="study")),  # pruning as Optuna does it
    }


def to_target(events: list[tuple[float, float]], target: float) -> float | None:
    return next((spent for spent, score in events if score >= target), None)


def summarise(grid: Grid, runs: list[dict]) -> dict:
    out = {"methods": {}, "target_test": grid.target, "grid_best_test": grid.best_test, "grid_gflops": grid.total_gflops,
           "screen_gflops": grid.screen_gflops, "trials": len(grid.trials)}  # fmt: skip
    for method in runs[0]:
        reached = [to_target(r[method], grid.target) for r in runs]
        never = sum(x is None for x in reached)
        ordered = sorted(float("inf") if x is None else x for x in reached)
        median = statistics.median(ordered)
        out["methods"][method] = {
            "median_compute_to_target": None if median == float("inf") else median,
            "never": never,
            "compute_to_target": reached,
        }
    m = {k: v["median_compute_to_target"] for k, v in out["methods"].items()}
    for other, field in (("random", "ratio_random"), ("tpe_median", "ratio_tpe_median")):
        if m["tlbench"] is None:
            out[field] = None  # tlbench did not reach the target on most seeds
        elif m[other] is None:
            out[field] = float("inf")  # the other method did not
        else:
            out[field] = m[other] / m["tlbench"]
    return out


def plot(grids: dict, curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.6), squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        xs = np.geomspace(1.0, grid.total_gflops, 300)  # log scale: the searches differ in their first trials
        for method, runs in curves[name].items():
            ys = []
            for events in runs:
                spent = np.array([e[0] for e in events])
                score = np.array([e[1] for e in events])
                idx = np.searchsorted(spent, xs, side="right") - 1
                ys.append(np.where(idx >= 0, score[np.clip(idx, 0, None)], np.nan))
            with warnings.catch_warnings():  # before a seed's first trial there is no score yet
                warnings.simplefilter("ignore", RuntimeWarning)
                ax.plot(xs, np.nanmedian(np.array(ys), axis=0), label=method, linewidth=2 if method == "tlbench" else 1)
        ax.axhline(grid.target, color="grey", linestyle=":", linewidth=1)
        ax.set_title(name)
        ax.set_xscale("log")
        ax.set_xlabel("training GFLOPs spent (log)")
    axes[0][0].set_ylabel("test acc. of best-by-val trial (median of seeds)")
    axes[0][-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(grid_dir: Path = GRID_DIR, seeds: int = SEEDS, out: Path = OUT, plot_to: Path | None = PLOT) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tables = sorted(grid_dir.glob("*.json"))
    if not tables:
        print(f"no recorded grid in {grid_dir}; record one: python benchmarks/search.py record")
        return 2
    grids, tables_by_name = {}, {}
    for path in tables:
        table = json.loads(path.read_text())
        for name, data in table["datasets"].items():
            grids[name] = Grid(name, data)
            tables_by_name[name] = {"datasets": {name: data}}
    report, curves = {"seeds": seeds, "target_points": TARGET_POINTS, "compute": "training GFLOPs", "datasets": {}}, {}
    from tlbench import portfolio

    for name, grid in grids.items():
        others = portfolio.build([t for n, t in tables_by_name.items() if n != name])
        runs = [methods(grid, seed, others) for seed in range(seeds)]
        curves[name] = {m: [r[m] for r in runs] for m in runs[0]}
        report["datasets"][name] = summary = summarise(grid, runs)
        cells = "  ".join(
            f"{m} {_number(v['median_compute_to_target'])} (never {v['never']}/{seeds})" for m, v in summary["methods"].items()
        )
        ratios = f"ratio_random {_number(summary['ratio_random'], '.2f')}, ratio_tpe_median {_number(summary['ratio_tpe_median'], '.2f')}"
        print(f"{name}: {len(grid.trials)} grid points, target test {grid.target:.3f}; median GFLOPs to target: {cells}; {ratios}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    if plot_to is not None:
        try:
            plot(grids, curves, plot_to)
            print(f"wrote {plot_to}")
        except ImportError:
            print("(no plot: matplotlib is not installed)")
    return 0


def _number(value: float | None, fmt: str = ",.0f") -> str:
    return "never" if value is None else "inf" if value == float("inf") else format(value, fmt)
