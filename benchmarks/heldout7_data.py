"""The seventh set of held-out tasks (issue 21, look 17), written from networkx, KDE's Breeze
icon theme, the ICD-10-CM classification (``simple-icd-10-cm``) and the Free On-line
Dictionary of Computing (Debian's ``dict-foldoc``): nothing downloaded at run time, and no
design choice of the search has seen them.

Every earlier set has been looked at at least twice and shaped design step 11, so none judges
anything out of sample. These four judge the default that design step 11 leaves, once.

- ``graphs`` (image; graph theory): which family a node-link drawing of a small graph belongs
  to (path, cycle, star, wheel, complete, complete bipartite, a random tree that is neither a
  path nor a star, a 2-D grid), 5 to 12 nodes, drawn by networkx with a spring, Kamada-Kawai or
  circular layout, random node size and line width, in grey at a random rotation and size,
  under blur and noise, 64 px.
- ``icons`` (image; user interfaces): which part of a desktop an icon of KDE's Breeze theme is
  drawn for (actions, applications, applets, file types, settings, status), one drawing per
  icon name (its largest size), rendered by librsvg onto white, 64 px.
- ``diagnoses`` (text; medicine): which chapter of ICD-10-CM (infectious diseases, neoplasms,
  mental disorders, the nervous system, the circulatory, respiratory, digestive and
  genitourinary systems) a diagnosis belongs to, from its description (codes of three or four
  characters).
- ``foldoc`` (text; computing terms): which subject FOLDOC files a term under (language,
  networking, programming, jargon, operating system, hardware), from the first paragraph of its
  definition, the headword, the subject and pronunciations taken out.

Nearest earlier domains, said so that a reader can judge how fresh each is: graphs are line
drawings like circuits and molecules (sixth set) and chart_types (third); icons are pictograms
like emoji_groups (second set); foldoc reads dictionary definitions like wordnet_glosses (third
set) and etymologies (sixth), about computing like pkg_sections (second), man_sections (fifth)
and the development grid docstrings; diagnoses have no earlier neighbour.

    apt-get install dict-foldoc breeze-icon-theme librsvg2-bin && pip install simple-icd-10-cm
    python benchmarks/heldout7_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import _package_version, class_draws, write_tasks, write_texts  # noqa: E402
from heldout6_data import SIDE, _finish, dictd_entries  # noqa: E402

PER_CLASS = {"graphs": 250, "icons": 300, "diagnoses": 250, "foldoc": 300}
FAMILIES = ("path", "cycle", "star", "wheel", "complete", "bipartite", "tree", "grid")
BREEZE = Path("/usr/share/icons/breeze")
CONTEXTS = {"actions": "actions", "apps": "applications", "applets": "applets", "mimetypes": "file_types",
            "preferences": "settings", "status": "status"}  # fmt: skip
CHAPTERS = {"1": "infectious", "2": "neoplasms", "5": "mental", "6": "nervous", "9": "circulatory",
            "10": "respiratory", "11": "digestive", "14": "genitourinary"}  # fmt: skip
SUBJECTS = {"language": "language", "networking": "networking", "programming": "programming", "jargon": "jargon",
            "operating system": "operating_system", "hardware": "hardware"}  # fmt: skip
MIN_CHARS, MAX_CHARS = 30, 300


def _graph(family: str, rng):
    import networkx as nx

    n = rng.randint(5, 12)
    if family == "path":
        return nx.path_graph(n)
    if family == "cycle":
        return nx.cycle_graph(n)
    if family == "star":
        return nx.star_graph(n - 1)
    if family == "wheel":
        return nx.wheel_graph(n)
    if family == "complete":
        return nx.complete_graph(rng.randint(4, 7))
    if family == "bipartite":
        return nx.complete_bipartite_graph(rng.randint(2, 4), rng.randint(2, 5))
    if family == "grid":
        return nx.grid_2d_graph(rng.randint(2, 4), rng.randint(3, 4))
    while True:  # a random tree that is neither a path nor a star
        tree = nx.random_labeled_tree(n, seed=rng.randrange(2**31))
        degrees = sorted(d for _, d in tree.degree())
        if degrees[-1] > 2 and degrees[-1] < n - 1:
            return tree


def graphs(out: Path, per_class: int) -> dict[str, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    from PIL import Image

    counts = {}
    for family in FAMILIES:
        rng, noise, folder = class_draws(out, family)
        for i in range(per_class):
            graph = _graph(family, rng)
            layout = rng.choice(("spring", "kamada_kawai", "circular"))
            if layout == "spring":
                pos = nx.spring_layout(graph, seed=rng.randrange(2**31))
            elif layout == "kamada_kawai":
                pos = nx.kamada_kawai_layout(graph)
            else:
                pos = nx.circular_layout(graph)
            figure = plt.figure(figsize=(2, 2), dpi=64)
            nx.draw(graph, pos, node_size=rng.uniform(10, 60), width=rng.uniform(0.6, 2.0), node_color="black",
                    edge_color="black", ax=figure.add_axes((0, 0, 1, 1)))  # fmt: skip
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", facecolor="white")
            plt.close(figure)
            _finish(Image.open(buffer), rng, noise, folder, i)
        counts[family] = per_class
    return counts


def _largest(files: list[Path]) -> Path:
    """The drawing of an icon at its largest plain size (16, 22, 32, 48, 64; never @2x or symbolic)."""
    return max(files, key=lambda f: int(f.parent.name) if f.parent.name.isdigit() else 0)


def icons(out: Path, per_class: int) -> dict[str, int]:
    from PIL import Image

    if not BREEZE.is_dir() or shutil.which("rsvg-convert") is None:
        sys.exit("heldout7_data: icons need apt-get install breeze-icon-theme librsvg2-bin")
    counts = {}
    for context, cls in CONTEXTS.items():
        by_name: dict[str, list[Path]] = {}
        for f in sorted((BREEZE / context).glob("*/*.svg")):
            if f.parent.name.isdigit():
                by_name.setdefault(f.stem, []).append(f)
        rng, _, folder = class_draws(out, cls)
        names = sorted(by_name)
        rng.shuffle(names)
        kept = 0
        for name in names[:per_class]:
            png = subprocess.run(
                ["rsvg-convert", "-w", str(SIDE), "-h", str(SIDE), "-b", "white", str(_largest(by_name[name]))],
                capture_output=True,
                check=True,
            ).stdout
            Image.open(io.BytesIO(png)).convert("RGB").save(folder / f"{kept:04d}.png")
            kept += 1
        counts[cls] = kept
    return counts


def diagnoses() -> dict[str, list[str]]:
    """Descriptions of ICD-10-CM codes of three or four characters (A00, A00.1), by chapter."""
    import simple_icd_10_cm as icd

    by_class: dict[str, set[str]] = {cls: set() for cls in CHAPTERS.values()}
    for code in icd.get_all_codes(with_dots=True):
        if not re.fullmatch(r"[A-Z]\d\d(\.\w)?", code):
            continue
        chapter = icd.get_ancestors(code)[-1]
        text = icd.get_description(code)
        if chapter in CHAPTERS and MIN_CHARS // 2 <= len(text) <= MAX_CHARS:
            by_class[CHAPTERS[chapter]].add(text)
    return {cls: sorted(texts) for cls, texts in by_class.items()}


def foldoc() -> dict[str, list[str]]:
    """The first paragraph of each FOLDOC definition filed under one subject, by that subject."""
    by_class: dict[str, set[str]] = {cls: set() for cls in SUBJECTS.values()}
    for entry in dictd_entries("foldoc"):
        body = entry.split("\n\n", 1)[1] if "\n\n" in entry else ""
        match = re.match(r"\s*<([a-z][a-z ]*)>\s*(.*?)(?:\n\s*\n|$)", body, re.S)
        if not match or match.group(1) not in SUBJECTS:
            continue
        text = re.sub(r"/[^/\s][^/]*/", "", match.group(2))  # pronunciations
        text = re.sub(r"^\s*1\.\s*", "", text).replace("{", "").replace("}", "")
        text = " ".join(text.split())
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            by_class[SUBJECTS[match.group(1)]].add(text)
    return {cls: sorted(texts) for cls, texts in by_class.items()}


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    import numpy

    if task == "graphs":
        import matplotlib
        import networkx

        versions = f"networkx {networkx.__version__}\nmatplotlib {matplotlib.__version__}\nnumpy {numpy.__version__}\n"
        return versions, graphs(out, per_class)
    if task == "icons":
        rsvg = subprocess.run(["rsvg-convert", "--version"], capture_output=True, text=True).stdout.strip()
        versions = f"breeze-icon-theme {_package_version('breeze-icon-theme')}\n{rsvg}\n"
        return versions, icons(out, per_class)
    if task == "diagnoses":
        from importlib.metadata import version

        return f"simple-icd-10-cm {version('simple-icd-10-cm')}\n", write_texts(out, diagnoses(), per_class)
    return f"dict-foldoc {_package_version('dict-foldoc')}\n", write_texts(out, foldoc(), per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout7_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
