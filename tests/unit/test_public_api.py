"""One public API: first-party plugins and the plugin guide's examples import from tlbench
only what ``tlbench.__all__`` and ``tlbench.PUBLIC_MODULES`` name (read with ``ast``, no
import), so a third party can build everything they build."""

from __future__ import annotations

import ast
from pathlib import Path

import tlbench

ROOT = Path(__file__).resolve().parents[2]


def _plugin_sources() -> list[Path]:
    code = [p for d in (ROOT / "plugins").glob("tlbench-*") for p in d.glob("tlbench_*/**/*.py")]
    return code + sorted((ROOT / "examples" / "plugins").glob("*.py"))


def _tlbench_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every import of tlbench in a file; name None for ``import module``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tlbench":
            out += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "tlbench"]
    return out


def test_first_party_plugins_and_examples_import_only_the_public_api():
    sources = _plugin_sources()
    assert len(sources) >= 10  # the four plugin packages and the guide's examples were found
    wrong = []
    for path in sources:
        for module, name in _tlbench_imports(path):
            if module not in tlbench.PUBLIC_MODULES or (
                module == "tlbench" and name is not None and name not in tlbench.__all__
            ):
                wrong.append(f"{path.relative_to(ROOT)}: {module}" + (f".{name}" if name else ""))
    assert wrong == []


def test_every_public_name_resolves_and_the_heavy_ones_lazily():
    for name in tlbench.__all__:
        assert getattr(tlbench, name) is not None, name
    assert tlbench.build_timm.__module__ == "tlbench.host.builtins.backbones"
    for module in tlbench.PUBLIC_MODULES:
        __import__(module)
