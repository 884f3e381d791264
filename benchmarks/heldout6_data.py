"""The sixth set of held-out tasks (issue 21, look 12), written from RDKit, schemdraw and the
GNU Collaborative International Dictionary of English (Debian's ``dict-gcide``): nothing
downloaded at run time, and no design choice of the search has seen them. Recorded at 0.9.2 or
later, so each finished trial carries ``val_gflops`` and each screen its ``test_seconds``.

The fifth set was looked at three times (looks 10 and 11, the second with a measurement
corrected after the first): its figures are no longer out of sample. These four judge 0.9.2's
default, under both measurements, once.

- ``molecules`` (image; chemistry): which functional group (alcohol, aldehyde, amine, carboxylic
  acid, ester, ether, ketone, nitrile) a small organic molecule carries, drawn by RDKit as a
  2-D skeletal formula in grey: a random carbon skeleton (a chain, branched or not, or a benzene
  ring with or without a chain) and exactly one group, at a random rotation, size and line
  width, under blur and noise, 64 px.
- ``circuits`` (image; electronics): which of eight circuits (a voltage divider, an RC low-pass
  and an RC high-pass filter, a series RLC circuit, a half-wave rectifier, an LED with its
  resistor, an inverting and a non-inverting op-amp amplifier) a schematic drawn by schemdraw
  shows, with random component values as labels, ANSI or IEC symbols, random unit lengths, a
  random mirror and tilt, under blur and noise, 64 px.
- ``etymologies`` (text; history of words): where an English word came from (Latin, Greek,
  French, or English's own older stages: the dictionary's "AS." and "OE."), from the word and
  its first definition in GCIDE, the etymology taken out.
- ``quotations`` (text; English literature): who wrote a quotation (Shakespeare, Milton,
  Dryden, Spenser, Pope, Macaulay), from the quotations GCIDE gives to illustrate its words,
  the attribution taken out.

Nearest earlier domains, said so that a reader can judge how fresh each is: etymologies asks
about words' languages like word_languages (third set), from English definitions where that
task read foreign words; quotations are quotations like fortunes (second set), sorted by author
where those were sorted by topic; wordnet_glosses (third set) also read dictionary definitions;
molecules and circuits have no earlier neighbour (line drawings like chart_types, third set).

    apt-get install dict-gcide && pip install rdkit schemdraw
    python benchmarks/heldout6_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import _package_version, class_draws, write_tasks, write_texts  # noqa: E402

PER_CLASS = {"molecules": 250, "circuits": 250, "etymologies": 600, "quotations": 280}
SIDE = 64
GROUPS = {  # class -> how the group joins a skeleton (L) and, where it sits inside a chain, a second one (R)
    "alcohol": "{L}O",
    "aldehyde": "{L}C=O",
    "amine": "{L}N",
    "carboxylic_acid": "{L}C(=O)O",
    "ester": "{L}C(=O)O{R}",
    "ether": "{L}O{R}",
    "ketone": "{L}C(=O){R}",
    "nitrile": "{L}C#N",
}
CIRCUITS = ("voltage_divider", "rc_lowpass", "rc_highpass", "rlc_series", "half_wave_rectifier",
            "led_resistor", "inverting_amplifier", "noninverting_amplifier")  # fmt: skip
GCIDE = Path("/usr/share/dictd")
ORIGINS = {"L": "latin", "Gr": "greek", "F": "french", "OF": "french", "AS": "english", "OE": "english"}
AUTHORS = {"Shak": "shakespeare", "Milton": "milton", "Dryden": "dryden", "Spenser": "spenser", "Pope": "pope",
           "Macaulay": "macaulay"}  # fmt: skip
MIN_CHARS, MAX_CHARS = 30, 300


def _finish(image, rng, noise, folder: Path, i: int) -> None:
    """A drawing on white, greyed, turned, scaled into a 64 px square, blurred and noised."""
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps

    grey = ImageOps.invert(image.convert("L"))  # ink bright, paper black: cropping and turning pad with paper
    box = grey.getbbox()
    if box:
        grey = grey.crop(box)
    grey = grey.rotate(rng.uniform(-180, 180), expand=True, resample=Image.BILINEAR)
    scale = rng.uniform(0.6, 0.95) * SIDE / max(grey.size)
    grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.LANCZOS)
    canvas = Image.new("L", (SIDE, SIDE), 0)
    canvas.paste(grey, (rng.randint(0, SIDE - grey.width), rng.randint(0, SIDE - grey.height)))
    paper, ink = rng.randint(170, 255), rng.randint(0, 80)
    canvas = canvas.point(lambda v, p=paper, k=ink: p - (p - k) * v // 255)
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    pixels = np.asarray(canvas, dtype=np.float64) + noise.normal(0, rng.uniform(0, 12), (SIDE, SIDE))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(folder / f"{i:04d}.png")


RINGS = ("c1ccccc1", "Cc1ccccc1", "Cc1cccc(c1)", "Cc1ccc(cc1)", "C1CCCCC1", "CC1CCC(CC1)", "C1CCCC1")  # the
# group joins the atom written last: benzene (plain, or a methyl ortho, meta or para to it),
# cyclohexane (plain or para-methyl), cyclopentane


def _chain(rng, shortest: int, longest: int) -> str:
    """An alkyl chain in SMILES, a methyl or ethyl branch now and then (never on its ends)."""
    atoms = ["C"] * rng.randint(shortest, longest)
    for k in range(1, len(atoms) - 1):
        if rng.random() < 0.3:
            atoms[k] = rng.choice(["C(C)", "C(C)", "C(CC)"])
    return "".join(atoms)


def _skeleton(rng) -> str:
    """A carbon skeleton for the group to join: a ring (and a chain from it) or a chain."""
    if rng.random() < 0.4:
        return rng.choice(RINGS) + ("" if rng.random() < 0.4 else _chain(rng, 1, 3))
    return _chain(rng, 1, 8)


def molecules(out: Path, per_class: int) -> dict[str, int]:
    from rdkit import Chem
    from rdkit.Chem import Draw, rdDepictor

    counts = {}
    for name, pattern in GROUPS.items():
        rng, noise, folder = class_draws(out, name)
        for i in range(per_class):
            smiles = pattern.format(L=_skeleton(rng), R=_chain(rng, 1, 4))
            mol = Chem.MolFromSmiles(smiles)
            if mol is None:  # a bug in the patterns above, not data: stop
                raise ValueError(f"molecules: RDKit cannot read {smiles}")
            rdDepictor.SetPreferCoordGen(True)
            rdDepictor.Compute2DCoords(mol)
            options = Draw.MolDrawOptions()
            options.bondLineWidth = rng.randint(1, 3)
            options.useBWAtomPalette()
            options.rotate = rng.uniform(0, 360)
            image = Draw.MolToImage(mol, size=(240, 240), options=options)
            _finish(image, rng, noise, folder, i)
        counts[name] = per_class
    return counts


def _value(rng, unit: str) -> str:
    return f"{rng.choice([1, 1.5, 2.2, 3.3, 4.7, 6.8, 10, 22, 47, 100, 220, 470])}{rng.choice(['', 'k', 'm', 'µ', 'n'])}{unit}"


def _circuit(kind: str, rng):
    """One schematic of ``kind`` (a schemdraw Drawing), its values and symbol style drawn."""
    import schemdraw
    import schemdraw.elements as elm

    iec = rng.random() < 0.5
    resistor = elm.ResistorIEC if iec else elm.Resistor
    unit = rng.uniform(2.0, 3.5)
    d = schemdraw.Drawing(show=False, unit=unit, lw=rng.uniform(1.0, 2.5), fontsize=rng.randint(9, 14))
    label = (lambda e, u: e.label(_value(rng, u))) if rng.random() < 0.8 else (lambda e, u: e)
    source = elm.SourceSin if kind == "half_wave_rectifier" or rng.random() < 0.3 else elm.SourceV
    if kind in ("inverting_amplifier", "noninverting_amplifier"):
        op = elm.Opamp(leads=True)
        d += op
        if kind == "inverting_amplifier":
            d += elm.Line().left(d.unit / 4).at(op.in1)
            d += label(resistor().left(), "Ω")
            d += elm.Dot(open=True)
            d += elm.Line().down(d.unit / 2).at(op.in2)
            d += elm.Ground(lead=False)
            d += elm.Line().up(d.unit / 2).at(op.in1)
            d += label(resistor().tox(op.out), "Ω")
            d += elm.Line().toy(op.out)
        else:
            d += elm.Line().left(d.unit / 4).at(op.in2)
            d += elm.Dot(open=True)
            d += elm.Line().left(d.unit / 4).at(op.in1)
            d += label(resistor().down(), "Ω")
            d += elm.Ground(lead=False)
            d += elm.Line().up(d.unit / 2).at(op.in1)
            d += label(resistor().tox(op.out), "Ω")
            d += elm.Line().toy(op.out)
        d += elm.Line().right(d.unit / 4).at(op.out)
        d += elm.Dot(open=True)
        return d
    start = d.add(label(source().up(), "V")).start
    if kind == "voltage_divider":
        d += label(resistor().right(), "Ω")
        d += elm.Dot()
        d += label(resistor().down(), "Ω")
    elif kind == "rc_lowpass":
        d += label(resistor().right(), "Ω")
        d += elm.Dot()
        d += label(elm.Capacitor().down(), "F")
    elif kind == "rc_highpass":
        d += label(elm.Capacitor().right(), "F")
        d += elm.Dot()
        d += label(resistor().down(), "Ω")
    elif kind == "rlc_series":
        d += label(resistor().right(), "Ω")
        d += label(elm.Inductor2().right() if rng.random() < 0.5 else elm.Inductor().right(), "H")
        d += label(elm.Capacitor().down(), "F")
    elif kind == "half_wave_rectifier":
        d += elm.Diode().right()
        d += elm.Dot()
        d += label(resistor().down(), "Ω")
    elif kind == "led_resistor":
        d += label(resistor().right(), "Ω")
        d += elm.LED().down()
    d += elm.Line().tox(start)  # back along the bottom to the source
    if rng.random() < 0.5:  # a ground symbol or not, whatever the circuit
        d += elm.Ground(lead=False)
    return d


def circuits(out: Path, per_class: int) -> dict[str, int]:
    from matplotlib import pyplot
    from PIL import Image, ImageOps

    counts = {}
    for name in CIRCUITS:
        rng, noise, folder = class_draws(out, name)
        for i in range(per_class):
            image = Image.open(io.BytesIO(_circuit(name, rng).get_imagedata("png"))).convert("RGB")
            pyplot.close("all")  # schemdraw draws each on a pyplot figure of its own
            if rng.random() < 0.5:
                image = ImageOps.mirror(image)
            _finish(image, rng, noise, folder, i)
        counts[name] = per_class
    return counts


def _gcide_entries() -> list[str]:
    """Every entry of GCIDE once."""
    return dictd_entries("gcide")


def dictd_entries(name: str) -> list[str]:
    """Every entry of the dictd dictionary ``name`` (Debian's ``dict-<name>``) once, read through
    its index (offsets in dictd's base 64)."""
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def number(text: str) -> int:
        n = 0
        for ch in text:
            n = n * 64 + digits.index(ch)
        return n

    data, index = GCIDE / f"{name}.dict.dz", GCIDE / f"{name}.index"
    if not data.exists():
        sys.exit(f"{Path(sys.argv[0]).stem}: this task needs apt-get install dict-{name}")
    raw = gzip.open(data, "rb").read()  # dictzip is gzip with an index in its header
    seen, entries = set(), []
    for line in index.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-"):
            continue
        where = (number(parts[1]), number(parts[2]))
        if where not in seen:
            seen.add(where)
            entries.append(raw[where[0] : where[0] + where[1]].decode("utf-8", "replace"))
    return entries


def _bracket(text: str, start: int) -> int:
    """The index just past the bracket opened at ``start`` (brackets nest in GCIDE's markup)."""
    depth = 0
    for k in range(start, len(text)):
        depth += {"[": 1, "]": -1}.get(text[k], 0)
        if depth == 0:
            return k + 1
    return len(text)


def _clean(text: str) -> str:
    text = re.sub(r"\[[^\[\]]*\]", "", text)  # markup ([ae], [=e]) and notes ([Obs.], [R.]): inner first
    text = re.sub(r"\[[^\[\]]*\]", "", text)
    text = re.sub(r'"[^"]*"\s*--\s?[A-Z][^.]*\.', "", text)  # an attributed quotation inside a definition
    text = re.sub(r"\s--\s?[A-Z][A-Za-z.]*(?: [A-Z][A-Za-z.]*)*\.?", "", " " + text)  # an attribution left alone
    return " ".join(text.replace("{", "").replace("}", "").split()).strip(" ;,")


def etymologies() -> dict[str, list[str]]:
    """ "word: first definition" by the language the word's etymology names first."""
    head = re.compile(r"^(\S[^\\\n]*?) \\")
    by_class: dict[str, dict[str, str]] = {cls: {} for cls in dict.fromkeys(ORIGINS.values())}
    for entry in _gcide_entries():
        match = head.match(entry)
        if not match:
            continue
        word = match.group(1).strip()
        header = entry.split("[1913 Webster]", 1)[0]
        origin = re.search(r"\[([A-Z][A-Za-z]*)\. ", header)
        if not origin or origin.group(1) not in ORIGINS:
            continue
        definition = header[_bracket(header, origin.start()) :]
        definition = re.sub(r"^\s*(1\.)?\s*(\([A-Z][A-Za-z.]*\)\s*)*", "", definition)  # sense number, field label
        text = _clean(definition)
        if MIN_CHARS <= len(text) <= MAX_CHARS and word.lower() not in by_class[ORIGINS[origin.group(1)]]:
            by_class[ORIGINS[origin.group(1)]][word.lower()] = f"{word}: {text}"
    return {cls: list(words.values()) for cls, words in by_class.items()}


def quotations() -> dict[str, list[str]]:
    """The quotations GCIDE attributes to each author (on lines of their own), once each."""
    by_class: dict[str, set[str]] = {cls: set() for cls in AUTHORS.values()}
    attribution = re.compile(r"^--\s?([A-Z][A-Za-z. ]*?)\.?$")
    for entry in _gcide_entries():
        lines: list[str] = []
        for line in entry.split("\n"):
            stripped = line.strip()
            match = attribution.match(stripped)
            if match:
                author = AUTHORS.get(match.group(1).strip())
                text = _clean(" ".join(lines))
                if author and MIN_CHARS <= len(text) <= MAX_CHARS:
                    by_class[author].add(text)
                lines = []
            elif line.startswith("        ") and stripped and not re.match(r"^(\[|\d+\.|Note:|Syn\.)", stripped):
                lines.append(stripped)
            else:
                lines = []
    return {cls: sorted(texts) for cls, texts in by_class.items()}


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    import numpy

    if task == "molecules":
        import rdkit

        return f"rdkit {rdkit.__version__}\nnumpy {numpy.__version__}\n", molecules(out, per_class)
    if task == "circuits":
        import matplotlib
        import schemdraw

        versions = (
            f"schemdraw {schemdraw.__version__}\nmatplotlib {matplotlib.__version__}\nnumpy {numpy.__version__}\n"
        )
        return versions, circuits(out, per_class)
    versions = f"dict-gcide {_package_version('dict-gcide')}\n"
    texts = etymologies() if task == "etymologies" else quotations()
    return versions, write_texts(out, texts, per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout6_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
