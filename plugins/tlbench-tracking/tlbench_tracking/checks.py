"""What validate (and run, before it writes anything) checks of each tracker's options:
nothing is written, a server is asked once with a short timeout."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tlbench.types import TrackerRequest, UserError, config_path

TIMEOUT = 5.0  # seconds a tracking server has to answer at validate / run start
MLFLOW_SCHEMES = (
    "",
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)


def writable_folder(path: Path, field: str) -> None:
    """``path`` is a folder, or one that can be made: its nearest existing ancestor is a
    writable folder. Nothing is created."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{field}: {path} is a file; give a folder")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{field}: cannot create {path} ({probe} is not a folder you can write); give another folder")


def _default_folder(request: TrackerRequest, option: str, name: str) -> None:
    """A tracker's default folder in the run folder can be made (none in a process without one)."""
    if request.run.folder is None:
        raise UserError(f"this process has no run folder; set '{option}:'")
    writable_folder(request.run.folder / name, option)


def check_tensorboard(request: TrackerRequest) -> None:
    given = request.options.get("dir")
    if given is None:
        return _default_folder(request, "dir", "tensorboard")
    writable_folder(config_path(str(given), request.base_dir, "dir"), "dir")


def check_mlflow(request: TrackerRequest) -> None:
    uri = request.options.get("tracking_uri")
    if uri is None:
        return _default_folder(request, "tracking_uri", "mlruns")
    uri = str(uri)
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter: a path
        scheme = ""
    if scheme.split("+")[0] not in MLFLOW_SCHEMES:
        raise UserError(
            f"tracking_uri: {uri!r} is not an MLflow tracking URI; give a folder, file:, sqlite:///mlflow.db, "
            "http(s)://host:port of a tracking server, or a database URL"
        )
    if scheme in ("http", "https"):
        reach(uri)
    elif scheme in ("", "file"):
        path = urllib.parse.unquote(urllib.parse.urlparse(uri).path) if scheme == "file" else uri
        writable_folder(config_path(path, request.base_dir, "tracking_uri"), "tracking_uri")
    elif scheme.startswith("sqlite"):
        rest = uri.partition(":///")[2]
        if rest:
            db = config_path(rest.partition("?")[0], request.base_dir, "tracking_uri")
            writable_folder(db.parent, "tracking_uri")


def reach(uri: str) -> None:
    """A tracking server answers (any HTTP status) within TIMEOUT seconds."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=TIMEOUT).close()  # noqa: S310 - the user's own URI
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"tracking_uri: no MLflow server answers at {uri} within {TIMEOUT:g} s ({reason}); start it or fix the URI"
        ) from exc
