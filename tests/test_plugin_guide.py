"""docs/plugins.md: its examples are real files that load, pass the conformance kit and
run in a benchmark; the kit passes every shipped plugin and fails broken ones with a
clear message; mistakes in plugins are one line naming the plugin and the record."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_benchmark
from PIL import Image

from tlbench import cli, testing

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "plugins"


def make_csv_data(folder: Path, per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        for label in ("healthy", "rust", "scab"):
            for i in range(per_class):
                name = f"{label}_{i}.png"
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / name)
                writer.writerow([name, label])
    return folder


def test_every_code_block_of_the_guide_is_the_example_file_it_names():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- file: (\S+) .*?-->\n```python\n(.*?)```", doc, flags=re.S)
    assert {Path(name).name for name, _ in blocks} == {p.name for p in EXAMPLES.glob("*.py")}
    for name, code in blocks:
        assert code == (ROOT / name).read_text(encoding="utf-8").rstrip("\n") + "\n", (
            f"{name} differs from docs/plugins.md"
        )


def test_the_examples_pass_the_conformance_kit(tmp_path):
    data = make_csv_data(tmp_path / "leaves")
    assert testing.check_plugin(
        str(EXAMPLES / "csv_dataset.py"),
        dataset_options={"csv_images": {"path": str(data)}},
        dataset_sizes={"csv_images": (18, 6, 6)},
    ) == ["dataset csv_images"]
    assert testing.check_plugin(str(EXAMPLES / "tiny_cnn.py")) == ["backbone tiny_cnn"]
    assert testing.check_plugin(str(EXAMPLES / "head_then_all.py")) == ["strategy head_then_all"]
    assert testing.check_plugin(str(EXAMPLES / "adapter_example.py")) == ["strategy head_and_last_norm"]
    assert testing.check_plugin(str(EXAMPLES / "l2sp_strategy.py")) == ["strategy l2sp"]
    assert testing.check_plugin(str(EXAMPLES / "jsonl_tracker.py")) == ["tracker jsonl"]


def test_the_kit_hands_back_what_a_tracker_wrote():
    from tlbench.host import plugins

    _, (record,) = testing.records(str(EXAMPLES / "jsonl_tracker.py"))
    folder = testing.check_tracker(record)
    complete, interrupted = (json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines())
    assert complete == {
        "run": "run", "dataset": "data", "trial": 0, "state": "complete", "backbone": "tiny", "strategy": "linear_probe",
        "params": {"lr_head": 0.01}, "val_curve": [0.5, 0.75], "test_accuracy": 0.7, "train_gflops": 2.0,
    }  # fmt: skip
    # the kit drives an interrupted trial too, as a run stopped by Ctrl-C sends it
    assert interrupted["trial"] == 1 and interrupted["state"] == "failed" and interrupted["val_curve"] == [0.6]
    assert plugins.KINDS[type(record)] == "tracker"


def test_the_examples_run_in_a_benchmark(tmp_path, write_config, capsys):
    make_csv_data(tmp_path / "leaves")
    for example in EXAMPLES.glob("*.py"):
        (tmp_path / "plugins").mkdir(exist_ok=True)
        (tmp_path / "plugins" / example.name).write_text(example.read_text())
    data = tiny_benchmark(
        name="guide",
        plugins=["plugins/"],
        datasets=[{"name": "csv_images", "path": "leaves"}],
        backbones=[{"name": "tiny_cnn", "pretrained": False}],
        strategies=[
            {"name": "head_then_all", "head_epochs": 1, "epochs": 1},
            {"name": "head_and_last_norm", "epochs": 1},
            {"name": "l2sp", "epochs": 1, "alpha": 0.01},
        ],
        search={
            "n_trials": 6,
            "startup_trials": 6,
            "sampler": "random",
            "pruner": "none",
            "enqueue": [  # each strategy once, the random sampler the rest
                {
                    "backbone": "tiny_cnn-scratch",
                    "strategy": "l2sp",
                    "params": {"freeze": 0.0, "lr_backbone": 1e-3, "lr_head": 1e-2},
                },
                {"backbone": "tiny_cnn-scratch", "strategy": "head_then_all", "params": {"lr": 1e-3}},
                {"backbone": "tiny_cnn-scratch", "strategy": "head_and_last_norm", "params": {"lr": 1e-2}},
            ],
        },  # fmt: skip
        trackers=[
            {"name": "jsonl", "path": "seen.jsonl"},
            {"name": "jsonl", "path": "also.jsonl"},
        ],  # one tracker twice
    )
    assert cli.main(["run", str(write_config(data)), "--format", "csv"]) == 0, capsys.readouterr().err
    trials = pd.read_csv(next((tmp_path / "results" / "guide").glob("*/trials.csv")))
    assert trials["state"].eq("COMPLETE").all() and set(trials["strategy"]) == {
        "head_then_all",
        "head_and_last_norm",
        "l2sp",
    }
    # the L2-SP example declares that its penalty reads only trainable weights (API 1.5): the cache stays on
    assert trials.loc[trials["strategy"] == "l2sp", "feature_cache"].str.startswith("l2sp: extracted at ").all()
    # the tracker saw every trial, with what the results hold
    seen = {line["trial"]: line for line in map(json.loads, (tmp_path / "seen.jsonl").read_text().splitlines())}
    assert (tmp_path / "also.jsonl").read_text() == (tmp_path / "seen.jsonl").read_text()
    assert sorted(seen) == sorted(trials["trial"])
    for _, row in trials.iterrows():
        assert (
            seen[row["trial"]]["test_accuracy"] == row["test_accuracy"]
            and seen[row["trial"]]["strategy"] == row["strategy"]
        )
    # the head (64*3 + 3) and block2's batch norm (64 + 64) train; tiny_cnn has 24,003 parameters
    adapted = trials[trials["strategy"] == "head_and_last_norm"]
    assert adapted["trainable_params"].eq(195 + 128).all() and adapted["total_params"].eq(24003).all()
    assert trials.loc[trials["strategy"] == "head_then_all", "trainable_params"].eq(24003).all()


IMAGEFOLDER_OPTIONS = {"val_fraction": 0.25, "test_fraction": 0.25}


def test_every_built_in_and_first_party_plugin_passes_the_kit(tmp_path):
    from test_datasets import make_folder

    make_folder(tmp_path / "images", {"a": 6, "b": 6})
    assert sorted(
        testing.check_plugin(
            "tlbench.host.builtins.datasets",
            dataset_options={
                "imagefolder": {"path": str(tmp_path / "images"), **IMAGEFOLDER_OPTIONS},
                "torchvision": {"dataset": "FakeData", "args": {"size": 60, "num_classes": 3, "image_size": [3, 8, 8]}},
            },
        )
    ) == ["dataset imagefolder", "dataset synthetic", "dataset torchvision"]
    assert testing.check_plugin(
        "tlbench.host.builtins.backbones",
        backbone_models={
            "timm": ["test_resnet", "test_efficientnet", "test_vit"],
            "torchvision": ["mobilenet_v3_small"],
        },
    )
    assert testing.check_plugin("tlbench.host.builtins.strategies") == [
        "strategy linear_probe",
        "strategy finetune",
        "strategy two_stage",
        "strategy layerwise",
    ]
    assert testing.check_plugin("peft") == ["strategy bitfit", "strategy lora"]  # by entry-point name


def _plugin(tmp_path, body: str, name: str = "broken.py") -> str:
    path = tmp_path / name
    path.write_text(
        "import tlbench\nimport torch\nfrom torch import nn\nfrom tlbench.types import *\n" + textwrap.dedent(body)
    )
    return str(path)


TINY = """
class Net(nn.Module):
    def __init__(self, n, unused=False):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)
        self.spare = nn.Linear(2, 2)
        self.head = nn.Linear(4, n)
    def forward(self, x):
        return self.head(self.b(self.a(x)).mean((2, 3)))

def built(request, groups=None, head=None, net=None):
    net = net or Net(request.num_classes)
    names = [n for n, _ in net.named_parameters()]
    g = groups or (("a.weight", "a.bias"), ("b.weight", "b.bias", "spare.weight", "spare.bias"))
    return BuiltBackbone(net, g, head or ("head.weight", "head.bias"), DataConfig(16, (0.5,) * 3, (0.5,) * 3))
"""


@pytest.mark.parametrize(
    "body, expected",
    [
        (  # a parameter no group names
            TINY
            + "\n@tlbench.hookimpl\ndef tlbench_backbones():\n    yield Backbone('b1', lambda r: built(r, groups=(('a.weight', 'a.bias'), ('b.weight', 'b.bias'))))\n",
            r"backbone 'b1': build\(\): returned groups \+ head that do not name every parameter exactly once \(missing \['spare.bias', 'spare.weight'\]",
        ),
        (  # groups listed output first
            TINY
            + "\n@tlbench.hookimpl\ndef tlbench_backbones():\n    yield Backbone('b2', lambda r: built(r, groups=(('b.weight', 'b.bias', 'spare.weight', 'spare.bias'), ('a.weight', 'a.bias'))))\n",
            r"backbone 'b2': groups must run from input to output, but group 1 \(a.weight, ...\) is used before group 0",
        ),
        (  # a parameter forward() never uses
            TINY + "\n@tlbench.hookimpl\ndef tlbench_backbones():\n    yield Backbone('b3', built)\n",
            r"backbone 'b3': with the first 0 of 2 groups frozen, spare.bias \(and 1 more\) got no gradient",
        ),
        (  # a head that ignores num_classes
            TINY
            + "\n@tlbench.hookimpl\ndef tlbench_backbones():\n    yield Backbone('b4', lambda r: built(r, net=Net(7)))\n",
            r"backbone 'b4': output has shape \(2, 7\) for 2 inputs, expected \(2, 3\)",
        ),
        (  # overlapping splits
            "\nfrom PIL import Image\nS = Split((0, 1), ('x', 'y'), lambda i: Image.new('RGB', (4, 4)))\n"
            "@tlbench.hookimpl\ndef tlbench_datasets():\n    yield Dataset('d1', lambda r: DatasetSplits(S, S, S, ('a', 'b')))\n",
            r"dataset 'd1': example x is in both the train and the val split; the splits must be disjoint",
        ),
        (  # a label outside classes
            "\nfrom PIL import Image\nimg = lambda i: Image.new('RGB', (4, 4))\n"
            "@tlbench.hookimpl\ndef tlbench_datasets():\n    yield Dataset('d2', lambda r: DatasetSplits(Split((0, 2), ('a', 'b'), img), Split((0,), ('c',), img), Split((1,), ('d',), img), ('a', 'b')))\n",
            r"dataset 'd2': the train split has label 2, but there are 2 classes \(labels 0..1\)",
        ),
        (  # different splits for the same seed
            "\nimport random\nfrom PIL import Image\nimg = lambda i: Image.new('RGB', (4, 4))\n"
            "def load(r):\n    ids = [str(random.random()) for _ in range(4)]\n"
            "    return DatasetSplits(Split((0, 1), tuple(ids[:2]), img), Split((0,), (ids[2],), img), Split((1,), (ids[3],), img), ('a', 'b'))\n"
            "@tlbench.hookimpl\ndef tlbench_datasets():\n    yield Dataset('d3', load)\n",
            r"dataset 'd3': loading twice with seed 0 gave different splits; seed every random choice with request.seed",
        ),
        (  # freezing more groups than the backbone has
            "\n@tlbench.hookimpl\ndef tlbench_strategies():\n    yield Strategy('s1', lambda s, o: {'lr': s.suggest('lr', [0.001, 0.1])}, lambda p, n: [Phase('x', 1, n + 1, 0.0, p['lr'])])\n",
            r"strategy 's1': phases\(params, 1\): phase x: frozen_groups must be 0..1 for a backbone of 1 groups, got 2",
        ),
        (  # suggest returns no dict
            "\n@tlbench.hookimpl\ndef tlbench_strategies():\n    yield Strategy('s2', lambda s, o: s.suggest('lr', [0.001, 0.1]), lambda p, n: [Phase('x', 1, n, 0.0, 0.1)])\n",
            r"strategy 's2': suggest\(\): returned float, expected a dict of parameters",
        ),
        (  # a field of the wrong type
            "\n@tlbench.hookimpl\ndef tlbench_strategies():\n    yield Strategy('s3', suggest='lr', phases=lambda p, n: [])\n",
            r"plugin .*broken.py: strategy 's3': suggest must be a function, got str",
        ),
        (  # adapt names a parameter that does not exist
            "\n@tlbench.hookimpl\ndef tlbench_strategies():\n    yield Strategy('s4', lambda s, o: {}, lambda p, n: [Phase('x', 1, n, 0.1, 0.1)], adapt=lambda b, p: Adapted(b, ('nowhere.weight',)))\n",
            r"strategy 's4': adapt\(\) returned trainable names that are no parameters: \['nowhere.weight'\]",
        ),
        (  # a hook with a wrong signature
            "\n@tlbench.hookimpl\ndef tlbench_strategies(config):\n    yield None\n",
            r"plugin .*broken.py: hook tlbench_strategies\(\) takes 'config', but tlbench calls it without arguments; define it as tlbench_strategies\(\)",
        ),
    ],
)
def test_the_kit_fails_broken_plugins_with_a_clear_message(tmp_path, body, expected):
    with pytest.raises(testing.ConformanceError, match=expected):
        testing.check_plugin(_plugin(tmp_path, body))


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "\n@tlbench.hookimpl\ndef tlbench_strategies():\n    yield Strategy('s3', suggest='lr', phases=lambda p, n: [])\n",
            "strategy 's3': suggest must be a function, got str",
        ),
        (
            "\n@tlbench.hookimpl\ndef tlbench_strategies():\n    yield Strategy('s5', lambda s, o: {})\n",
            "tlbench_strategies() raised TypeError: Strategy.__init__() missing 1 required positional argument: 'phases'",
        ),
        (
            "\n@tlbench.hookimpl\ndef tlbench_backbones():\n    yield Backbone('exploding', lambda r: 1 / 0)\n",
            "backbone 'exploding': build() raised ZeroDivisionError: division by zero",
        ),
        (
            "\n@tlbench.hookimpl\ndef tlbench_strategies(config):\n    yield None\n",
            "hook tlbench_strategies() takes 'config', but tlbench calls it without arguments; define it as tlbench_strategies()",
        ),
    ],
)
def test_mistakes_in_a_plugin_are_one_line_naming_plugin_record_and_problem(
    tmp_path, write_config, capsys, body, expected
):
    _plugin(tmp_path, body)
    backbone = "exploding" if "exploding" in body else "timm:test_resnet"
    data = tiny_benchmark(plugins=["broken.py"], backbones=[{"name": backbone, "pretrained": False}])
    assert cli.main(["validate", str(write_config(data))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "broken.py" in err and expected in err, err


def test_an_authors_pytest_finds_the_kit_through_the_entry_point(tmp_path):
    project = tmp_path / "author"
    (project / "tests").mkdir(parents=True)
    (project / "my_strategy.py").write_text((EXAMPLES / "head_then_all.py").read_text())
    (project / "broken_strategy.py").write_text(
        "import tlbench\nfrom tlbench.types import Phase, Strategy\n"
        "@tlbench.hookimpl\ndef tlbench_strategies():\n"
        "    yield Strategy('bad', lambda s, o: {}, lambda p, n: [Phase('x', 0, n, 0.0, 0.1)])\n"
    )
    (project / "tests" / "test_conformance.py").write_text(
        "def test_good(tlbench_conformance):\n"
        "    assert tlbench_conformance.check_plugin('my_strategy.py') == ['strategy head_then_all']\n\n"
        "def test_bad(tlbench_conformance):\n"
        "    tlbench_conformance.check_plugin('broken_strategy.py')\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 failed, 1 passed" in out.stdout, out.stdout + out.stderr
    assert (
        "ConformanceError: plugin broken_strategy.py: strategy 'bad': phases(params, 1): no phase has epochs > 0; set epochs to 1 or more"
        in out.stdout
    )
