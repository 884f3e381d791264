"""The third set of held-out tasks (issue 21, look 7), written from Debian packages and
matplotlib: nothing downloaded at run time, and no design choice of the search has seen them.

The second set was looked at twice and 0.9's default (a trial valued on its last 5 epochs) was
chosen on its second look: its figures there are a selected result. These four judge 0.9 once.

- ``spoken_words`` (image; speech): which of the ten Speech Commands words (yes, no, up, down,
  left, right, on, off, stop, go) is spoken, as a log-mel spectrogram: each word spoken by
  ``espeak-ng`` in one of its English accents and voice variants at a random speed and pitch,
  placed at a random time in 1.2 s of noise at a random signal-to-noise ratio, 64 mel bands by
  64 frames.
- ``chart_types`` (image; charts): which kind of chart a small figure is (area, bar, box,
  histogram, line, pie, scatter), drawn by matplotlib with random data, colours, sizes, grids and axes,
  64 px.
- ``wordnet_glosses`` (text; lexicography): the WordNet lexicographer file of a noun from its
  gloss alone (act, animal, artifact, communication, food, person, state), examples in quotes
  taken out, from ``wordnet-base``.
- ``word_languages`` (text; languages): the language of a single word (Dutch, English, French,
  German, Italian, Spanish), from the Debian word lists; lower-cased, letters only, at least
  five of them, and words in more than one list left out.

    apt-get install espeak-ng wordnet-base wamerican wngerman wfrench witalian wspanish wdutch
    python benchmarks/heldout3_data.py --out results

writes ``results/<task>/<class>/<n>.txt`` (textfolder) and ``results/<task>/<class>/<n>.png``
(imagefolder) the way ``heldout2_data.py`` does: every example drawn by a fixed seed, so the same
package versions give the same files; the versions are written to ``<out>/<task>/VERSIONS``.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from heldout2_data import _package_version, class_draws, write_tasks, write_texts  # noqa: E402

SEED = 0
PER_CLASS = {"spoken_words": 200, "chart_types": 300, "wordnet_glosses": 600, "word_languages": 600}
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
ESPEAK_VARIANTS = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v")
RATE = 22050  # espeak-ng's sample rate
CLIP = int(1.2 * RATE)
MELS, FRAMES = 64, 64
CHARTS = ("area", "bar", "box", "histogram", "line", "pie", "scatter")
WORDNET = Path("/usr/share/wordnet/data.noun")
LEXNAMES = {4: "act", 5: "animal", 6: "artifact", 10: "communication", 13: "food", 18: "person", 26: "state"}
MIN_GLOSS = 20
WORDLISTS = {
    "dutch": ("wdutch", "dutch"), "english": ("wamerican", "american-english"), "french": ("wfrench", "french"),
    "german": ("wngerman", "ngerman"), "italian": ("witalian", "italian"), "spanish": ("wspanish", "spanish"),
}  # fmt: skip
MIN_LETTERS = 5


def _mel_filters(n_fft: int) -> list:
    import numpy as np

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = 700 * (10 ** (np.linspace(mel(60), mel(8000), MELS + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / RATE)
    bank = np.zeros((MELS, freqs.size))
    for m in range(MELS):
        lo, mid, hi = edges[m : m + 3]
        bank[m] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return bank


def _spoken(word: str, voice: str, speed: int, pitch: int) -> list:
    import numpy as np

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(wav[44:], dtype="<i2").astype(np.float64) / 32768  # after the RIFF header


def spoken_words(out: Path, per_class: int) -> dict[str, int]:
    import numpy as np
    from PIL import Image

    if not ESPEAK_VARIANTS.is_dir():
        sys.exit("heldout3_data: spoken_words needs apt-get install espeak-ng")
    variants = sorted(p.name for p in ESPEAK_VARIANTS.iterdir() if p.is_file())
    n_fft, hop = 512, (CLIP - 512) // (FRAMES - 1)
    bank, window = _mel_filters(n_fft), np.hanning(n_fft)
    counts = {}
    for word in WORDS:
        rng, noise, folder = class_draws(out, word)
        for i in range(per_class):
            voice = f"{rng.choice(ACCENTS)}+{rng.choice(variants)}"
            speech = _spoken(word, voice, rng.randint(110, 240), rng.randint(15, 85))
            speech = speech[: CLIP - 1] / max(np.abs(speech).max(), 1e-6)
            signal = np.zeros(CLIP)
            start = rng.randint(0, CLIP - speech.size)
            signal[start : start + speech.size] = speech
            snr_db = rng.uniform(0, 25)
            power = np.mean(speech**2)
            signal += noise.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), CLIP)
            frames = np.stack([signal[j * hop : j * hop + n_fft] * window for j in range(FRAMES)])
            spectrum = bank @ (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T
            db = 10 * np.log10(spectrum + 1e-10)
            db = np.clip(db, db.max() - 70, None)
            pixels = (255 * (db - db.min()) / max(db.max() - db.min(), 1e-6))[::-1].astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(folder / f"{i:04d}.png")
        counts[word] = per_class
    return counts


def _chart(kind: str, rng: random.Random, np_rng) -> object:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.0, 1.0), dpi=96)
    colour = [rng.random() * 0.8 for _ in range(3)]
    n = rng.randint(3, 9)
    if kind == "bar":
        heights = np_rng.uniform(0.2, 1.0, n)
        thickness = rng.uniform(0.4, 0.9)
        if rng.random() < 0.3:
            ax.barh(range(n), heights, color=colour, height=thickness)
        else:
            ax.bar(range(n), heights, color=colour, width=thickness)
    elif kind == "area":
        x, total = np.linspace(0, 1, 50), 0
        for _ in range(rng.randint(1, 3)):
            layer = total + np.abs(np.cumsum(np_rng.normal(0, 1, 50)))
            ax.fill_between(x, total, layer, alpha=rng.uniform(0.5, 1.0))
            total = layer
    elif kind == "box":
        ax.boxplot([np_rng.normal(rng.uniform(-1, 1), rng.uniform(0.3, 1.5), 40) for _ in range(rng.randint(1, 5))])
    elif kind == "histogram":
        ax.hist(np_rng.normal(0, 1, 300) * rng.uniform(0.5, 2), bins=rng.randint(6, 25), color=colour)
    elif kind == "line":
        x = np.linspace(0, 1, 50)
        for _ in range(rng.randint(1, 3)):
            ax.plot(x, np.cumsum(np_rng.normal(0, 1, 50)), lw=rng.uniform(0.8, 2.5))
    elif kind == "pie":
        ax.pie(np_rng.uniform(0.1, 1.0, n), startangle=rng.uniform(0, 360))
    elif kind == "scatter":
        m = rng.randint(15, 120)
        ax.scatter(np_rng.normal(0, 1, m), np_rng.normal(0, 1, m), s=rng.uniform(2, 25), color=colour)
    if rng.random() < 0.4:
        ax.grid(True, lw=0.4)
    if rng.random() < 0.3:
        ax.axis("off")
    ax.tick_params(labelsize=rng.uniform(3, 6))
    return fig


def chart_types(out: Path, per_class: int) -> dict[str, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    counts = {}
    for kind in CHARTS:
        rng, np_rng, folder = class_draws(out, kind)
        for i in range(per_class):
            fig = _chart(kind, rng, np_rng)
            fig.canvas.draw()
            image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            plt.close(fig)
            image.resize((64, 64), Image.BILINEAR).save(folder / f"{i:04d}.png")
        counts[kind] = per_class
    return counts


def wordnet_glosses() -> dict[str, list[str]]:
    """Noun glosses by lexicographer file: the definition before the first quoted example."""
    by_class: dict[str, set[str]] = {c: set() for c in LEXNAMES.values()}
    for line in WORDNET.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") or " | " not in line:
            continue
        lex = LEXNAMES.get(int(line.split()[1]))
        gloss = line.split(" | ", 1)[1]
        gloss = re.split(r';\s*"|\s"', gloss)[0].strip(" ;")
        if lex and len(gloss) >= MIN_GLOSS:
            by_class[lex].add(gloss)
    return {c: list(g) for c, g in by_class.items()}


def word_languages() -> dict[str, list[str]]:
    lists = {}
    for language, (_, name) in WORDLISTS.items():
        text = (Path("/usr/share/dict") / name).read_text(encoding="utf-8", errors="replace")
        lists[language] = {w.lower() for w in text.split() if w.isalpha() and len(w) >= MIN_LETTERS}
    seen: dict[str, int] = {}
    for words in lists.values():
        for w in words:
            seen[w] = seen.get(w, 0) + 1
    return {language: [w for w in words if seen[w] == 1] for language, words in lists.items()}


def _write(task: str, out: Path, per_class: int) -> tuple[str, dict[str, int]]:
    if task == "spoken_words":
        return f"espeak-ng {_package_version('espeak-ng')}\n", spoken_words(out, per_class)
    if task == "chart_types":
        import matplotlib

        return f"matplotlib {matplotlib.__version__}\n", chart_types(out, per_class)
    if task == "wordnet_glosses":
        return f"wordnet-base {_package_version('wordnet-base')}\n", write_texts(out, wordnet_glosses(), per_class)
    versions = "".join(f"{pkg} {_package_version(pkg)}\n" for pkg, _ in WORDLISTS.values())
    return versions, write_texts(out, word_languages(), per_class)


def main(argv: list[str] | None = None) -> int:
    return write_tasks(argv, "heldout3_data", __doc__, PER_CLASS, _write)


if __name__ == "__main__":
    sys.exit(main())
