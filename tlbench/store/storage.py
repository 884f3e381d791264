"""Optuna storages: opening a URL, what validate can check of one, SQLite made safe for
several processes, and a lean read of a study's trials for the readers of a finished run
(:func:`read_trials`). A leaf module (no other tlbench module but types), so that
planning, studies and the results reader all open storages the same way."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import optuna

from tlbench.types import UserError


def sqlite_url(path: Path, read_only: bool = False) -> str:
    """The one way tlbench writes the storage URL of a SQLite file, whatever its path holds
    (``#``, ``?``, ``%``, ``&``, ``;``, spaces, quotes, non-ASCII): percent-encoded, which
    SQLAlchemy decodes once into the file name. Read-only: SQLite's URI form
    (``file:...?mode=ro``), whose path SQLite decodes once more, so it is encoded twice."""
    quoted = urllib.parse.quote(str(path), safe="/")
    if not read_only:
        return f"sqlite:///{quoted}"
    return f"sqlite:///file:{urllib.parse.quote(quoted, safe='/')}?mode=ro&uri=true"


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite storage URL names (None: another database, or SQLite in memory):
    the inverse of :func:`sqlite_url`, and of URLs users write."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    name = parsed.database
    if name.startswith("file:"):  # SQLite's URI form: its path is percent-encoded, its options after '?'
        name = urllib.parse.unquote(name.removeprefix("file:").partition("?")[0])
        if not name or name == ":memory:" or "mode=memory" in parsed.database + str(parsed.query):
            return None
    return Path(name)


def hot_journal(path: Path) -> Path | None:
    """The rollback journal a process killed inside a write transaction left next to the
    SQLite file ``path`` (SQLite rolls it back at the next read-write open; a read-only
    connection cannot, and fails), or None."""
    journal = path.with_name(path.name + "-journal")
    try:
        return journal if journal.stat().st_size > 0 else None
    except OSError:
        return None


def _killed_mid_write(url: str) -> str | None:
    """Why a read-only SQLite URL cannot be opened when a killed process left a hot journal
    (a read-only connection cannot roll it back), or None. Asked only after the open
    failed: a journal also exists, briefly, during any live write."""
    if "mode=ro" not in url:
        return None
    path = sqlite_path(url)
    journal = hot_journal(path) if path is not None else None
    if journal is None:
        return None
    return (
        f"{path}: a tlbench process was killed in the middle of writing it ({journal.name} is there); run the "
        "same 'tlbench run' again: it rolls that write back and goes on (nothing finished is lost)"
    )


def recover_sqlite(path: Path) -> bool:
    """Roll back the write a killed process left half done in the SQLite file ``path`` (as
    SQLite itself does at a read-write open), so that read-only checks can read it. Only
    for a file no other process uses (a run folder that is not locked). Returns whether
    there was one."""
    if hot_journal(path) is None:
        return False
    import sqlite3

    connection = sqlite3.connect(str(path), timeout=60)
    try:
        connection.execute("PRAGMA schema_version").fetchone()  # the first read rolls a hot journal back
    finally:
        connection.close()
    return True


def connect(url: str, heartbeat: int | None = None, on_lost=None) -> optuna.storages.BaseStorage:
    """The Optuna storage behind ``url``; a URL that cannot be opened is a user error.

    ``heartbeat`` (seconds): for storages other processes share. Each running trial
    records a heartbeat that often; a trial silent for twice as long is failed by the
    next worker that starts a trial, which calls ``on_lost(study, trial)``
    (:func:`tlbench.search.studies.connect_shared` passes its retry).
    """
    kwargs: dict[str, Any] = {}
    url = _driver_url(url)
    if url.startswith("sqlite"):  # several local processes: wait for the file lock rather than fail
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat is not None:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=2 * heartbeat, heartbeat_stale_trial_callback=on_lost)
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as exc:  # the database's driver
        extra = "postgres" if url.startswith("postgres") else "mysql" if url.startswith("mysql") else None
        fix = f"pip install 'tlbench[{extra}]'" if extra else "install the database driver SQLAlchemy names"
        raise UserError(f"search.storage: no database driver for {url}; {fix}") from exc
    except Exception as exc:  # bad URL, server down
        killed = _killed_mid_write(url)
        if killed:
            raise UserError(killed) from exc
        reason = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else ""
        raise UserError(
            f"search.storage: cannot open {url} ({type(exc).__name__}: {reason}); fix the URL or start the server"
        ) from exc


def check_storage_url(url: str | None) -> None:
    """What ``validate`` can know of a storage URL without connecting (connecting to a new
    database creates tables in it): it parses, names a database SQLAlchemy knows, and
    its driver is installed. Whether the server answers is known only at ``run``."""
    if url is None:
        return
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(_driver_url(url))
        parsed.get_dialect()
    except sqlalchemy.exc.ArgumentError as exc:
        raise UserError(
            f"search.storage: {url!r} is not a database URL; use e.g. postgresql://user@host/db or sqlite:///study.db"
        ) from exc
    except sqlalchemy.exc.NoSuchModuleError as exc:
        raise UserError(
            f"search.storage: {url}: SQLAlchemy knows no database '{url.partition(':')[0]}'; use postgresql, mysql or sqlite"
        ) from exc
    except ImportError as exc:
        extra = "postgres" if url.startswith("postgres") else "mysql" if url.startswith("mysql") else None
        fix = f"pip install 'tlbench[{extra}]'" if extra else "install the database driver SQLAlchemy names"
        raise UserError(f"search.storage: no database driver for {url}; {fix}") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database and not parsed.database.startswith("file:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise UserError(f"search.storage: folder {folder} of {url} does not exist; create it or fix the path")


def _driver_url(url: str) -> str:
    """The URL with the driver tlbench's extras install, whatever SQLAlchemy's default."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.partition("://")[2]
    if url.startswith("mysql://"):
        return "mysql+pymysql://" + url.partition("://")[2]
    return url


def _rdb_storage(url: str, kwargs: dict[str, Any], attempts: int = 5) -> optuna.storages.RDBStorage:
    """RDBStorage, which creates its tables on a new database. Processes starting at once
    race to create them: PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic (the losers
    get a unique violation in the system catalog), and on SQLite the losers get "table
    ... already exists". Tables exist by the retry."""
    import sqlalchemy.exc

    for tries in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite") and "mode=ro" not in url:  # readers claim nothing
                _serialize_sqlite(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            # SQLite's form of the same race: "table studies already exists"; a server that is down fails every time
            racing = not isinstance(exc, sqlalchemy.exc.OperationalError) or "already exists" in str(exc)
            if tries == attempts - 1 or not racing:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _serialize_sqlite(engine) -> None:
    """Make every transaction on a SQLite storage take the write lock when it begins.

    Optuna claims an enqueued trial by reading its state and, if WAITING, setting it to
    RUNNING, in one transaction with ``SELECT ... FOR UPDATE``. SQLite ignores FOR
    UPDATE, and Python's sqlite3 opens the transaction only at the UPDATE, so two
    processes can both read WAITING and both run the trial (the second then dies with
    "Cannot tell a COMPLETE trial"). ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for
    pysqlite) makes the read and the write one atomic step; other processes wait for
    the lock (the connection's 60 s timeout). Connections made before this are closed.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


# --------------------------------------------------------------------------- reading a finished run, lean

READ_SCHEMA = 12  # the layout of Optuna's RDB tables read_trials knows (optuna.storages._rdb.models.SCHEMA_VERSION)


@dataclasses.dataclass(frozen=True)
class StoredTrial:
    """A trial as the readers of a run use it: the fields of Optuna's ``FrozenTrial`` they
    read, nothing else (no system attributes or timestamps)."""

    number: int
    state: optuna.trial.TrialState
    params: dict[str, Any]
    distributions: dict[str, optuna.distributions.BaseDistribution]
    values: list[float] | None
    intermediate_values: dict[int, float]
    user_attrs: dict[str, Any]

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None


def read_trials(store, study_name: str) -> list[StoredTrial] | None:
    """Every trial of ``study_name`` in an RDB storage, in number order (and each one's
    parameters and attributes in the order they were written), read with five plain
    queries instead of Optuna's ORM (which builds an object per attribute: about 1 ms per
    trial, 20 s for a 20,000-trial run). None where this cannot be done exactly: not an
    RDB storage, or tables of another schema version than :data:`READ_SCHEMA` (the caller
    then reads through Optuna). ``tests/unit/test_storage_read.py`` holds it equal to
    Optuna's own read."""
    from sqlalchemy import text

    engine = getattr(store, "engine", None)
    if engine is None:
        return None
    with engine.connect() as db:
        version = db.execute(text("SELECT schema_version FROM version_info")).scalar()
        if version != READ_SCHEMA:
            return None
        study_id = db.execute(text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": study_name}).scalar()
        if study_id is None:
            raise KeyError(study_name)
        where = {"s": study_id}
        rows = db.execute(text("SELECT trial_id, number, state FROM trials WHERE study_id = :s ORDER BY number"), where)
        trials = {tid: (number, optuna.trial.TrialState[state], {}, {}, {}, {}, {}) for tid, number, state in rows}
        of_study = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :s"
        for tid, name, value, dist in db.execute(
            text(
                f"SELECT x.trial_id, x.param_name, x.param_value, x.distribution_json FROM trial_params x {of_study} ORDER BY x.param_id"
            ),
            where,
        ):
            trials[tid][2][name] = _distribution(dist).to_external_repr(value)
            trials[tid][6][name] = _distribution(dist)
        for tid, objective, value, kind in db.execute(
            text(
                f"SELECT x.trial_id, x.objective, x.value, x.value_type FROM trial_values x {of_study} ORDER BY x.trial_value_id"
            ),
            where,
        ):
            trials[tid][3][objective] = _stored_float(value, kind)
        for tid, step, value, kind in db.execute(
            text(f"SELECT x.trial_id, x.step, x.intermediate_value, x.intermediate_value_type FROM trial_intermediate_values x {of_study} ORDER BY x.trial_intermediate_value_id"),
            where,
        ):  # fmt: skip
            trials[tid][4][step] = _stored_float(value, kind)
        for tid, key, value in db.execute(
            text(
                f"SELECT x.trial_id, x.key, x.value_json FROM trial_user_attributes x {of_study} ORDER BY x.trial_user_attribute_id"
            ),
            where,
        ):
            trials[tid][5][key] = json.loads(value)
    return [
        StoredTrial(number, state, params, dists, [values[k] for k in sorted(values)] if values else None, dict(sorted(steps.items())), attrs)
        for number, state, params, values, steps, attrs, dists in trials.values()
    ]  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _distribution(text_: str) -> optuna.distributions.BaseDistribution:
    return optuna.distributions.json_to_distribution(text_)


def _stored_float(value: float | None, kind: str) -> float:
    """A value as Optuna stores it: infinities and NaN by their type, not their number."""
    return {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}.get(kind, value)
