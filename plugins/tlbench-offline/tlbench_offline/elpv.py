"""ELPV: electroluminescence images of solar cells, the offline stand-in for grey-scale
inspection imaging (X-rays, wafers, welds): one channel, fine structure, few defects.

Source: the PyPI package ``elpv-dataset`` (Buerhop-Lutz et al. 2018, Deitsch et al.
2019; code Apache-2.0, **images CC BY-NC-SA 4.0: non-commercial use, share alike,
attribution**). 2,624 cells of 300x300 px, 8-bit grey-scale, from 44 modules, each
labelled by experts with the probability that it is defective: 0, 1/3, 2/3 or 1, and
its type (mono- or polycrystalline). The four levels are the classes here; they are
imbalanced (1,508 / 295 / 106 / 715), so the report adds balanced accuracy.

Split 60/20/20, stratified by level *and* cell type, with a fixed seed: the same
cells are tested in every run. ``cell_type: mono`` or ``poly`` keeps one type.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tlbench.splits import stratified_split
from tlbench.types import DatasetRequest, DatasetSplits, Split, UserError

SPLIT_SEED = 0
FRACTIONS = [0.2, 0.2]  # val, test; the rest trains
CLASSES = ("p0_functional", "p33_mild", "p67_likely", "p100_defective")  # defect probability 0, 1/3, 2/3, 1
TYPES = ("mono", "poly")
OPTIONS = {"cell_type": "all (default), mono or poly: keep the cells of one type"}


def data_folder() -> Path:
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset elpv: the package elpv-dataset is not installed; pip install elpv-dataset")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_labels(folder: Path) -> list[tuple[str, int, str]]:
    """(image path inside folder, class index, cell type) per cell, in the file's order."""
    rows = []
    for line in (folder / "labels.csv").read_text().splitlines():
        if not line.strip():
            continue
        path, probability, kind = line.split()
        rows.append((path, round(float(probability) * 3), kind))
    return rows


def load_elpv(request: DatasetRequest) -> DatasetSplits:
    from PIL import Image

    kind = request.options.get("cell_type", "all")
    if kind not in ("all", *TYPES):
        raise UserError(f"dataset elpv: cell_type: {kind!r} is not all, mono or poly")
    folder = data_folder()
    rows = [r for r in read_labels(folder) if kind == "all" or r[2] == kind]

    def load(i: int):
        with Image.open(folder / rows[i][0]) as image:
            image.load()
            return image

    whole = Split(labels=tuple(r[1] for r in rows), ids=tuple(f"elpv:{r[0]}" for r in rows), load=load)
    strata = [label * len(TYPES) + TYPES.index(t) for _, label, t in rows]  # level x cell type
    val, test, train = stratified_split(strata, FRACTIONS, SPLIT_SEED)
    return DatasetSplits(train=whole.subset(train), val=whole.subset(val), test=whole.subset(test), classes=CLASSES)
