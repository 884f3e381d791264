"""A run's plots (test accuracy against forward GFLOPs and training time, the Pareto
front drawn; needs matplotlib) and report.md, the tables with the plots embedded."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from tlbench.results.report import to_markdown
from tlbench.results.runfolder import Run, write_atomic

# --------------------------------------------------------------------------- plots and report.md


def plot_run(run: Run) -> list[Path]:
    """plot-<dataset>.png in the run folder: test accuracy against forward GFLOPs and
    against training time, one point per trial, best per backbone labelled, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset, trials in run.trials.groupby("dataset", sort=False):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
        for ax, cost, label in (
            (axes[0], "forward_gflops", "forward GFLOPs per image"),
            (axes[1], "train_seconds", "training time (s)"),
        ):
            _scatter(ax, trials, run.summary[run.summary["dataset"] == dataset], cost)
            ax.set_xlabel(label)
            ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{run.meta['benchmark']} / {run.meta['run']} — {dataset}")
        path = run.path / f"plot-{_slug(dataset)}.png"
        image = io.BytesIO()
        fig.savefig(image, format="png", dpi=110)
        plt.close(fig)
        write_atomic(path, image.getvalue())
        paths.append(path)
    return paths


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _scatter(ax, trials: pd.DataFrame, summary: pd.DataFrame, cost: str) -> None:
    done = trials[trials["state"] == "COMPLETE"]
    for backbone, rows in done.groupby("backbone"):
        ax.scatter(rows[cost], rows["test_accuracy"], s=22, alpha=0.75, label=f"{backbone} (test)")
    # pruned and failed trials have no test accuracy: shown at their last validation accuracy, at the cost of a full trial
    stopped = trials[trials["state"].isin(["PRUNED", "FAIL"])]
    x = stopped[cost].fillna(stopped["elapsed_seconds"]) if cost == "train_seconds" else stopped[cost]
    if x.notna().any():  # at the time they were stopped, and their last validation accuracy
        ax.scatter(x, stopped["val_accuracy"], marker="x", c="grey", s=22, label="pruned/failed (val)")
    front = _front(done[done["infeasible"].isna()], cost)  # over feasible trials only (search.constraints)
    ax.step(front[cost], front["test_accuracy"], where="post", c="black", lw=1, alpha=0.6, label="Pareto front")
    for _, best in summary.sort_values("val_accuracy", ascending=False).drop_duplicates("backbone").iterrows():
        ax.annotate(f"{best['backbone']}\n{best['strategy']}", (best[cost], best["test_accuracy"]), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")  # fmt: skip
    if (done[cost] > 0).all() and not done.empty and done[cost].max() / max(done[cost].min(), 1e-12) > 20:
        ax.set_xscale("log")


def _front(points: pd.DataFrame, cost: str) -> pd.DataFrame:
    """The trials that no cheaper trial beats in test accuracy, cheapest first."""
    ordered = points.sort_values([cost, "test_accuracy"], ascending=[True, False])
    return ordered[ordered["test_accuracy"] > ordered["test_accuracy"].cummax().shift(fill_value=-1.0)]


def write_report_md(run: Run, plots: list[Path]) -> Path:
    """report.md in the run folder: the tables, with the plots embedded."""
    images = [f"![{p.stem}]({p.name})" for p in plots]
    text = f"# {run.meta['benchmark']} / {run.meta['run']}\n\n{to_markdown(run)}\n" + "\n\n".join(images) + "\n"
    path = run.path / "report.md"
    write_atomic(path, text)
    return path
