"""The eighth set of held-out tasks (issue 21, look 18), written from Battle for Wesnoth's unit
sprites (Debian's ``wesnoth-1.16-data``), NeuroKit2's ECG simulator, the Essen folk-song
collection as music21 ships it, and the licence texts every Debian system carries
(``/usr/share/common-licenses``): nothing downloaded at run time, and no design choice of the
search has seen them.

Every earlier set has been looked at at least once and all seven are development data, so none
judges anything out of sample. These four judge the default at the frozen commit, once, on
roomier grids (search.py's HELD_OUT_8: nine learning rates a decade apart where the earlier
grids had five, three freeze depths for images), so that the search after the opening has room.

- ``unit_sprites`` (image; game art): which race a Wesnoth unit sprite belongs to (drakes,
  dwarves, wood elves, loyalist humans, orcs, saurians, undead and undead skeletons as one,
  monsters), one animation frame drawn at random per image from all of that race's frames, on a
  plain background of random colour, 64 px. Frames of one unit differ little, so the split
  shares units between training and test (as a game's own sprite sheet would).
- ``ecg_strips`` (image; cardiology): which heart-rate band a six-second ECG strip shows (50,
  65, 80, 95, 110 or 125 beats a minute, each +-5), simulated by NeuroKit2's ECGSYN with a
  random heart-rate variability, noise and amplitude, drawn as a trace over ECG paper (its grid
  in random pinks) at a random vertical offset, 64 px.
- ``folk_melodies`` (text; ethnomusicology): which region a folk melody of the Essen collection
  comes from (China, Germany: Erk's collection, Lorraine, Luxembourg), from its ABC notes alone
  (every header field, the key and metre among them, taken out).
- ``licences`` (text; software licences): which licence a passage of 14 words comes from
  (Apache 2.0, GNU FDL 1.3, GPL 2, GPL 3, LGPL 2.1, MPL 1.1, MPL 2.0), the texts cut into
  consecutive passages; a passage found in two licences is dropped.

Nearest earlier domains, said so that a reader can judge how fresh each is: unit sprites are
small drawings like icons (seventh set) and emoji_groups (second); ECG strips are traces like
chart_types (third) and radio_signals (fifth); folk melodies are symbol sequences like
code_languages (fourth); licences are formal English like man_sections (fifth) and the
definitions of foldoc (seventh). None has an earlier neighbour in its domain.

    apt-get install wesnoth-1.16-data && pip install neurokit2 music21
    python benchmarks/heldout8_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import _package_version, class_draws, write_tasks, write_texts  # noqa: E402

SIDE = 64
PER_CLASS = {"unit_sprites": 250, "ecg_strips": 260, "folk_melodies": 400, "licences": 300}
UNITS = Path("/usr/share/games/wesnoth/1.16/data/core/images/units")
RACES = {"drakes": ("drakes",), "dwarves": ("dwarves",), "elves": ("elves-wood",), "loyalists": ("human-loyalists",),
         "orcs": ("orcs",), "saurians": ("saurians",), "undead": ("undead", "undead-skeletal"),
         "monsters": ("monsters",)}  # fmt: skip
BANDS = {"bpm050": 50, "bpm065": 65, "bpm080": 80, "bpm095": 95, "bpm110": 110, "bpm125": 125}
REGIONS = {"china": ("han1", "han2"), "germany": ("erk5", "erk10", "erk20", "erk30"), "lorraine": ("lot",),
           "luxembourg": ("lux",)}  # fmt: skip
LICENCES = {"apache_2": "Apache-2.0", "gfdl_1_3": "GFDL-1.3", "gpl_2": "GPL-2", "gpl_3": "GPL-3",
            "lgpl_2_1": "LGPL-2.1", "mpl_1_1": "MPL-1.1", "mpl_2": "MPL-2.0"}  # fmt: skip
PASSAGE_WORDS = 14
MIN_CHARS, MAX_CHARS = 30, 300


def unit_sprites(out: Path, per_class: int) -> dict[str, int]:
    from PIL import Image

    if not UNITS.is_dir():
        sys.exit("heldout8_data: unit_sprites needs apt-get install wesnoth-1.16-data")
    counts = {}
    for race, folders in RACES.items():
        frames = sorted(f for name in folders for f in (UNITS / name).rglob("*.png"))
        rng, _, folder = class_draws(out, race)
        rng.shuffle(frames)
        for i, path in enumerate(frames[:per_class]):
            sprite = Image.open(path).convert("RGBA")
            box = sprite.getbbox()
            if box:
                sprite = sprite.crop(box)
            side = max(sprite.size)
            canvas = Image.new("RGBA", (side, side), tuple(rng.randint(0, 255) for _ in range(3)) + (255,))
            canvas.alpha_composite(sprite, ((side - sprite.width) // 2, (side - sprite.height) // 2))
            canvas.convert("RGB").resize((SIDE, SIDE), Image.LANCZOS).save(folder / f"{i:04d}.png")
        counts[race] = min(per_class, len(frames))
    return counts


def ecg_strips(out: Path, per_class: int) -> dict[str, int]:
    import neurokit2 as nk
    import numpy as np
    from PIL import Image, ImageDraw

    rate, seconds, scale = 250, 6, 4  # drawn at 4x, then shrunk (anti-aliased)
    width = SIDE * scale
    counts = {}
    for band, bpm in BANDS.items():
        rng, noise, folder = class_draws(out, band)
        for i in range(per_class):
            signal = nk.ecg_simulate(
                duration=seconds + 2, sampling_rate=rate, heart_rate=bpm + rng.uniform(-5, 5),
                heart_rate_std=rng.uniform(0.5, 4), noise=rng.uniform(0.01, 0.12), method="ecgsyn",
                random_state=rng.randrange(2**31),
            )  # fmt: skip
            start = rng.randrange(0, 2 * rate)  # the strip starts anywhere in a beat
            trace = np.asarray(signal[start : start + seconds * rate], dtype=np.float64)
            trace = trace + noise.normal(0, rng.uniform(0, 0.05), trace.shape)
            low, high = np.percentile(trace, 1), np.percentile(trace, 99.5)
            height = rng.uniform(0.45, 0.85) * width
            top = rng.uniform(0.05 * width, 0.95 * width - height)
            ys = top + (high - np.clip(trace, low, high)) / max(high - low, 1e-9) * height
            xs = np.linspace(0, width - 1, len(trace))
            paper = (255, rng.randint(225, 245), rng.randint(225, 245))
            line = (rng.randint(220, 250), rng.randint(120, 190), rng.randint(120, 190))
            image = Image.new("RGB", (width, width), paper)
            draw = ImageDraw.Draw(image)
            step = width / (seconds * 5)  # a large square of ECG paper: 0.2 s
            for k in range(seconds * 5 + 1):
                draw.line([(k * step, 0), (k * step, width)], fill=line, width=2)
                draw.line([(0, k * step), (width, k * step)], fill=line, width=2)
            ink = rng.randint(0, 60)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(ink, ink, ink), width=rng.randint(3, 6))
            image.resize((SIDE, SIDE), Image.LANCZOS).save(folder / f"{i:04d}.png")
        counts[band] = per_class
    return counts


def _essen() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        sys.exit("heldout8_data: folk_melodies needs pip install music21 (its corpus: the Essen collection)")
    return Path(spec.origin).parent / "corpus" / "essenFolksong"


def folk_melodies() -> dict[str, list[str]]:
    """Each tune's ABC note lines (no header field), by region."""
    by_class: dict[str, set[str]] = {}
    for region, files in REGIONS.items():
        texts = set()
        for name in files:
            body = (_essen() / f"{name}.abc").read_text(encoding="latin-1")
            for tune in re.split(r"\n(?=X:)", body):
                notes = [ln for ln in tune.splitlines() if ln.strip() and not re.match(r"^[A-Za-z+]:|^%", ln)]
                text = " ".join(" ".join(notes).split())
                if MIN_CHARS <= len(text):
                    texts.add(text[:MAX_CHARS])
        by_class[region] = texts
    return {cls: sorted(texts) for cls, texts in by_class.items()}


def licences() -> dict[str, list[str]]:
    """Consecutive passages of PASSAGE_WORDS words of each licence text; a passage in two licences is dropped."""
    by_class = {}
    for cls, name in LICENCES.items():
        words = Path("/usr/share/common-licenses", name).read_text(encoding="utf-8").split()
        passages = [" ".join(words[k : k + PASSAGE_WORDS]) for k in range(0, len(words), PASSAGE_WORDS)]
        by_class[cls] = {p for p in passages if len(p) >= MIN_CHARS}
    seen: dict[str, int] = {}
    for texts in by_class.values():
        for t in texts:
            seen[t] = seen.get(t, 0) + 1
    return {cls: sorted(t for t in texts if seen[t] == 1) for cls, texts in by_class.items()}


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    from importlib.metadata import version

    if task == "unit_sprites":
        return f"wesnoth-1.16-data {_package_version('wesnoth-1.16-data')}\n", unit_sprites(out, per_class)
    if task == "ecg_strips":
        import numpy

        versions = f"neurokit2 {version('neurokit2')}\nnumpy {numpy.__version__}\n"
        return versions, ecg_strips(out, per_class)
    if task == "folk_melodies":
        return f"music21 {version('music21')}\n", write_texts(out, folk_melodies(), per_class)
    return f"base-files {_package_version('base-files')}\n", write_texts(out, licences(), per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout8_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
