"""The results folder: what a run writes, atomically, and how it is read back.

``results/<benchmark>/<run>/`` holds ``config.yaml`` (the resolved config),
``run.json`` (storage and study names), ``environment.json``, ``study.db``
(the default Optuna storage), ``trials.csv`` and ``summary.csv``/``summary.json``.
Tables are always rebuilt from the Optuna storage, the single source of truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tlbench import __version__
from tlbench.config import Benchmark
from tlbench.results.tables import ranking_frame, screen_frame, summary_frame
from tlbench.results.trials import per_class, study_records, trials_frame  # noqa: F401  (per_class: its home was here)
from tlbench.store import storage
from tlbench.store.storage import recover_sqlite, sqlite_path, sqlite_url
from tlbench.types import UserError, config_path

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
    """Write a file so that readers see the old or the new content, never a torn one.
    A full disk or a folder made read-only is a user error naming the file."""
    try:
        _write_atomic(path, data)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot write it ({exc.strerror or exc}); free space or fix permissions, then run the same command again"
        ) from exc


def _write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(
            fd, 0o666 & ~_read_umask()
        )  # mkstemp makes 0600; a results file is as readable as any other the user makes
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
        raise UserError(
            f"results_dir: cannot create {folder} ({exc.strerror}); set results_dir to a writable folder"
        ) from exc
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise _busy(folder, f) from None
        try:
            yield f  # a child given this file's descriptor holds the lock too, until it exits
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_free(folder: Path) -> None:
    """Refuse a run folder another process holds before anything in it is read (its
    study.db may be half made). Creates nothing: :func:`locked` still takes the lock,
    and catches a run that starts between the two."""
    try:
        import fcntl
    except ImportError:
        return
    try:
        f = open(folder / ".lock", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:  # no lock file (a new folder) or none readable: locked() decides
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _busy(folder, f) from None
        fcntl.flock(f, fcntl.LOCK_UN)


def _busy(folder: Path, lock) -> UserError:
    lock.seek(0)
    holder = lock.read().strip() or "another process"
    return UserError(
        f"{folder}: another tlbench run is using this run folder ({holder}); "
        "wait for it to finish, or give this one another --run name"
    )


def claim(lock) -> None:
    """Write who holds the folder into its lock file, once the run has been accepted
    (a refused command changes nothing in the folder)."""
    if lock is not None:
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {platform.node()}")
        lock.flush()


def run_dir(bench: Benchmark, base_dir: Path) -> Path:

    return config_path(bench.results_dir, base_dir, "results_dir") / bench.name / bench.run_name


def storage_url(configured: str | None, folder: Path) -> str:
    """The configured Optuna storage URL, or the run folder's own SQLite file."""

    return configured or sqlite_url((folder / DEFAULT_STORAGE).resolve())


def resolve_storage(url: str | None, base: Path, field: str = "search.storage") -> str | None:
    """A storage URL with a relative SQLite path made absolute against ``base`` (the
    config's folder, or the working directory for ``--storage``): the same file, from
    wherever tlbench is started. In-memory SQLite keeps nothing and is refused."""

    if url is None or not url.startswith("sqlite"):
        return url
    path = sqlite_path(url)
    if path is None:
        raise UserError(
            f"{field}: {url} is an in-memory database that keeps nothing; give a file, e.g. sqlite:///study.db"
        )
    if url.partition(":///")[2].startswith("file:") or path.is_absolute():  # SQLite URI form: as the user wrote it
        return url
    return sqlite_url((base / path).resolve())


def read_only_url(url: str, folder: Path) -> str:
    """How readers (report, plot, compare) open a run's storage: a SQLite file read-only
    and only if it is there (opening a missing one would create an empty run)."""

    path = sqlite_path(url) if url.startswith("sqlite") else None
    if path is None:
        return url
    if not path.is_file():
        raise UserError(
            f"{folder}: its trials database {path} is missing; restore it (the run's trials live there) "
            "or run the benchmark again"
        )
    return sqlite_url(path, read_only=True)


def check_own_storage(folder: Path) -> None:
    """Before ``run`` reads its run folder's own SQLite file: a write a killed process left
    half done is rolled back (a read-only check could not read the file), and a file it
    cannot write is one line. Only for a folder no other run holds (check_free)."""

    db = folder / DEFAULT_STORAGE
    if not db.is_file():
        return
    if not os.access(db, os.W_OK):
        mode = oct(db.stat().st_mode & 0o777)
        raise UserError(
            f"{db}: read-only (mode {mode[2:]}), so this run cannot go on; make it writable (chmod u+w) "
            "or give another --run name"
        )
    import sqlite3

    try:
        recover_sqlite(db)
    except sqlite3.Error as exc:  # a damaged file
        raise UserError(
            f"{db}: cannot be opened to finish a killed write ({exc}); restore it or give another --run name"
        ) from exc


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
        raise UserError(
            f"results_dir: cannot create {folder} ({exc.strerror}); set results_dir to a writable folder"
        ) from exc
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
    screen: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # screening scores per dataset x backbone

    @property
    def ranking(self) -> pd.DataFrame:
        return ranking_frame(self.summary, self.trials)


def load_run(folder: Path) -> Run:
    """Read a run folder; the tables come from its Optuna storage, opened read-only."""

    meta = read_meta(folder)
    env = read_environment(folder)
    config = read_config(folder)
    store = storage.connect(read_only_url(storage_url(meta["storage"], folder), folder))
    limits = (config.get("search") or {}).get("constraints") or {}
    trials = trials_frame(store, meta["studies"], limits)
    repeats = trials_frame(store, meta.get("repeat_studies", {}))
    summary = summary_frame(trials, repeats)
    return Run(
        folder,
        meta,
        env,
        config,
        trials,
        repeats,
        summary,
        screen_frame(study_records(store, meta["studies"]), trials, summary),
    )


def read_config(folder: Path) -> dict[str, Any]:
    """config.yaml (the resolved benchmark the run was started with), checked like run.json; {} if absent."""
    config = _read(folder / "config.yaml", folder, yaml.safe_load, {})
    if not isinstance(config, dict):
        raise UserError(
            f"{folder / 'config.yaml'}: damaged (not a mapping of settings); restore it from a copy of the run folder"
        )
    return config


def read_environment(folder: Path) -> dict[str, Any]:
    """environment.json (machine and versions), checked like run.json; {} if absent."""
    return _read(folder / "environment.json", folder, json.loads, {})


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
        raise UserError(
            f"{folder}: written by a newer tlbench (run format {meta['format']}); upgrade tlbench to read it"
        )
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
        bench.refuse_older_values(meta["fingerprint"], f"the run in {folder}", "run")
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


class TableWriter:
    """Rewrites a run folder's tables during a run (``tlbench run`` calls it after each trial):
    each rewrite reads the whole storage, so after one that took t seconds the next comes
    no sooner than ``RATIO`` x t later; the upkeep stays near 1/RATIO of the run's time
    however many trials the study holds (at 5,000 trials a rewrite takes about 1 s,
    at 20,000 about 4 s). The run writes them once more at its end, whatever happens; the
    storage holds every trial the moment it finishes, and ``tlbench report`` reads it."""

    RATIO = 10.0

    def __init__(self, folder: Path, write=None, clock=time.monotonic):
        self.folder, self.clock = folder, clock
        self.write = write or write_tables
        self.due = float("-inf")

    def __call__(self) -> None:
        start = self.clock()
        if start < self.due:
            return
        self.write(self.folder)
        end = self.clock()
        self.due = end + self.RATIO * (end - start)


def write_tables(folder: Path, run: Run | None = None) -> Run:
    """(Re)write trials.csv, summary.csv and summary.json from the storage."""
    run = run or load_run(folder)
    everything = pd.concat([run.trials, run.repeats]) if not run.repeats.empty else run.trials
    write_atomic(folder / "trials.csv", everything.drop(columns=["test_correct"]).to_csv(index=False))
    write_atomic(folder / "summary.csv", run.summary.to_csv(index=False))
    write_atomic(folder / "summary.json", run.summary.to_json(orient="records", indent=2))
    return run
