"""How tlbench's own costs grow with a run: no training, synthetic trials.

1. **Added per trial** at 100 / 1,000 / 5,000 / 20,000 finished trials in the study
   (SQLite, as a run folder has): the time of one more trial's bookkeeping as a run
   does it, the sampler's draw (tlbench's default local sampler wrapped in the screen-aware one),
   a pruning decision after every one of 10 epochs (the median rule within the
   trial's strategy), the trial record written, the result told; the median of 20
   trials. Optuna's own share is measured beside it: the same trial with Optuna's TPE
   and MedianPruner unwrapped; and the opt-in ``search.local_step: model`` (a Gaussian
   process fitted to at most 256 of the study's trials) beside the default.
2. **Reading a run back**: a real tiny run's folder with N synthetic finished trials
   added to its study (copies of its trial's record with other parameters and values);
   ``tlbench report``, ``export``, ``plot`` and ``compare`` each as a fresh process:
   wall-clock and peak memory (the child's maximum resident set).
3. **Workers on one storage**: 1 / 4 / 16 processes with a no-op objective on one
   study of enqueued trials (as a run's probes, recipes and portfolio are), on SQLite
   and on PostgreSQL (``--postgres URL``, or TLBENCH_TEST_POSTGRES as .ci/postgres.sh
   exports it; skipped without one): trials per second, and trials run more than once.

    python benchmarks/scale.py                         # ~15 minutes on 2 cores
    python benchmarks/scale.py --sizes 100 1000 --workers 1 4 --quick

Writes ``results/scale-bench.json`` in the shape issue 23 asks for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parent.parent
BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite0-scratch"]
STRATEGIES = {
    "linear_probe": {"lr_head": (1e-4, 1.0)},
    "finetune": {"freeze": (0.0, 1.0), "lr_backbone": (1e-5, 1e-1), "lr_head": (1e-4, 1.0)},
}
EPOCHS = 10
MEASURED_TRIALS = 20


def distributions() -> dict[str, optuna.distributions.BaseDistribution]:
    out = {
        "backbone": optuna.distributions.CategoricalDistribution(BACKBONES),
        "strategy": optuna.distributions.CategoricalDistribution(list(STRATEGIES)),
    }
    for strategy, params in STRATEGIES.items():
        for name, (lo, hi) in params.items():
            out[f"{strategy}.{name}"] = optuna.distributions.FloatDistribution(lo, hi, log=name.startswith("lr"))
    return out


def synthetic_trials(n: int, seed: int, attrs: dict | None = None) -> list[optuna.trial.FrozenTrial]:
    """``n`` finished trials over the space: a curve rising to a value that depends on the
    parameters, 1 in 3 pruned early; ``attrs``: a real trial's record to copy."""
    from tlbench.store.record import TrialRecord

    rng, dists, out = random.Random(seed), distributions(), []
    for _ in range(n):
        strategy = rng.choice(list(STRATEGIES))
        params = {"backbone": rng.choice(BACKBONES), "strategy": strategy}
        for name, (lo, hi) in STRATEGIES[strategy].items():
            x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if name.startswith("lr") else rng.uniform(lo, hi)
            params[f"{strategy}.{name}"] = x
        final = rng.uniform(0.3, 0.98)
        pruned = rng.random() < 1 / 3
        epochs = rng.randint(2, 5) if pruned else EPOCHS
        curve = [final * (1 - 0.5 ** (e + 1)) for e in range(epochs)]
        base = TrialRecord.from_trial(types.SimpleNamespace(user_attrs=attrs or {}))
        test = max(0.0, curve[-1] - 0.02) if not pruned and attrs else base.test_accuracy
        record = dataclasses.replace(base, val_curve=curve, test_accuracy=test).attrs()
        out.append(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=None if pruned else curve[-1],
                intermediate_values={e + 1: v for e, v in enumerate(curve)},
                user_attrs=record,
                state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
            )
        )
    return out


def add_trials(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], batch: int = 500) -> None:
    for i in range(0, len(trials), batch):
        study.add_trials(trials[i : i + batch])


DESCRIBED = dict(  # what tlbench stores when a trial starts (trial.py's _described)
    params={"lr_head": 0.01}, phases=[{"name": "all", "epochs": EPOCHS}], n_groups=17, pretrained=True,
    modality="image", resolution=64, seed=0, forward_gflops=0.06, total_params=3_380_000,
)  # fmt: skip
MEASURED = dict(  # what it stores when the trial ends (trial.py's _measured)
    throughput=1000.0, latency_ms=30.0, test_accuracy=0.9, test_correct="10" * 500, train_seconds=10.0,
    train_gflops=500.0, trainable_params=3_380_000, peak_memory_mb=1400.0, memory_kind="process_peak_rss",
    device="cpu", device_index=0, precision="fp32",
)  # fmt: skip


def one_trial(study: optuna.Study, rng: random.Random, record: bool = True) -> float:
    """One trial's bookkeeping as tlbench's Objective does it (``record``: the trial record
    written as trial.py writes it: host and worker and what it is when it starts, its
    spend when it is pruned, its measurements when it ends; without: Optuna's report,
    prune and tell only); seconds."""
    from tlbench.store.record import WORKER, TrialRecord

    start = time.perf_counter()
    trial = study.ask()
    if record:
        TrialRecord(host="host", worker=WORKER).write(trial, "host", "worker", "version")
    strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    trial.suggest_categorical("backbone", BACKBONES)
    for name, (lo, hi) in STRATEGIES[strategy].items():
        trial.suggest_float(f"{strategy}.{name}", lo, hi, log=name.startswith("lr"))
    if record:
        TrialRecord(**DESCRIBED).write(trial)
    final, curve = rng.uniform(0.3, 0.98), []
    for epoch in range(1, EPOCHS + 1):
        curve.append(final * (1 - 0.5**epoch))
        trial.report(curve[-1], epoch)
        if trial.should_prune():  # a stopped trial writes its spend once
            if record:
                TrialRecord(train_seconds=float(epoch), train_gflops=50.0 * epoch, elapsed_seconds=1.0 * epoch).write(
                    trial
                )
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            break
    else:
        if record:
            TrialRecord(val_curve=curve, elapsed_seconds=11.0, **MEASURED).write(trial)
        study.tell(trial, curve[-1])
    return time.perf_counter() - start


def overhead(sizes: list[int], tmp: Path) -> dict:
    """Milliseconds per trial at each study size: tlbench's whole bookkeeping (its sampler
    and pruner, the trial record), Optuna's TPE + median pruner unwrapped (no record), and
    the floor any Optuna study pays on this storage (random sampler, no pruner, no record:
    creating the trial, 10 reports, tell). What tlbench adds is the first minus the floor."""
    from tlbench.config import SearchConfig
    from tlbench.search import pruning, sampling
    from tlbench.store import storage

    out: dict[str, dict] = {"tlbench": {}, "tlbench_model": {}, "optuna": {}, "floor": {}, "added": {}}
    search = SearchConfig()
    modelled = SearchConfig(local_step="model")  # the opt-in model step: a fit of at most 256 trials
    for n in sizes:
        url = f"sqlite:///{tmp / f'overhead-{n}.db'}"
        store = storage.connect(url)
        base = synthetic_trials(n, seed=n)
        for kind in ("tlbench", "tlbench_model", "optuna", "floor"):
            if kind == "tlbench":
                sampler, pruner = sampling.make_sampler(search, 0), pruning.make_pruner(search)
            elif kind == "tlbench_model":
                sampler, pruner = sampling.make_sampler(modelled, 0), pruning.make_pruner(modelled)
            elif kind == "optuna":
                sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=search.startup_trials)
                pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
            else:
                sampler, pruner = optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
            study = optuna.create_study(
                storage=store, study_name=kind, direction="maximize", sampler=sampler, pruner=pruner
            )
            add_trials(study, base)
            rng = random.Random(0)
            times = [one_trial(study, rng, record=kind.startswith("tlbench")) for _ in range(MEASURED_TRIALS)]
            out[kind][str(n)] = round(1000 * statistics.median(times), 1)
            print(f"  {n:,} trials, {kind}: {out[kind][str(n)]} ms per trial (median of {MEASURED_TRIALS})", flush=True)
        out["added"][str(n)] = round(out["tlbench"][str(n)] - out["floor"][str(n)], 1)
        print(f"  {n:,} trials: tlbench adds {out['added'][str(n)]} ms per trial to the floor", flush=True)
    return out


def _tiny_run(tmp: Path) -> Path:
    """A real run folder (tiny random-init model, synthetic images): one trial."""
    config = {
        "name": "scale", "seed": 0, "results_dir": str(tmp / "results"),
        "datasets": [{"name": "synthetic", "classes": 3, "size": 16, "train_per_class": 8, "val_per_class": 4, "test_per_class": 20}],
        "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
        "strategies": [{"name": "finetune", "epochs": 1}],
        "search": {"n_trials": 1, "screen": False, "portfolio": 0},
        "training": {"batch_size": 8, "resolution": 32},
    }  # fmt: skip
    path = tmp / "scale.yaml"
    path.write_text(yaml.safe_dump(config))
    env = os.environ | {"TLBENCH_LOAD_PLUGINS": ""}
    subprocess.run(
        [sys.executable, "-m", "tlbench", "run", str(path), "--format", "csv"], check=True, env=env, capture_output=True
    )
    (folder,) = (tmp / "results" / "scale").iterdir()
    return folder


def _timed(args: list[str]) -> tuple[float, float]:
    """(seconds, peak MB of the child) of one command in a fresh process."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
        "assert r.returncode == 0, r.stderr[-2000:]; "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *args], check=True, capture_output=True, text=True)
    seconds, mb = out.stdout.split()
    return float(seconds), float(mb)


def readback(sizes: list[int], tmp: Path) -> dict:
    """report / export / plot / compare of a run with N trials: seconds and peak MB."""
    from tlbench.results import runfolder
    from tlbench.store import storage

    template = _tiny_run(tmp)
    meta = runfolder.read_meta(template)
    url = runfolder.storage_url(meta["storage"], template)
    (name,) = meta["studies"].values()
    first = optuna.load_study(study_name=name, storage=storage.connect(url)).trials[0]
    attrs = dict(first.user_attrs)
    out: dict[str, dict] = {"seconds": {}, "peak_mb": {}}
    for n in sizes:
        folder = tmp / f"run-{n}"
        shutil.copytree(template, folder)
        study = optuna.load_study(
            study_name=name, storage=storage.connect(runfolder.storage_url(meta["storage"], folder))
        )
        trials = synthetic_trials(n - 1, seed=n, attrs=attrs)
        for t in trials:  # the run's own space: one backbone and strategy
            t.params.update(backbone=first.params["backbone"], strategy=first.params["strategy"])
        add_trials(study, [_in_space(t, first) for t in trials])
        other = tmp / f"run-{n}-b"
        shutil.copytree(folder, other)
        cli = [sys.executable, "-m", "tlbench"]
        commands = {
            "report": [*cli, "report", str(folder), "--format", "csv"],
            "export": [*cli, "export", str(folder), "--out", str(tmp / f"export-{n}.json")],
            "plot": [*cli, "plot", str(folder)],
            "compare": [*cli, "compare", str(folder), str(other), "--format", "csv"],
        }
        for what, args in commands.items():
            seconds, mb = _timed(args)
            out["seconds"].setdefault(what, {})[str(n)] = round(seconds, 2)
            out["peak_mb"].setdefault(what, {})[str(n)] = round(mb)
            print(f"  {n:,} trials: {what} {seconds:.1f} s, {mb:,.0f} MB", flush=True)
        shutil.rmtree(other)
    return out


def _in_space(t: optuna.trial.FrozenTrial, like: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """A synthetic trial with the template trial's parameters and distributions (values varied)."""
    rng = random.Random(t.number if t.number is not None else id(t))
    params = {}
    for k, d in like.distributions.items():
        if isinstance(d, optuna.distributions.FloatDistribution):
            params[k] = (
                math.exp(rng.uniform(math.log(d.low), math.log(d.high))) if d.log else rng.uniform(d.low, d.high)
            )
        else:
            params[k] = like.params[k]
    return optuna.trial.create_trial(
        params=params, distributions=like.distributions, value=t.value, intermediate_values=t.intermediate_values,
        user_attrs=t.user_attrs, state=t.state,
    )  # fmt: skip


def _worker(url: str, name: str, total: int) -> None:
    from tlbench.store import storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=storage.connect(url), sampler=optuna.samplers.RandomSampler())

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_int("x", 0, 10**9)
        trial.set_user_attr("pid", os.getpid())
        return float(x)

    stop = optuna.study.MaxTrialsCallback(total, states=(optuna.trial.TrialState.COMPLETE,))
    study.optimize(objective, n_trials=total, callbacks=[stop])


def workers(counts: list[int], urls: dict[str, str], total: int) -> tuple[dict, int]:
    """Trials per second of N processes on one study of ``total`` enqueued trials; and how
    many enqueued trials ran more than once (none may)."""
    from tlbench.store import storage

    out: dict[str, dict] = {}
    duplicates = 0
    for kind, url in urls.items():
        for n in counts:
            name = f"workers-{kind}-{n}-{os.getpid()}"
            study = optuna.create_study(storage=storage.connect(url), study_name=name)
            for i in range(total):
                study.enqueue_trial({"x": i}, user_attrs={"enqueued": True})
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker, args=(url, name, total)) for _ in range(n)]
            start = time.perf_counter()
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            seconds = time.perf_counter() - start
            done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
            xs = [t.params["x"] for t in done if t.user_attrs.get("enqueued")]
            twice = len(xs) - len(set(xs))
            duplicates += twice
            out.setdefault(kind, {})[str(n)] = round(len(done) / seconds, 1)
            print(f"  {kind}, {n} workers: {len(done)} trials in {seconds:.1f} s ({len(done) / seconds:.1f}/s), "
                  f"{twice} enqueued trials run twice", flush=True)  # fmt: skip
    return out, duplicates


PARTS = ("overhead", "readback", "workers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000, 20000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--worker-trials", type=int, default=400, help="enqueued trials each worker test runs")
    parser.add_argument(
        "--postgres", default=os.environ.get("TLBENCH_TEST_POSTGRES"), help="a PostgreSQL URL to test on"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "scale-bench.json")
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="measure only this part (repeatable; default: all three)"
    )
    args = parser.parse_args(argv)
    parts = args.only or PARTS
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    report: dict = {"machine": f"{os.cpu_count()} cores", "optuna": optuna.__version__, "parts": list(parts)}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "overhead" in parts:
            print("added per trial (sample, 10 pruning decisions, record, tell):", flush=True)
            per_trial = overhead(args.sizes, tmp)
            report["overhead_ms_per_trial"] = per_trial["added"]  # tlbench's bookkeeping beyond the floor
            report["tlbench_ms_per_trial"] = per_trial["tlbench"]  # all of it, the floor included
            report["tlbench_model_ms_per_trial"] = per_trial["tlbench_model"]  # search.local_step: model
            report["optuna_ms_per_trial"] = per_trial["optuna"]
            report["floor_ms_per_trial"] = per_trial["floor"]
        if "readback" in parts:
            print("reading a run back:", flush=True)
            back = readback(args.sizes, tmp)
            report["report_seconds"] = back["seconds"]["report"]
            report["report_peak_mb"] = back["peak_mb"]["report"]
            report["readback_seconds"], report["readback_peak_mb"] = back["seconds"], back["peak_mb"]
        if "workers" in parts:
            print("workers on one storage (no-op objective):", flush=True)
            urls = {"sqlite": f"sqlite:///{tmp / 'workers.db'}"}
            if args.postgres:
                urls["postgresql"] = args.postgres
            report["workers_trials_per_s"], report["duplicates"] = workers(args.workers, urls, args.worker_trials)
            if not args.postgres:
                report["workers_trials_per_s"]["postgresql"] = None
                print("  postgresql: skipped (no --postgres URL; .ci/postgres.sh starts a server)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
