"""Shared fixtures: tiny real configs on disk, and a fresh plugin manager per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

FAKE_DIST = Path(__file__).parent / "fake_dist"

# huggingface_hub reads this once, at import: set it before timm is imported.
os.environ["HF_HUB_OFFLINE"] = "1"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: to prove a command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_benchmark(**overrides) -> dict:
    """A real benchmark small enough to run in seconds on a CPU."""
    data = {
        "name": "tiny",
        "seed": 0,
        "datasets": [{"name": "synthetic", "classes": 3, "size": 16, "train_per_class": 8, "val_per_class": 4, "test_per_class": 4}],
        "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
        "strategies": [{"name": "linear_probe", "epochs": 1}],
        "search": {"n_trials": 2, "startup_trials": 1},
        "training": {"batch_size": 8, "resolution": 32},
    }
    data.update(overrides)
    return data


@pytest.fixture
def write_config(tmp_path):
    """write_config(**overrides) -> path of a benchmarks.yaml in a fresh folder."""

    def write(data: dict | None = None, filename: str = "benchmarks.yaml", **overrides) -> Path:
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(data if data is not None else tiny_benchmark(**overrides)))
        return path

    return write


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch):
    """No installed third-party plugin leaks into a test."""
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "")
