"""A text development task made from files already on the machine: which library an API
docstring comes from (numpy, scipy, pandas, torch).

Issue 21's development grids were all images, while two of the four held-out tasks are
text: nothing about the search after the opening was ever designed on text. This writes
a ``textfolder`` dataset (``<out>/<library>/<n>.txt``) of the first paragraph of the
docstrings of the public functions, classes and methods of a fixed list of modules of
each library, so recording it downloads nothing. Its domain (code documentation) is none
of the held-out tasks' (news, sentiment, inspection, shapes).

Rules that keep it a task about wording rather than names: a paragraph that names any of
the four libraries (or ``ndarray``, ``DataFrame``, ``Series``, ``Tensor`` as a word of
its own) is left out; paragraphs shorter than 40 characters are left out; a text seen
twice is kept once (textfolder also drops exact duplicates across classes). Each class
keeps ``--per-class`` texts, drawn by a fixed seed from its texts sorted, so the same
library versions give the same files. The versions are written to ``<out>/VERSIONS``
(outside every class folder: not part of the dataset).

    python benchmarks/docstrings.py --out results/docstrings

Needs scipy besides what tlbench installs (``pip install scipy``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import random
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {
    "numpy": ["numpy", "numpy.linalg", "numpy.fft", "numpy.random", "numpy.ma", "numpy.polynomial", "numpy.lib"],
    "scipy": [
        "scipy.stats", "scipy.linalg", "scipy.optimize", "scipy.signal", "scipy.sparse", "scipy.interpolate",
        "scipy.integrate", "scipy.special", "scipy.spatial", "scipy.ndimage", "scipy.cluster", "scipy.io",
    ],
    "pandas": ["pandas", "pandas.api.types", "pandas.plotting", "pandas.tseries.offsets", "pandas.io.formats.style"],
    "torch": [
        "torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.fft", "torch.optim",
        "torch.utils.data", "torch.distributions", "torch.autograd", "torch.special",
    ],
}  # fmt: skip
NAMES = re.compile(r"numpy|scipy|pandas|torch|\bnp\.|\bpd\.|\bndarray\b|\bDataFrame\b|\bSeries\b|\bTensor\b", re.I)
MIN_CHARS = 40
SEED = 0


def first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split())


def library_texts(library: str) -> list[str]:
    """Every distinct usable first paragraph of ``library``'s listed modules, sorted."""
    texts: set[str] = set()
    for name in MODULES[library]:
        module = importlib.import_module(name)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue
            if not getattr(obj, "__module__", "") or not str(obj.__module__).startswith(library):
                continue  # re-exports of other libraries (typing, builtins)
            members = [obj]
            if inspect.isclass(obj):
                members += [m for k, m in sorted(vars(obj).items()) if not k.startswith("_") and inspect.isroutine(m)]
            for member in members:
                doc = inspect.getdoc(member)
                text = first_paragraph(doc) if doc else ""
                if len(text) >= MIN_CHARS and not NAMES.search(text):
                    texts.add(text)
    return sorted(texts)


def write(out: Path, per_class: int) -> dict[str, int]:
    """Write the dataset under ``out`` (which must be empty or not exist: nothing is overwritten)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give a new folder")
    warnings.filterwarnings("ignore")
    counts, versions = {}, []
    for library in MODULES:
        texts = library_texts(library)
        chosen = random.Random(f"{SEED}/{library}").sample(texts, min(per_class, len(texts)))
        folder = out / library
        folder.mkdir(parents=True)
        for i, text in enumerate(chosen):
            (folder / f"{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
        counts[library] = len(chosen)
        versions.append(
            f"{library} {importlib.import_module(library).__version__} ({len(texts)} texts, {len(chosen)} kept)"
        )
    (out / "VERSIONS").write_text("\n".join(versions) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "docstrings")
    parser.add_argument("--per-class", type=int, default=450)
    args = parser.parse_args(argv)
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:  # torch, numpy and pandas come with tlbench; scipy does not
        print(f"docstrings: {', '.join(missing)} not installed; pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    print(write(args.out, args.per_class))
    print((args.out / "VERSIONS").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
