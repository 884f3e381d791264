"""What tlbench keeps on a study: the one typed record of a dataset study's attributes,
stored as plain Optuna study user attributes, as :mod:`tlbench.store.record` is for trials.

Several processes write one study (workers, a resumed run, Optuna's heartbeat
callback in whichever worker notices a lost trial), so a study is never written whole:
each fact has one writer here (``StudyRecord.note_*`` / ``set_*``), which sets only its
own attribute, and :meth:`StudyRecord.from_study` is the only reader. Every key and
prefix is spelled in this module only.

``study_record`` holds the layout's version, written with the fingerprint when the study
is created. Runs from before it (no version) are read as they are; a study written by a
newer tlbench is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tlbench.store.record import Failure, TrialRecord
from tlbench.types import UserError

# 1: the first versioned layout (the keys below, as tlbench 0.4 wrote them unversioned);
# 2: recipes are enqueued after the screen's probes and marked (RECIPES); before, at creation
STUDY_RECORD_VERSION = 2

VERSION = "study_record"  # the layout's version
FINGERPRINT = "fingerprint"  # the config's fingerprint, set once the study's recipes are enqueued
TEST_SPLIT = "test_split"  # {"classes": [...], "labels": [...]} of the dataset's test split
SCREEN = "screen:"  # prefix: "screen:<backbone key>" -> that backbone's scores (or {"skipped": why})
DROPPED = "screen_dropped"  # {"rule": text, "dropped": {backbone key: why}}: the screen's decision
PROBES = "screen_probes"  # true once the screen's probes were enqueued
RECIPES = "recipes"  # true once the config's recipes were enqueued (layout 2; before, with the fingerprint)
PORTFOLIO = "portfolio"  # the backbone the portfolio's entries were enqueued on (once)
PORTFOLIO_SOURCES = "portfolio_sources"  # what the portfolio learnt from, in words
LOST = "lost:"  # prefix: "lost:<number>" -> why a trial without heartbeat was failed
GAVE_UP = "gave_up:"  # prefix: "gave_up:<number>" -> an interrupted trial out of retries


@dataclass(frozen=True)
class ScreenDecision:
    """Which backbones the screen's rule dropped from the sampler, and the rule."""

    rule: str = ""
    dropped: dict[str, str] = field(default_factory=dict)  # backbone key -> why


@dataclass(frozen=True)
class StudyRecord:
    """A dataset study's attributes, read at once (``from_study``)."""

    fingerprint: str | None = None
    test_split: dict[str, list] | None = None  # {"classes": names, "labels": ints}
    screen: dict[str, dict[str, Any]] = field(default_factory=dict)  # backbone key -> scores, or {"skipped": why}
    decision: ScreenDecision | None = None  # None: the screen has not decided (not run yet)
    probes: bool = False  # the screen's probes were enqueued
    recipes: bool = False  # the config's recipes were enqueued
    portfolio: str | None = None  # the backbone the portfolio's entries went on
    portfolio_sources: str | None = None  # what the portfolio learnt from
    lost: dict[int, str] = field(default_factory=dict)  # trial number -> why its worker was lost
    gave_up: dict[int, str] = field(default_factory=dict)  # trial number -> its configuration ran out of retries
    version: int = 0  # of the layout (0: written before it had one)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str = "study") -> StudyRecord:
        version = attrs.get(VERSION, 0)
        if not isinstance(version, int) or version > STUDY_RECORD_VERSION:
            raise UserError(
                f"{where} was written by a newer tlbench (study record {version}, this one reads up to "
                f"{STUDY_RECORD_VERSION}); upgrade tlbench to read this run"
            )
        decision = attrs.get(DROPPED)
        return cls(
            fingerprint=attrs.get(FINGERPRINT),
            test_split=attrs.get(TEST_SPLIT),
            screen={k[len(SCREEN) :]: v for k, v in attrs.items() if k.startswith(SCREEN)},
            decision=ScreenDecision(decision.get("rule", ""), dict(decision.get("dropped", {})))
            if isinstance(decision, dict)
            else None,
            probes=bool(attrs.get(PROBES)),
            recipes=bool(attrs.get(RECIPES)) or (version < 2 and attrs.get(FINGERPRINT) is not None),
            portfolio=attrs.get(PORTFOLIO),
            portfolio_sources=attrs.get(PORTFOLIO_SOURCES),
            lost=_numbered(attrs, LOST),
            gave_up=_numbered(attrs, GAVE_UP),
            version=version,
        )

    @classmethod
    def from_study(cls, study) -> StudyRecord:
        """The record of a study (an ``optuna.Study``; anything with ``user_attrs``)."""
        return cls.from_attrs(study.user_attrs, f"study {getattr(study, 'study_name', '?')}")

    # --- what the record derives

    @property
    def dropped(self) -> dict[str, str]:
        """Backbone key -> why the screen dropped it (none before the screen decided)."""
        return dict(self.decision.dropped) if self.decision else {}

    def score(self, backbone: str, name: str) -> float:
        """A backbone's screen score (``knn``, ``ridge``, ``logme``); -inf when not screened."""
        value = self.screen.get(backbone, {}).get(name)
        return float(value) if isinstance(value, (int, float)) else float("-inf")

    def failure(self, trial, record: TrialRecord | None = None) -> tuple[str | None, str]:
        """(kind, reason) of a trial's failure: its record's, or this study's note of a lost
        worker (a trial Optuna failed by heartbeat is read-only, so the note is on the study)."""
        record = record or TrialRecord.from_trial(trial)
        if record.failure is None and trial.number in self.lost:
            return Failure.INTERRUPTED, self.lost[trial.number]
        return record.failure, record.fail_reason or ""

    # --- the writers: each sets one attribute of a study others may be writing too

    @staticmethod
    def set_fingerprint(study, fingerprint: str) -> None:
        """The study is ready (made from this config; its recipes enqueued, unless a run's
        screen enqueues them after its probes): other workers wait for this."""
        study.set_user_attr(VERSION, STUDY_RECORD_VERSION)
        study.set_user_attr(FINGERPRINT, fingerprint)

    @staticmethod
    def note_test_split(study, classes, labels) -> None:
        if TEST_SPLIT not in study.user_attrs:
            study.set_user_attr(TEST_SPLIT, {"classes": list(classes), "labels": [int(y) for y in labels]})

    @staticmethod
    def note_screen(study, backbone: str, scores: dict[str, Any]) -> None:
        study.set_user_attr(f"{SCREEN}{backbone}", scores)

    @staticmethod
    def set_decision(study, rule: str, dropped: dict[str, str]) -> None:
        study.set_user_attr(DROPPED, {"rule": rule, "dropped": dict(dropped)})

    @staticmethod
    def mark_probes(study) -> None:
        study.set_user_attr(PROBES, True)

    @staticmethod
    def mark_recipes(study) -> None:
        study.set_user_attr(RECIPES, True)

    @staticmethod
    def set_portfolio(study, backbone: str, sources: str) -> None:
        study.set_user_attr(PORTFOLIO_SOURCES, sources)
        study.set_user_attr(PORTFOLIO, backbone)

    @staticmethod
    def note_lost(study, number: int, reason: str) -> None:
        study.set_user_attr(f"{LOST}{number}", reason)

    @staticmethod
    def note_gave_up(study, number: int, note: str) -> None:
        """Once per trial: the first note stays."""
        if f"{GAVE_UP}{number}" not in study.user_attrs:
            study.set_user_attr(f"{GAVE_UP}{number}", note)


def study_name(bench, dataset_key: str) -> str:
    """The study of one dataset in a run of ``bench`` (a config.Benchmark)."""
    return f"{bench.name}/{bench.run_name}/{dataset_key}"


def repeats_study_name(bench, dataset_key: str) -> str:
    """The study of that dataset's seed repeats."""
    return study_name(bench, dataset_key) + "/repeats"


def _numbered(attrs: Mapping[str, Any], prefix: str) -> dict[int, str]:
    return {int(k[len(prefix) :]): v for k, v in attrs.items() if k.startswith(prefix)}
