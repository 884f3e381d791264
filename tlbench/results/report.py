"""Rendering only: summaries, cross-dataset rankings and the screen's table as rich tables,
markdown, CSV or JSON (plots: plots.py; runs compared: comparison.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tlbench import _moved
from tlbench.base.stats import agreement
from tlbench.results.runfolder import Run
from tlbench.results.tables import hypervolume_history, imbalanced, out_of_retries, select_epochs


def human_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{int(n)}"


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def human_gflops(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Column:
    heading: str
    cell: Callable[[pd.Series], str]  # row -> text
    numeric: bool = True  # right-aligned, never wrapped
    narrow: bool = True  # kept on an 80-column terminal
    wide_only: bool = False  # only when the terminal is wide (>= 160 columns)


def _num(key: str, fmt: Callable[[float], str]) -> Callable[[pd.Series], str]:
    return lambda row: "–" if _missing(row.get(key)) else fmt(row[key])


def _test(row: pd.Series) -> str:
    if row.get("repeats", 0) and not _missing(row.get("test_std")):
        return f"{row['test_mean']:.3f}±{row['test_std']:.3f}"
    return f"{row['test_accuracy']:.3f}"


def _ci(row: pd.Series) -> str:
    return "–" if _missing(row.get("ci_low")) else f"{row['ci_low']:.3f}–{row['ci_high']:.3f}"


SUMMARY = [
    Column("", lambda r: "★" if r["pareto"] else "", numeric=False),
    Column("Backbone", lambda r: str(r["backbone"]), numeric=False),
    Column("Strategy", lambda r: str(r["strategy"]), numeric=False),
    Column("Test", _test),
    Column("95% CI", _ci),
    Column("Val", _num("val_accuracy", lambda v: f"{v:.3f}"), wide_only=True),
    Column("Trainable", _num("trainable_params", human_count)),
    Column("Params", _num("total_params", human_count), wide_only=True),
    Column("GFLOP/img", _num("forward_gflops", lambda v: f"{v:.3g}"), narrow=False),
    Column("Train GFLOP", _num("train_gflops", human_gflops), narrow=False),
    Column("Train", _num("train_seconds", human_seconds)),
    Column("Img/s", _num("throughput", lambda v: f"{v:,.0f}")),
    Column("Peak MB", _num("peak_memory_mb", lambda v: f"{v:,.0f}"), narrow=False),
    Column("Trials", _num("trials", lambda v: str(int(v))), narrow=False),
    Column("Best config", lambda r: str(r["config"]), numeric=False, wide_only=True),
]
BALANCED = Column("Balanced", _num("test_balanced", lambda v: f"{v:.3f}"))


PER_EXAMPLE = {"image": ("img", "Img"), "text": ("text", "Texts")}  # modality -> how its per-example columns read


def summary_columns(rows: pd.DataFrame) -> list[Column]:
    """The summary's columns; with an imbalanced test split, balanced accuracy after the CI;
    per-example costs named by the dataset's modality (GFLOP/text, Texts/s)."""
    from dataclasses import replace

    columns = SUMMARY
    modality = str(rows["modality"].iloc[0]) if "modality" in rows and len(rows) else "image"
    if modality != "image":
        one, many = PER_EXAMPLE.get(modality, ("example", "Examples"))
        names = {"GFLOP/img": f"GFLOP/{one}", "Img/s": f"{many}/s"}
        columns = [replace(c, heading=names.get(c.heading, c.heading)) for c in columns]
    if not imbalanced(rows):
        return columns
    at = next(i for i, c in enumerate(columns) if c.heading == "95% CI") + 1
    return [*columns[:at], BALANCED, *columns[at:]]


def class_lines(rows: pd.DataFrame) -> list[str]:
    """With an imbalanced test split: each class's test accuracy for the best row."""
    import json

    if not imbalanced(rows):
        return []
    top = rows.iloc[0]
    counts = json.loads(top["test_per_class"])
    each = ", ".join(f"{c} {right / n:.3f} ({n})" for c, (right, n) in counts.items() if n)
    return [
        f"Imbalanced test split: Balanced is the mean of the per-class accuracies. Per class, "
        f"{top['backbone']} · {top['strategy']} (the first row; test examples in brackets): {each}"
    ]


PARETO_NOTE = "★ Pareto front: no other row has higher test accuracy for fewer training FLOPs"
CI_NOTE = "95% CI: bootstrap over test examples (and seeds); Test a±b: mean±std over seeds"


def caption(run: Run, dataset: str | None = None) -> str:
    """Device, budget and the trial counts of ``dataset`` (every dataset's when None),
    short enough for one 80-column line; enqueued trials the study stopped before
    (recipes, probes, portfolio) are counted by kind, so a cut-short run says so."""
    trials = run.trials if dataset is None else run.trials[run.trials["dataset"] == dataset]
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(finished["state"].value_counts().items()))
    search = run.config.get("search", {})
    budget = f"budget {search.get('n_trials')} trials" + (f"/{search['timeout']:g} s" if search.get("timeout") else "")
    repeats = f" x{run.config['repeats']} seeds" if run.config.get("repeats") else ""
    out = f"{run.environment.get('device', '?')} · {budget}{repeats} · {counts or 'no trials'}"
    waiting = trials[trials["state"] == "WAITING"]
    if not waiting.empty:
        kinds = waiting["origin"].value_counts()
        out += " · not run yet: " + ", ".join(f"{n} {_plural(kind, n)}" for kind, n in sorted(kinds.items()))
    return out


def _plural(kind: str, n: int) -> str:
    word = {"portfolio": "portfolio configuration", "sampled": "enqueued trial"}.get(kind, kind)
    return word if n == 1 else word + "s"


def notes(run: Run) -> list[str]:
    """What the table's marks and units mean."""
    out = [PARETO_NOTE, CI_NOTE]
    select = select_epochs(run.config)
    if select > 1:
        out.append(
            f"Val: each trial's mean validation accuracy over its last {select} epochs (all of them if it trained "
            "fewer; search.select_epochs), what the search chose on"
        )
    if set(run.trials["memory_kind"].dropna()) == {"process_peak_rss"}:
        out.append("Peak MB on CPU: the process's peak resident memory, libraries included")
    out += cache_notes(run.trials)
    if "infeasible" in run.trials and run.trials["infeasible"].notna().any():
        over = run.trials[run.trials["infeasible"].notna()]
        limits = {k: v for k, v in ((run.config.get("search") or {}).get("constraints") or {}).items() if v is not None}
        out.append(
            f"Infeasible (search.constraints {limits}): {len(over)} trial(s), left out of the table and the Pareto front; "
            "tlbench report --trials lists them"
        )
    gave_up = out_of_retries(pd.concat([run.trials, run.repeats]) if not run.repeats.empty else run.trials)
    if not gave_up.empty:
        which = ", ".join(
            f"{r['dataset']} trial {r['trial']} ({r['backbone']} · {r['strategy']})" for _, r in gave_up.iterrows()
        )
        out.append(
            f"⚠ Out of retries (interrupted every time, search.retries): {which}; raise search.retries to try again"
        )
    env = run.environment
    out.append(f"torch {env.get('torch', '?')} · timm {env.get('timm', '?')} · optuna {env.get('optuna', '?')}")
    return out


def cache_notes(trials: pd.DataFrame) -> list[str]:
    """Whether trials trained on cached outputs of their frozen layers, and why not
    (from each trial record's cache uses, summed up as ``cache_kind``)."""
    kinds = trials["cache_kind"].dropna().astype(str)
    if kinds.empty:
        return []
    if (kinds == "off: augmentation").any():
        return ["Feature cache off: training.augment gives new inputs every epoch, so frozen layers are recomputed"]
    layers, inputs = int((kinds == "layers").sum()), int((kinds == "inputs").sum())
    parts = [f"{layers} of {len(kinds)} completed trials trained on frozen-layer outputs computed once"] * bool(layers)
    parts += [f"{inputs} on decoded inputs (images, tokens) kept in memory"] * bool(inputs)
    if not parts:
        return []
    return [f"Feature cache: {', '.join(parts)} (same results; Train GFLOPs count the frozen layers once)"]


def _pick(columns: list[Column], width: int) -> list[Column]:
    wide = width >= 160
    return [c for c in columns if (wide or not c.wide_only) and (width >= 110 or c.narrow)]


def rich_table(title: str, columns: list[Column], rows: pd.DataFrame, width: int, caption_text: str = "") -> Table:
    """Every cell, title and caption is plain text: labels, paths and configs come from
    users and plugins, and a '[/]' in one must print as itself, not as rich markup.
    Names are never broken: text columns do not wrap, and where the table is wider than
    the terminal the rightmost numeric columns (other than Test) are left out, and the
    caption says which (``tlbench report --format markdown`` has them all)."""
    picked = _pick(columns, width)
    cells = [[col.cell(row) for col in picked] for _, row in rows.iterrows()]
    natural = [max([cell_len(c.heading)] + [cell_len(r[i]) for r in cells]) for i, c in enumerate(picked)]
    left_out: list[str] = []
    while sum(natural) + len(natural) + 1 > width:
        i = next((i for i in reversed(range(len(picked))) if picked[i].numeric and picked[i].heading != "Test"), None)
        if i is None:
            break  # only names and the test accuracy left: let the terminal wrap
        left_out.insert(0, picked[i].heading)
        del picked[i], natural[i]
        for r in cells:
            del r[i]
    if left_out:
        caption_text += f"{chr(10) if caption_text else ''}not shown at {width} columns: {', '.join(left_out)}"
    table = Table(
        title=Text(title),
        caption=Text(caption_text),
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        collapse_padding=True,
        pad_edge=False,
    )
    for col in picked:
        table.add_column(Text(col.heading), justify="right" if col.numeric else "left", no_wrap=True, overflow="fold")
    for r in cells:
        table.add_row(*(Text(c) for c in r))
    return table


def markdown_table(columns: list[Column], rows: pd.DataFrame) -> list[str]:
    out = ["| " + " | ".join(c.heading or "Pareto" for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in rows.iterrows():
        out.append("| " + " | ".join(c.cell(row).replace("|", "\\|") for c in columns) + " |")
    return out


def print_summary(run: Run, console: Console) -> None:
    """One rich table per dataset, then the cross-dataset ranking when there are several."""
    if run.summary.empty:
        console.print(_nothing(run), markup=False, highlight=False)
        return
    for dataset, rows in run.summary.groupby("dataset", sort=False):
        title = f"{run.meta['benchmark']} / {run.meta['run']} — {dataset}"
        console.print(rich_table(title, summary_columns(rows), rows, console.width, caption(run, dataset)))
        if console.width < 160:
            for _, row in rows.iterrows():
                console.print(
                    f"  {row['backbone']} · {row['strategy']}: {row['config']}", markup=False, highlight=False
                )
        for line in [*class_lines(rows), *pareto_lines(run, dataset)]:
            console.print(line, markup=False, highlight=False)
        screened = _screened(run, dataset)
        if not screened.empty:
            console.print(rich_table(f"{dataset}: screen", SCREEN, screened, console.width))
            for line in screen_lines(run, dataset):
                console.print(line, style="dim", markup=False, highlight=False)
    if run.summary["dataset"].nunique() > 1:
        console.print(rich_table("Across datasets", ranking_columns(run.ranking), run.ranking, console.width))
    for line in notes(run):
        console.print(line, style="dim", markup=False, highlight=False)


SCREEN = [  # the screening table: each backbone scored on frozen features before the search
    Column("Backbone", lambda r: str(r["backbone"]), numeric=False, narrow=True),
    Column("LogME", _num("logme", lambda v: f"{v:.3f}")),
    Column("kNN", _num("knn", lambda v: f"{v:.3f}")),
    Column("Ridge", _num("ridge", lambda v: f"{v:.3f}")),
    Column("Screen s", _num("seconds", lambda v: f"{v:.1f}")),
    Column("Best test", _num("best_test", lambda v: f"{v:.3f}")),
    Column("Search", lambda r: "dropped" if isinstance(r["dropped"], str) else "searched", numeric=False),
]


def _screened(run: Run, dataset: str) -> pd.DataFrame:
    return run.screen[run.screen["dataset"] == dataset] if not run.screen.empty else run.screen


def pareto_lines(run: Run, dataset: str) -> list[str]:
    """A Pareto search's hypervolume against the compute it spent (empty for an accuracy search)."""

    search = run.config.get("search") or {}
    if search.get("objective") != "pareto":
        return []
    cost = search.get("cost", "train_gflops")
    reference, history = hypervolume_history(run.trials[run.trials["dataset"] == dataset], cost)
    if not history:
        return []
    steps = ", ".join(f"{human_gflops(spent)} → {hv:.4g}" for spent, hv in history)
    return [f"Pareto search (val accuracy vs {cost}): hypervolume after training GFLOPs spent {steps} "
            f"(reference: accuracy 0, {cost} {reference:.4g})"]  # fmt: skip


def screen_lines(run: Run, dataset: str) -> list[str]:
    """What the screen said, under its table: agreement with the search, and what was not screened."""

    rows = _screened(run, dataset)
    out = []
    for score in ("logme", "knn", "ridge"):
        tau = agreement(rows, run.summary, run.trials, score)
        if tau is not None:
            out.append(
                f"Kendall τ, {score} vs best test across backbones: {tau[0]:.2f} (95% CI {tau[1]:.2f}..{tau[2]:.2f}, test examples resampled)"
            )
    out += [
        f"{r['backbone']}: not screened ({r['skipped']})" for _, r in rows.iterrows() if isinstance(r["skipped"], str)
    ]
    out += [
        f"{r['backbone']}: dropped from the search ({r['dropped']}); recipes on it, if any, still ran"
        for _, r in rows.iterrows()
        if isinstance(r["dropped"], str)
    ]
    rule = next((r for r in rows["rule"] if isinstance(r, str)), None)
    learnt = next((r for r in rows["portfolio"] if isinstance(r, str)), None) if "portfolio" in rows else None
    out += [f"Portfolio (tried first on the screen's first backbone): {learnt}"] if learnt else []
    return out + [
        "Screen: scores on the frozen features of each backbone before any fine-tuning (tlbench/search/screen.py)"
        + (f"; search.screen rule: {rule}" if rule else "")
        + ". Best test: the test accuracy of the backbone's best-by-validation trial"
    ]


def to_markdown(run: Run) -> str:
    out: list[str] = []
    for dataset, rows in run.summary.groupby("dataset", sort=False):
        out += [f"### {dataset}", "", caption(run, dataset), "", *markdown_table(summary_columns(rows), rows), ""]
        hypervolume = class_lines(rows) + pareto_lines(run, dataset)
        out += [*[line + "  " for line in hypervolume], ""] if hypervolume else []
        screened = _screened(run, dataset)
        if not screened.empty:
            out += [
                f"#### {dataset}: screen",
                "",
                *markdown_table(SCREEN, screened),
                "",
                *[line + "  " for line in screen_lines(run, dataset)],
                "",
            ]
    if run.summary["dataset"].nunique() > 1:
        out += ["### Across datasets", "", *markdown_table(ranking_columns(run.ranking), run.ranking), ""]
    return "\n".join(out + [line + "  " for line in notes(run)] + [""]) if out else _nothing(run) + "\n"


def _nothing(run: Run) -> str:
    """What an empty summary means."""
    over = run.trials[run.trials["infeasible"].notna()] if "infeasible" in run.trials else run.trials.iloc[:0]
    if not over.empty:
        return (
            f"No feasible completed trials in {run.path}: {len(over)} infeasible ({over['infeasible'].iloc[0]}, ...)."
        )
    return f"No completed trials yet in {run.path}."


def render(run: Run, fmt: str) -> str:
    """The summary as text in ``fmt``: markdown, csv or json."""
    if fmt == "markdown":
        return to_markdown(run)
    if fmt == "csv":
        return run.summary.to_csv(index=False)
    if fmt == "json":
        return run.summary.to_json(orient="records", indent=2) + "\n"
    raise ValueError(fmt)


TRIAL_COLUMNS = [
    "dataset", "trial", "state", "origin", "backbone", "strategy", "val_accuracy", "test_accuracy", "train_seconds",
    "config", "fail_reason",
]  # fmt: skip


def trials_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial, as `tlbench report --trials` lists it: a trial over search.constraints
    says so where a failure would."""
    shown = trials[[c for c in TRIAL_COLUMNS if c in trials]].copy()
    if "infeasible" in trials:
        shown["fail_reason"] = trials["fail_reason"].where(
            trials["infeasible"].isna(), "infeasible: " + trials["infeasible"].astype(str)
        )
    return shown


def trials_table(trials: pd.DataFrame, fmt: str = "rich") -> str:
    """`tlbench report --trials` in ``fmt``: plain text (rich), markdown, csv or json."""
    shown = trials_frame(trials)
    if fmt == "csv":
        return shown.to_csv(index=False)
    if fmt == "json":
        return shown.to_json(orient="records", indent=2) + "\n"
    if fmt == "markdown":
        cells = shown.astype(object).where(shown.notna(), "")
        head = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
        body = [
            "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in cells.itertuples(index=False)
        ]
        return "\n".join(head + body) + "\n"
    return shown.to_string(index=False) + "\n"


# --------------------------------------------------------------------------- across datasets

RANKING = [
    Column("Backbone", lambda r: str(r["backbone"]), numeric=False),
    Column("Mean rank", _num("mean_rank", lambda v: f"{v:.2f}")),
    Column("Mean test", _num("mean_test", lambda v: f"{v:.3f}")),
    Column("Datasets", _num("datasets", lambda v: str(int(v)))),
    Column("Train GFLOP", _num("train_gflops", human_gflops)),
    Column("Train time", _num("train_seconds", human_seconds)),
]


def ranking_columns(ranking: pd.DataFrame) -> list[Column]:
    """The ranking's columns, with its modality when backbones of several are ranked
    (each among its own modality's backbones, on its modality's datasets)."""
    if "modality" in ranking and ranking["modality"].nunique() > 1:
        return [Column("Modality", lambda r: str(r["modality"]), numeric=False), *RANKING]
    return RANKING


# 0.6's names that left this module when it was split: still found here, with a warning
__getattr__ = _moved.forward(
    __name__,
    {
        "tlbench.results.plots": ("plot_run", "write_report_md"),
        "tlbench.results.comparison": ("compare_columns", "render_compare"),
    },
)
