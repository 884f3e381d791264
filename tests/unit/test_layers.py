"""The direction of imports, enforced: every module of tlbench sits in one layer, and no
module imports (at its top or inside a function) a module of a higher layer. Imports
for type hints only (``if TYPE_CHECKING:``) do not count. docs/internals.md shows the
same layers (checked here), so the house is visible from the docs and kept true by CI.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tlbench"

# lowest first; a module may import its own layer and those below it
LAYERS = {
    "base": ["types", "stats", "splits", "cachedir", "threads", "interrupts", "cost", "images", "space", "storage"],
    "store": ["record", "studyrecord"],
    "config": ["config", "configdoc"],
    "results": ["tables", "results", "export", "report"],
    "engine": ["inputs", "pipeline", "features", "train"],
    "host": ["hookspecs", "contract", "plugins", "events", "progress", "builtins"],
    "search": ["planning", "screen", "pruning", "sampling", "portfolio", "studies", "trial"],
    "use case": ["benchmark", "testing"],
    "cli": ["cli", "__main__"],
}
FACADE = "__init__"  # `from tlbench import hookimpl, ...`: the public API; its lazy re-exports may reach any layer
LEVEL = {m: i for i, (_, ms) in enumerate(LAYERS.items()) for m in ms} | {FACADE: 0}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines |= set(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import of a tlbench module."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hints, me = _type_checking_lines(tree), _module_of(path)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in hints:
                continue
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and node.module
                and node.module.split(".")[0] == "tlbench"
            ):
                parts = node.module.split(".")
                if len(parts) > 1:
                    out.append((me, parts[1], node.lineno))
                else:  # from tlbench import x: a module, or a name of the facade
                    for alias in node.names:
                        is_module = (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                        out.append((me, alias.name if is_module else FACADE, node.lineno))
            elif isinstance(node, ast.Import):
                out += [(me, a.name.split(".")[1], node.lineno) for a in node.names if a.name.startswith("tlbench.")]
    return out


def test_every_module_is_in_a_layer():
    modules = {_module_of(p) for p in PACKAGE.rglob("*.py")} - {FACADE}
    assert sorted(modules - set(LEVEL)) == [], "place these modules in a layer (here and in docs/internals.md)"
    assert sorted(set(LEVEL) - modules - {FACADE}) == [], "these layered modules do not exist"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"tlbench/{me}.py:{line} imports {them} ({_layer(them)}) from the {_layer(me)} layer"
        for me, them, line in imports()
        if me != FACADE and LEVEL[them] > LEVEL[me]
    ]
    assert upward == []


def test_the_internals_doc_shows_these_layers():
    doc = (ROOT / "docs" / "internals.md").read_text(encoding="utf-8")
    section = doc.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[1].strip(): set(re.findall(r"`(\w+)`", cells[2]))
        for cells in (line.split("|") for line in section.splitlines() if line.startswith("| ") and "---" not in line)
        if cells[1].strip() in LAYERS
    }
    assert list(rows) == list(LAYERS), "docs/internals.md's layers are not these, in this order"
    assert rows == {k: set(v) for k, v in LAYERS.items()}


def _layer(module: str) -> str:
    return next((name for name, ms in LAYERS.items() if module in ms), "facade")
