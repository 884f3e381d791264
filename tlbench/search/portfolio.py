"""A warm start learnt from earlier benchmarks: the configurations that did best across
recorded datasets, tried first on the backbone the screen ranks first.

Auto-sklearn 2.0 (Feurer et al., JMLR 2022) starts its search from a portfolio of
configurations chosen on other datasets; Quick-Tune (Arango et al., ICLR 2024)
meta-learns from a zoo's learning curves. tlbench's portfolio is the simple,
inspectable form: :func:`relative_points` scores each (strategy, parameters) point of
recorded grids (``tlbench export`` tables) by its validation accuracy relative to the
best of its dataset, on that dataset's screen-first backbone (the best trial's backbone
where a table has no screen); :func:`rank` orders the points by their mean over the
datasets it is given.

``portfolio.json`` next to this file keeps every point's score on each of the four
offline grids it was built from (``python benchmarks/search.py portfolio``), with each
grid's domain, so that a study ranks them leaving out its own domain: the default
benchmark's mnist5k study learns from lfw_faces and textures, not from mnist5k or its
sibling digits. ``search.portfolio_from`` adds the user's own history (exported tables
or run folders, of the study's modality): those count whatever their dataset.

At run time (``search.portfolio: N``, default 2) :func:`entries_for` keeps the first
N entries whose strategy the config has (by strategy name) and whose values lie in
the config's searched space (else the entry is skipped: nothing is forced outside
what the user searches). They are enqueued after the screen's probes, on the kept
backbone with the best screen score, and count towards ``n_trials``. The shipped grids
are image benchmarks: a text study learns only from ``portfolio_from`` tables of text.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlbench.results.export import FORMAT, export_run
from tlbench.search.planning import check_recipe, recipe_params
from tlbench.types import UserError

SHIPPED = Path(__file__).with_name("portfolio.json")
MODALITY = "image"  # a source or table that names no modality (the shipped grids before design step 9)
SIZE = 8  # entries kept in a ranking


@dataclass(frozen=True)
class Portfolio:
    """What one study's warm start was learnt from."""

    entries: list[dict[str, Any]]  # ranked: {"strategy", "params", "relative_val", "datasets"}
    learnt_from: list[str]  # the datasets whose tables ranked them
    left_out: list[str] = field(default_factory=list)  # shipped datasets of the study's own domain, not used

    def describe(self) -> str:
        out = f"learnt from {', '.join(self.learnt_from) or 'nothing'}"
        return out + (f" ({', '.join(self.left_out)}: the study's own domain, left out)" if self.left_out else "")


def relative_points(
    tables: list[dict], score: str = "knn", head_only: str = "linear_probe"
) -> dict[str, dict[str, float]]:
    """Every (strategy, parameters) point of the tables' datasets -> {dataset: its validation
    accuracy relative to the dataset's best, on the dataset's first backbone}. The first
    backbone: the screen's best by ``score``, or the best trial's where nothing was
    screened. ``head_only`` strategies are left out: the screen's probes cover them."""
    relative: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for table in tables:
        for name, data in table["datasets"].items():
            done = [t for t in data["trials"] if t["state"] == "COMPLETE" and t.get("val_accuracy") is not None]
            if not done:
                continue
            screened = {
                b: s[score] for b, s in (data.get("screen") or {}).items() if isinstance(s.get(score), (int, float))
            }
            best_trial = max(done, key=lambda t: t["val_accuracy"])
            first = max(screened, key=screened.get) if screened else best_trial["params"]["backbone"]
            best = best_trial["val_accuracy"]
            for t in done:
                strategy = t["params"]["strategy"]
                if t["params"]["backbone"] != first or strategy == head_only or best <= 0:
                    continue
                params = {
                    k.removeprefix(f"{strategy}."): v for k, v in t["params"].items() if k.startswith(f"{strategy}.")
                }
                key = json.dumps({"strategy": strategy, "params": params}, sort_keys=True)
                relative[key][name].append(t["val_accuracy"] / best)
    return {k: {d: statistics.mean(v) for d, v in by.items()} for k, by in relative.items()}


def rank(points: dict[str, dict[str, float]], leave_out: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The first SIZE points by their mean relative validation accuracy over the datasets
    not left out (each point's mean over the datasets it was recorded on)."""
    kept = {k: {d: v for d, v in by.items() if d not in leave_out} for k, by in points.items()}
    kept = {k: by for k, by in kept.items() if by}
    ranked = sorted(kept, key=lambda k: (-statistics.mean(kept[k].values()), k))
    return [
        json.loads(k) | {"relative_val": round(statistics.mean(kept[k].values()), 4), "datasets": sorted(kept[k])}
        for k in ranked[:SIZE]
    ]


def build(tables: list[dict], score: str = "knn", head_only: str = "linear_probe") -> list[dict[str, Any]]:
    """The ranking of every point of ``tables`` (the replay's leave-one-domain-out portfolios)."""
    return rank(relative_points(tables, score, head_only))


def shipped_document() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text(encoding="utf-8"))


def shipped(modality: str = MODALITY) -> list[dict[str, Any]]:
    """The shipped ranking over every grid of ``modality`` (what a study of another domain starts from)."""
    return for_study("", modality).entries


def for_study(dataset_name: str, modality: str, score: str = "knn", history: list[dict] = ()) -> Portfolio:
    """The portfolio of a study of ``dataset_name``: the shipped grids of the study's modality
    and of other domains, and the ``history`` tables of the study's modality, ranked together."""
    doc = shipped_document()
    sources = {d: s for d, s in doc["sources"].items() if s.get("modality", MODALITY) == modality}
    own = sources.get(dataset_name, {}).get("domain")
    left_out = sorted(d for d, s in sources.items() if own is not None and s["domain"] == own)
    used = set(sources) - set(left_out)
    points = {k: {d: v for d, v in by.items() if d in used} for k, by in doc["points"].items()}
    points = {k: by for k, by in points.items() if by}
    mine = relative_points([t for t in history if _modality(t) == modality], score)
    for key, by in mine.items():  # the user's history counts next to the shipped grids, whatever its dataset
        points[key] = {**points.get(key, {}), **{f"{d} (portfolio_from)": v for d, v in by.items()}}
    learnt = sorted({d for by in points.values() for d in by})
    return Portfolio(entries=rank(points), learnt_from=learnt, left_out=left_out)


def _modality(table: dict) -> str:
    """A table's modality: its trials say (exports since 0.4.1), else images."""
    for data in table["datasets"].values():
        for t in data["trials"]:
            if t.get("modality"):
                return t["modality"]
    return MODALITY


def load_history(paths: list[Path]) -> list[dict]:
    """``search.portfolio_from``: exported tables (``tlbench export``) or run folders."""

    tables = []
    for i, path in enumerate(paths):
        where = f"search.portfolio_from[{i}]: {path}"
        if path.is_dir():
            tables.append(export_run(path))
            continue
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(
                f"{where}: cannot read it as a tlbench table ({exc}); give an exported table or a run folder"
            ) from exc
        if not isinstance(table, dict) or table.get("format") != FORMAT:
            raise UserError(f"{where}: not a tlbench table; export a run with tlbench export RUN_DIR")
        tables.append(table)
    return tables


def entries_for(plan, n: int, entries: list[dict] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(strategy key, parameters) of the first ``n`` entries the config can run as they are."""

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
