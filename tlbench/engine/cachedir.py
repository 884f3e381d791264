"""The feature cache's folder on disk: the files it wrote, and the index that proves it.

tlbench may delete or overwrite only files it can prove it created. In a folder the
user names (``training.cache.dir``, which may hold their weights) that proof is a
subfolder of the cache's own, marked with a ``CACHEDIR.TAG``, and an index of every
file written there; nothing else is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tlbench.types import UserError

CACHE_SUBFOLDER = "tlbench-features"  # the cache's own folder inside training.cache.dir


_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# tlbench feature cache: files listed in index.json were written by tlbench\n"


_KEY = re.compile(r"^[0-9a-f]{32}$")


class DiskFolder:
    """The files of the on-disk cache, and the index that proves tlbench wrote them.

    ``CACHEDIR.TAG`` (the Cache Directory Tagging convention: backup tools skip the
    folder) marks the folder as the cache's; ``index.json`` lists every file written,
    with its size and last use. Index changes happen under an exclusive ``flock`` of
    ``index.lock`` (several processes may share the folder). A name is added to the
    index before its file is written, so a crash leaves at worst an entry without a
    file, never a file tlbench cannot account for; such entries are dropped when seen.
    """

    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.Lock()

    def check(self) -> None:
        """Refuse a folder of this name that tlbench did not make (raises UserError)."""

        tag = self.path / "CACHEDIR.TAG"
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise UserError(
                f"training.cache.dir: {self.path.parent} is a file, not a folder; set cache.dir to a folder"
            )
        if not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir())):
            return  # new, or made by a process killed before it wrote the tag
        if not (tag.is_file() and tag.read_text(encoding="utf-8", errors="replace") == _TAG):
            raise UserError(
                f"training.cache.dir: {self.path} exists but was not made by tlbench's feature cache; "
                "move it away or set another cache.dir (tlbench never writes into a folder it did not make)"
            )

    def read(self, key: str) -> bytes | None:
        if not _KEY.match(key) or not (self.path / "index.json").is_file():
            return None
        with self._locked() as index:
            if key not in index:
                return None
            try:
                data = (self.path / f"{key}.pt").read_bytes()
            except OSError:
                del index[key]
                return None
            index[key]["used"] = time.time()
        return data

    def write(self, key: str, data: bytes, bound: int) -> None:
        assert _KEY.match(key), key
        self.check()
        self.path.mkdir(parents=True, exist_ok=True)
        tag = self.path / "CACHEDIR.TAG"
        if not tag.exists():
            _write_new(tag, _TAG.encode())
        with self._locked() as index:
            index[key] = {"bytes": len(data), "used": time.time()}  # before the file: see the class docstring
        tmp = self.path / f"{key}.pt.tmp-{os.getpid()}-{threading.get_ident()}"
        _write_new(tmp, data)
        os.replace(tmp, self.path / f"{key}.pt")
        with self._locked() as index:
            self._trim(index, bound)

    def _trim(self, index: dict, bound: int) -> None:
        """Delete the least recently used files the index names until they fit ``bound``."""
        total = sum(entry["bytes"] for entry in index.values())
        for key in sorted(index, key=lambda k: index[k]["used"]):
            if total <= bound:
                break
            total -= index[key]["bytes"]
            (self.path / f"{key}.pt").unlink(missing_ok=True)
            del index[key]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The index, read and written back under the folder's lock."""
        import fcntl
        import json

        with self._thread_lock, open(self.path / "index.lock", "a+", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                file = self.path / "index.json"
                try:
                    raw = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
                except (ValueError, OSError):
                    raw = {}  # damaged: what it listed is forgotten (and left on disk), never guessed
                index = (
                    {k: v for k, v in raw.items() if _KEY.match(k) and isinstance(v, dict)}
                    if isinstance(raw, dict)
                    else {}
                )
                before = json.dumps(index, sort_keys=True)
                yield index
                after = json.dumps(index, sort_keys=True)
                if after != before:
                    tmp = self.path / f"index.json.tmp-{os.getpid()}-{threading.get_ident()}"
                    _write_new(tmp, after.encode())
                    os.replace(tmp, file)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
