"""The performance harness runs end to end in its quick mode; its ratios are printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_harness_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "perf.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "perf.py"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)  # the measured ratios, for whoever runs pytest -s
    report = json.loads(out.read_text())
    names = [m["name"] for m in report["measures"]]
    assert names[0].startswith("engine overhead") and names[-1].startswith("search (")
    assert any("linear probe" in n for n in names) and any("fine-tune" in n for n in names)
    for m in report["measures"]:
        assert m["numerator"] in proc.stdout
        if not m["name"].startswith("search"):
            assert m["ratio"] > 0
    assert all(m["detail"]["same_accuracy"] for m in report["measures"] if "cache" in m["name"])
    assert report["machine"]["device"].startswith("CPU")


def test_throughput_script_runs_on_cpu(tmp_path):
    """The timm-benchmark-style training throughput script (meant for a GPU) works end to end."""
    out = tmp_path / "throughput.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--models", "test_resnet",
         "--batch", "4", "--resolution", "64", "--warmup", "1", "--steps", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "test_resnet" and row["images_per_s"] > 0 and row["precision"] == "fp32"


def test_the_screening_script_prints_a_score_line_per_backbone(write_config):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import tiny_benchmark

    config = write_config(
        tiny_benchmark(
            backbones=[
                {"name": "timm:test_resnet", "pretrained": False},
                {"name": "timm:test_efficientnet", "pretrained": False},
            ]
        )
    )
    script = Path(__file__).parent.parent / "benchmarks" / "screen_scores.py"
    out = subprocess.run([sys.executable, str(script), str(config)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(": LogME")[0] for line in lines] == [
        "synthetic timm:test_resnet-scratch",
        "synthetic timm:test_efficientnet-scratch",
    ]
    assert all("LogME" in line and "kNN" in line and "ridge" in line for line in lines)


def test_the_search_benchmark_replays_an_exported_grid(tmp_path, write_config):
    """Record a (tiny, real) grid with tlbench run + export, replay the three methods on it."""
    from conftest import tiny_benchmark

    from tlbench import cli

    lrs = [0.003, 0.03, 0.3]
    strategies = [{"name": "linear_probe", "epochs": 2, "lr_head": {"choices": lrs}}]
    enqueue = [
        {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": lr}} for lr in lrs
    ]
    config = write_config(
        tiny_benchmark(run="grid", strategies=strategies, search={"n_trials": 3, "pruner": "none", "enqueue": enqueue})
    )
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    grid = tmp_path / "grid"
    grid.mkdir()  # export writes into a folder that exists
    assert cli.main(["export", str(config.parent / "results" / "tiny" / "grid"), "--out", str(grid / "tiny.json")]) == 0
    out = tmp_path / "search-bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search.py"), "--grid", str(grid), "--seeds", "3", "--out", str(out),
         "--plot", str(tmp_path / "plot.png")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    bench = json.loads(out.read_text())
    report = bench["datasets"]["synthetic"]
    named = {"uniform_random", "optuna_random", "tpe_median", "successive_halving", "asha", "hyperband", "opening",
             "opening_then_random", "screen_top1_default", "tlbench"}  # fmt: skip
    assert named <= set(report["methods"]) and report["trials"] == 3
    for method in report["methods"].values():
        assert {"median_compute_to_target", "never", "regret_auc", "regret_auc_ci", "reach", "keep"} <= set(method)
        assert len(method["compute_to_target"]) == 3 and 0 <= method["regret_auc"] <= 1
        assert method["regret_auc_ci"][0] <= method["regret_auc"] <= method["regret_auc_ci"][1]
    assert {"ratio_random", "ratio_tpe_median", "ratio_uniform_random", "ratio_opening_then_random"} <= set(report)
    assert bench["frozen_commit"] is None and "held_out" not in bench  # no held-out grid was judged
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_the_scale_benchmark_measures_tlbench_against_the_floor(tmp_path):
    """benchmarks/scale.py's per-trial part on a small study: it writes what tlbench adds
    (its whole cost minus the floor any Optuna study pays), the floor and Optuna's TPE."""
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--only", "overhead", "--sizes", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    report = json.loads(out.read_text())
    for key in ("overhead_ms_per_trial", "tlbench_ms_per_trial", "floor_ms_per_trial", "optuna_ms_per_trial"):
        assert set(report[key]) == {"20"} and report[key]["20"] is not None, key
    added = report["tlbench_ms_per_trial"]["20"] - report["floor_ms_per_trial"]["20"]
    assert abs(report["overhead_ms_per_trial"]["20"] - added) < 0.11  # both rounded to 0.1
