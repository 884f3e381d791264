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

# lowest first; a unit (a package, or a module at the top of tlbench/) may import its own
# layer and those below it. The folder shows the house: one package per layer, the
# public modules (types, splits, testing), the schema, the use case and the command line
# at the top.
LAYERS = {
    "base": ["types", "splits", "base", "_moved"],
    "store": ["store"],
    "config": ["config", "configdoc"],
    "results": ["results"],
    "engine": ["engine"],
    "host": ["host"],
    "search": ["search"],
    "use case": ["benchmark", "testing"],
    "cli": ["cli", "__main__"],
}
FACADE = "__init__"  # `from tlbench import hookimpl, ...`: the public API; its lazy re-exports may reach any layer
LEVEL = {m: i for i, (_, ms) in enumerate(LAYERS.items()) for m in ms} | {FACADE: 0}
PACKAGES = {name for ms in LAYERS.values() for name in ms if (PACKAGE / name).is_dir()}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem  # a package's modules are the package


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines |= set(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, file:line) for every import of a tlbench module."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hints, me, where = _type_checking_lines(tree), _module_of(path), path.relative_to(ROOT).as_posix()
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
                    out.append((me, parts[1], f"{where}:{node.lineno}"))
                else:  # from tlbench import x: a module, or a name of the facade
                    for alias in node.names:
                        is_module = (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                        out.append((me, alias.name if is_module else FACADE, f"{where}:{node.lineno}"))
            elif isinstance(node, ast.Import):
                out += [
                    (me, a.name.split(".")[1], f"{where}:{node.lineno}")
                    for a in node.names
                    if a.name.startswith("tlbench.")
                ]
    return out


def test_every_module_is_in_a_layer():
    modules = {_module_of(p) for p in PACKAGE.rglob("*.py")} - {FACADE}
    assert sorted(modules - set(LEVEL)) == [], "place these modules in a layer (here and in docs/internals.md)"
    assert sorted(set(LEVEL) - modules - {FACADE}) == [], "these layered modules do not exist"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{where} imports {them} ({_layer(them)}) from the {_layer(me)} layer"
        for me, them, where in imports()
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


def _top_level_links() -> dict[str, set[str]]:
    """module -> the tlbench modules it imports when it is imported (not inside functions)."""
    links = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = ["tlbench", *rel.parts]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hints = _type_checking_lines(tree)
        found = set()
        for node in tree.body:  # the module's own statements: what runs when it is imported
            if getattr(node, "lineno", None) in hints:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tlbench"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    module_file = PACKAGE.parent / (sub.replace(".", "/") + ".py")
                    package_dir = PACKAGE.parent / sub.replace(".", "/")
                    found.add(sub if module_file.exists() or package_dir.is_dir() else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("tlbench")}
        links[name] = found - {name}
    return links


def test_no_import_cycles_between_modules():
    """What a module imports at its top never leads back to it (a cycle only works by the
    luck of which module Python meets first)."""
    links = _top_level_links()
    parent = lambda m: m.rsplit(".", 1)[0]  # noqa: E731  importing a.b imports the package a first
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(links.get(module, ())):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, [*path, nxt])

    for start in sorted(links):
        seen = {start}
        visit(start, [start])
    assert sorted({c for c in cycles if parent(c.split(" -> ")[0]) != c.split(" -> ")[-1]}) == []
