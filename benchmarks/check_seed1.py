"""Design step 4's check after the decision: the development grids' seed 1 (recorded, never
used to choose; benchmarks/dev-grid/seed1), replayed for the new default, look 2's search
after the opening (random sampling, ASHA) and the same opening followed by uniform random.

    python benchmarks/check_seed1.py        # 200 seeds, about 3 minutes on 2 cores

Writes results/search-design-4-seed1.json. In-sample like every development grid.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import optuna

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replay import area, load_held_out, methods, portfolio_without  # noqa: E402


def main(seeds: int = 200) -> int:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    grids = load_held_out(HERE / "dev-grid" / "seed1", "dev-grid")
    candidates = {"random_asha": {"sampler": "random", "pruner": "asha"}, "local50_no_pruning": {}}
    out = {}
    for name, grid in grids.items():
        others = portfolio_without(grid.domain)
        runs = [methods(grid, seed, others, candidates) for seed in range(seeds)]
        aucs = {m: [area(r[m], grid) for r in runs] for m in runs[0]}
        base = aucs["opening_then_random"]
        out[name] = {
            m: {
                "regret_auc": round(statistics.median(a), 4),
                "wins_vs_opening_then_random": sum(x < y for x, y in zip(a, base)),
                "losses_vs_opening_then_random": sum(x > y for x, y in zip(a, base)),
            }
            for m, a in aucs.items()
        }
        print(name, {m: v["regret_auc"] for m, v in out[name].items()}, flush=True)
    path = HERE.parent / "results" / "search-design-4-seed1.json"
    path.write_text(json.dumps({"seeds": seeds, "in_sample": True, "tasks": out}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
