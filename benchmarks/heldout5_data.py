"""The fifth set of held-out tasks (issue 21, look 10), written from Debian packages, Faker's
locale providers, the machine's own manual pages and numpy: nothing downloaded at run time, and
no design choice of the search has seen them. Recorded at 0.9.1 or later, so each finished
trial carries ``val_gflops`` and the look can charge FLOPs as well as look 8's measurement.

The fourth set was looked at once (look 9) and design step 10 was shaped by what it showed (the
value rule): its figures are no longer out of sample. These four judge the default that design
step 10 leaves, once.

- ``barcodes`` (image; machine-readable symbols): which of eight symbologies (Code 128, Code 39,
  EAN-13, Interleaved 2 of 5, QR Code, Data Matrix, PDF417, Aztec) a symbol is, drawn by
  ``zint`` from random data, with or without its human-readable text, at a random size, place
  and tilt on a random ground, under blur and noise, 64 px.
- ``radio_signals`` (image; radio): which of eight kinds of transmission (AM, FM, BPSK, on-off
  keying, 2-FSK, 4-FSK, a linear chirp, OFDM) a log-magnitude spectrogram shows: a random
  carrier, rate and deviation, white noise at -3 to 15 dB SNR, 64 x 64.
- ``addresses`` (text; postal addresses): which English-speaking country's format a street
  address and town are written in (Australia, India, Ireland, New Zealand, the United Kingdom,
  the United States), from Faker's locale providers; no postcode, region or country.
- ``man_sections`` (text; operating-system manuals): the section of the manual a sentence from
  a page's DESCRIPTION comes from (1 user commands, 2 system calls, 3 library functions, 5 file
  formats, 7 overviews and conventions, 8 administration commands), from the machine's English
  manual pages (``manpages``, ``manpages-dev`` and every installed package's own); at most 8
  sentences per page and 60 per family of pages (git, systemd, gcloud, ...).

Nearest earlier domains, said so that a reader can judge how fresh each is: radio_signals is a
spectrogram like spoken_words (third set); man_sections is software text like pkg_sections,
docstrings and code_languages; barcodes and addresses have no earlier neighbour.

    apt-get install zint manpages manpages-dev && pip install faker
    python benchmarks/heldout5_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import gzip
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import _package_version, class_draws, write_tasks, write_texts  # noqa: E402

SEED = 0
PER_CLASS = {"barcodes": 250, "radio_signals": 250, "addresses": 600, "man_sections": 600}
SIDE = 64
SYMBOLOGIES = {  # class -> (zint's barcode number, data drawn: digits or text, length range)
    "code128": (20, "text", (4, 14)),
    "code39": (8, "upper", (3, 10)),
    "ean13": (13, "digits", (12, 12)),
    "itf": (3, "digits", (6, 16)),
    "qr": (58, "text", (5, 40)),
    "datamatrix": (71, "text", (5, 40)),
    "pdf417": (55, "text", (5, 30)),
    "aztec": (92, "text", (5, 40)),
}
ALPHABETS = {
    "digits": "0123456789",
    "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-. ",
    "text": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:/-",
}
SIGNALS = ("am", "fm", "bpsk", "ook", "fsk2", "fsk4", "chirp", "ofdm")
RATE, NFFT, HOP = 8000.0, 126, 64  # 64 frequency bins, 64 frames
LOCALES = {"australia": "en_AU", "india": "en_IN", "ireland": "en_IE", "new_zealand": "en_NZ",
           "united_kingdom": "en_GB", "united_states": "en_US"}  # fmt: skip
MAN = Path("/usr/share/man")
SECTIONS = {"1_commands": "1", "2_system_calls": "2", "3_library": "3", "5_file_formats": "5",
            "7_overviews": "7", "8_administration": "8"}  # fmt: skip
PER_PAGE, PER_FAMILY, MIN_SENTENCE, MAX_SENTENCE = 8, 60, 40, 300


def _symbol(zint: str, number: int, data: str, text: bool, work: Path) -> object:
    from PIL import Image

    path = work / "symbol.png"
    args = [zint, "-b", str(number), "-d", data, "-o", str(path), "--scale", "1"]
    subprocess.run(args + ([] if text else ["--notext"]), capture_output=True, check=True)
    with Image.open(path) as image:
        return image.convert("L")


def barcodes(out: Path, per_class: int) -> dict[str, int]:
    import numpy as np
    from PIL import Image, ImageFilter

    zint = shutil.which("zint")
    if zint is None:
        sys.exit("heldout5_data: barcodes needs apt-get install zint")
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (number, alphabet, (shortest, longest)) in SYMBOLOGIES.items():
            rng, noise, folder = class_draws(out, name)
            for i in range(per_class):
                data = "".join(rng.choice(ALPHABETS[alphabet]) for _ in range(rng.randint(shortest, longest)))
                symbol = _symbol(zint, number, data, rng.random() < 0.5, Path(tmp))
                paper, ink = rng.randint(150, 255), rng.randint(0, 90)
                symbol = symbol.point(lambda v, p=paper, k=ink: k + (p - k) * v // 255)
                scale = rng.uniform(0.55, 0.95) * SIDE / max(symbol.size)
                symbol = symbol.resize((max(1, round(symbol.width * scale)), max(1, round(symbol.height * scale))))
                symbol = symbol.rotate(rng.uniform(-10, 10), expand=True, fillcolor=paper, resample=Image.BILINEAR)
                canvas = Image.new("L", (SIDE, SIDE), paper)
                left = rng.randint(min(0, SIDE - symbol.width), max(0, SIDE - symbol.width))
                top = rng.randint(min(0, SIDE - symbol.height), max(0, SIDE - symbol.height))
                canvas.paste(symbol, (left, top))
                canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
                pixels = np.asarray(canvas, dtype=np.float64) + noise.normal(0, rng.uniform(0, 20), (SIDE, SIDE))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(folder / f"{i:04d}.png")
            counts[name] = per_class
    return counts


def _waveform(kind: str, rng: random.Random, noise) -> object:
    import numpy as np

    n = NFFT + HOP * (SIDE - 1)
    t = np.arange(n) / RATE
    carrier = rng.uniform(700, 3300)

    def symbols(baud: float, levels: int) -> object:  # one level per sample, held for a symbol
        return noise.integers(0, levels, int(np.ceil(n * baud / RATE)) + 1)[(t * baud).astype(int)]

    if kind == "am":
        tones = sum(
            np.sin(2 * np.pi * rng.uniform(40, 400) * t + rng.uniform(0, 6.3)) for _ in range(rng.randint(1, 3))
        )
        signal = (1 + rng.uniform(0.3, 0.9) * tones / np.abs(tones).max()) * np.cos(2 * np.pi * carrier * t)
    elif kind == "fm":
        message = np.sin(2 * np.pi * rng.uniform(5, 60) * t) + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 20) * t)
        phase = 2 * np.pi * np.cumsum(carrier + rng.uniform(100, 600) * message / 1.5) / RATE
        signal = np.cos(phase)
    elif kind == "bpsk":
        signal = (2 * symbols(rng.uniform(100, 800), 2) - 1) * np.cos(2 * np.pi * carrier * t)
    elif kind == "ook":
        signal = symbols(rng.uniform(15, 80), 2) * np.cos(2 * np.pi * carrier * t)
    elif kind in ("fsk2", "fsk4"):
        levels = 2 if kind == "fsk2" else 4
        frequency = carrier + rng.uniform(80, 300) * (symbols(rng.uniform(15, 80), levels) - (levels - 1) / 2)
        signal = np.cos(2 * np.pi * np.cumsum(frequency) / RATE)
    elif kind == "chirp":
        low, high = sorted((rng.uniform(300, 3700), rng.uniform(300, 3700)))
        period = n / RATE / rng.randint(1, 4)
        position = (t % period) / period
        if rng.random() < 0.5:
            position = 1 - position
        signal = np.cos(2 * np.pi * np.cumsum(low + (high - low) * position) / RATE)
    elif kind == "ofdm":
        spacing, carriers = rng.uniform(30, 90), rng.randint(8, 24)
        symbol_length = int(RATE / spacing)
        first = carrier - spacing * carriers / 2
        signal = np.zeros(n)
        for start in range(0, n, symbol_length):
            s = t[start : start + symbol_length]
            phases = noise.integers(0, 4, carriers) * np.pi / 2 + np.pi / 4
            signal[start : start + symbol_length] = sum(
                np.cos(2 * np.pi * (first + k * spacing) * s + phases[k]) for k in range(carriers)
            ) / np.sqrt(carriers)
    else:
        raise ValueError(kind)
    power = np.mean(signal**2)
    snr = 10 ** (rng.uniform(-3, 15) / 10)
    return signal + noise.normal(0, np.sqrt(power / snr), n)


def radio_signals(out: Path, per_class: int) -> dict[str, int]:
    import numpy as np
    from PIL import Image

    window = np.hanning(NFFT)
    counts = {}
    for kind in SIGNALS:
        rng, noise, folder = class_draws(out, kind)
        for i in range(per_class):
            signal = _waveform(kind, rng, noise)
            frames = np.stack([signal[k * HOP : k * HOP + NFFT] * window for k in range(SIDE)])
            power = np.log10(np.abs(np.fft.rfft(frames, axis=1))[:, 1:] ** 2 + 1e-9).T[::-1]
            low, high = np.percentile(power, 5), power.max()
            pixels = np.clip((power - low) / (high - low), 0, 1) * 255
            Image.fromarray(pixels.astype(np.uint8)).convert("RGB").save(folder / f"{i:04d}.png")
        counts[kind] = per_class
    return counts


def addresses(per_class: int) -> dict[str, list[str]]:
    """A street address and its town per locale, drawn until ``2 * per_class`` distinct ones
    exist (``write_texts`` keeps ``per_class`` of them by the fixed seed)."""
    from faker import Faker

    by_class = {}
    for country, locale in LOCALES.items():
        fake = Faker(locale)
        fake.seed_instance(f"{SEED}-{country}")
        found: set[str] = set()
        for _ in range(50 * per_class):
            found.add(f"{fake.street_address()}, {fake.city()}".replace("\n", ", "))
            if len(found) >= 2 * per_class:
                break
        by_class[country] = list(found)
    return by_class


ESCAPES = (
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((oq|cq|aq)"), "'"),
    (re.compile(r"\\\((em|en|mi|hy)"), "-"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]|\\\*(\[[^\]]*\]|\(..|.)"), ""),  # other special characters, strings
    (re.compile(r"\\[hvsw]('[^']*'|[+-]?\d+|\[[^\]]*\])"), ""),  # motions, sizes, widths
    (re.compile(r"\\[-e]"), "-"),
    (re.compile(r"\\\."), "."),
    (re.compile(r"\\~"), " "),
    (re.compile(r"\\u\[\d+\]\\d|\\[mMn](\[[^\]]*\]|\(..|.)|\\[ud]"), ""),  # footnote marks, colours, registers
    (re.compile(r"\\[&c|^%:,/]|\\ "), ""),
)


def _description(page: Path) -> str:
    """The text of a manual page's DESCRIPTION section (man or mdoc macros), escapes removed;
    empty for a page that only sources another (``.so``)."""
    try:
        source = gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace")
    except (OSError, EOFError):
        return ""
    words, inside = [], False
    for line in source.splitlines():
        if line.startswith((".SH", ".Sh", ".sh")):
            inside = line.split(None, 1)[-1].strip().strip('"').upper() == "DESCRIPTION"
            continue
        if line.startswith(".so "):
            return ""
        if not inside:
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line.partition(" ")
            if macro in (
                ".B",
                ".I",
                ".BR",
                ".IR",
                ".RB",
                ".RI",
                ".BI",
                ".IB",
                ".Nm",
                ".Xr",
                ".Dq",
                ".Sq",
                ".Em",
                ".Va",
                ".Fn",
            ):
                words.append(rest.replace('"', ""))
            elif macro in (".PP", ".LP", ".P", ".Pp", ".IP", ".TP", ".sp", ".br"):
                words.append("\n")
            continue
        words.append(line)
    text = " ".join(words)
    for pattern, replacement in ESCAPES:
        text = pattern.sub(replacement, text)
    return text


def man_sections() -> dict[str, list[str]]:
    """Sentences per section: at most ``PER_PAGE`` from a page and ``PER_FAMILY`` from a family of
    pages (the name before its first ``-``, ``_`` or ``.``: git, systemd, gcloud), so that no one
    package's pages make up a section (this machine has 16,631 gcloud pages in section 1)."""
    if not (MAN / "man2").is_dir():
        sys.exit("heldout5_data: man_sections needs the manual pages: apt-get install manpages manpages-dev")
    by_class: dict[str, list[str]] = {}
    for cls, number in SECTIONS.items():
        rng = random.Random(f"{SEED}-{cls}")
        families: dict[str, list[str]] = {}
        for page in sorted((MAN / f"man{number}").glob(f"*.{number}.gz")):
            found = []
            for paragraph in _description(page).split("\n"):
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                    if MIN_SENTENCE <= len(sentence) <= MAX_SENTENCE and len(sentence.split()) >= 6:
                        found.append(sentence)
            rng.shuffle(found)
            families.setdefault(re.split(r"[-_.]", page.name)[0], []).extend(found[:PER_PAGE])
        sentences: set[str] = set()
        for family in families.values():
            rng.shuffle(family)
            sentences.update(family[:PER_FAMILY])
        by_class[cls] = list(sentences)
    return by_class


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    import numpy

    if task == "barcodes":
        return f"zint {_package_version('zint')}\nnumpy {numpy.__version__}\n", barcodes(out, per_class)
    if task == "radio_signals":
        return f"numpy {numpy.__version__}\n", radio_signals(out, per_class)
    if task == "addresses":
        import faker

        return f"faker {faker.VERSION}\n", write_texts(out, addresses(per_class), per_class)
    pages = sum(len(list((MAN / f"man{n}").glob(f"*.{n}.gz"))) for n in SECTIONS.values())
    versions = "".join(f"{p} {_package_version(p)}\n" for p in ("manpages", "manpages-dev"))
    versions += f"and the English manual pages of every installed package ({pages} pages in the six sections)\n"
    return versions, write_texts(out, man_sections(), per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout5_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
