"""A finished run as a tabular benchmark: every trial's search-space point, learning
curve and costs, so that HPO methods can be replayed on it in seconds (the way
HPOBench and LCBench replay tabular benchmarks). ``tlbench export RUN_DIR`` writes it;
``benchmarks/search.py`` replays random search, TPE + median and tlbench's search on
such tables. The format (``tlbench-table``, version 1) is documented in docs/export.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tlbench.results import runfolder, tables
from tlbench.results.runfolder import read_meta, write_atomic
from tlbench.store import storage
from tlbench.store.record import Failure, TrialRecord
from tlbench.store.studyrecord import StudyRecord
from tlbench.types import UserError

FORMAT, VERSION = "tlbench-table", 1
COSTS = (  # per trial, from its record (None where the trial did not get that far)
    "train_gflops", "val_gflops", "train_seconds", "elapsed_seconds", "forward_gflops", "total_params", "trainable_params",
    "latency_ms", "throughput", "peak_memory_mb",
)  # fmt: skip


def export_run(folder: Path) -> dict[str, Any]:
    """The run in ``folder`` as a ``tlbench-table`` document (plain JSON types)."""
    import optuna

    meta = runfolder.read_meta(folder)
    config = runfolder.read_config(folder)
    store = storage.connect(runfolder.read_only_url(runfolder.storage_url(meta["storage"], folder), folder))
    datasets = {}
    for dataset, name in meta["studies"].items():
        try:
            study = optuna.load_study(study_name=name, storage=store)
        except KeyError:
            continue  # not started yet
        record = StudyRecord.from_study(study)
        stored = storage.read_trials(store, name)  # lean; None: through Optuna
        trials = [_trial(t, record) for t in (stored if stored is not None else study.get_trials(deepcopy=False))]
        datasets[dataset] = {
            "study": name,
            "screen": record.screen,
            "portfolio": record.portfolio_sources,  # what the run's portfolio learnt from
            "trials": [t for t in trials if t is not None],
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": {
            "benchmark": meta.get("benchmark"),
            "run": meta.get("run"),
            "fingerprint": meta["fingerprint"],
            # what each completed trial's val_accuracy is: the mean of its last this many epochs' (1: the last one's)
            "select_epochs": tables.select_epochs(config),
            "environment": runfolder.read_environment(folder),
        },
        "datasets": datasets,
    }


def _trial(t, studied: StudyRecord) -> dict[str, Any] | None:
    import optuna

    record = TrialRecord.from_trial(t)
    kind, reason = studied.failure(t, record)
    if kind == Failure.SURPLUS:
        return None  # never ran
    # a Pareto search stores its curve in the record (Optuna cannot report multi-objective trials)
    curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)] or list(record.val_curve or [])
    return {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),  # Optuna's names: backbone, strategy, <strategy>.<param>, training params
        "distributions": {k: optuna.distributions.distribution_to_json(d) for k, d in t.distributions.items()},
        "recipe": bool(record.recipe),
        "probe": bool(record.probe),  # the screen's linear probe
        "pretrained": record.pretrained,
        "epochs": record.epochs,
        "val_curve": curve,  # validation accuracy after each epoch (1-based: curve[0] is epoch 1)
        "val_accuracy": t.values[0] if t.state.name == "COMPLETE" else None,  # a Pareto study's values[1] is its cost
        "test_accuracy": record.test_accuracy,  # at the end of training (completed trials)
        "test_curve": record.test_curve,  # test accuracy after each epoch, where training.test_curve recorded it
        "seed": record.seed,  # training seed
        "backbone_options": record.backbone_options,  # the options the backbone was built with (searched ones drawn)
        "modality": record.modality or "image",  # what the backbone read
        **{k: _plain(getattr(record, k)) for k in COSTS},
        "failure": kind,
        "reason": reason or None,
    }


def _plain(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_export(folder: Path, out: Path | None) -> Path | None:
    """Write ``export_run(folder)`` to ``out`` (default: ``<folder>/table.json``; ``-``:
    standard output, then None is returned). A regular file is replaced only if it is a
    tlbench table (written atomically); a pipe or a device (``/dev/stdout``, a FIFO) is
    written to as it is and never read. Each mistake names the argument that is wrong."""
    import stat
    import sys

    read_meta(folder)  # a mistyped run folder is named as such, before --out is looked at
    if out is not None and str(out) == "-":
        sys.stdout.write(json.dumps(export_run(folder), indent=1, sort_keys=True) + "\n")
        sys.stdout.flush()
        return None
    out = out or folder / "table.json"
    try:
        mode = out.stat().st_mode if out.exists() else None
    except OSError as exc:
        raise UserError(f"--out: cannot use {out} ({exc.strerror}); give another path") from exc
    if mode is not None and stat.S_ISDIR(mode):
        raise UserError(f"--out: {out} is a folder; give the path of a file, e.g. {out / 'table.json'}")
    if mode is not None and not stat.S_ISREG(mode):  # a pipe, a terminal, /dev/stdout: written to, never read
        if stat.S_ISSOCK(mode):
            raise UserError(f"--out: {out} is a socket; give a file, a pipe or -")
        text = json.dumps(export_run(folder), indent=1, sort_keys=True) + "\n"
        try:
            with open(out, "w", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            raise UserError(f"--out: cannot write to {out} ({exc.strerror}); give another path or -") from exc
        return out
    if not out.parent.is_dir():  # a mistyped --out is not a reason to make folders
        raise UserError(f"--out: folder {out.parent} does not exist; create it or give another path")
    if mode is not None:
        try:
            known = json.loads(out.read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            known = False
        if not known:
            raise UserError(
                f"--out: {out} exists and is not a tlbench table; give another path (tlbench replaces only its own)"
            )
    write_atomic(out, json.dumps(export_run(folder), indent=1, sort_keys=True) + "\n")
    return out
