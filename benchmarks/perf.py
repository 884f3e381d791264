"""tlbench performance harness: every figure is a ratio of two measurements taken in one run, on one machine.

    python benchmarks/perf.py                 # EfficientNet-Lite0 on MNIST digits (needs tlbench-offline); ~12 min on 2 CPU cores
    python benchmarks/perf.py --quick         # a tiny timm model on synthetic images, under a minute (the test suite runs this)
    python benchmarks/perf.py --device cuda   # any training.device value

Measures
  engine overhead   training images/s of tlbench's engine / a minimal hand-written PyTorch loop
                    (same model, batches, data in memory, device, precision); goal >= 0.95
  linear probe      wall clock of E epochs without the feature cache / with it (cold: the trial
                    extracts the features itself; warm: an earlier trial did); goal >= 0.8 x E
  fine-tune         the same with half of the groups frozen; reported
  search            epochs spent until a trial is within 0.5 points of the best validation accuracy
                    found, without the pruner / with it, same benchmark and seeds; goal >= 2

Prints a table and writes JSON (``--out``, default results/perf.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; fail fast if something tries

import optuna  # noqa: E402
import torch  # noqa: E402
from throughput import plain_step, sync  # noqa: E402  (this folder is on sys.path when run as a script)
from torch import nn  # noqa: E402

from tlbench import benchmark
from tlbench.config import parse_config  # noqa: E402
from tlbench.engine import basics, cost, features, train
from tlbench.host import plugins  # noqa: E402
from tlbench.host.progress import Progress  # noqa: E402
from tlbench.search import calls, planning, preflight, studies
from tlbench.search.trial import TrialResources  # noqa: E402
from tlbench.types import Phase  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    """What the harness trains: one backbone and dataset for the timings, two backbones for the search."""

    backbone: dict  # a benchmarks.yaml backbone entry
    search_backbones: list[dict]  # backbone entries the search picks from
    dataset: dict  # a benchmarks.yaml dataset entry
    resolution: int  # input side in pixels
    batch_size: int
    overhead_images: int  # training images for the engine-overhead measurement
    overhead_epochs: int
    probe_epochs: int  # E of the linear-probe goal
    finetune_epochs: int
    search_trials: int  # per study
    search_epochs: int  # linear-probe epochs per search trial
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # benchmark seeds of the search comparison
    repeats: int = 5  # timings alternate this many times; the fastest of each side is compared


FULL = Setting(
    backbone={"name": "efficientnet_lite0"},
    search_backbones=[{"name": "efficientnet_lite0"}, {"name": "efficientnet_lite1"}],
    dataset={"name": "mnist5k", "train_samples": 1000, "val_samples": 200, "test_samples": 200},
    resolution=64,
    batch_size=32,
    overhead_images=256,
    overhead_epochs=1,
    probe_epochs=10,
    finetune_epochs=3,
    search_trials=24,
    search_epochs=10,
)
QUICK = Setting(
    backbone={"name": "timm:test_efficientnet", "pretrained": False},
    search_backbones=[
        {"name": "timm:test_efficientnet", "pretrained": False},
        {"name": "timm:test_resnet", "pretrained": False},
    ],
    dataset={
        "name": "synthetic",
        "classes": 4,
        "size": 16,
        "train_per_class": 24,
        "val_per_class": 8,
        "test_per_class": 8,
    },
    resolution=32,
    batch_size=16,
    overhead_images=96,
    overhead_epochs=2,
    probe_epochs=10,
    finetune_epochs=2,
    search_trials=8,
    search_epochs=4,
    seeds=(0,),
    repeats=1,
)


@dataclass
class Measure:
    name: str
    numerator: str  # what was measured, with its value
    denominator: str
    ratio: float | None
    goal: str = ""
    detail: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- setup


def make_plan(s: Setting, device: str, **overrides):
    data = {
        "name": "perf",
        "seed": 0,
        "datasets": [s.dataset],
        "backbones": [s.backbone],
        "strategies": [{"name": "linear_probe"}],
        "training": {"batch_size": s.batch_size, "resolution": s.resolution, "device": device},
    } | overrides
    bench = parse_config(data, "perf harness")
    return planning.make_plan(bench, plugins.collect(plugins.make_plugin_manager()), ROOT)


def settings(
    s: Setting, device: torch.device, cache: features.FeatureCache | None, seed: int = 0
) -> basics.TrainSettings:
    return basics.TrainSettings(
        batch_size=s.batch_size, weight_decay=0.0, augment=False, size=s.resolution, device=device, seed=seed,
        cache=cache, data_key="perf",
    )  # fmt: skip


def build(plan, splits):
    torch.manual_seed(0)
    return calls.build_backbone(next(iter(plan.backbones.values())), len(splits.classes))


def timed_fit(plan, splits, phases, st: basics.TrainSettings) -> tuple[float, basics.FitResult]:
    built = build(plan, splits)
    start = time.perf_counter()
    result = train.fit(built, splits, phases, st)
    return time.perf_counter() - start, result


# --------------------------------------------------------------------------- engine overhead


def hand_loop_ips(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, s: Setting, device, epochs: int) -> float:
    """Images/s of the plainest training loop: data in memory, AdamW, AMP as the engine picks it."""
    dtype = basics.autocast_dtype(device)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(0)
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_all), generator=generator).split(s.batch_size):
            x = x_all[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            plain_step(model, x, y_all[idx].to(device, non_blocking=True), optimizer, scaler, dtype)
    sync(device)
    return epochs * len(x_all) / (time.perf_counter() - start)


def engine_overhead(s: Setting, device: torch.device, say) -> Measure:
    """Both sides train a freshly built model on the same in-memory tensors, alternately,
    ``repeats`` times; the best of each is compared (the least disturbed by other load)."""
    plan = make_plan(s, str(device), datasets=[s.dataset | _cap(s.dataset, s.overhead_images)])
    splits = preflight.preflight(plan)[plan.datasets[0][0].key]
    cache = features.FeatureCache()
    phases = [Phase("all", s.overhead_epochs, 0, 1e-3, 1e-3)]
    train.fit(build(plan, splits), splits, phases, settings(s, device, cache))  # warm-up; fills the cache
    (cached,) = cache._entries.values()
    x_all, y_all = cached.splits["train"], torch.tensor(splits.train.labels)
    hand_loop_ips(build(plan, splits).model, x_all, y_all, s, device, 1)  # warm-up
    engine, hand = [], []
    for r in range(s.repeats):
        for side in ("engine", "hand") if r % 2 == 0 else ("hand", "engine"):  # neither always goes first
            if side == "engine":
                result = train.fit(build(plan, splits), splits, phases, settings(s, device, cache))
                assert result.feature_cache == "all: memory at input", result.feature_cache  # data in memory too
                engine.append(s.overhead_epochs * len(x_all) / result.train_seconds)
            else:
                hand.append(hand_loop_ips(build(plan, splits).model, x_all, y_all, s, device, s.overhead_epochs))
        say(f"  engine overhead, repeat {r + 1}: engine {engine[-1]:.1f} img/s, hand loop {hand[-1]:.1f} img/s")
    e, h = max(engine), max(hand)
    return Measure(
        "engine overhead (train img/s, best of each)", f"engine {e:.1f}", f"hand loop {h:.1f}", e / h, ">= 0.95",
        {"engine_ips": engine, "hand_ips": hand, "images": len(x_all), "epochs": s.overhead_epochs,
         "median_ratio": statistics.median(engine) / statistics.median(hand)},
    )  # fmt: skip


def _cap(dataset: dict, n: int) -> dict:
    return {"train_samples": n} if dataset["name"] != "synthetic" else {}


# --------------------------------------------------------------------------- cache speed-ups


def cache_speedup(s: Setting, device: torch.device, kind: str, say) -> list[Measure]:
    """Wall clock of one trial's fit without the cache, with an empty cache (the trial extracts),
    and with a filled one (an earlier trial did); alternated, the fastest of each kept."""
    images = s.overhead_images * 2 if kind == "finetune" else None  # fine-tuning is slow: fewer images
    plan = make_plan(s, str(device), datasets=[s.dataset | (_cap(s.dataset, images) if images else {})])
    splits = preflight.preflight(plan)[plan.datasets[0][0].key]
    n = len(build(plan, splits).groups)
    if kind == "probe":
        epochs, phases = s.probe_epochs, [Phase("head", s.probe_epochs, n, 0.0, 0.02)]
    else:
        epochs, phases = s.finetune_epochs, [Phase("finetune", s.finetune_epochs, n // 2, 1e-3, 1e-2)]
    times: dict[str, list[float]] = {"uncached": [], "cold": [], "warm": []}
    results: dict[str, basics.FitResult] = {}
    for r in range(min(3, s.repeats)):
        cache = features.FeatureCache()
        order = [("uncached", None), ("cold", cache), ("warm", cache)]
        for name, c in order if r % 2 == 0 else [order[1], order[2], order[0]]:  # uncached not always first
            seconds, result = timed_fit(plan, splits, phases, settings(s, device, c))
            times[name].append(seconds)
            results[name] = result
        say(
            f"  {kind}: "
            + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
            + f" ({results['cold'].feature_cache})"
        )
    a, b, c = results["uncached"], results["cold"], results["warm"]
    same = a.val_curve == b.val_curve == c.val_curve and a.test_correct == b.test_correct
    uncached, cold, warm = (min(times[k]) for k in ("uncached", "cold", "warm"))
    if kind == "probe":
        label, goal = f"linear probe, E={epochs}", f">= {0.8 * epochs:g}"
    else:
        label, goal = f"fine-tune, {phases[0].frozen_groups}/{n} groups frozen, E={epochs}", "reported"
    detail = {"seconds": times, "cache": b.feature_cache, "same_accuracy": same,
              "train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}  # fmt: skip
    return [
        Measure(
            f"{label}: cache cold", f"uncached {uncached:.1f} s", f"cached {cold:.1f} s", uncached / cold, goal, detail
        ),
        Measure(
            f"{label}: cache warm", f"uncached {uncached:.1f} s", f"cached {warm:.1f} s", uncached / warm, "", detail
        ),
    ]


# --------------------------------------------------------------------------- search efficiency


def epochs_to_target(trials: list[optuna.trial.FrozenTrial], target: float) -> int | None:
    """Epochs spent, in trial order, until a finished trial reaches ``target`` validation accuracy."""
    spent = 0
    for t in sorted(trials, key=lambda t: t.number):
        spent += len(t.intermediate_values)
        if t.state == optuna.trial.TrialState.COMPLETE and t.value >= target:
            return spent
    return None


PRUNERS = ("median", "asha")  # each compared with pruner: none (both within each strategy, the default)


def search_efficiency(s: Setting, device: torch.device, say) -> list[Measure]:
    """Per seed, one study per pruner setting on the same benchmark; the target is within
    0.5 points of the best validation accuracy any of them found."""
    per_seed = []
    for seed in s.seeds:
        by_pruner, shared = {}, None
        for pruner in ("none", *PRUNERS):
            plan = make_plan(
                s, str(device), seed=seed, backbones=s.search_backbones,
                strategies=[{"name": "linear_probe", "epochs": s.search_epochs, "lr_head": [1e-5, 1.0]}],
                search={"n_trials": s.search_trials, "startup_trials": 4, "warmup_epochs": 1, "pruner": pruner},
            )  # fmt: skip
            splits = preflight.preflight(plan)
            shared = shared or TrialResources(plan, splits)  # one feature cache for all studies of a seed
            storage = optuna.storages.InMemoryStorage()
            benchmark.run_studies(plan, splits, storage, Progress(), resources=shared)
            name = studies.study_name(plan.bench, plan.datasets[0][0].key)
            by_pruner[pruner] = optuna.load_study(study_name=name, storage=storage).trials
        best = max(t.value for ts in by_pruner.values() for t in ts if t.state.name == "COMPLETE")
        spent = {k: epochs_to_target(v, best - 0.005) for k, v in by_pruner.items()}
        total = {k: sum(len(t.intermediate_values) for t in v) for k, v in by_pruner.items()}
        found = {k: max(t.value for t in v if t.state.name == "COMPLETE") for k, v in by_pruner.items()}
        per_seed.append(
            {"seed": seed, "best_val": best, "best_found": found, "epochs_to_target": spent, "total_epochs": total}
        )
        say(f"  search seed {seed}: best val {best:.3f}; epochs to within 0.5 points: {spent}; all epochs: {total}")
    measures = []
    for pruner in PRUNERS:
        both = [
            r
            for r in per_seed
            if r["epochs_to_target"][pruner] is not None and r["epochs_to_target"]["none"] is not None
        ]
        without = sum(r["epochs_to_target"]["none"] for r in both)
        with_ = sum(r["epochs_to_target"][pruner] for r in both)
        missed = len(per_seed) - len(both)
        note = f", {missed} seed(s) never reached it" if missed else ""
        measures.append(Measure(
            f"search ({len(s.seeds)} seeds x {s.search_trials} trials): epochs to within 0.5 pt of best{note}",
            f"no pruner {without}", f"{pruner} {with_}", without / with_ if with_ else None, ">= 2", {"seeds": per_seed},
        ))  # fmt: skip
    return measures


# --------------------------------------------------------------------------- main


def machine(device: torch.device) -> dict:
    return {
        "device": cost.device_name(device),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "precision": basics.precision_name(basics.autocast_dtype(device)),
        "platform": platform.platform(),
    }


def render(measures: list[Measure], info: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tlbench performance · {info['device']} · torch {info['torch']} · {info['precision']}")
    for column in ("measure", "numerator", "denominator", "ratio", "goal"):
        table.add_column(column, justify="right" if column == "ratio" else "left")
    for m in measures:
        table.add_row(m.name, m.numerator, m.denominator, "n/a" if m.ratio is None else f"{m.ratio:.2f}", m.goal)
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and data: seconds, for the test suite")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "perf.json", help="where the JSON goes")
    parser.add_argument(
        "--only", choices=["overhead", "probe", "finetune", "search"], action="append", help="run some measures"
    )
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    device = basics.pick_device(args.device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    start = time.perf_counter()
    measures: list[Measure] = []
    only = set(args.only or ["overhead", "probe", "finetune", "search"])
    if "overhead" in only:
        measures.append(engine_overhead(s, device, say))
    if "probe" in only:
        measures += cache_speedup(s, device, "probe", say)
    if "finetune" in only:
        measures += cache_speedup(s, device, "finetune", say)
    if "search" in only:
        measures += search_efficiency(s, device, say)
    info = machine(device) | {"mode": "quick" if args.quick else "full", "seconds": time.perf_counter() - start}
    print(render(measures, info))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "setting": asdict(s), "measures": [asdict(m) for m in measures]}
    args.out.write_text(json.dumps(report, indent=2, default=str))
    say(f"wrote {args.out} ({info['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
