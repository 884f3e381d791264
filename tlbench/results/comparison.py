"""``tlbench compare`` rendered: the ranking and the comparison of runs, with deltas
against the first run and the noise they are within."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from rich.console import Console

from tlbench.results.report import Column, _missing, _num, markdown_table, rich_table

# --------------------------------------------------------------------------- compare


def compare_columns(n_runs: int) -> list[Column]:
    """Key columns, then per run (A, B, ...) its test accuracy, with deltas against run A."""
    cols = [
        Column("Dataset", lambda r: str(r["dataset"]), numeric=False),
        Column("Backbone", lambda r: str(r["backbone"]), numeric=False),
        Column("Strategy", lambda r: str(r["strategy"]), numeric=False),
    ]
    for i in range(n_runs):
        cols.append(Column(f"{chr(65 + i)} test", _num(f"test_{i}", lambda v: f"{v:.3f}")))
        if i:
            cols.append(Column("Δ test", _delta_test(i)))
            cols.append(Column("Δ train", _num(f"d_train_seconds_{i}", lambda v: f"{v:+.0%}"), narrow=False))
            cols.append(Column("Δ GFLOP", _num(f"d_train_gflops_{i}", lambda v: f"{v:+.0%}"), narrow=False))
            cols.append(Column("Δ img/s", _num(f"d_throughput_{i}", lambda v: f"{v:+.0%}"), narrow=False))
            cols.append(Column("Δ MB", _num(f"d_peak_memory_mb_{i}", lambda v: f"{v:+.0%}"), narrow=False))
    return cols


def _delta_test(i: int) -> Callable[[pd.Series], str]:
    def cell(row: pd.Series) -> str:
        if _missing(row.get(f"d_test_{i}")):
            return "missing"
        text = f"{row[f'd_test_{i}']:+.3f}"
        return text + " (noise)" if row.get(f"noise_{i}") else text

    return cell


COMPARE_NOTE = (
    "Δ against run A; test deltas marked (noise) have overlapping 95% CIs; cost deltas are relative (+10% = 10% more)"
)


def render_compare(table: pd.DataFrame, paths: list[str], flags: list[str], fmt: str, console: Console) -> None:
    """The comparison in ``fmt``; runs are lettered A, B, ... in the order given."""
    if fmt == "csv":
        console.file.write(table.to_csv(index=False))
        return
    if fmt == "json":
        console.file.write(table.to_json(orient="records", indent=2) + "\n")
        return
    cols = compare_columns(len(paths))
    runs = " · ".join(f"{chr(65 + i)} = {path}" for i, path in enumerate(paths))
    lines = [f"⚠ {flag}" for flag in flags] + [runs, COMPARE_NOTE]
    if fmt == "markdown":
        console.file.write("\n".join(markdown_table(cols, table) + [""] + lines) + "\n")
        return
    console.print(rich_table("Comparison", cols, table, console.width))
    for line in lines:
        console.print(line, markup=False, highlight=False, style="yellow" if line.startswith("⚠") else "dim")
