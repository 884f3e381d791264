"""What both trackers record of a finished trial, read from its typed record."""

from __future__ import annotations

import json
from typing import Any

from tlbench.types import TrialInfo

# TrialRecord fields logged as metrics when the trial measured them
METRICS = (
    "test_accuracy", "train_seconds", "train_gflops", "forward_gflops", "total_params", "trainable_params",
    "throughput", "latency_ms", "peak_memory_mb",
)  # fmt: skip


def final_metrics(trial: TrialInfo) -> dict[str, float]:
    """The trial's measurements as name -> number (validation accuracy from its curve)."""
    out = {
        name: float(getattr(trial.record, name)) for name in METRICS if getattr(trial.record, name, None) is not None
    }
    if trial.curve:
        out["val_accuracy"] = float(trial.curve[-1])
    return out


def parameters(trial: TrialInfo) -> dict[str, str]:
    """What the trial is, as flat string parameters: backbone, strategy, each drawn value, seed."""
    out: dict[str, Any] = {"dataset": trial.dataset, "backbone": trial.backbone, "strategy": trial.strategy}
    out.update(trial.record.params or {})
    if trial.record.seed is not None:
        out["seed"] = trial.record.seed
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in out.items()}


def run_name(trial: TrialInfo) -> str:
    return f"{trial.dataset} trial {trial.number}"
