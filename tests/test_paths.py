"""Every path, any name (issue 24): a whole run — validate, run, report, export, compare,
plot — from folders whose names hold every character that means something in a URL, a
shell or YAML, for the config's folder, results_dir, the data, the weights and a plugin
file; the trials are stored where they belong, the table shows them, and nothing is
written outside the folders the config names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

ODD = "-C# x?y %41 &; 'q\" é"  # leading '-', '#', '?', '%' + hex, '&', ';', spaces, quotes, non-ASCII


def _images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["a #1", "b?2"]):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(60 + 120 * c, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i} %{c}.png")


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _tlbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"TLBENCH_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tlbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.e2e
def test_a_whole_run_from_folders_with_odd_names(tmp_path):
    home = tmp_path / ODD
    (home / f"data {ODD}").mkdir(parents=True)
    _images(home / f"data {ODD}")
    weights = home / f"w {ODD}" / "resnet #1.pth"
    weights.parent.mkdir()
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), weights)
    plugin = home / f"plug {ODD}" / "head_then_all.py"
    plugin.parent.mkdir()
    plugin.write_text((Path(__file__).parents[1] / "examples" / "plugins" / "head_then_all.py").read_text())
    config = {
        "name": "odd",
        "seed": 0,
        "results_dir": f"results {ODD}",
        "plugins": [f"plug {ODD}/head_then_all.py"],
        "datasets": [{"name": "imagefolder", "path": f"data {ODD}"}],
        "backbones": [{"name": "timm:test_resnet", "weights": f"w {ODD}/resnet #1.pth"}],
        "strategies": [
            {"name": "head_then_all", "head_epochs": 1, "epochs": 1, "lr": 0.01},
            {"name": "linear_probe", "epochs": 1},
        ],
        "search": {  # one trial of each strategy: two rows in the table, whatever the sampler
            "n_trials": 2, "screen": False, "portfolio": 0,
            "enqueue": [
                {"backbone": "timm:test_resnet", "strategy": "head_then_all"},
                {"backbone": "timm:test_resnet", "strategy": "linear_probe", "params": {"lr_head": 0.01}},
            ],
        },
        "training": {"batch_size": 8, "resolution": 32},
    }  # fmt: skip
    path = home / f"bench {ODD}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    outside = tmp_path / "cwd"
    outside.mkdir()
    before = _snapshot(tmp_path)

    assert _tlbench("validate", str(path), cwd=outside).returncode == 0
    ran = _tlbench("run", str(path), "--format", "csv", cwd=outside)
    assert ran.returncode == 0, ran.stderr[-3000:]
    rows = [line for line in ran.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 2  # both trials in the table, not an empty table with exit 0

    results = home / f"results {ODD}"
    (run,) = (results / "odd").iterdir()
    assert (run / "study.db").is_file()
    report = _tlbench("report", str(run), "--format", "csv", cwd=outside)
    assert report.returncode == 0 and len([line for line in report.stdout.splitlines()[1:] if line.strip()]) == 2
    out = results / f"export {ODD}.json"
    assert _tlbench("export", str(run), "--out", str(out), cwd=outside).returncode == 0
    trials = json.loads(out.read_text())["datasets"]["imagefolder"]["trials"]
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    assert _tlbench("plot", str(run), cwd=outside).returncode == 0
    again = _tlbench("run", str(path), "--run", "second", "--format", "csv", cwd=outside)  # run names are plain
    assert again.returncode == 0, again.stderr[-3000:]
    compared = _tlbench("compare", str(run), str(results / "odd" / "second"), cwd=outside)
    assert compared.returncode == 0, compared.stderr[-3000:]

    written = _snapshot(tmp_path) - before
    stray = sorted(str(p.relative_to(tmp_path)) for p in written if results not in p.parents and p != results)
    assert stray == []  # nothing outside results_dir: no 'C' or 'what' file next to the folder


def test_home_and_variables_in_config_paths_are_expanded_and_an_unset_one_is_one_line(
    write_config, capsys, monkeypatch, tmp_path
):
    from conftest import one_line, tiny_benchmark

    from tlbench import cli

    config = write_config(tiny_benchmark(results_dir="$TLB_OUT/res", search={"n_trials": 1, "screen": False}))
    monkeypatch.delenv("TLB_OUT", raising=False)
    one_line(
        capsys,
        cli.main(["validate", str(config)]),
        "results_dir: $TLB_OUT/res: environment variable $TLB_OUT is not set",
    )
    assert not (config.parent / "$TLB_OUT").exists()  # no folder literally named $TLB_OUT
    monkeypatch.setenv("TLB_OUT", str(tmp_path / "scratch"))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    assert list((tmp_path / "scratch" / "res" / "tiny").iterdir())
