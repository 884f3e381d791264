"""Replay search methods on recorded grids (``tlbench export`` tables): no training, so
hundreds of seeds of every method take minutes.

Tasks. The four in-sample grids (``benchmarks/search-grid/``: 3 epochs, one training
seed) are the ones tlbench's search was designed on: their figures are in-sample. The
held-out grids (``benchmarks/heldout-grid/<task>-s<seed>.json``: 10 epochs, two training
seeds, see ``search.py record-held-out``; since look 5 the second set,
``benchmarks/heldout2-grid/``) judge a frozen commit; every replay of them is a look,
counted in the set's own ``looks.json``.

One replay seed of one method: a real Optuna study (or, for the methods Optuna has no
sampler for, a loop) over the grid, each parameter a choice among its recorded values.
A trial looks its configuration up and takes one of the point's recorded training seeds
(drawn per replay seed and point); it reports the recorded validation accuracy epoch by
epoch to its pruner and is charged the recorded training GFLOPs up to the epoch it
stopped at (spread evenly over its epochs): a pruned epoch is spent. tlbench's screen
is charged in full for every backbone: its wall-clock (extraction of the train and
validation splits and the scoring) at the grid's median training rate in GFLOP/s; its
probes on pretrained backbones then train heads on the features it took out (charged
nothing more: the screen paid for them), a random-init backbone's probe pays its own.
Since 0.5 the opening is streamed as a run does it (each pretrained backbone's share of
the screen, then its probe, then the next backbone's); the first held-out look replayed
the whole screen first (``streamed=False``, kept as ``tlbench_screen_first``).

Score: after each trial, the normalized regret of the incumbent, the best-by-validation
completed trial (its value: the validation accuracy after its last epoch, or for tlbench
since 0.9 the mean of its last 5 epochs, ``search.select_epochs``; ties: the earlier, as
Optuna's ``best_trial``): (y* - its test accuracy)
/ (y* - y_worst), clipped to [0, 1], where y* and y_worst are the best and worst test
accuracy of the grid's points (each point's mean over its training seeds); 1 before the
first completed trial. Compute unit F: the most expensive recorded trial of the task's
first backbone (its full fine-tune where the grid has one). Reported per method:
regret-AUC (mean regret over log-compute from F/10 to 10 F, 0 best), regret at 1, 3 and
10 F, "reach" (compute at which the incumbent's test accuracy first comes within 1 point
of y*) and "keep" (after which it stays there up to 10 F), "never" (seeds that did not
reach by 10 F), with bootstrap intervals over seeds, per-task win/loss counts of
tlbench against each method (paired by seed), and ratios of medians.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))
from search import DOMAINS, GRID_SETS, portfolio_sources  # noqa: E402  (the task lists live with the recording)

ROOT = Path(__file__).resolve().parent.parent
GRID_DIR = ROOT / "benchmarks" / "search-grid"
LOOKS_FILE = "looks.json"  # in each held-out folder: the replays of it (looks and checks)
OUT = ROOT / "results" / "search-bench.json"
PLOT = ROOT / "results" / "search-bench.png"
SEEDS = 500
TARGET_POINTS = 0.01
HORIZON = 10.0  # in F: the anytime curve runs from F / HORIZON to HORIZON x F
BUDGETS = (1, 3, 10)  # regret reported after this many F
BOOTSTRAP = 1000
# examples the screen passed through each backbone (train + validation) in grids recorded before the screen stored it
SCREENED_EXAMPLES = {"mnist5k": 1000 + 300, "digits": 1079 + 359, "lfw_faces": 120 + 40, "textures": 300 + 120}
ETA = 3  # successive halving, ASHA and Hyperband: keep the best 1/ETA at each rung
# Candidate searches after the opening (issue 21, part 3), replayed by ``search.py design``
# on the development and in-sample grids only (never on the held-out ones): each is a
# SearchConfig of tlbench's own (its sampler, pruner and portfolio, through the functions a
# run calls). The one chosen becomes tlbench's default before the held-out look.
CANDIDATES = {
    "defaults": {},
    "asha": {"pruner": "asha"},
    "no_pruning": {"pruner": "none"},
    "portfolio4": {"portfolio": 4},
    "portfolio8": {"portfolio": 8},
    "portfolio4_asha": {"portfolio": 4, "pruner": "asha"},
    "portfolio8_asha": {"portfolio": 8, "pruner": "asha"},
    "random_median": {"sampler": "random"},
    "random_asha": {"sampler": "random", "pruner": "asha"},
    "median_startup4": {"prune_startup": 4},
    "random_asha_portfolio4": {"sampler": "random", "pruner": "asha", "portfolio": 4},
    "random_asha_portfolio8": {"sampler": "random", "pruner": "asha", "portfolio": 8},
    "random_asha_warmup0": {"sampler": "random", "pruner": "asha", "warmup_epochs": 0},
    "tpe_asha_startup8": {"pruner": "asha", "startup_trials": 8},
    # design step 2 (after the first held-out look): the opening itself. "streamed": each
    # pretrained backbone's probe right after its screen, instead of the whole screen first
    "screen_first": {"streamed": False},
    "streamed": {"streamed": True},
    # design step 3 (after look 2): the search after the opening. "local": a share of the
    # sampled trials is a neighbour of the best trial so far (one setting moved one step)
    "local50": {"sampler": "local", "local_share": 0.5},
    "local80": {"sampler": "local", "local_share": 0.8},
    "local100": {"sampler": "local", "local_share": 1.0},
    # design step 4 (after step 3's replay): the pruner. On stripes (dev) ASHA from epoch 1
    # stops the best configuration (a fine-tune at the highest rate, slow in its first epochs)
    "asha_warmup3": {"warmup_epochs": 3},
    "median_warmup3": {"pruner": "median", "warmup_epochs": 3},
    "local50_no_pruning": {"sampler": "local", "local_share": 0.5, "pruner": "none"},
    # design step 5 (after look 3; a text development grid added): best-first over (backbone, strategy) groups
    "groups50": {"sampler": "groups", "group_share": 0.5},
    "groups75": {"sampler": "groups", "group_share": 0.75},
    "groups100": {"sampler": "groups", "group_share": 1.0},
    # design step 6 (after step 5's replay): the group sampler's choice of group, the local sampler's step inside it
    "groups_step50": {"sampler": "groups", "group_share": 0.5, "group_step": True},
    "groups_step100": {"sampler": "groups", "group_share": 1.0, "group_step": True},
    # design step 8 (after look 6): a pruner bounded by this task's own finished curves, not by
    # the other trials at the same epoch (which stopped stripes' slow starter in design step 3)
    "envelope_w1": {"pruner": "envelope", "warmup_epochs": 1},
    "envelope_w3": {"pruner": "envelope", "warmup_epochs": 3},
    # design step 9 (after looks 7 and 8): the opening of text studies. A text study gets no portfolio in
    # 0.9 (the shipped one is learnt on images); and the random-init backbones' screen comes before it
    "text_portfolio": {"text_portfolio": True},
    "text_portfolio_first": {"text_portfolio": True, "portfolio_first": True},
    # design step 10 (after look 9): 0.8's value, the last epoch's validation accuracy (0.9 values the last 5)
    "select1": {"select_epochs": 1},
    # design step 11 (after looks 12-16): the sampler's random half draws with replacement, so on grids of
    # 20-45 configurations it trains some twice (at full cost) where random search after the opening never does
    "untried": {"untried_draws": True},
    "untried_local80": {"untried_draws": True, "local_share": 0.8},
    # design step 12 (after look 18): on roomier grids the local steps settle near the incumbent and
    # reach the target in fewer seeds than random draws after the opening; more of the trials random
    "local30": {"local_share": 0.3},
    "local30_untried": {"local_share": 0.3, "untried_draws": True},
    # design step 13 (after step 12): which neighbour, not how many random trials. The local trials go where a
    # Gaussian process over this study's finished trials expects the most improvement: among the incumbent's
    # one-step neighbours (model_steps), or among every configuration not run yet (model_any)
    "model_steps": {"local_step": "model"},
    "model_any": {"local_step": "model_any"},
}
OPENING_KEYS = ("streamed", "text_portfolio", "portfolio_first")  # candidates' keys that shape the opening


def test_examples(trials: list[dict], most: int = 100_000) -> int | None:
    """The test split's size: the least n for which every recorded test accuracy (final and
    per epoch) is a whole number of examples out of n; None if no n up to ``most`` is."""
    values = {round(a, 12) for t in trials for a in [t.get("test_accuracy"), *(t.get("test_curve") or [])] if a}
    values = sorted(values - {1.0})
    if len(values) < 5:  # too few to pin the size down (a common divisor would pass)
        return None
    for n in range(1, most + 1):
        if all(abs(a * n - round(a * n)) < 1e-6 for a in values):
            return n
    return None


class Grid:
    """One task's recorded tables (one per training seed)."""

    def __init__(
        self, name: str, datas: list[dict], domain: str | None = None, modality: str = "image", flops: bool = False
    ):
        self.name, self.domain, self.modality = name, domain or DOMAINS.get(name, name), modality
        self.trials = [
            t for d in datas for t in d["trials"] if t["state"] == "COMPLETE" and t["test_accuracy"] is not None
        ]
        # FLOPs throughout (decided after look 9 for the next fresh set): every trial is charged its
        # validation passes too, and the screen its extraction FLOPs, not its wall-clock
        self.flops = flops
        if flops and any(t.get("val_gflops") is None for t in self.trials):
            raise ValueError(
                f"{name}: recorded before tlbench 0.9.1 (no val_gflops): FLOPs throughout cannot be charged"
            )
        values: dict[str, set] = {}  # the grid: every value each parameter was recorded at
        for t in self.trials:
            for k, v in t["params"].items():
                values.setdefault(k, set()).add(v)
        self.distributions = {k: optuna.distributions.CategoricalDistribution(sorted(v)) for k, v in values.items()}
        self.by_point: dict[tuple, list[dict]] = {}
        for t in self.trials:
            self.by_point.setdefault(_key(t["params"]), []).append(t)
        self.screen = datas[0].get("screen", {})
        means = [statistics.mean(r["test_accuracy"] for r in rows) for rows in self.by_point.values()]
        self.y_best, self.y_worst = max(means), min(means)
        self.total_gflops = sum(statistics.mean(self.cost(r) for r in rows) for rows in self.by_point.values())
        self.forward = {t["params"]["backbone"]: t["forward_gflops"] for t in self.trials}
        self.pretrained = {t["params"]["backbone"]: t.get("pretrained", True) for t in self.trials}
        first = self.trials[0]["params"]["backbone"]  # the config's first backbone (recorded first)
        self.unit = max(self.cost(t) for t in self.trials if t["params"]["backbone"] == first)
        self.epochs = max(len(t["val_curve"]) for t in self.trials)
        # the screen's wall-clock in GFLOPs, per recorded table at that table's own training rate; of
        # the tables of one task (the same screen, recorded again with another seed) the least: a
        # timing taken under load overstates the work (look 7: a text screen took 30-37 s beside the
        # test suite and 11-12 s on the next seed), as timeit takes the least of repeated timings
        # Its pass over the test split (made for the probe's test accuracy; nothing chooses on it) is
        # left out, as no trial is charged its test evaluation (decided after look 10: that pass was
        # half of a text screen's wall-clock, 720 test sentences against 650 screened): recorded as
        # ``test_seconds`` since 0.9.2; in older tables the seconds' share of the test examples.
        self.screen_gflops: dict[str, float] = {}
        self.screen_test_share: dict[str, float] = {}
        kept = {id(t) for t in self.trials}
        for d in datas:
            rates = [
                t["train_gflops"] / t["train_seconds"] for t in d["trials"] if id(t) in kept and t.get("train_seconds")
            ]
            for backbone, entry in (d.get("screen") or {}).items():
                if rates and entry.get("seconds"):
                    share = self._test_share(entry, d["trials"])
                    cost = entry["seconds"] * (1.0 - share) * statistics.median(rates)
                    if cost < self.screen_gflops.get(backbone, math.inf):
                        self.screen_gflops[backbone], self.screen_test_share[backbone] = cost, share

    def _test_share(self, entry: dict, trials: list[dict]) -> float:
        """The part of a screen's recorded seconds that was its pass over the test split: as
        recorded (``test_seconds``, 0.9.2 on), else the test split's share of the examples it
        passed (every example costs one forward pass of the same size: images at one
        resolution, text padded to max_length), the test split's size read off the recorded
        test accuracies. 0 where the screen took its features from the cache (no pass)."""
        if "test_seconds" in entry:
            return min(1.0, entry["test_seconds"] / entry["seconds"])
        if entry.get("features") not in (None, "extracted", "uncached"):
            return 0.0
        screened = entry.get("examples") or SCREENED_EXAMPLES.get(self.name)
        tested = test_examples(trials)
        if not screened or not tested:
            raise ValueError(f"{self.name}: cannot tell the screen's test pass apart (no example counts)")
        return tested / (tested + screened)

    def cost(self, row: dict) -> float:
        """What a trial trained to its end is charged: its training GFLOPs, and with ``flops``
        its validation passes' (``val_gflops``) too."""
        return row["train_gflops"] + (row["val_gflops"] if self.flops else 0.0)

    # --- what the screen costs, charged in full

    def extraction(self, backbone: str) -> float:
        """GFLOPs of the screen's own pass over the train and validation examples."""
        return self.forward[backbone] * (
            self.screen.get(backbone, {}).get("examples") or SCREENED_EXAMPLES.get(self.name, 0)
        )

    def screen_cost(self, backbone: str) -> float:
        """The screen of one backbone: its wall-clock (extraction and scoring) at its table's
        median training rate (the least over the task's tables), or its extraction GFLOPs where
        that is more. With ``flops``: its extraction GFLOPs over the training and validation
        splits (its scoring's few MFLOPs left out), as trials are charged their FLOPs."""
        if self.flops:
            return self.extraction(backbone)
        return max(self.extraction(backbone), self.screen_gflops.get(backbone, 0.0))

    def screen_charge(self) -> float:
        """The whole screen, every backbone."""
        return sum(self.screen_cost(b) for b in self.forward)

    def shares_screen(self, params: dict) -> bool:
        """A screen probe on a pretrained backbone trains its head on the features the screen
        took out (the feature cache): the screen's charge already paid for them, and the
        head's training is a fraction of a second. A random-init backbone's probe builds
        other weights (its seed), so it pays its own extraction."""
        return params.get("strategy") == "linear_probe" and bool(self.pretrained.get(params["backbone"]))

    # --- the grid as a search space

    @property
    def target_regret(self) -> float:
        """Regret of a test accuracy 1 point below y*."""
        return TARGET_POINTS / (self.y_best - self.y_worst) if self.y_best > self.y_worst else 0.0

    def regret(self, test: float) -> float:
        span = self.y_best - self.y_worst
        return 0.0 if span <= 0 else min(1.0, max(0.0, (self.y_best - test) / span))

    def points(self) -> list[dict]:
        return [dict(k) for k in self.by_point]

    def middle(self, name: str):
        choices = self.distributions[name].choices
        return choices[(len(choices) - 1) // 2]

    def probes(self) -> list[dict]:
        """The screen's linear probes as tlbench enqueues them: the middle recorded value of
        each linear_probe parameter (tlbench.base.space's middle choice), on every backbone."""
        names = [k for k in self.distributions if k.startswith("linear_probe.")]
        return [{"backbone": b, "strategy": "linear_probe", **{k: self.middle(k) for k in names}} for b in self.forward]

    def default_recipe(self, backbone: str) -> dict | None:
        """The recipe a hand-written script uses: fine-tune with the least freezing the grid
        has and its middle learning rates."""
        names = [k for k in self.distributions if k.startswith("finetune.")]
        if not names:
            return None
        params = {k: self.distributions[k].choices[0] if k == "finetune.freeze" else self.middle(k) for k in names}
        point = {"backbone": backbone, "strategy": "finetune", **params}
        return point if _key(point) in self.by_point else None


class Draw:
    """One replay seed's view of a grid: which recorded training seed each point gives."""

    def __init__(self, grid: Grid, seed: int):
        self.grid, self.seed, self.rows, self.studies = grid, seed, {}, 0

    def row(self, params: dict) -> dict:
        key = _key(params)
        if key not in self.rows:
            rows = self.grid.by_point.get(key)
            if rows is None:
                raise KeyError(f"{self.grid.name}: the grid has no trial at {params}")
            self.rows[key] = rows[random.Random(f"{self.seed}/{key}").randrange(len(rows))]
        return self.rows[key]


class Trace:
    """A method's anytime record: (compute spent, regret of the incumbent) after each step."""

    def __init__(self, grid: Grid, charge: float = 0.0):
        self.grid, self.spent, self.best_val = grid, charge, None
        self.owed = 0.0  # the screen's share paid with the next trial (a streamed opening)
        self.events: list[tuple[float, float]] = [(0.0, 1.0)]
        self.limit = HORIZON * grid.unit

    def pay(self, gflops: float) -> None:
        self.spent += self.owed + gflops
        self.owed = 0.0

    def done(self, row: dict, value: float | None = None) -> None:
        """A trial trained to its end: the incumbent changes if its value (its validation
        accuracy, or what ``search.select_epochs`` makes of its curve) is higher."""
        regret = self.events[-1][1]
        value = row["val_accuracy"] if value is None else value
        if self.best_val is None or value > self.best_val:
            self.best_val, regret = value, self.grid.regret(row["test_accuracy"])
        self.events.append((self.spent, regret))

    def over(self) -> bool:
        return self.spent >= self.limit


# --- the methods


def row_value(row: dict, select: int = 1) -> float:
    """A recorded trial's value as a run with ``search.select_epochs: select`` computes it
    (1: its recorded validation accuracy, the last epoch's)."""
    from tlbench.base.stats import trial_value

    return row["val_accuracy"] if select == 1 else trial_value(row["val_curve"], select)


def optuna_method(grid: Grid, draw: Draw, sampler, pruner, opening: Opening | None = None, select: int = 1) -> Trace:
    """A real Optuna study over the grid. ``opening``: tlbench's screen, its charge and the
    trials enqueued before the sampler's (never pruned, like tlbench's probes and
    portfolio), the screen's decision stored where tlbench's sampler reads it. ``select``:
    ``search.select_epochs``, a trial's value from its curve as a run computes it."""
    from tlbench.store.studyrecord import StudyRecord

    trace = Trace(grid)
    # a name of its own, the same on every run: Hyperband assigns brackets from a hash of it
    # (with Optuna's random default names the figures moved from run to run)
    draw.studies += 1
    study = optuna.create_study(
        study_name=f"replay/{grid.name}/{draw.seed}/{draw.studies}",
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
    )
    left = [0.0]  # the screen still owed after the opening's trials, paid with the first sampled one
    if opening is not None:
        StudyRecord.set_decision(study, "replay", opening.dropped)
        for params, charge in opening.steps:
            study.enqueue_trial(params, user_attrs={"probe": True, "charge": charge})
        left[0] = opening.left

    def objective(trial: optuna.Trial) -> float:
        params = _suggest_point(grid, trial)
        row = draw.row(params)
        charge = trial.user_attrs.get("charge")
        trace.owed += left.pop() if charge is None and left else charge or 0.0
        curve, per_epoch = row["val_curve"], grid.cost(row) / len(row["val_curve"])
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if epoch < len(curve) and not trial.user_attrs.get("probe") and trial.should_prune():
                trace.pay(per_epoch * epoch)
                trace.events.append((trace.spent, trace.events[-1][1]))
                raise optuna.TrialPruned()
        trace.pay(0.0 if trial.user_attrs.get("probe") and grid.shares_screen(params) else grid.cost(row))
        value = row_value(row, select)
        trace.done(row, value)
        return value

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trace.over():
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=20 * len(grid.by_point), callbacks=[after])
    return trace


def _suggest_point(grid: Grid, trial: optuna.Trial) -> dict:
    trial.suggest_categorical("backbone", grid.distributions["backbone"].choices)
    strategy = trial.suggest_categorical("strategy", grid.distributions["strategy"].choices)
    for name, dist in grid.distributions.items():
        if name.startswith(f"{strategy}.") or (name not in ("backbone", "strategy") and "." not in name):
            trial.suggest_categorical(name, dist.choices)
    return dict(trial.params)


def in_order(grid: Grid, draw: Draw, order: list[dict], opening: Opening | None = None, select: int = 1) -> Trace:
    """Train ``opening``'s trials (each after its share of the screen), then the points in
    ``order``, to their end, one after another, until the horizon (``select``: as in
    :func:`optuna_method`)."""
    trace = Trace(grid)
    steps = list(opening.steps) if opening is not None else []
    left = [opening.left] if opening is not None else []
    for params, charge in steps + [(p, None) for p in order]:
        if trace.over():
            break
        row = draw.row(params)
        trace.owed += left.pop() if charge is None and left else charge or 0.0
        trace.pay(0.0 if charge is not None and grid.shares_screen(params) else grid.cost(row))
        trace.done(row, row_value(row, select))
    return trace


def bound_after_opening(grid: Grid, draw: Draw, opening: Opening, select: int = 1) -> Trace:
    """Not a method: the lowest regret any search after the same opening can hold at each
    compute while it chooses on trial values (``select``: as in :func:`optuna_method`). To
    hold point p it must have trained p to its end (p's cost, plus the screen still owed) and
    p's value must beat the opening's incumbent's. What is left to gain after the opening."""
    trace = in_order(grid, draw, [], opening, select)
    start, regret, taken = trace.spent + opening.left, trace.events[-1][1], {_key(p) for p in opening.points}
    reachable = sorted(
        (start + grid.cost(draw.row(p)), grid.regret(draw.row(p)["test_accuracy"]))
        for p in grid.points()
        if _key(p) not in taken and row_value(draw.row(p), select) > trace.best_val
    )
    for spent, reached in reachable:
        if reached < regret:
            regret = reached
            trace.events.append((spent, regret))
    return trace


def uniform_order(grid: Grid, seed: int, exclude: list[dict] = ()) -> list[dict]:
    """Every point once, in a random order (uniform random search without replacement)."""
    skip = {_key(p) for p in exclude}
    points = [p for p in grid.points() if _key(p) not in skip]
    random.Random(seed).shuffle(points)
    return points


def rungs(epochs: int) -> list[int]:
    """Successive halving's resources: epochs / ETA^k down to 1 (10 -> 1, 3, 10)."""
    levels = math.floor(math.log(epochs, ETA) + 1e-9) + 1
    return sorted({max(1, round(epochs / ETA**k)) for k in range(levels)})


def successive_halving(grid: Grid, draw: Draw, seed: int) -> Trace:
    """Synchronous successive halving (Jamieson & Talwalkar 2016), brackets of ETA^(k-1)
    random new points: all to the first rung, the best 1/ETA to the next, ... to the
    full epochs; a point continued to a later rung pays only its further epochs. Brackets
    repeat on points not yet drawn until the horizon."""
    trace, order = Trace(grid), uniform_order(grid, seed)
    levels = rungs(grid.epochs)
    while order and not trace.over():
        bracket, order = order[: ETA ** (len(levels) - 1)], order[ETA ** (len(levels) - 1) :]
        trained = {id(p): 0 for p in bracket}
        for i, epochs in enumerate(levels):
            scored = []
            for params in bracket:
                row = draw.row(params)
                curve, stop = row["val_curve"], min(epochs, len(row["val_curve"]))
                trace.pay(grid.cost(row) / len(curve) * (stop - trained[id(params)]))
                trained[id(params)] = stop
                if stop == len(curve):
                    trace.done(row)
                else:
                    trace.events.append((trace.spent, trace.events[-1][1]))
                scored.append((curve[stop - 1], params))
                if trace.over():
                    return trace
            keep = max(1, len(bracket) // ETA) if i < len(levels) - 1 else 0
            bracket = [p for _, p in sorted(scored, key=lambda s: -s[0])[:keep]]
    return trace


def methods(
    grid: Grid, seed: int, others: list[dict], candidates: dict[str, dict] | None = None, streamed: bool = True
) -> dict[str, Trace]:
    """Every method on one replay seed. ``others``: the portfolio built from the other
    domains' grids only (leave one domain out: a grid never ranks its own entries).
    ``candidates``: replay these SearchConfig variants of tlbench instead (``search.py
    design``), next to the baselines the design has to beat. ``streamed``: tlbench's
    opening as a run does it since 0.5 (each pretrained backbone's probe right after its
    screen); False: the whole screen first (0.4, the first held-out look)."""
    from tlbench.config import SearchConfig
    from tlbench.search import pruning, sampling

    draw = Draw(grid, seed)
    defaults = SearchConfig()
    opening = tlbench_opening(grid, defaults, others, streamed)

    def ours(search: SearchConfig, opened: Opening = opening):
        sampler, pruner = sampling.make_sampler(search, seed), pruning.make_pruner(search)
        return optuna_method(grid, draw, sampler, pruner, opened, search.select_epochs)

    def top1(score: str) -> Trace:
        scores = {b: grid.screen.get(b, {}).get(score) for b in grid.forward}
        scores = {b: v for b, v in scores.items() if isinstance(v, (int, float))}
        best = max(scores, key=scores.get) if scores else next(iter(grid.forward))
        recipe = grid.default_recipe(best)
        return in_order(grid, draw, [recipe] if recipe else [], Opening([], {}, grid.screen_charge()))

    def random_sampler():
        return optuna.samplers.RandomSampler(seed=seed)

    def then_random(opened: Opening, select: int = 1) -> Trace:
        return in_order(grid, draw, uniform_order(grid, seed, exclude=opened.points), opened, select)

    epochs = grid.epochs
    if candidates is not None:
        out = {
            "uniform_random": in_order(grid, draw, uniform_order(grid, seed)),
            "asha": optuna_method(grid, draw, random_sampler(), optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)),
            "opening_then_random": then_random(opening),
            "opening_then_random_select5": then_random(opening, defaults.select_epochs),
        }  # fmt: skip
        for name, overrides in candidates.items():
            search = SearchConfig(**{k: v for k, v in overrides.items() if k not in OPENING_KEYS})
            shape = {"streamed": streamed} | {k: v for k, v in overrides.items() if k in OPENING_KEYS}
            opened = tlbench_opening(grid, search, others, **shape)
            out[f"tlbench[{name}]"] = ours(search, opened)
            if set(overrides) & set(OPENING_KEYS):  # its own opening: the search after it against random after it
                out[f"opening_then_random[{name}]"] = then_random(opened)
                out[f"opening_then_random_select5[{name}]"] = then_random(opened, search.select_epochs)
        return out
    out = {
        "uniform_random": in_order(grid, draw, uniform_order(grid, seed)),
        "optuna_random": optuna_method(grid, draw, random_sampler(), optuna.pruners.NopPruner()),
        "tpe_median": optuna_method(
            grid, draw, optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=min(2, epochs - 1)),
        ),
        "successive_halving": successive_halving(grid, draw, seed),
        "asha": optuna_method(grid, draw, random_sampler(), optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)),
        "hyperband": optuna_method(
            grid, draw, random_sampler(), optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=ETA)
        ),
        "opening": in_order(grid, draw, [], opening),
        "opening_then_random": then_random(opening),
        "screen_top1_default": top1(defaults.screen.score),
        "logme_top1_default": top1("logme"),
        "tlbench": ours(defaults),
        "tlbench_no_portfolio": ours(SearchConfig(portfolio=0), tlbench_opening(grid, SearchConfig(portfolio=0), others, streamed)),
        "tlbench_study_pruning": ours(SearchConfig(pruner="asha", prune_within="study")),
        # the search after the opening that look 2 judged (0.5): random sampling, ASHA within strategies from epoch 1
        "tlbench_random_asha": ours(SearchConfig(sampler="random", pruner="asha")),
        # tlbench 0.4's search after the same opening: TPE, the median rule from epoch 2
        "tlbench_tpe_median": ours(SearchConfig(sampler="tpe", pruner="median", warmup_epochs=1)),
    }  # fmt: skip
    if streamed:  # the opening of the first held-out look: the whole screen before any trial
        out["tlbench_screen_first"] = ours(defaults, tlbench_opening(grid, defaults, others, streamed=False))
    # look 4's search (design step 6): the group sampler's choice of group, the local sampler's step in it
    out["tlbench_groups_step"] = ours(SearchConfig(sampler="groups", group_share=1.0, group_step=True))
    # 0.9's default values a trial on its last 5 epochs' mean (design step 7, look 6): 0.8's value, the last
    # epoch's; and the same opening followed by random search valued like 0.9 (the value rule without the sampler)
    out["tlbench_select1"] = ours(SearchConfig(select_epochs=1))
    out["opening_then_random_select5"] = then_random(opening, SearchConfig().select_epochs)
    # design step 7: not a method, the lowest regret a search after this opening can hold, valued like tlbench
    out["bound_after_opening"] = bound_after_opening(grid, draw, opening, defaults.select_epochs)
    return out


class Opening:
    """What tlbench does before its sampler: ``steps``, the trials it enqueues, each with
    the part of the screen paid just before it; ``left``: the screen still owed after
    them (paid with the next trial); ``dropped``: the screen's decision."""

    def __init__(self, steps: list[tuple[dict, float]], dropped: dict, left: float = 0.0):
        self.steps, self.dropped, self.left = steps, dropped, left

    @property
    def points(self) -> list[dict]:
        return [params for params, _ in self.steps]


def tlbench_opening(
    grid: Grid,
    search,
    others: list[dict],
    streamed: bool = True,
    text_portfolio: bool = False,
    portfolio_first: bool = False,
) -> Opening:
    """What tlbench does before its sampler (tlbench.benchmark.screen_all). Streamed (0.5):
    the pretrained backbones are screened first, in the config's order, each one's probe
    trained right after its screen; then the backbones from random init; then the drop
    rule, the probes of the kept random-init backbones (best screen score first) and the
    first ``search.portfolio`` portfolio entries that are points of this grid, on the
    kept backbone the screen ranks first. Not streamed (0.4): the whole screen, then the
    kept backbones' probes, best score first, then the portfolio. ``others``: the ranking
    of the grid's modality. In 0.9 only image tasks get a portfolio (the shipped one was
    learnt on image grids); ``text_portfolio`` (design step 9): text tasks too.
    ``portfolio_first`` (design step 9, streamed only): the portfolio right after the
    pretrained backbones' screens and probes, on the pretrained backbone the screen ranks
    first, before the backbones from random init are screened."""
    from tlbench.search import screen

    dropped = screen.dropped(grid.screen, search.screen.score, search.screen.margin)

    def score(backbone: str) -> float:
        return grid.screen.get(backbone, {}).get(search.screen.score, float("-inf"))

    probe = {p["backbone"]: p for p in grid.probes()}
    steps: list[tuple[dict, float]] = []
    owed = 0.0

    def warm_start(first: str) -> None:
        nonlocal owed
        warm = 0
        for entry in others if grid.modality == "image" or text_portfolio else []:
            if warm >= search.portfolio:
                break
            point = {
                "backbone": first,
                "strategy": entry["strategy"],
                **{f"{entry['strategy']}.{k}": v for k, v in entry["params"].items()},
            }
            if _key(point) in grid.by_point:
                steps.append((point, owed))
                owed, warm = 0.0, warm + 1

    early = streamed and portfolio_first and any(grid.pretrained[b] for b in grid.forward)
    if streamed:
        pretrained = [b for b in grid.forward if grid.pretrained[b]]
        for b in pretrained:
            owed += grid.screen_cost(b)
            steps.append((probe[b], owed))
            owed = 0.0
        if early:
            warm_start(max(pretrained, key=score))
        for b in grid.forward:
            if not grid.pretrained[b]:
                owed += grid.screen_cost(b)
        later = [b for b in grid.forward if not grid.pretrained[b] and b not in dropped]
    else:
        owed = grid.screen_charge()
        later = [b for b in grid.forward if b not in dropped]
    for b in sorted(later, key=lambda b: -score(b)):
        steps.append((probe[b], owed))
        owed = 0.0
    if not early:
        warm_start(max((b for b in grid.forward if b not in dropped), key=score))
    return Opening(steps, dropped, owed)


# --- the figures


def area(trace: Trace, grid: Grid) -> float:
    """Mean regret over log-compute from F / HORIZON to HORIZON x F (0: the best point at once).
    The trace is a step function: each event's regret holds until the next event."""
    lo, hi = math.log(grid.unit / HORIZON), math.log(grid.unit * HORIZON)
    total, events = 0.0, trace.events
    for i, (spent, regret) in enumerate(events):
        start = max(lo, math.log(spent)) if spent > 0 else lo
        end = min(hi, math.log(events[i + 1][0])) if i + 1 < len(events) and events[i + 1][0] > 0 else hi
        if i + 1 < len(events) and events[i + 1][0] <= 0:
            end = lo
        total += regret * max(0.0, end - start)
    return total / (hi - lo)


def regret_at(trace: Trace, gflops: float) -> float:
    regret = 1.0
    for spent, value in trace.events:
        if spent > gflops:
            break
        regret = value
    return regret


def reach_keep(trace: Trace, grid: Grid) -> tuple[float | None, float | None]:
    """Compute at which the regret first falls within the target, and after which it stays
    there up to the horizon (None: never within the horizon)."""
    limit, target = HORIZON * grid.unit, grid.target_regret + 1e-12
    reach = next((s for s, r in trace.events if r <= target and s <= limit), None)
    keep = None
    for spent, regret in trace.events:
        if spent > limit:
            break
        if regret <= target and keep is None:
            keep = spent
        elif regret > target:
            keep = None
    return reach, keep


def bootstrap_median(values: list[float], seed: int = 0) -> list[float]:
    """95 % percentile interval of the median, resampling the seeds."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP))
    return [meds[int(0.025 * BOOTSTRAP)], meds[int(0.975 * BOOTSTRAP) - 1]]


def _median_or_none(values: list[float | None]) -> float | None:
    ordered = sorted(float("inf") if v is None else v for v in values)
    median = statistics.median(ordered)
    return None if median == float("inf") else median


def summarise(grid: Grid, runs: list[dict[str, Trace]]) -> dict:
    """Per method: regret-AUC (median and interval), regret at budgets, reach / keep / never,
    wins of tlbench; the old compute-to-target figures too (``median_compute_to_target``)."""
    out = {"domain": grid.domain, "modality": grid.modality, "trials": len(grid.trials), "points": len(grid.by_point),
           "unit_gflops": grid.unit, "screen_gflops": grid.screen_charge(), "y_best": grid.y_best, "y_worst": grid.y_worst,
           "target_test": grid.y_best - TARGET_POINTS, "grid_gflops": grid.total_gflops, "methods": {},
           "screen_test_share": {} if grid.flops else grid.screen_test_share}  # fmt: skip
    aucs = {m: [area(r[m], grid) for r in runs] for m in runs[0]}
    for method in runs[0]:
        reached = [reach_keep(r[method], grid) for r in runs]
        out["methods"][method] = {
            "regret_auc": statistics.median(aucs[method]),
            "regret_auc_ci": bootstrap_median(aucs[method]),
            "regret_at": {
                f"{b}F": statistics.median(regret_at(r[method], b * grid.unit) for r in runs) for b in BUDGETS
            },
            "reach": _median_or_none([x for x, _ in reached]),
            "keep": _median_or_none([y for _, y in reached]),
            "never": sum(x is None for x, _ in reached),
            "median_compute_to_target": _median_or_none([x for x, _ in reached]),
            "compute_to_target": [x for x, _ in reached],
            "tlbench_wins": sum(a < b for a, b in zip(aucs["tlbench"], aucs[method])),
            "tlbench_losses": sum(a > b for a, b in zip(aucs["tlbench"], aucs[method])),
        }
    ours = out["methods"]["tlbench"]["regret_auc"]

    def ratio(method: str) -> float | None:
        return None if ours == 0 else out["methods"][method]["regret_auc"] / ours

    out["ratio_uniform_random"] = ratio("uniform_random")
    out["ratio_best_multifidelity"] = (
        min(ratio(m) for m in ("successive_halving", "asha", "hyperband")) if ours else None
    )
    out["ratio_opening_then_random"] = ratio("opening_then_random")
    # the figures of earlier versions of this benchmark: medians of compute to target
    m = {k: v["median_compute_to_target"] for k, v in out["methods"].items()}
    for other, field in (("optuna_random", "ratio_random"), ("tpe_median", "ratio_tpe_median")):
        out[field] = None if m["tlbench"] is None else float("inf") if m[other] is None else m[other] / m["tlbench"]
    return out


def aggregate(summaries: dict[str, dict], aucs: dict[str, dict[str, list[float]]]) -> dict:
    """Across tasks: the mean of per-task median regret-AUCs, with a bootstrap interval that
    resamples tasks and then seeds within each."""
    rng = random.Random(1)
    tasks = list(summaries)
    out = {}
    for method in next(iter(summaries.values()))["methods"]:
        point = statistics.mean(summaries[t]["methods"][method]["regret_auc"] for t in tasks)
        draws = []
        for _ in range(BOOTSTRAP // 4):
            picked = rng.choices(tasks, k=len(tasks))
            draws.append(
                statistics.mean(statistics.median(rng.choices(aucs[t][method], k=len(aucs[t][method]))) for t in picked)
            )
        draws.sort()
        n = len(draws)
        wins = sum(summaries[t]["methods"][method]["tlbench_wins"] for t in tasks)
        losses = sum(summaries[t]["methods"][method]["tlbench_losses"] for t in tasks)
        out[method] = {
            "mean_regret_auc": point,
            "ci": [draws[int(0.025 * n)], draws[int(0.975 * n) - 1]],
            "tlbench_wins": wins,
            "tlbench_losses": losses,
        }
    return out


def plot(grids: dict[str, Grid], traces: dict[str, dict[str, list[Trace]]], path: Path) -> None:
    """One panel per task: median regret of each method against compute (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.6), squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        xs = np.geomspace(grid.unit / HORIZON, grid.unit * HORIZON, 200)
        for method, runs in traces[name].items():
            ys = np.median([[regret_at(t, x) for x in xs] for t in runs], axis=0)
            ax.plot(xs / grid.unit, ys, label=method, linewidth=2.2 if method == "tlbench" else 1)
        ax.set_title(f"{name} ({grid.domain}, {grid.modality})")
        ax.set_xscale("log")
        ax.set_xlabel("compute spent (full fine-tunes of the first backbone, log)")
    axes[0][0].set_ylabel("normalized regret (median of seeds)")
    axes[0][-1].legend(loc="upper right", fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# --- loading and the command


def load_in_sample(grid_dir: Path) -> dict[str, Grid]:
    grids = {}
    for path in sorted(grid_dir.glob("*.json")):
        for name, data in json.loads(path.read_text())["datasets"].items():
            grids[name] = Grid(name, [data])
    return grids


def load_held_out(
    held_dir: Path, kind: str = "heldout-grid", merge: bool = False, flops: bool = False
) -> dict[str, Grid]:
    """``<task>-s<seed>.json`` tables, the seeds of one task merged; domain and modality from
    ``benchmarks/search.py``'s HELD_OUT (or DEV, for ``kind`` dev-grid). ``merge``: also the
    tables kept apart in the folder's ``seed<k>/`` folders (each point's training seeds)."""
    tasks = GRID_SETS[kind][1]
    tables: dict[str, list[dict]] = {}
    paths = sorted(held_dir.glob("*-s[0-9]*.json"))
    if merge:
        paths += sorted(held_dir.glob("seed[0-9]*/*-s[0-9]*.json"))
    for path in paths:
        task = path.stem.rsplit("-s", 1)[0]
        tables.setdefault(task, []).extend(json.loads(path.read_text())["datasets"].values())
    return {
        t: Grid(t, datas, domain=tasks[t][0], modality=tasks[t][1], flops=flops)
        for t, datas in tables.items()
        if t in tasks
    }


def portfolio_without(domain: str | None, modality: str = "image") -> list[dict]:
    """The shipped portfolio's ranking for a task of ``modality`` (every in-sample and
    development grid of that modality: search.py's portfolio_sources) without the grids of
    ``domain`` (leave one domain out)."""
    from tlbench.search import portfolio

    tables, sources = portfolio_sources()
    kept = [t for n, t in tables.items() if sources[n]["domain"] != domain and sources[n]["modality"] == modality]
    return portfolio.build(kept)


_WORK: dict = {}  # the grid and portfolio the pool's forked processes replay (inherited, not pickled)


def _one_seed(seed: int) -> dict[str, Trace]:
    out = methods(_WORK["grid"], seed, _WORK["others"], _WORK.get("candidates"))
    for trace in out.values():
        trace.grid = None  # sent back without the grid; re-attached by the parent
    return out


def seed_runs(
    grid: Grid, seeds: int, others: list[dict], candidates: dict[str, dict] | None = None
) -> list[dict[str, Trace]]:
    """Every method on replay seeds 0..seeds-1, over the machine's cores (each seed is its
    own seeded computation: the figures do not depend on how many processes ran them).
    ``candidates``: as in :func:`methods` (``search.py design``)."""
    import multiprocessing
    import os

    processes = min(seeds, int(os.environ.get("TLBENCH_REPLAY_PROCESSES", os.cpu_count() or 1)))
    if processes <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [methods(grid, seed, others, candidates) for seed in range(seeds)]
    _WORK.update(grid=grid, others=others, candidates=candidates)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        runs = pool.map(_one_seed, range(seeds), chunksize=max(1, seeds // (8 * processes)))
    for run in runs:
        for trace in run.values():
            trace.grid = grid
    return runs


def replay_all(grids: dict[str, Grid], seeds: int, portfolio_for) -> tuple[dict, dict, dict]:
    summaries, traces, aucs = {}, {}, {}
    for name, grid in grids.items():
        others = portfolio_for(grid)
        runs = seed_runs(grid, seeds, others)
        traces[name] = {m: [r[m] for r in runs] for m in runs[0]}
        aucs[name] = {m: [area(t, grid) for t in ts] for m, ts in traces[name].items()}
        summaries[name] = s = summarise(grid, runs)
        cells = "  ".join(f"{m} {v['regret_auc']:.3f}" for m, v in s["methods"].items())
        print(
            f"{name} ({grid.domain}, {len(grid.by_point)} points, F = {grid.unit:,.0f} GFLOPs): median regret-AUC: {cells}",
            flush=True,
        )
    return summaries, traces, aucs


def design(
    grid_dir: Path, dev_dir: Path, seeds: int, names: list[str] | None = None, out: Path | None = None,
    merge: bool = False, earlier_sets: list[Path] = (),
) -> int:  # fmt: skip
    """Replay the candidate searches (CANDIDATES) on the development grids and the in-sample
    grids, next to uniform random, ASHA and the opening followed by random search (valued
    on the last epoch, and like 0.9's default); print each one's median regret-AUC per task
    and its paired wins against both. In-sample by construction: this is where the search
    is designed. ``merge``: every recorded training seed of the development grids (their
    ``seed<k>/`` tables too); ``earlier_sets``: held-out sets' folders replayed as development
    data (the first set is, since look 5; the second, since look 7; the third, since design
    step 9; the fourth, since design step 10), their seeds merged likewise."""
    unknown = [n for n in names or () if n not in CANDIDATES]
    if unknown:
        print(f"unknown candidate {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
        return 2
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    in_sample, dev = load_in_sample(grid_dir), load_held_out(dev_dir, "dev-grid", merge)
    for folder in earlier_sets:
        dev |= load_held_out(folder, held_out_set(folder)[0], merge)
    candidates = {n: CANDIDATES[n] for n in (names or CANDIDATES)}
    grids = {f"{n} (dev)": g for n, g in dev.items()} | in_sample
    baselines = ("opening_then_random", "opening_then_random_select5")
    results: dict[str, dict] = {}
    for name, grid in grids.items():
        runs = seed_runs(grid, seeds, portfolio_without(grid.domain, grid.modality), candidates)
        aucs = {m: [area(r[m], grid) for r in runs] for m in runs[0]}
        results[name] = {
            m: {"regret_auc": statistics.median(a), "regret_auc_ci": bootstrap_median(a),
                **{f"{side}_vs_{b}": sum((x < y) if side == "wins" else (x > y) for x, y in zip(a, aucs[b]))
                   for b in baselines for side in ("wins", "losses")},
                "regret_at": {f"{b}F": statistics.median(regret_at(r[m], b * grid.unit) for r in runs) for b in BUDGETS}}
            for m, a in aucs.items()
        }  # fmt: skip
        print(f"{name} ({grid.domain}, {grid.epochs} epochs, {len(grid.by_point)} points, {seeds} seeds)", flush=True)
        for m, r in results[name].items():
            print(f"  {m:28s} AUC {r['regret_auc']:.4f}  @1F {r['regret_at']['1F']:.3f}  @3F {r['regret_at']['3F']:.3f}"
                  f"  @10F {r['regret_at']['10F']:.3f}  vs opening+random {r['wins_vs_opening_then_random']}/"
                  f"{r['losses_vs_opening_then_random']}  (select5: {r['wins_vs_opening_then_random_select5']}/"
                  f"{r['losses_vs_opening_then_random_select5']})", flush=True)  # fmt: skip
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        body = {"seeds": seeds, "in_sample": True, "merged_seeds": merge, "tasks": results}
        out.write_text(json.dumps(body, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def held_out_set(folder: Path) -> tuple[str, Path]:
    """Which held-out set a folder holds (its name in search.py's GRID_SETS: heldout2-grid is
    the second; a ``seed<k>`` folder inside a set holds that set's tables of another
    recording seed, kept apart for a check; any other folder is read as the first set's
    tasks) and the file counting its looks: each folder counts its own."""
    resolved = folder.resolve()
    name = resolved.parent.name if resolved.name.startswith("seed") else resolved.name
    kind = name if name in GRID_SETS and name != "dev-grid" else "heldout-grid"
    return kind, folder / LOOKS_FILE


def git_commit() -> tuple[str, bool]:
    """HEAD and whether the code a replay runs (tlbench/, benchmarks/) differs from it."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "tlbench", "benchmarks/replay.py", "benchmarks/search.py"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return head, bool(dirty)


def main(
    grid_dir: Path = GRID_DIR,
    seeds: int = SEEDS,
    out: Path = OUT,
    plot_to: Path | None = PLOT,
    held_out: Path | None = None,
    dev: Path | None = None,
    merge_seeds: bool = False,
    flops: bool = False,
) -> int:
    """The in-sample grids, and the development or held-out ones where given. ``flops``: the
    held-out grids charged in FLOPs throughout (:class:`Grid`; tables of tlbench 0.9.1 on)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    in_sample = load_in_sample(grid_dir)
    if not in_sample:
        print(f"no recorded grid in {grid_dir}; record one: python benchmarks/search.py record")
        return 2
    commit, dirty = git_commit()
    if held_out is not None and dirty:  # before minutes of in-sample replay
        print(
            "refusing to replay the held-out grids: tlbench/ or benchmarks/ differs from HEAD; commit (and name it frozen) first"
        )
        return 2
    if held_out is not None:  # read (and refused) before minutes of in-sample replay, too
        kind, looks_file = held_out_set(held_out)
        try:
            held_grids = load_held_out(held_out, kind, merge_seeds, flops)
        except ValueError as exc:
            print(f"refusing --charge flops: {exc}")
            return 2
        if not held_grids:
            print(f"no held-out grid in {held_out}; record them: python benchmarks/search.py record-held-out")
            return 2
    report = {"seeds": seeds, "target_points": TARGET_POINTS, "compute": "training GFLOPs; the screen: its wall-clock "
              "without its test pass, at its table's training rate", "horizon_F": HORIZON,
              "frozen_commit": None, "in_sample": sorted(in_sample), "datasets": {}}  # fmt: skip
    # in-sample: leave one domain out (the two digit sets are one domain)
    summaries, traces, aucs = replay_all(in_sample, seeds, lambda g: portfolio_without(g.domain, g.modality))
    report["datasets"] = summaries
    report["in_sample_aggregate"] = aggregate(summaries, aucs)
    plotted = dict(in_sample)
    if dev is not None:  # development grids: 10 epochs on design datasets, in-sample
        grids = load_held_out(dev, "dev-grid")
        if grids:
            dev_summaries, dev_traces, dev_aucs = replay_all(
                grids, seeds, lambda g: portfolio_without(g.domain, g.modality)
            )
            report["dev"], report["dev_aggregate"] = dev_summaries, aggregate(dev_summaries, dev_aucs)
            traces = {**traces, **{f"{n} (dev)": t for n, t in dev_traces.items()}}
            plotted |= {f"{n} (dev)": g for n, g in grids.items()}
    if held_out is not None:
        grids = held_grids
        looks = json.loads(looks_file.read_text()) if looks_file.exists() else []
        looks.append(
            {"commit": commit, "seeds": seeds, "tasks": sorted(grids)}
            | ({"merged_seeds": True} if merge_seeds else {})
            | ({"charge": "flops"} if flops else {"charge": "screen wall-clock without its test pass"})
        )
        looks_file.write_text(json.dumps(looks, indent=1) + "\n")
        report["held_out_set"] = kind
        report["held_out_compute"] = (
            "training and validation GFLOPs; the screen: its extraction GFLOPs"
            if flops
            else "training GFLOPs; the screen: its wall-clock without its test pass, at its table's training rate"
        )
        report["held_out_runs_per_point"] = sorted({len(rows) for g in grids.values() for rows in g.by_point.values()})
        held, held_traces, held_aucs = replay_all(grids, seeds, lambda g: portfolio_without(None, g.modality))
        report["frozen_commit"] = commit
        report["held_out_looks"] = len(looks)
        report["held_out"] = held
        report["held_out_aggregate"] = aggregate(held, held_aucs)
        traces = {**traces, **held_traces}
        plotted |= grids
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    if plot_to is not None:
        try:
            plot(plotted, traces, plot_to)
            print(f"wrote {plot_to}")
        except ImportError:
            print("(no plot: matplotlib is not installed)")
    return 0


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))
