"""Storage URLs are built from paths in one place (tlbench.store.storage.sqlite_url) and read back
by one function (sqlite_path), whatever characters the path holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.results.runfolder import read_only_url, resolve_storage, storage_url
from tlbench.store.storage import sqlite_path, sqlite_url
from tlbench.types import UserError

ODD = ["C# experiments", "what?", "100%", "a&b;c", 'it\'s "q"', "é ü", "-lead", "%41"]


@pytest.mark.parametrize("name", ODD)
def test_any_path_round_trips_through_its_url(name):
    path = Path("/data") / name / f"{name}.db"
    for read_only in (False, True):
        assert sqlite_path(sqlite_url(path, read_only)) == path


@pytest.mark.parametrize("name", ODD)
def test_a_relative_sqlite_url_resolves_against_the_configs_folder(tmp_path, name):
    base = tmp_path / name
    url = resolve_storage("sqlite:///runs/study.db", base)
    assert sqlite_path(url) == (base / "runs" / "study.db").resolve()
    assert resolve_storage("sqlite:///file:/x/y.db?mode=ro&uri=true", base) == "sqlite:///file:/x/y.db?mode=ro&uri=true"
    assert resolve_storage("postgresql://u@h/db", base) == "postgresql://u@h/db"


def test_in_memory_sqlite_is_refused_and_a_missing_file_is_named(tmp_path):
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"):
        with pytest.raises(UserError, match="in-memory"):
            resolve_storage(url, tmp_path)
    folder = tmp_path / "run #1"
    with pytest.raises(UserError, match=r"run #1/study.db is missing"):
        read_only_url(storage_url(None, folder), folder)
