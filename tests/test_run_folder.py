"""A run folder is the user's: refused commands change no byte of it, readers never
create anything in it, and damage to it is one line, not a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import optuna
import pytest
from conftest import one_line, snapshot, tiny_benchmark, without_root_override

from tlbench import cli
from tlbench.results import runfolder

ONE = {"n_trials": 1, "startup_trials": 1, "screen": False}  # one trial, no screen probe


@pytest.fixture
def run_folder(write_config, capsys):
    """A finished one-trial run: (config path, run folder)."""
    config = write_config(tiny_benchmark(run="r", search=ONE))
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return config, config.parent / "results" / "tiny" / "r"


def test_a_storage_url_that_cannot_be_opened_changes_no_byte_of_the_run(run_folder, capsys):
    config, folder = run_folder
    before = snapshot(folder)
    one_line(capsys, cli.main(["run", str(config), "--storage", "notaurl"]), "search.storage", "is not a database URL")
    assert snapshot(folder) == before


def test_a_run_folder_is_not_continued_on_another_storage(run_folder, capsys, tmp_path):
    config, folder = run_folder
    before = snapshot(folder)
    code = cli.main(["run", str(config), "--storage", f"sqlite:///{tmp_path / 'other.db'}"])
    one_line(
        capsys,
        code,
        "its trials are in study.db in the run folder",
        "use the same storage to go on, or another --run name",
    )
    assert snapshot(folder) == before and not (tmp_path / "other.db").exists()


def test_a_refused_new_run_creates_no_folder(write_config, capsys, tmp_path):
    config = write_config(tiny_benchmark(run="new", search=ONE | {"storage": "postgresql://nobody@127.0.0.1:9/none"}))
    one_line(capsys, cli.main(["run", str(config)]), "search.storage: cannot open")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", [["report"], ["plot"], ["compare", "SELF"]])
def test_readers_refuse_a_run_whose_study_db_is_missing_and_create_nothing(run_folder, capsys, command):
    _, folder = run_folder
    (folder / "study.db").unlink()
    before = snapshot(folder)
    argv = [command[0], str(folder)] + [str(folder) if arg == "SELF" else arg for arg in command[1:]]
    one_line(capsys, cli.main(argv), "its trials database", "is missing")
    assert snapshot(folder) == before  # no empty study.db, report.md not overwritten


def test_readers_open_the_storage_read_only(run_folder, capsys):
    _, folder = run_folder
    (folder / "study.db").chmod(0o444)
    before = snapshot(folder)
    proc = subprocess.run(
        [*without_root_override(), sys.executable, "-m", "tlbench", "report", str(folder), "--format", "csv"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "timm:test_resnet-scratch" in proc.stdout
    assert snapshot(folder) == before


def test_a_relative_sqlite_storage_resolves_against_the_config_folder(write_config, capsys, tmp_path, monkeypatch):
    config = write_config(tiny_benchmark(run="r", search=ONE | {"storage": "sqlite:///shared.db"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    assert (tmp_path / "shared.db").is_file() and not (elsewhere / "shared.db").exists()
    meta = json.loads((tmp_path / "results" / "tiny" / "r" / "run.json").read_text())
    assert meta["storage"] == f"sqlite:///{tmp_path / 'shared.db'}"
    assert cli.main(["report", str(tmp_path / "results" / "tiny" / "r"), "--format", "csv"]) == 0


def test_an_in_memory_storage_is_refused(write_config, capsys):
    config = write_config(tiny_benchmark(search=ONE | {"storage": "sqlite:///:memory:"}))
    one_line(capsys, cli.main(["validate", str(config)]), "in-memory database that keeps nothing")


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda f: (f / "run.json").write_text("{not json"), "run.json: damaged"),
        (
            lambda f: (f / "run.json").write_text('{"benchmark": "tiny"}'),
            "run.json: damaged (missing or wrong run, fingerprint, studies)",
        ),
        (lambda f: (f / "run.json").write_bytes(b"\xff\xfe\x00"), "run.json: damaged (not UTF-8 text)"),
        (lambda f: (f / "environment.json").write_text("[1,"), "environment.json: damaged"),
        (lambda f: (f / "config.yaml").write_text("a: [1,"), "config.yaml: damaged"),
    ],
)
def test_damaged_metadata_is_one_line_for_report_and_run(run_folder, capsys, damage, needle):
    config, folder = run_folder
    damage(folder)
    before = snapshot(folder)
    one_line(capsys, cli.main(["report", str(folder)]), needle)
    if "run.json" in needle:  # run reads run.json before it touches the folder
        one_line(capsys, cli.main(["run", str(config)]), needle)
    assert snapshot(folder) == before


def test_a_run_written_by_a_newer_tlbench_is_one_line(run_folder, capsys):
    _, folder = run_folder
    meta = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps(meta | {"format": runfolder.FORMAT + 1}))
    one_line(capsys, cli.main(["report", str(folder)]), "written by a newer tlbench", "upgrade tlbench")


def test_a_run_folder_without_read_permission_is_one_line(run_folder):
    _, folder = run_folder
    folder.chmod(0)
    try:
        proc = subprocess.run(
            [*without_root_override(), sys.executable, "-m", "tlbench", "report", str(folder)],
            capture_output=True,
            text=True,
        )
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tlbench: error: {folder}: cannot read the folder (Permission denied); check its permissions"
    ]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        runfolder.write_atomic(tmp_path / "trials.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "trials.csv").stat().st_mode) == mode


def test_a_run_leaves_its_files_readable_by_a_team(run_folder):
    """The default umask (022): a teammate can `tlbench report` a shared run."""
    _, folder = run_folder
    for name in ("run.json", "config.yaml", "environment.json", "trials.csv", "summary.csv", "report.md"):
        assert stat.S_IMODE((folder / name).stat().st_mode) & 0o044 == 0o044 & ~_umask(), name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_label_with_rich_markup_prints_as_written(write_config, capsys):
    label = "net[/]v2 [bold]x"
    config = write_config(
        tiny_benchmark(
            run="r", search=ONE, backbones=[{"name": "timm:test_resnet", "pretrained": False, "label": label}]
        )
    )
    assert cli.main(["run", str(config)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    folder = config.parent / "results" / "tiny" / "r"
    assert cli.main(["report", str(folder)]) == 0
    assert label in capsys.readouterr().out
    assert cli.main(["compare", str(folder), str(folder)]) == 0
    assert label in capsys.readouterr().out


def test_optuna_sees_the_storage_of_a_resolved_run(run_folder):
    """The storage stays plain Optuna (the dashboard reads it)."""
    _, folder = run_folder
    (study,) = optuna.get_all_study_summaries(f"sqlite:///{folder / 'study.db'}")
    assert study.n_trials == 1


def test_a_results_file_that_cannot_be_written_is_a_user_error_naming_it(tmp_path):
    """A full disk or a folder made read-only mid-run: one line naming the file, not a traceback."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    code = (
        "from pathlib import Path; from tlbench.results.runfolder import write_atomic; write_atomic(Path(%r) / 'trials.csv', 'x')"
        % str(folder)
    )
    proc = subprocess.run([*without_root_override(), sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "tlbench.types.UserError" in proc.stderr, proc.stderr
    assert f"{folder}/trials.csv: cannot write it (Permission denied); free space or fix permissions" in proc.stderr
    assert list(folder.iterdir()) == []


def test_a_damaged_study_db_is_refused_and_the_folder_left_as_it_was(run_folder, capsys):
    config, folder = run_folder
    (folder / "study.db").write_bytes(b"not a database" * 100)
    before = snapshot(folder)
    one_line(capsys, cli.main(["run", str(config)]), "search.storage: cannot open")
    one_line(capsys, cli.main(["report", str(folder)]), "search.storage: cannot open")
    assert snapshot(folder) == before


def test_a_held_folder_is_refused_before_its_half_made_study_db_is_read(write_config, capsys):
    """The race a second `run` used to lose: the first run holds the folder and has only
    just created study.db (no tables yet). Reading it first failed as a storage error."""
    import fcntl

    config = write_config(tiny_benchmark(run="busy", search=ONE))
    folder = config.parent / "results" / "tiny" / "busy"
    folder.mkdir(parents=True)
    (folder / "study.db").touch()  # created, not yet written: what a starting run leaves for a moment
    with open(
        folder / ".lock", "a+", encoding="utf-8"
    ) as held:  # another open file: flock conflicts as across processes
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        runfolder.claim(held)
        before = snapshot(folder)
        one_line(capsys, cli.main(["run", str(config)]), "another tlbench run is using this run folder (pid")
        assert snapshot(folder) == before


def test_an_empty_study_db_left_by_a_killed_start_is_made_by_the_next_run(write_config, capsys):
    config = write_config(tiny_benchmark(run="empty", search=ONE))
    folder = config.parent / "results" / "tiny" / "empty"
    folder.mkdir(parents=True)
    (folder / "study.db").touch()
    assert cli.main(["run", str(config), "--format", "csv"]) == 0, capsys.readouterr().err
    (study,) = optuna.get_all_study_summaries(f"sqlite:///{folder / 'study.db'}")
    assert study.n_trials == 1


KILL_MID_WRITE = """
import os, signal, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("UPDATE trial_user_attributes SET value_json = '\\"half\\"'")
connection.execute("PRAGMA cache_size = 1")  # spill: the journal is on disk before the kill
connection.execute("CREATE TABLE filler AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT i, randomblob(100) FROM n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_inside_a_write_transaction_is_rolled_back_by_the_same_command(run_folder, capsys):
    """A hot journal left by SIGKILL mid-write: readers say which command recovers it (a
    read-only connection cannot roll it back); running the same command rolls it back
    and goes on, with every finished trial as it was."""
    config, folder = run_folder
    db = folder / "study.db"
    before = [
        (t.number, t.state.name, t.user_attrs)
        for t in optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{db}").trials
    ]
    killed = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(db)])
    assert killed.returncode == -9 and (folder / "study.db-journal").stat().st_size > 0
    one_line(
        capsys,
        cli.main(["report", str(folder)]),
        "study.db: a tlbench process was killed in the middle of writing it",
        "run the same 'tlbench run' again",
    )
    assert (folder / "study.db-journal").exists()  # the reader changed nothing
    assert cli.main(["run", str(config), "--n-trials", "2", "--format", "csv"]) == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="tiny/r/synthetic", storage=f"sqlite:///{db}").trials
    assert [(t.number, t.state.name, t.user_attrs) for t in trials[:1]] == before and len(trials) == 2
    assert cli.main(["report", str(folder)]) == 0


def test_a_read_only_study_db_is_one_line(run_folder):
    config, folder = run_folder
    db = folder / "study.db"
    db.chmod(0o444)
    try:
        proc = subprocess.run(
            [*without_root_override(), sys.executable, "-m", "tlbench", "run", str(config), "--n-trials", "2"],
            capture_output=True, text=True, env=os.environ | {"TLBENCH_LOAD_PLUGINS": ""},
        )  # fmt: skip
    finally:
        db.chmod(0o644)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tlbench: error: {db}: read-only (mode 444), so this run cannot go on; make it writable (chmod u+w) or give another --run name"
    ]
