"""How often tlbench's sampler trains a configuration again inside the replay's horizon
(design step 11, docs/performance.md), with ``search.untried_draws`` off and on.

    python benchmarks/repeats.py [--seeds 40]

For each development grid and held-out set (training seeds merged), tlbench's default search
is replayed as ``search.py`` replays it (its opening, then its sampler, until ten full
fine-tunes of the first backbone); each trial is a recorded row, so a configuration trained
again is the same row again. Prints, per grid: trials per replay seed, repeats per seed, and
the share of the trials' compute that went to repeats; and the configurations the screen
leaves (a repeat is unavoidable once they have all run).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))
import replay  # noqa: E402
from search import DEV_DIR, GRID_SETS  # noqa: E402


def measure(grid: replay.Grid, others: list[dict], seeds: int, untried: bool) -> tuple[float, float, float, int]:
    """(trials, repeats) per replay seed, the repeats' share of the trials' compute, and the
    configurations on the backbones the screen keeps (the last seed's screen: it reads the
    screen's recorded scores, the same in every seed of a merged grid but for the seed drawn)."""
    from tlbench.config import SearchConfig
    from tlbench.search import pruning, sampling

    rows: list[dict] = []
    done = replay.Trace.done

    def record(trace, row, value=None):  # every trial's recorded row, in order
        rows.append(row)
        return done(trace, row, value)

    trials = repeats = 0
    spent = again = 0.0
    replay.Trace.done = record
    try:
        for seed in range(seeds):
            search = SearchConfig(untried_draws=untried)
            opening = replay.tlbench_opening(grid, search, others, True)
            rows.clear()
            sampler, pruner = sampling.make_sampler(search, seed), pruning.make_pruner(search)
            replay.optuna_method(grid, replay.Draw(grid, seed), sampler, pruner, opening, search.select_epochs)
            seen: set[int] = set()
            for row in rows:
                spent += grid.cost(row)
                if id(row) in seen:  # Draw hands out one row object per point and seed
                    repeats += 1
                    again += grid.cost(row)
                seen.add(id(row))
            trials += len(rows)
    finally:
        replay.Trace.done = done
    kept = sum(1 for p in grid.points() if p["backbone"] not in opening.dropped)
    return trials / seeds, repeats / seeds, again / spent if spent else 0.0, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    grids = replay.load_held_out(DEV_DIR, "dev-grid", True)
    for kind, (folder, _) in GRID_SETS.items():
        if kind != "dev-grid" and any(folder.glob("*-s0.json")):
            grids |= replay.load_held_out(folder, kind, True)
    print(f"{'grid':18s} points kept | off: trials repeats compute | on: trials repeats compute")
    for name, grid in grids.items():
        others = replay.portfolio_without(grid.domain, grid.modality)
        off = measure(grid, others, args.seeds, False)
        on = measure(grid, others, args.seeds, True)
        kept = on[3]
        print(f"{name:18s} {len(grid.by_point):6d} {kept:4d} | {off[0]:5.1f} {off[1]:5.2f} {off[2]:5.3f}"
              f" | {on[0]:5.1f} {on[1]:5.2f} {on[2]:5.3f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
