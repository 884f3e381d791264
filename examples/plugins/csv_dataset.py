"""A dataset plugin: images listed in a CSV file (``file,label`` per row).

Many labelled collections arrive as a folder of images plus a spreadsheet of
labels. This plugin reads ``labels.csv`` next to the images and makes seeded,
stratified validation and test splits with tlbench's own helper.
"""

import csv

import tlbench
from tlbench.splits import stratified_split
from tlbench.types import Dataset, DatasetSplits, Split, UserError, config_path


def load_csv_images(request):
    folder = config_path(request.options.get("path", ""), request.base_dir, "dataset csv_images: path")
    table = folder / "labels.csv"
    if not table.is_file():
        raise UserError(f"dataset csv_images: path: {table} does not exist; point 'path' at a folder with labels.csv")
    with table.open(newline="") as f:
        rows = [(folder / row["file"], row["label"]) for row in csv.DictReader(f)]
    classes = tuple(sorted({label for _, label in rows}))
    if len(classes) < 2:
        raise UserError(f"dataset csv_images: {table} names {len(classes)} class(es); need at least 2")
    files = [path for path, _ in rows]
    everything = Split(
        labels=tuple(classes.index(label) for _, label in rows),
        ids=tuple(str(path) for path in files),  # ids must be unique: the host checks splits share none
        load=lambda i: _open(files[i]),
    )
    val, test, train = stratified_split(everything.labels, [0.2, 0.2], request.seed)
    return DatasetSplits(
        train=everything.subset(train), val=everything.subset(val), test=everything.subset(test), classes=classes
    )


def _open(path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image


@tlbench.hookimpl
def tlbench_datasets():
    yield Dataset(
        name="csv_images",
        load=load_csv_images,
        options={"path": "folder holding labels.csv (columns file,label) and the images"},
        description="images listed with their labels in labels.csv",
    )
