"""A warm start learnt from earlier benchmarks: the configurations that did best across
recorded datasets, tried first on the backbone the screen ranks first.

Auto-sklearn 2.0 (Feurer et al., JMLR 2022) starts its search from a portfolio of
configurations chosen on other datasets; Quick-Tune (Arango et al., ICLR 2024)
meta-learns from a zoo's learning curves. tlbench's portfolio is the simple,
inspectable form: :func:`build` ranks each (strategy, parameters) point of recorded
grids (``tlbench export`` tables, ``benchmarks/search-grid/``) by its validation
accuracy relative to the best of its dataset, on that dataset's screen-first
backbone, averaged over datasets. ``portfolio.json`` next to this file is built from
the four offline grids by ``python benchmarks/search.py portfolio``.

At run time (``search.portfolio: N``, default 2) :func:`entries_for` keeps the first
N entries whose strategy the config has (by strategy name) and whose values lie in
the config's searched space (else the entry is skipped: nothing is forced outside
what the user searches). They are enqueued after the screen's probes, on the kept
backbone with the best screen score, and count towards ``n_trials``. The grids are image
benchmarks: studies of another modality (text) start without a portfolio.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from tlbench.types import UserError

SHIPPED = Path(__file__).with_name("portfolio.json")
MODALITY = "image"  # what the recorded grids were: a text dataset's study gets no portfolio
SIZE = 8  # entries kept in a built portfolio


def build(tables: list[dict], score: str = "knn", head_only: str = "linear_probe") -> list[dict[str, Any]]:
    """Rank every (strategy, parameters) point of the tables' datasets (``tlbench-table``
    documents) by its mean relative validation accuracy on each dataset's screen-first
    backbone. ``head_only`` strategies are left out: the screen's probes cover them."""
    relative: dict[str, list[float]] = defaultdict(list)
    where: dict[str, list[str]] = defaultdict(list)
    for table in tables:
        for name, data in table["datasets"].items():
            done = [t for t in data["trials"] if t["state"] == "COMPLETE" and t["val_accuracy"] is not None]
            screened = {b: s[score] for b, s in data.get("screen", {}).items() if isinstance(s.get(score), (int, float))}
            if not done or not screened:
                continue
            first = max(screened, key=screened.get)
            best = max(t["val_accuracy"] for t in done)
            for t in done:
                strategy = t["params"]["strategy"]
                if t["params"]["backbone"] != first or strategy == head_only:
                    continue
                params = {k.removeprefix(f"{strategy}."): v for k, v in t["params"].items() if k.startswith(f"{strategy}.")}
                key = json.dumps({"strategy": strategy, "params": params}, sort_keys=True)
                relative[key].append(t["val_accuracy"] / best)
                where[key].append(name)
    ranked = sorted(relative, key=lambda k: (-statistics.mean(relative[k]), k))
    return [
        json.loads(k) | {"relative_val": round(statistics.mean(relative[k]), 4), "datasets": sorted(where[k])}
        for k in ranked[:SIZE]
    ]


def shipped() -> list[dict[str, Any]]:
    return json.loads(SHIPPED.read_text(encoding="utf-8"))["entries"]


def entries_for(plan, n: int, entries: list[dict] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(strategy key, parameters) of the first ``n`` entries the config can run as they are."""
    from tlbench.planning import check_recipe, recipe_params

    out = []
    for entry in shipped() if entries is None else entries:
        if len(out) >= n:
            break
        key = next((k for k, s in plan.strategies.items() if s.record.name == entry["strategy"]), None)
        if key is None:
            continue
        searched = set(plan.strategies[key].searched)
        params = {k: v for k, v in entry["params"].items() if k in searched}
        try:  # inside the config's ranges and choices, or skipped
            check_recipe(plan, recipe_params(plan, next(iter(plan.backbones)), key, params))
        except UserError:
            continue
        out.append((key, params))
    return out
