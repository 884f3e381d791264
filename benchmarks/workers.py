"""Do local workers share the machine? Trials per hour of ``tlbench run --workers N`` for
N = 1, 2, 4 on one config (issue 23's: EfficientNet-Lite0 fine-tunes, 8 enqueued trials,
2 epochs, 1,000 mnist5k images at 64 px, no screen, no pruning), each in a fresh run
folder, timed as a whole command, one after another. Ratios are within this one run.

    python benchmarks/workers.py               # needs tlbench-offline; a few minutes on 2 cores
    python benchmarks/workers.py --workers 1 2 --trials 4

Writes ``results/workers-bench.json``: {"cores": C, "runs": {N: {"seconds": s,
"trials_per_hour": t, "threads_per_worker": k}}, "ratio_vs_one": {N: t_N / t_1}}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def config(trials: int) -> dict:
    lrs = [0.0003, 0.001, 0.003, 0.01, 0.0005, 0.002, 0.005, 0.0002][:trials]
    enqueue = [
        {"backbone": "efficientnet_lite0", "strategy": "finetune", "params": {"freeze": 0.0, "lr_backbone": lr}}
        for lr in lrs
    ]
    return {
        "name": "workers",
        "seed": 0,
        "results_dir": "results",
        "datasets": [{"name": "mnist5k", "train_samples": 1000, "val_samples": 300}],
        "backbones": [{"name": "efficientnet_lite0"}],
        "strategies": [{"name": "finetune", "epochs": 2, "lr_head": 0.01}],
        "search": {"n_trials": trials, "pruner": "none", "screen": False, "portfolio": 0, "enqueue": enqueue},
        "training": {"batch_size": 32, "resolution": 64},
    }


def main(argv: list[str] | None = None) -> int:
    from tlbench.base import threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "workers-bench.json")
    args = parser.parse_args(argv)
    report = {"cores": threads.cores(), "trials": args.trials, "runs": {}, "ratio_vs_one": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            path = Path(tmp) / f"w{n}.yaml"
            path.write_text(yaml.safe_dump(config(args.trials) | {"run": f"w{n}"}))
            start = time.perf_counter()
            command = [sys.executable, "-m", "tlbench", "run", str(path), "--workers", str(n), "--format", "csv"]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            per_worker = os.environ.get("OMP_NUM_THREADS") or str(threads.share(n))
            report["runs"][str(n)] = {"seconds": round(seconds, 1), "trials_per_hour": round(args.trials * 3600 / seconds, 1),
                                      "threads_per_worker": int(per_worker)}  # fmt: skip
            print(
                f"--workers {n}: {seconds:.1f} s, {args.trials * 3600 / seconds:.0f} trials/hour, {per_worker} threads each",
                flush=True,
            )
    base = report["runs"].get("1", {}).get("trials_per_hour")
    if base:
        report["ratio_vs_one"] = {n: round(r["trials_per_hour"] / base, 2) for n, r in report["runs"].items()}
        print(
            "throughput against one worker: " + ", ".join(f"{n}: {v:.2f}x" for n, v in report["ratio_vs_one"].items())
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
