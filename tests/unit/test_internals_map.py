"""docs/internals.md's module map names every module of the package: a module added
without a row (or a row left for a module that moved) fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _named(doc: str) -> set[str]:
    """Modules named in the first column of the map, and the built-ins the `builtins/` row lists."""
    named = set()
    for row in (line.split("|") for line in doc.splitlines() if line.startswith("| `")):
        named |= set(re.findall(r"`([\w]+\.py)`", row[1]))
        if "`builtins/`" in row[1]:
            named |= {f"builtins/{n}" for n in re.findall(r"`([\w]+\.py)`", row[2])}
    return named


def test_every_module_has_a_row_in_the_internals_map():
    named = _named((ROOT / "docs" / "internals.md").read_text(encoding="utf-8"))
    package = ROOT / "tlbench"
    modules = {p.name for p in package.glob("*.py")}
    modules |= {f"builtins/{p.name}" for p in (package / "builtins").glob("*.py") if p.name != "__init__.py"}
    assert sorted(modules - named) == [], "docs/internals.md has no row for these modules"
    assert sorted(named - modules) == [], "docs/internals.md names modules that do not exist"
