"""docs/internals.md's module map names every module of the package by its path under
tlbench/: a module added without a row (or a row left for a module that moved) fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tlbench"
BUILTINS = "host/builtins/"
PUBLIC_PACKAGES = {"testing/__init__.py"}  # a public module that is a package: its __init__ is the API


def _named(doc: str) -> set[str]:
    """Module paths named in the first column of the map, and the built-ins the builtins row lists."""
    named = set()
    for row in (line.split("|") for line in doc.splitlines() if line.startswith("| `")):
        named |= set(re.findall(r"`([\w/]+\.py)`", row[1]))
        if f"`{BUILTINS}`" in row[1]:
            named |= {f"{BUILTINS}{n}" for n in re.findall(r"`([\w]+\.py)`", row[2])}
    return named


def _modules() -> set[str]:
    """Every module under tlbench/ but the packages' own __init__.py (their docstrings say what they
    hold), except a public package's (what plugin authors import)."""
    paths = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    return {p for p in paths if p == "__init__.py" or p in PUBLIC_PACKAGES or not p.endswith("/__init__.py")}


def test_every_module_has_a_row_in_the_internals_map():
    named = _named((ROOT / "docs" / "internals.md").read_text(encoding="utf-8"))
    modules = _modules()
    assert sorted(modules - named) == [], "docs/internals.md has no row for these modules"
    assert sorted(named - modules) == [], "docs/internals.md names modules that do not exist"


def test_every_package_says_what_it_holds():
    for init in PACKAGE.glob("*/__init__.py"):
        assert init.read_text(encoding="utf-8").lstrip().startswith('"""'), f"{init} has no docstring"
