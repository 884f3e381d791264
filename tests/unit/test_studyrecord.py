"""StudyRecord: the one writer and reader of a study's attributes."""

from __future__ import annotations

import optuna
import pytest

from tlbench.store.record import Failure, TrialRecord
from tlbench.store.studyrecord import STUDY_RECORD_VERSION, StudyRecord
from tlbench.types import UserError


def test_every_writer_is_read_back_by_the_record():
    study = optuna.create_study()
    StudyRecord.set_fingerprint(study, "abc")
    StudyRecord.note_test_split(study, ["cat", "dog"], [0, 1, 1])
    StudyRecord.note_test_split(study, ["x"], [0])  # once: the first stays
    StudyRecord.note_screen(study, "lite0", {"knn": 0.8, "logme": 0.3})
    StudyRecord.note_screen(study, "scratch", {"skipped": "no cut"})
    StudyRecord.set_decision(study, "knn margin 0.1", {"scratch": "not screened"})
    StudyRecord.mark_probes(study)
    StudyRecord.set_portfolio(study, "lite0", "learnt from textures")
    StudyRecord.note_lost(study, 3, "no heartbeat")
    StudyRecord.note_gave_up(study, 4, "out of retries")
    StudyRecord.note_gave_up(study, 4, "a second note")

    record = StudyRecord.from_study(study)
    assert record.version == STUDY_RECORD_VERSION and record.fingerprint == "abc"
    assert record.test_split == {"classes": ["cat", "dog"], "labels": [0, 1, 1]}
    assert record.screen == {"lite0": {"knn": 0.8, "logme": 0.3}, "scratch": {"skipped": "no cut"}}
    assert record.score("lite0", "knn") == 0.8 and record.score("scratch", "knn") == float("-inf")
    assert record.decision.rule == "knn margin 0.1" and record.dropped == {"scratch": "not screened"}
    assert record.probes and record.portfolio == "lite0" and record.portfolio_sources == "learnt from textures"
    assert record.lost == {3: "no heartbeat"} and record.gave_up == {4: "out of retries"}


def test_a_study_from_before_the_version_reads_as_it_is():
    """tlbench 0.4 wrote the same keys without a version."""
    attrs = {
        "fingerprint": "f",
        "screen:a": {"knn": 1.0},
        "screen_dropped": {"rule": "r", "dropped": {}},
        "lost:2": "x",
    }
    record = StudyRecord.from_attrs(attrs)
    assert record.version == 0 and record.fingerprint == "f" and record.screen == {"a": {"knn": 1.0}}
    assert record.lost == {2: "x"} and record.decision.rule == "r"
    assert StudyRecord.from_attrs({}).decision is None and StudyRecord.from_attrs({}).dropped == {}


def test_a_study_written_by_a_newer_tlbench_is_refused_in_one_line():
    study = optuna.create_study(study_name="b/r/mnist")
    study.set_user_attr("study_record", STUDY_RECORD_VERSION + 1)
    with pytest.raises(UserError, match=r"study b/r/mnist was written by a newer tlbench .*upgrade tlbench"):
        StudyRecord.from_study(study)


def test_a_lost_trial_reads_as_interrupted_with_the_studys_note():
    study = optuna.create_study()
    study.optimize(lambda t: 1.0, n_trials=2)
    StudyRecord.note_lost(study, 1, "interrupted: no heartbeat from h:1 (killed or lost)")
    record = StudyRecord.from_study(study)
    assert record.failure(study.trials[0]) == (None, "")
    assert record.failure(study.trials[1]) == (
        Failure.INTERRUPTED,
        "interrupted: no heartbeat from h:1 (killed or lost)",
    )
    own = TrialRecord(failure=Failure.DIVERGED, fail_reason="nan")  # a trial's own failure comes first
    assert record.failure(study.trials[1], own) == (Failure.DIVERGED, "nan")


def test_a_study_written_before_layout_2_had_its_recipes_enqueued_with_its_fingerprint():
    """Layout 1 (tlbench 0.4): the creator enqueued the recipes, then set the fingerprint; a
    resumed run must not enqueue them again. Layout 2 marks them itself (after the screen's probes)."""
    assert StudyRecord.from_attrs({"study_record": 1, "fingerprint": "abc"}).recipes
    assert StudyRecord.from_attrs({"fingerprint": "abc"}).recipes  # unversioned: 0.4 too
    assert not StudyRecord.from_attrs({"study_record": 2, "fingerprint": "abc"}).recipes
    assert StudyRecord.from_attrs({"study_record": 2, "fingerprint": "abc", "recipes": True}).recipes
