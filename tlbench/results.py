"""The results folder: what a run writes, atomically, and how it is read back.

``results/<benchmark>/<run>/`` holds ``config.yaml`` (the resolved config),
``run.json`` (storage and study names), ``environment.json``, ``study.db``
(the default Optuna storage), ``trials.csv`` and ``summary.csv``/``summary.json``.
Tables are always rebuilt from the Optuna storage, the single source of truth.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tlbench.config import Benchmark
from tlbench.types import UserError

DEFAULT_STORAGE = "study.db"
FORMAT = 1  # run.json's layout; a reader refuses a newer one in one line


def _read_umask() -> int:
    """The process's umask, without changing it (os.umask can only be read by setting it,
    which races other threads); Linux reports it in /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_read_umask())  # mkstemp makes 0600; a results file is as readable as any other the user makes
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(folder: Path):
    """Hold a run folder for this process: a second ``tlbench run`` on it is refused.

    An advisory lock (flock): the kernel drops it when the process dies, even by
    SIGKILL, so a killed run never leaves the folder locked. Yields the lock file
    (None without fcntl, on Windows, where nothing is locked).
    """
    try:
        import fcntl
    except ImportError:
        yield None
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UserError(f"results_dir: cannot create {folder} ({exc.strerror}); set results_dir to a writable folder") from exc
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(
                f"{folder}: another tlbench run is using this run folder ({holder}); "
                "wait for it to finish, or give this one another --run name"
            ) from None
        try:
            yield f  # a child given this file's descriptor holds the lock too, until it exits
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim(lock) -> None:
    """Write who holds the folder into its lock file, once the run has been accepted
    (a refused command changes nothing in the folder)."""
    if lock is not None:
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {platform.node()}")
        lock.flush()


def run_dir(bench: Benchmark, base_dir: Path) -> Path:
    root = Path(bench.results_dir).expanduser()
    return (root if root.is_absolute() else base_dir / root) / bench.name / bench.run_name


def storage_url(configured: str | None, folder: Path) -> str:
    """The configured Optuna storage URL, or the run folder's own SQLite file."""
    return configured or f"sqlite:///{(folder / DEFAULT_STORAGE).resolve()}"


def resolve_storage(url: str | None, base: Path, field: str = "search.storage") -> str | None:
    """A storage URL with a relative SQLite path made absolute against ``base`` (the
    config's folder, or the working directory for ``--storage``): the same file, from
    wherever tlbench is started. In-memory SQLite keeps nothing and is refused."""
    if url is None or not url.startswith("sqlite"):
        return url
    scheme, sep, path = url.partition(":///")
    if not sep or path in ("", ":memory:") or path.startswith("file::memory:"):
        raise UserError(f"{field}: {url} is an in-memory database that keeps nothing; give a file, e.g. sqlite:///study.db")
    if path.startswith("file:"):  # SQLite URI form: leave it as the user wrote it
        return url
    if Path(path).is_absolute():
        return url
    return f"{scheme}:///{(base / path).resolve()}"


def read_only_url(url: str, folder: Path) -> str:
    """How readers (report, plot, compare) open a run's storage: a SQLite file read-only
    and only if it is there (opening a missing one would create an empty run)."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:///file:"):
        return url
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file():
        raise UserError(
            f"{folder}: its trials database {path} is missing; restore it (the run's trials live there) "
            "or run the benchmark again"
        )
    return f"sqlite:///file:{path}?mode=ro&uri=true"


def save_metadata(
    folder: Path,
    bench: Benchmark,
    base_dir: Path,
    studies: dict[str, str],
    repeat_studies: dict[str, str],
    device: str,
    keep: bool = False,
) -> None:
    """Write config.yaml, run.json and environment.json for a run that is starting
    (``keep``: only if the folder has no run.json yet, for a worker joining a run)."""
    if keep and (folder / "run.json").is_file():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"results_dir: cannot create {folder} ({exc.strerror}); set results_dir to a writable folder") from exc
    write_atomic(folder / "config.yaml", yaml.safe_dump(bench.model_dump(mode="json"), sort_keys=False))
    meta = {
        "format": FORMAT,
        "benchmark": bench.name,
        "run": bench.run_name,
        "fingerprint": bench.fingerprint(),
        "storage": bench.search.storage,  # None: study.db in this folder; else an absolute URL
        "studies": studies,  # dataset key -> Optuna study name of the search
        "repeat_studies": repeat_studies,  # dataset key -> study of the seed repeats
        "config_dir": str(base_dir),
    }
    write_atomic(folder / "run.json", json.dumps(meta, indent=2))
    write_atomic(folder / "environment.json", json.dumps(environment(base_dir, device), indent=2))


def environment(base_dir: Path, device: str) -> dict[str, Any]:
    import optuna
    import timm
    import torch
    import torchvision

    from tlbench import __version__

    return {
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "tlbench": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "optuna": optuna.__version__,
        "device": device,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": _git_commit(base_dir),
    }


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class Run:
    path: Path  # the run folder
    meta: dict[str, Any]  # run.json
    environment: dict[str, Any]  # environment.json
    config: dict[str, Any]  # config.yaml: the resolved benchmark
    trials: pd.DataFrame  # one row per search trial, all datasets
    repeats: pd.DataFrame  # one row per seed repeat of a selected trial
    summary: pd.DataFrame  # best trial per dataset x backbone x strategy

    @property
    def ranking(self) -> pd.DataFrame:
        return ranking_frame(self.summary, self.trials)


def load_run(folder: Path) -> Run:
    """Read a run folder; the tables come from its Optuna storage, opened read-only."""
    from tlbench import search

    meta = read_meta(folder)
    env = _read(folder / "environment.json", folder, json.loads, {})
    config = _read(folder / "config.yaml", folder, yaml.safe_load, {})
    storage = search.connect(read_only_url(storage_url(meta["storage"], folder), folder))
    trials = trials_frame(storage, meta["studies"])
    repeats = trials_frame(storage, meta.get("repeat_studies", {}))
    return Run(folder, meta, env, config, trials, repeats, summary_frame(trials, repeats))


def read_meta(folder: Path) -> dict[str, Any]:
    """run.json, checked: a folder that is not a run, or whose run.json is damaged or
    written by a newer tlbench, is one line."""
    try:
        is_run = (folder / "run.json").is_file()
    except OSError as exc:
        raise UserError(f"{folder}: cannot read the folder ({exc.strerror}); check its permissions") from exc
    if not is_run:
        raise UserError(f"{folder}: not a tlbench run folder (no run.json); pass results/<benchmark>/<run>")
    meta = _read(folder / "run.json", folder, json.loads, None)
    shape = {"benchmark": str, "run": str, "fingerprint": str, "studies": dict}
    bad = [k for k, kind in shape.items() if not isinstance(meta.get(k) if isinstance(meta, dict) else None, kind)]
    if bad or not isinstance(meta.get("storage"), (str, type(None))):
        raise UserError(
            f"{folder / 'run.json'}: damaged (missing or wrong {', '.join(bad) or 'storage'}); "
            "restore it, or delete it and run the same config again to rewrite it (the trials are in the storage)"
        )
    if int(meta.get("format", 1)) > FORMAT:
        raise UserError(f"{folder}: written by a newer tlbench (run format {meta['format']}); upgrade tlbench to read it")
    return meta


def _read(file: Path, folder: Path, parse, missing):
    """A metadata file of a run folder, parsed; damage and permissions are one line."""
    try:
        if not file.is_file():
            return missing
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({exc.strerror}); check the run folder's permissions") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: damaged (not UTF-8 text); restore it from a copy of the run folder") from exc
    try:
        return parse(text)
    except (ValueError, yaml.YAMLError) as exc:
        problem = str(exc).strip().splitlines()[0][:120]
        raise UserError(f"{file}: damaged ({problem}); restore it from a copy of the run folder") from exc


def check_resumable(folder: Path, bench: Benchmark) -> None:
    """Before ``run`` touches an existing run folder: its run.json is readable and made
    by the same config on the same storage (else one line, and nothing is changed)."""
    try:
        exists = (folder / "run.json").exists()
    except OSError as exc:
        raise UserError(f"{folder}: cannot read the run folder ({exc.strerror}); check its permissions") from exc
    if not exists:
        return
    meta = read_meta(folder)
    if meta["fingerprint"] != bench.fingerprint():
        raise UserError(
            f"{folder} holds a run of a different config (fingerprint {meta['fingerprint']}, now {bench.fingerprint()}); "
            "set another 'run:' name (or remove it to get one from the config) to start a new run"
        )
    if meta["storage"] != bench.search.storage:
        was = meta["storage"] or f"{DEFAULT_STORAGE} in the run folder"
        now = bench.search.storage or f"{DEFAULT_STORAGE} in the run folder"
        raise UserError(
            f"{folder}: its trials are in {was}, not {now}; use the same storage to go on, or another --run name"
        )


def trials_frame(storage, studies: dict[str, str]) -> pd.DataFrame:
    """One row per trial of the named studies (dataset key -> study name) in ``storage``
    (a URL or an Optuna storage)."""
    import optuna

    from tlbench import search

    rows = []
    for dataset, name in studies.items():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue  # not started yet
        lost, gave_up = search.lost_trials(study), search.gave_up(study)
        # surplus trials never ran: workers racing for a study's last trial (see search.Objective.surplus)
        for t in study.get_trials(deepcopy=False):
            if not t.user_attrs.get(search.SURPLUS):
                rows.append(_trial_row(dataset, t, lost) | {"gave_up": gave_up.get(t.number)})
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS + ["repeat_of", "test_correct"])


def out_of_retries(trials: pd.DataFrame) -> pd.DataFrame:
    """Interrupted trials whose configuration ran out of retries (``search.retries``)."""
    return trials[trials["gave_up"].notna()]


TRIAL_COLUMNS = [
    "dataset", "trial", "state", "backbone", "strategy", "val_accuracy", "test_accuracy", "config",
    "frozen_groups", "n_groups", "epochs", "total_params", "trainable_params", "forward_gflops",
    "train_gflops", "train_seconds", "throughput", "latency_ms", "peak_memory_mb", "memory_kind",
    "device", "precision", "resolution", "elapsed_seconds", "val_curve", "fail_reason", "params", "feature_cache",
    "retry_of", "host", "worker", "gave_up",
]  # fmt: skip
MEASURED = [  # trial user attributes copied as they are
    "total_params", "trainable_params", "forward_gflops", "train_gflops", "train_seconds", "throughput",
    "latency_ms", "peak_memory_mb", "memory_kind", "device", "precision", "resolution", "elapsed_seconds",
    "feature_cache", "retry_of", "host", "worker",
]  # fmt: skip


def _trial_row(dataset: str, t, lost: dict[int, str]) -> dict[str, Any]:
    a = t.user_attrs
    phases = a.get("phases", [])
    curve = a.get("val_curve") or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
    return {
        "dataset": dataset,
        "trial": t.number,
        "state": t.state.name,
        "backbone": t.params.get("backbone"),
        "strategy": t.params.get("strategy"),
        "val_accuracy": t.value if t.state.name == "COMPLETE" else (curve[-1] if curve else None),
        "test_accuracy": a.get("test_accuracy"),
        "config": describe_params(_searched(t.params), phases, a.get("n_groups")),
        "frozen_groups": phases[-1]["frozen_groups"] if phases else None,
        "n_groups": a.get("n_groups"),
        "epochs": sum(p["epochs"] for p in phases) if phases else None,
        **{k: a.get(k) for k in MEASURED},
        "val_curve": json.dumps(curve),
        "fail_reason": a.get("fail_reason") or lost.get(t.number),
        "params": json.dumps(a.get("params", {}), sort_keys=True),
        "repeat_of": a.get("repeat_of"),
        "test_correct": a.get("test_correct"),
    }


def _searched(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's sampled parameters without backbone/strategy and the strategy prefix."""
    return {k.partition(".")[2] or k: v for k, v in params.items() if k not in ("backbone", "strategy")}


def describe_params(params: dict[str, Any], phases: list[dict], n_groups: int | None) -> str:
    """A compact 'lr_head=0.012 freeze=0.5 (2/4 frozen)' string for tables."""
    parts = []
    for key, value in params.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        if key == "freeze" and phases and n_groups:
            text += f" ({phases[-1]['frozen_groups']}/{n_groups} frozen)"
        parts.append(f"{key}={text}")
    return " ".join(parts)


SUMMARY_COLUMNS = [
    "dataset", "backbone", "strategy", "trial", "trials", "val_accuracy", "test_accuracy",
    "repeats", "test_mean", "test_std", "ci_low", "ci_high", "config",
    "total_params", "trainable_params", "forward_gflops", "train_gflops", "train_seconds",
    "throughput", "latency_ms", "peak_memory_mb", "device", "pareto",
]  # fmt: skip


def summary_frame(trials: pd.DataFrame, repeats: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset x backbone x strategy, the trial with the best validation accuracy
    (ties: less training time, then the earlier trial), its test accuracy and costs,
    and test accuracy over its seed repeats: mean, std and a 95 % bootstrap interval
    (over the selected trial's own test results when there are no repeats)."""
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED", "FAIL"])]
    counts = finished.groupby(["dataset", "backbone", "strategy"]).size().rename("trials")
    done = trials[trials["state"] == "COMPLETE"].sort_values(
        ["val_accuracy", "train_seconds", "trial"], ascending=[False, True, True]
    )
    best = done.groupby(["dataset", "backbone", "strategy"], sort=False).head(1)
    best = best.join(counts, on=["dataset", "backbone", "strategy"])
    best = best.sort_values(["dataset", "test_accuracy"], ascending=[True, False]).reset_index(drop=True)
    best["pareto"] = pareto_mask(best)
    spread = [_spread(row, repeats) for _, row in best.iterrows()]
    best = pd.concat([best.reset_index(drop=True), pd.DataFrame(spread, columns=SPREAD)], axis=1)
    return best[SUMMARY_COLUMNS]


SPREAD = ["repeats", "test_mean", "test_std", "ci_low", "ci_high"]


def _spread(row, repeats: pd.DataFrame | None) -> list:
    """[repeats, mean, std, ci_low, ci_high] of test accuracy for a summary row."""
    from tlbench.stats import bootstrap_ci, decode

    runs = pd.DataFrame()
    if repeats is not None and not repeats.empty:
        mine = (repeats["dataset"] == row["dataset"]) & (repeats["repeat_of"] == row["trial"])
        runs = repeats[mine & (repeats["state"] == "COMPLETE")]
    if runs.empty:  # no repeats: the test examples are the only source of noise
        # runs made before per-example results were stored have no interval
        low, high = bootstrap_ci([decode(row["test_correct"])]) if isinstance(row["test_correct"], str) else (None, None)
        return [0, row["test_accuracy"], None, low, high]
    low, high = bootstrap_ci([decode(bits) for bits in runs["test_correct"]])
    std = float(runs["test_accuracy"].std(ddof=1)) if len(runs) > 1 else None
    return [len(runs), float(runs["test_accuracy"].mean()), std, low, high]


def pareto_mask(rows: pd.DataFrame) -> list[bool]:
    """True where no other row of the same dataset has test accuracy >= and training
    GFLOPs <= with one strictly better. A reading aid: it selects nothing."""
    out = []
    for _, row in rows.iterrows():
        same = rows[rows["dataset"] == row["dataset"]]
        dominated = (
            (same["test_accuracy"] >= row["test_accuracy"])
            & (same["train_gflops"] <= row["train_gflops"])
            & ((same["test_accuracy"] > row["test_accuracy"]) | (same["train_gflops"] < row["train_gflops"]))
        ).any()
        out.append(not dominated)
    return out


def ranking_frame(summary: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per backbone across datasets: its rank on each dataset (by the test accuracy of
    its best-by-validation strategy; 1 is best), mean rank, mean test accuracy, and the
    training compute of all its completed trials."""
    if summary.empty:
        return pd.DataFrame(columns=["backbone", "mean_rank", "mean_test", "datasets", "train_gflops", "train_seconds"])
    best = summary.sort_values(["val_accuracy", "train_seconds"], ascending=[False, True])
    best = best.drop_duplicates(["dataset", "backbone"]).copy()
    best["rank"] = best.groupby("dataset")["test_accuracy"].rank(ascending=False, method="min")
    table = best.groupby("backbone").agg(
        mean_rank=("rank", "mean"), mean_test=("test_accuracy", "mean"), datasets=("dataset", "nunique")
    )
    spent = trials[trials["state"] == "COMPLETE"].groupby("backbone")[["train_gflops", "train_seconds"]].sum()
    return table.join(spent).reset_index().sort_values(["mean_rank", "mean_test"], ascending=[True, False])


KEY = ["dataset", "backbone", "strategy"]
COMPARED = ["train_seconds", "train_gflops", "throughput", "peak_memory_mb"]  # costs compared as ratios
ENVIRONMENT_KEYS = ["device", "cuda", "torch", "torchvision", "timm", "optuna", "tlbench", "python"]


def compare_frame(runs: list[Run]) -> pd.DataFrame:
    """Summary rows of several runs aligned by dataset x backbone x strategy (a row
    missing from a run stays, with gaps); deltas are against the first run."""
    table = None
    for i, run in enumerate(runs):
        part = run.summary[KEY + ["test_accuracy", "test_mean", "ci_low", "ci_high"] + COMPARED].copy()
        part["test_accuracy"] = part["test_mean"].fillna(part["test_accuracy"])  # the repeats' mean when there are some
        part = part.drop(columns=["test_mean"]).rename(columns={"test_accuracy": "test"})
        part = part.rename(columns={c: f"{c}_{i}" for c in part.columns if c not in KEY})
        table = part if table is None else table.merge(part, on=KEY, how="outer")
    for i in range(1, len(runs)):
        table[f"d_test_{i}"] = table[f"test_{i}"] - table["test_0"]
        overlap = (table[f"ci_low_{i}"] <= table["ci_high_0"]) & (table["ci_low_0"] <= table[f"ci_high_{i}"])
        table[f"noise_{i}"] = overlap & table[f"d_test_{i}"].notna()
        for cost in COMPARED:
            table[f"d_{cost}_{i}"] = table[f"{cost}_{i}"] / table[f"{cost}_0"] - 1
    return table.sort_values(KEY).reset_index(drop=True)


def environment_flags(runs: list[Run]) -> list[str]:
    """One line per environment field that differs between runs (hardware, versions)."""
    flags = []
    for key in ENVIRONMENT_KEYS:
        values = [str(run.environment.get(key)) for run in runs]
        if len(set(values)) > 1:
            kind = "hardware" if key in ("device", "cuda") else "versions"
            flags.append(f"different {kind}: {key} = " + " vs ".join(values) + " (costs are not comparable as they are)")
    return flags


def write_tables(folder: Path, run: Run | None = None) -> Run:
    """(Re)write trials.csv, summary.csv and summary.json from the storage."""
    run = run or load_run(folder)
    everything = pd.concat([run.trials, run.repeats]) if not run.repeats.empty else run.trials
    write_atomic(folder / "trials.csv", everything.drop(columns=["test_correct"]).to_csv(index=False))
    write_atomic(folder / "summary.csv", run.summary.to_csv(index=False))
    write_atomic(folder / "summary.json", run.summary.to_json(orient="records", indent=2))
    return run
