"""Rendering only: the summary of a run as rich tables, markdown, CSV or JSON."""

from __future__ import annotations

import math

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from tlbench.results import Run

# (summary column, heading, formatter); the order is the table's
COLUMNS = [
    ("backbone", "Backbone", str),
    ("strategy", "Strategy", str),
    ("test_accuracy", "Test", lambda v: f"{v:.3f}"),
    ("val_accuracy", "Val", lambda v: f"{v:.3f}"),
    ("trainable_params", "Trainable", lambda v: human_count(v)),
    ("total_params", "Params", lambda v: human_count(v)),
    ("forward_gflops", "GFLOP/img", lambda v: f"{v:.3g}"),
    ("train_gflops", "Train GFLOP", lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.3g}"),
    ("train_seconds", "Train", lambda v: human_seconds(v)),
    ("throughput", "Img/s", lambda v: f"{v:,.0f}"),
    ("peak_memory_mb", "Peak MB", lambda v: f"{v:,.0f}"),
    ("trials", "Trials", lambda v: str(int(v))),
    ("config", "Best config", str),
]
PARETO_NOTE = "★ Pareto front: no other row has higher test accuracy for fewer training FLOPs"


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


def _cell(value, fmt) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt(value)


def caption(run: Run) -> str:
    env = run.environment
    n = run.trials[run.trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    states = n["state"].value_counts().to_dict()
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items()))
    memory = set(run.trials["memory_kind"].dropna())
    note = " · Peak MB: process peak RSS" if memory == {"process_peak_rss"} else ""
    return f"{env.get('device', '?')} · torch {env.get('torch', '?')} · trials: {counts or 'none'}{note}"


def print_summary(run: Run, console: Console) -> None:
    """One rich table per dataset; on a narrow console the configs go below the table."""
    if run.summary.empty:
        console.print(f"No completed trials yet in {run.path}.")
        return
    wide = console.width >= 160
    dropped = set() if wide else {"config", "total_params", "val_accuracy"}
    if console.width < 110:
        dropped |= {"trials", "train_gflops", "peak_memory_mb"}
    columns = [c for c in COLUMNS if c[0] not in dropped]
    for dataset, rows in run.summary.groupby("dataset", sort=False):
        table = Table(
            title=f"{run.meta['benchmark']} / {run.meta['run']} — {dataset}", caption=caption(run), box=box.SIMPLE_HEAD,
            padding=(0, 0),
            collapse_padding=True,
            pad_edge=False,
        )
        table.add_column("", width=1)
        for key, heading, _ in columns:
            numeric = key not in ("backbone", "strategy", "config")
            width = None if numeric else min(16 if key == "backbone" else 12, max(len(str(v)) for v in rows[key]))
            table.add_column(heading, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric, min_width=width)
        for _, row in rows.iterrows():
            table.add_row("★" if row["pareto"] else "", *(_cell(row[key], fmt) for key, _, fmt in columns))
        console.print(table)
        if not wide:
            for _, row in rows.iterrows():
                console.print(f"  {row['backbone']} · {row['strategy']}: {row['config']}", markup=False, highlight=False)
    console.print(PARETO_NOTE, style="dim")


def to_markdown(run: Run) -> str:
    out = []
    for dataset, rows in run.summary.groupby("dataset", sort=False):
        out += [f"### {dataset}", "", caption(run), ""]
        out.append("| Pareto | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
        out.append("|---|" + "|".join("---" for _ in COLUMNS) + "|")
        for _, row in rows.iterrows():
            cells = [_cell(row[k], f).replace("|", "\\|") for k, _, f in COLUMNS]
            out.append(f"| {'★' if row['pareto'] else ''} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out + [PARETO_NOTE, ""]) if out else "No completed trials.\n"


def render(run: Run, fmt: str) -> str:
    """The summary as text in ``fmt``: markdown, csv or json."""
    if fmt == "markdown":
        return to_markdown(run)
    if fmt == "csv":
        return run.summary.to_csv(index=False)
    if fmt == "json":
        return run.summary.to_json(orient="records", indent=2) + "\n"
    raise ValueError(fmt)


def trials_table(trials: pd.DataFrame) -> str:
    """Plain-text list of every trial, for `tlbench report --trials`."""
    cols = ["dataset", "trial", "state", "backbone", "strategy", "val_accuracy", "test_accuracy", "train_seconds", "config", "fail_reason"]
    return trials[cols].to_string(index=False)
