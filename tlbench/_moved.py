"""Old module paths of tlbench 0.6 (one flat folder) keep importing, with a DeprecationWarning.

tlbench 0.7 put its modules in packages per layer (docs/internals.md). Code written
against 0.6 that imported an internal module by its old path (``tlbench.planning``,
``tlbench.builtins.backbones``) gets the very module object of the new path, so
attributes, monkeypatching and ``isinstance`` behave as before, and a warning naming the
new path. The public modules (``tlbench``, ``tlbench.types``, ``tlbench.splits``,
``tlbench.testing``) did not move. ``tlbench.results`` is now a package: its old names
are forwarded by ``tlbench/results/__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "stats": "base",
    "space": "base",
    "threads": "base",
    "interrupts": "base",
    "storage": "store",
    "record": "store",
    "studyrecord": "store",
    "tables": "results",
    "export": "results",
    "report": "results",
    "inputs": "engine",
    "pipeline": "engine",
    "features": "engine",
    "train": "engine",
    "cost": "engine",
    "images": "engine",
    "cachedir": "engine",
    "hookspecs": "host",
    "contract": "host",
    "plugins": "host",
    "events": "host",
    "progress": "host",
    "builtins": "host",
    "planning": "search",
    "screen": "search",
    "pruning": "search",
    "sampling": "search",
    "portfolio": "search",
    "studies": "search",
    "trial": "search",
}


def new_name(old: str) -> str | None:
    """``tlbench.<package>.<module>[.<sub>]`` for a 0.6 path ``tlbench.<module>[.<sub>]``, else None."""
    parts = old.split(".")
    if len(parts) < 2 or parts[0] != "tlbench" or parts[1] not in MOVED:
        return None
    return ".".join(["tlbench", MOVED[parts[1]], *parts[1:]])


def warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{old} moved to {new} in tlbench 0.7; import it from there "
        "(plugins: only tlbench, tlbench.types, tlbench.splits and tlbench.testing are public)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec):
        self.module = importlib.import_module(self.new)
        self.spec = self.module.__spec__
        return self.module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # the import machinery set the old path's; the module keeps its own


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("tlbench."):
            return None  # asked for every module imported anywhere: the common answer first
        new = new_name(fullname)
        if new is None:
            return None
        warn(fullname, new, stacklevel=3)  # importlib's own frames are skipped
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())  # before the path finder, which would load a second copy


def forward(here: str, moved: dict[str, tuple[str, ...]]):
    """A module ``__getattr__`` for names that left module ``here`` when it was split:
    ``moved`` maps each new module to the names it took; each is found there, with a
    DeprecationWarning."""

    def __getattr__(name: str):
        for module, names in moved.items():
            if name in names:
                warn(f"{here}.{name}", f"{module}.{name}", stacklevel=3)
                return getattr(importlib.import_module(module), name)
        raise AttributeError(f"module {here!r} has no attribute {name!r}")

    return __getattr__
