"""What one trial is and what it measured: the one typed record every module writes
and reads, stored as Optuna user attributes.

:meth:`TrialRecord.write` is the only code that sets a trial's attributes and
:meth:`TrialRecord.from_trial` the only code that reads them, so a name is spelled
in one place. Since record 3 the record is one user attribute, ``record`` (a JSON
object of its fields, which the Optuna dashboard shows as one), beside
``record_version``: one storage transaction per step of a trial instead of one per
field (about 2 ms each on SQLite; 26 of them per trial made most of tlbench's cost per
trial). Runs written with records 1 and 2 (one attribute per field) are read by
:meth:`from_trial` too; a record newer than this tlbench is refused in one line.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from typing import Any

from tlbench.types import UserError

RECORD_VERSION = 3  # 2: versioned, structured cache uses and failure kinds; 3: one attribute, "record"
PACKED = 3  # the first record version stored as one attribute
WORKER = f"{platform.node()}:{os.getpid()}"  # who runs a trial: host and process
INPUT = "input"  # the feature-cache cut before any module: the cache holds decoded, transformed inputs (images, tokens)


@dataclass(frozen=True)
class CacheUse:
    """Where one phase of a trial got its inputs (tlbench.engine.features decides)."""

    phase: str  # the phase's name
    source: str  # "extracted" (computed by this trial), "memory" / "disk" (an earlier trial's), or "off"
    at: str = ""  # the module the cached outputs come from (INPUT: decoded inputs); "" when off
    reason: str = ""  # why the cache was off ("augmentation", "disabled", ...); "" otherwise

    @property
    def layers(self) -> bool:
        """Frozen-layer outputs were reused, not just decoded images."""
        return self.source != "off" and self.at != INPUT

    def __str__(self) -> str:
        return (
            f"{self.phase}: off ({self.reason})"
            if self.source == "off"
            else f"{self.phase}: {self.source} at {self.at}"
        )


class Failure:
    """Kinds of failed trials (``TrialRecord.failure``)."""

    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, kill -9, a lost worker, a user error mid-trial: retried
    SURPLUS = "surplus"  # never ran: its study had all its trials when a worker started it
    DIVERGED = "diverged"  # the loss became NaN or infinite (an absurd learning rate)
    ERROR = "error"  # any other failure the study went on after (out of memory, ...)


@dataclass(frozen=True)
class TrialRecord:
    """A trial's attributes. Every field is optional: a trial is written in steps (what it
    is when it starts, its curve as it trains, its measurements when it ends)."""

    # what the trial is (set when it is enqueued or starts)
    recipe: bool | None = None  # from search.enqueue or a seed repeat: never pruned
    probe: bool | None = None  # the screen's linear probe on one backbone, run before the search: never pruned
    portfolio: bool | None = None  # a configuration of the warm start, tried first on the screen's best backbone
    seed: int | None = None  # training seed
    retry_of: int | None = None  # the interrupted trial this one runs again
    attempt: int | None = None  # k for the k-th retry of a configuration
    repeat_of: int | None = None  # seed repeats: the search trial whose configuration this retrains
    repeat: int | None = None  # seed repeats: which one, 0..repeats-1
    host: str | None = None  # machine that ran it
    worker: str | None = None  # host:pid of the process that ran it
    params: dict[str, Any] | None = None  # the strategy's and training's parameters, as drawn
    backbone_options: dict[str, Any] | None = None  # the backbone's options it was built with, searched ones as drawn
    phases: list[dict[str, Any]] | None = None  # the phases it trained (tlbench.types.Phase as dicts)
    n_groups: int | None = None  # parameter groups of the built backbone
    pretrained: bool | None = None  # started from pretrained or local weights
    modality: str | None = None  # what the backbone read: "image", "text" (None in runs before it was stored: image)
    resolution: int | None = None  # images: input side in pixels
    max_length: int | None = None  # text: sequence length in tokens (every text padded or cut to it)
    forward_gflops: float | None = None  # one forward pass, one example (an image, a text)
    total_params: int | None = None  # parameters of the model as trained (backbone, head, adapters)
    # while it trains
    elapsed_seconds: float | None = None  # training and evaluation so far
    # what it measured (set when it ends)
    val_curve: list[float] | None = None  # validation accuracy after each epoch
    test_curve: list[float] | None = None  # test accuracy after each epoch (training.test_curve: recorded grids)
    test_accuracy: float | None = None  # on the test split, after the last epoch (never used to select)
    test_correct: str | None = None  # "1"/"0" per test example, in split order (bootstrap intervals)
    train_seconds: float | None = None  # training wall clock (frozen-layer extraction included, evaluation not)
    train_gflops: float | None = None  # training compute: forward and backward of every step, the frozen prefix once
    val_gflops: float | None = None  # validation compute: the forward pass of every epoch's evaluation, the prefix once
    trainable_params: int | None = None  # parameters updated in some phase
    peak_memory_mb: float | None = None  # see memory_kind
    memory_kind: str | None = None  # "cuda_max_allocated" or "process_peak_rss"
    device: str | None = None  # device name
    device_index: int | None = None  # which of the run's devices (several GPUs)
    precision: str | None = None  # "fp32", "bf16", "fp16"
    throughput: float | None = None  # examples (images, texts) per second, inference
    latency_ms: float | None = None  # one batch, inference
    cache: list[CacheUse] | None = None  # per phase, where its inputs came from
    # why it failed
    infeasible: str | None = None  # why it was not trained: over a constraint known before training
    failure: str | None = None  # a Failure kind
    fail_reason: str | None = None  # what happened, for people
    version: int = RECORD_VERSION  # of this layout

    def write(self, trial, *names: str) -> None:
        """Set the named fields (default: every field that is not None) on an Optuna trial
        (or anything with ``user_attrs`` and ``set_user_attr``), keeping the fields it already
        has: one storage transaction (two on the trial's first write, which also stores
        ``record_version`` on its own, so that an older tlbench refuses the run instead of
        reading it as empty)."""
        attrs = trial.user_attrs
        fields = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "version" and (f.name in names if names else getattr(self, f.name) is not None)
        }
        # what it has (records 1 and 2 of an older run resumed: their fields, kept as they are stored too)
        merged = dataclasses.replace(_from_attrs(attrs, trial), **fields, version=RECORD_VERSION)
        if attrs.get(_KEYS["version"]) != RECORD_VERSION:
            trial.set_user_attr(_KEYS["version"], RECORD_VERSION)
        trial.set_user_attr(RECORD_KEY, merged._packed())

    def attrs(self) -> dict[str, Any]:
        """The fields that are set, as the user attributes :meth:`write` would store (for
        ``enqueue_trial`` and ``create_trial``)."""
        return {_KEYS["version"]: RECORD_VERSION, RECORD_KEY: self._packed()}

    def _packed(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name != "version":
                out[f.name] = [dataclasses.asdict(u) for u in value] if f.name == "cache" else value
        return out

    @classmethod
    def from_trial(cls, trial) -> TrialRecord:
        """The record of a FrozenTrial (or anything with ``user_attrs``). A finished trial's
        record cannot change (Optuna refuses to write to it), so it is parsed once: the
        checks a run makes before each trial (its budget, the sampler's incumbents) read
        every trial of the study, 20,000 of them in a long sweep."""
        attrs = trial.user_attrs
        state = getattr(trial, "state", None)
        if state is None or not state.is_finished():
            return _from_attrs(attrs, trial)
        key, packed = id(attrs), attrs.get(RECORD_KEY)
        hit = _FINISHED.get(key)
        if hit is not None and hit[0] is attrs and hit[1] is packed and hit[2] == len(attrs):
            return hit[3]
        record = _from_attrs(attrs, trial)
        if len(_FINISHED) >= FINISHED_CACHE:
            _FINISHED.clear()
        _FINISHED[key] = (attrs, packed, len(attrs), record)  # the attributes held: their id is not reused
        return record

    # --- derived views, for tables

    @property
    def cache_text(self) -> str | None:
        return None if self.cache is None else "; ".join(map(str, self.cache))

    @property
    def cache_kind(self) -> str | None:
        """'layers' (frozen-layer outputs reused in some phase), 'inputs' (decoded images
        cached in every phase), 'off: <reason>' (some phase could not use it), or None."""
        if not self.cache:
            return None
        if any(u.layers for u in self.cache):
            return "layers"
        off = [u for u in self.cache if u.source == "off"]
        return f"off: {off[0].reason}" if off else "inputs"

    @property
    def frozen_groups(self) -> int | None:
        return self.phases[-1]["frozen_groups"] if self.phases else None

    @property
    def epochs(self) -> int | None:
        return sum(p["epochs"] for p in self.phases) if self.phases else None


_KEYS = {"version": "record_version"}  # field -> user attribute, where they differ (records 1 and 2)
RECORD_KEY = "record"  # record 3: the user attribute that holds every field
FINISHED_CACHE = 50_000  # finished trials whose parsed record is kept (their attributes are kept with it)
_FINISHED: dict[int, tuple] = {}  # id(user_attrs) -> (user_attrs, its record attribute, its length, TrialRecord)


def _from_attrs(attrs: dict[str, Any], trial) -> TrialRecord:
    version = int(attrs.get(_KEYS["version"], 1))
    if version > RECORD_VERSION:
        raise UserError(
            f"trial {getattr(trial, 'number', '?')} was written by a newer tlbench (trial record {version}, "
            f"this one reads up to {RECORD_VERSION}); upgrade tlbench to read this run"
        )
    fields = dataclasses.fields(TrialRecord)
    if version >= PACKED:
        source = attrs.get(RECORD_KEY) or {}
        values = {f.name: source.get(f.name) for f in fields}
    else:  # records 1 and 2: one attribute per field
        source = attrs
        values = {f.name: attrs.get(_KEYS.get(f.name, f.name)) for f in fields}
    values["version"] = version
    values["cache"] = _cache(source)
    if values["failure"] is None and values["fail_reason"]:  # record 1: the kind was a prefix of the text
        values["failure"] = _legacy_failure(str(values["fail_reason"]), source)
    return TrialRecord(**values)


def _cache(attrs: dict[str, Any]) -> list[CacheUse] | None:
    if "cache" in attrs:
        return [CacheUse(**u) for u in attrs["cache"]]
    text = attrs.get("feature_cache")  # record 1: "head: extracted at global_pool; finetune: off (augmentation)"
    if not text:
        return None
    uses = []
    for part in str(text).split("; "):
        phase, _, rest = part.partition(": ")
        if rest.startswith("off ("):
            uses.append(CacheUse(phase, "off", reason=rest[len("off (") : -1]))
        else:
            source, _, at = rest.partition(" at ")
            uses.append(CacheUse(phase, source, at=at or INPUT))
    return uses


def _legacy_failure(reason: str, attrs: dict[str, Any]) -> str:
    if attrs.get("surplus") or reason.startswith("surplus"):
        return Failure.SURPLUS
    if reason.startswith("interrupted"):
        return Failure.INTERRUPTED
    if reason.startswith("loss became"):
        return Failure.DIVERGED
    return Failure.ERROR


def infeasible(record: TrialRecord, limits: dict[str, float | None]) -> str | None:
    """Why a trial is infeasible under ``limits`` (``search.constraints``), or None."""
    if record.infeasible:
        return record.infeasible
    measured = measured_costs(record)
    over = [
        f"{k} {measured[k]:.3g} > {v:g}" for k, v in limits.items() if v is not None and (measured.get(k) or 0.0) > v
    ]
    return "search.constraints: " + ", ".join(over) if over else None


def measured_costs(record: TrialRecord) -> dict[str, float | None]:
    """A trial's costs in the units of ``search.constraints``."""
    return {
        "forward_gflops": record.forward_gflops,
        "params_m": record.total_params / 1e6 if record.total_params is not None else None,
        "latency_ms": record.latency_ms,
        "train_seconds": record.train_seconds,
        "peak_memory_mb": record.peak_memory_mb,
    }
