"""The fourth set of held-out tasks (issue 21, look 9), written from Debian packages, the
machine's own source files and matplotlib's fonts: nothing downloaded at run time, and no
design choice of the search has seen them.

The third set was looked at twice (looks 7 and 8) and design step 9 was shaped by what those
looks showed on its text tasks: its figures are no longer out of sample. These four judge the
default that design step 9 leaves, once.

- ``typefaces`` (image; typography): which of seven typefaces (DejaVu Sans, DejaVu Serif,
  DejaVu Sans Mono, STIX General, Computer Modern Roman, Sans and Typewriter, the fonts
  matplotlib ships) a short random string of letters is set in, at a random size, place, tilt,
  ink and paper, under noise, 64 px.
- ``automata`` (image; dynamical systems): which elementary cellular automaton (rules 18, 30,
  45, 54, 90, 110, 150, 184) drew a space-time diagram: a random first row of random density,
  a 64 x 64 window of the diagram (cells of 1 or 2 pixels) with up to 10 % of its cells flipped.
- ``scripture`` (text; religious texts): which part of the King James Bible a verse is from
  (law, history, wisdom, prophets, gospels and Acts, letters and Revelation), from
  ``bible-kjv-text``; verses of at least 40 characters.
- ``code_languages`` (text; source code): the programming language of three consecutive
  non-blank lines of a source file on this machine (C headers, CMake modules, JavaScript of
  npm, Perl modules, Python's standard library, Tcl's library); at most 12 snippets per file,
  each line stripped of its indentation.

    apt-get install bible-kjv bible-kjv-text
    python benchmarks/heldout4_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import _package_version, class_draws, write_tasks, write_texts  # noqa: E402

SEED = 0
PER_CLASS = {"typefaces": 300, "automata": 250, "scripture": 600, "code_languages": 600}
FONTS = {
    "dejavu_sans": "DejaVuSans.ttf", "dejavu_serif": "DejaVuSerif.ttf", "dejavu_mono": "DejaVuSansMono.ttf",
    "stix": "STIXGeneral.ttf", "cm_roman": "cmr10.ttf", "cm_sans": "cmss10.ttf", "cm_typewriter": "cmtt10.ttf",
}  # fmt: skip
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RULES = (18, 30, 45, 54, 90, 110, 150, 184)
SIDE = 64
PARTS = {  # the King James Bible's books by part, in its order (as ``bible`` names them)
    "law": ("Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy"),
    "history": ("Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles",
                "2 Chronicles", "Ezra", "Nehemiah", "Esther"),
    "wisdom": ("Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"),
    "prophets": ("Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah",
                 "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi"),
    "gospels_acts": ("Matthew", "Mark", "Luke", "John", "Acts"),
    "letters": ("Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
                "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews",
                "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation"),
}  # fmt: skip
MIN_VERSE = 40
CODE = {  # language: (folders, file suffix)
    "c": (("/usr/include",), ".h"),
    "cmake": (("/usr/share/cmake-3.25",), ".cmake"),
    "javascript": (("/usr/lib/node_modules/npm",), ".js"),
    "perl": (("/usr/share/perl/5.36", "/usr/share/perl5"), ".pm"),
    "python": (("/usr/lib/python3.11",), ".py"),
    "tcl": (("/usr/share/tcltk",), ".tcl"),
}
SNIPPET_LINES, PER_FILE, MAX_CHARS = 3, 12, 400


def typefaces(out: Path, per_class: int) -> dict[str, int]:
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    fonts = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    counts = {}
    for name, file in FONTS.items():
        rng, noise, folder = class_draws(out, name)
        for i in range(per_class):
            text = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))
            font = ImageFont.truetype(str(fonts / file), rng.randint(14, 30))
            paper, ink = rng.randint(150, 255), rng.randint(0, 110)
            canvas = Image.new("L", (2 * SIDE, 2 * SIDE), paper)
            ImageDraw.Draw(canvas).text(
                (rng.randint(0, SIDE // 2), rng.randint(SIDE // 3, SIDE)), text, fill=ink, font=font
            )
            canvas = canvas.rotate(rng.uniform(-12, 12), fillcolor=paper, resample=Image.BILINEAR)
            left, top = rng.randint(0, SIDE // 2), rng.randint(SIDE // 3, SIDE // 2)
            crop = np.asarray(canvas.crop((left, top, left + SIDE, top + SIDE)), dtype=np.float64)
            crop += noise.normal(0, rng.uniform(0, 25), crop.shape)
            Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).convert("RGB").save(folder / f"{i:04d}.png")
        counts[name] = per_class
    return counts


def _diagram(rule: int, rng: random.Random, noise) -> object:
    import numpy as np

    cell = rng.choice((1, 2))
    width, steps = SIDE // cell + 32, SIDE // cell + 16
    table = np.array([(rule >> k) & 1 for k in range(8)], dtype=np.uint8)
    row = (noise.random(width) < rng.uniform(0.15, 0.85)).astype(np.uint8)
    rows = []
    for _ in range(steps):
        rows.append(row)
        row = table[(np.roll(row, 1) << 2) | (row << 1) | np.roll(row, -1)]
    grid = np.stack(rows)
    top, left = rng.randint(0, steps - SIDE // cell), rng.randint(0, width - SIDE // cell)
    grid = grid[top : top + SIDE // cell, left : left + SIDE // cell]
    grid ^= (noise.random(grid.shape) < rng.uniform(0, 0.1)).astype(np.uint8)
    return np.kron(grid, np.ones((cell, cell), dtype=np.uint8))


def automata(out: Path, per_class: int) -> dict[str, int]:
    import numpy as np
    from PIL import Image

    counts = {}
    for rule in RULES:
        rng, noise, folder = class_draws(out, f"rule{rule}")
        for i in range(per_class):
            pixels = (255 * (1 - _diagram(rule, rng, noise))).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(folder / f"{i:04d}.png")
        counts[f"rule{rule}"] = per_class
    return counts


def scripture() -> dict[str, list[str]]:
    """Verses by part of the Bible, from ``bible``'s formatted text: a heading per chapter
    ("1 Samuel 3"), then one line per verse ("  20 Wherefore it came to pass ...")."""
    if not Path("/usr/bin/bible").exists():
        sys.exit("heldout4_data: scripture needs apt-get install bible-kjv bible-kjv-text")
    text = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True)
    part_of = {book: part for part, books in PARTS.items() for book in books}
    by_class: dict[str, set[str]] = {part: set() for part in PARTS}
    book = None
    for line in text.stdout.splitlines():
        if line and not line.startswith(" "):
            book = line.rsplit(" ", 1)[0]
            if book not in part_of:
                sys.exit(f"heldout4_data: bible printed a book this script does not know: {book!r}")
        elif line.strip() and book:
            verse = line.strip().split(" ", 1)[1]
            if len(verse) >= MIN_VERSE:
                by_class[part_of[book]].add(verse)
    return {part: list(v) for part, v in by_class.items()}


def code_languages() -> dict[str, list[str]]:
    by_class: dict[str, set[str]] = {}
    for language, (folders, suffix) in CODE.items():
        rng = random.Random(f"{SEED}-{language}")
        snippets: set[str] = set()
        files = sorted(p for f in folders for p in Path(f).rglob(f"*{suffix}") if p.is_file() and ".min." not in p.name)
        for path in files:
            lines = [s.strip() for s in path.read_text(encoding="utf-8", errors="replace").splitlines()]
            lines = [s for s in lines if s]
            starts = list(range(0, max(0, len(lines) - SNIPPET_LINES + 1)))
            rng.shuffle(starts)
            for start in starts[:PER_FILE]:
                snippet = "\n".join(lines[start : start + SNIPPET_LINES])
                if len(snippet) <= MAX_CHARS:
                    snippets.add(snippet)
        by_class[language] = snippets
    return {language: list(s) for language, s in by_class.items()}


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    if task == "typefaces":
        import matplotlib

        return f"matplotlib {matplotlib.__version__}\n", typefaces(out, per_class)
    if task == "automata":
        import numpy

        return f"numpy {numpy.__version__}\n", automata(out, per_class)
    if task == "scripture":
        return f"bible-kjv-text {_package_version('bible-kjv-text')}\n", write_texts(out, scripture(), per_class)
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True).stdout.strip()
    packages = ("libc6-dev", "cmake-data", "perl-modules-5.36", "tcl8.6")
    versions = f"python {sys.version.split()[0]}\nnpm {npm}\n" + "".join(
        f"{p} {_package_version(p)}\n" for p in packages
    )
    return versions, write_texts(out, code_languages(), per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout4_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
