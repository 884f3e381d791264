"""The engine carries more than images (plugin API 1.4): a toy character-level text
modality, written as a third party would from docs/plugins.md, runs the whole path
(freezing, the feature cache, FLOPs at the configured length, reports) next to an
image dataset, and every pairing mistake is one line from validate."""

from __future__ import annotations

import textwrap

import pandas as pd
import yaml
from conftest import one_line, tiny_benchmark

from tlbench import cli
from tlbench.results import tables

CHARS = """
import torch
from torch import nn

WORDS = {0: "aeiou", 1: "bcdfg"}


class Chars:
    def __init__(self, size):
        self.size = size

    def __call__(self, text):
        if not isinstance(text, str):
            raise BadExample(f"expected a text, got {type(text).__name__}")
        if not text:
            raise BadExample("an empty text; remove it")
        codes = [min(ord(c), 127) for c in text[: self.size]]
        return torch.tensor(codes + [0] * (self.size - len(codes)))

    def __repr__(self):
        return f"Chars({self.size})"


class CharInputs:
    modality, size, size_field = "text", 12, "max_length"

    def transforms(self, size, augment):
        chars = Chars(size)
        return chars, chars

    def example(self, n, size):
        return torch.randint(1, 128, (n, size), generator=torch.Generator().manual_seed(0))

    def memory_probe(self, size):
        return size, 1.0


class Mean(nn.Module):
    def forward(self, h):
        return h.mean(1)


class CharNet(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.embed = nn.Embedding(128, 16)
        self.body = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.pool = Mean()
        self.head = nn.Linear(16, n)

    def forward(self, x):
        return self.head(self.pool(self.body(self.embed(x))))


def build(request):
    net = CharNet(request.num_classes)
    return BuiltBackbone(net, (("embed.weight",), ("body.0.weight", "body.0.bias")), ("head.weight", "head.bias"),
                         inputs=CharInputs())


def load(request):
    texts = [WORDS[i % 2] * (1 + i % 3) + " " + str(i) for i in range(60)]
    broken, empty = request.options.get("broken", False), request.options.get("empty_first", False)
    texts[0] = "" if empty else texts[0]
    texts[48] = "" if request.options.get("empty_test_first", False) else texts[48]
    split = lambda lo, hi: Split(tuple(i % 2 for i in range(lo, hi)), tuple(f"words:{i}" for i in range(lo, hi)),
                                 lambda i, lo=lo: 42 if broken and lo + i == 3 else texts[lo + i])
    return DatasetSplits(split(0, 36), split(36, 48), split(48, 60), ("vowels", "consonants"))


def build_images(request):  # says text, builds a model that reads images
    net = CharNet(request.num_classes)
    return BuiltBackbone(net, (("embed.weight",), ("body.0.weight", "body.0.bias")), ("head.weight", "head.bias"),
                         DataConfig(16, (0.5,) * 3, (0.5,) * 3))


@tlbench.hookimpl
def tlbench_backbones():
    yield Backbone("chars", build, modality="text", description="a character embedding model")
    yield Backbone("liar", build_images, modality="text")


@tlbench.hookimpl
def tlbench_datasets():
    yield Dataset("words", load, modality="text", options={"broken": "example 3 is a number", "empty_first": "example 0 is ''",
                                                           "empty_test_first": "example 48 (the test split's first) is ''"})
"""

TEXT = {"name": "words"}
IMAGES = tiny_benchmark()["datasets"][0]
CHARNET = {"name": "chars", "pretrained": False}
RESNET = tiny_benchmark()["backbones"][0]


def _config(tmp_path, datasets, backbones, **overrides) -> str:
    (tmp_path / "chars.py").write_text("import tlbench\nfrom tlbench.types import *\n" + textwrap.dedent(CHARS))
    data = tiny_benchmark(
        datasets=datasets, backbones=backbones, plugins=["chars.py"], results_dir=str(tmp_path / "results"), **overrides
    )
    path = tmp_path / "benchmarks.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_text_and_images_run_together_each_study_on_its_own_modality(tmp_path, capsys):
    strategies = [{"name": "linear_probe", "epochs": 2}, {"name": "finetune", "epochs": 1, "freeze": 0.5}]
    training = {"batch_size": 8, "resolution": 16, "max_length": 10}
    code = cli.main(["run", _config(tmp_path, [TEXT, IMAGES], [CHARNET, RESNET], strategies=strategies, training=training,
                                    search={"n_trials": 4, "screen": False, "portfolio": 0})])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    run = next((tmp_path / "results" / "tiny").iterdir())
    trials = pd.read_csv(run / "trials.csv")
    words, shapes = trials[trials["dataset"] == "words"], trials[trials["dataset"] == "synthetic"]
    assert set(words["backbone"]) == {"chars-scratch"} and set(words["modality"]) == {"text"}
    assert set(shapes["backbone"]) == {"timm:test_resnet-scratch"} and set(shapes["modality"]) == {"image"}
    assert (words["max_length"] == 10).all() and words["resolution"].isna().all() and (shapes["resolution"] == 16).all()
    # FLOPs at the configured length: embedding lookups are free, Linear 16x16 on 10 tokens and the head are not
    assert (words["forward_gflops"] * 1e9).round().eq(2 * 10 * 16 * 16 + 2 * 16 * 2).all()
    probe = words[words["strategy"] == "linear_probe"]
    assert probe["feature_cache"].str.contains("pool").all(), probe["feature_cache"].tolist()  # pooled vectors cached
    report = (run / "report.md").read_text()
    across = report[report.index("### Across datasets") :]
    assert "| Modality" in across and "| text" in across and "| image" in across


def test_the_ranking_ranks_a_backbone_among_its_own_modality():
    summary = pd.DataFrame({
        "dataset": ["t1", "t1", "i1"], "backbone": ["bert", "minilm", "resnet"], "modality": ["text", "text", "image"],
        "val_accuracy": [0.9, 0.8, 0.5], "test_accuracy": [0.9, 0.8, 0.5], "train_seconds": [1.0, 1.0, 1.0],
    })  # fmt: skip
    trials = summary.assign(state="COMPLETE", train_gflops=1.0)
    ranking = tables.ranking_frame(summary, trials).set_index("backbone")
    assert ranking.loc["resnet", "mean_rank"] == 1 and ranking.loc["minilm", "mean_rank"] == 2
    assert list(ranking["modality"]) == ["image", "text", "text"]


def test_a_text_dataset_without_a_text_backbone_is_one_line(tmp_path, capsys):
    code = cli.main(["validate", _config(tmp_path, [TEXT], [RESNET])])
    one_line(
        capsys,
        code,
        "datasets[0] (words): it holds text, and no backbone of this config reads text; add one to backbones:",
    )


def test_a_text_backbone_without_a_text_dataset_is_one_line(tmp_path, capsys):
    code = cli.main(["validate", _config(tmp_path, [IMAGES], [RESNET, CHARNET])])
    one_line(
        capsys, code, "backbones[1] (chars-scratch): it reads text, and no dataset of this config holds text; remove it"
    )


def test_each_backbone_takes_only_the_size_it_reads(tmp_path, capsys):
    both = [TEXT, IMAGES]
    code = cli.main(["validate", _config(tmp_path, both, [{**CHARNET, "resolution": 64}, RESNET])])
    one_line(
        capsys, code, "backbones[0] (chars-scratch): resolution: this backbone reads text; its input size is max_length"
    )
    code = cli.main(["validate", _config(tmp_path, both, [CHARNET, {**RESNET, "max_length": 64}])])
    one_line(
        capsys,
        code,
        "backbones[1] (timm:test_resnet-scratch): max_length: this backbone reads images; its input size is resolution",
    )
    code = cli.main(["validate", _config(tmp_path, [IMAGES], [RESNET], training={"batch_size": 8, "max_length": 64})])
    one_line(capsys, code, "training.max_length: no backbone of this config reads it (resolution only); remove it")


def test_a_text_example_that_is_no_text_is_named_in_one_line(tmp_path, capsys):
    config = _config(
        tmp_path,
        [{**TEXT, "broken": True}],
        [CHARNET],
        search={"n_trials": 1, "screen": False},
        training={"batch_size": 8},
    )
    code = cli.main(["run", config])
    one_line(capsys, code, "example words:3: expected a text, got int")


def test_an_example_the_backbone_transform_refuses_fails_validate_not_the_run(tmp_path, capsys):
    config = _config(tmp_path, [{**TEXT, "empty_first": True}], [CHARNET], training={"batch_size": 8})
    one_line(
        capsys, cli.main(["validate", config]), "datasets[0] (words): train example words:0: an empty text; remove it"
    )
    # the first example of each split, not only the training split's (issue 24)
    config = _config(tmp_path, [{**TEXT, "empty_test_first": True}], [CHARNET], training={"batch_size": 8})
    one_line(
        capsys, cli.main(["validate", config]), "datasets[0] (words): test example words:48: an empty text; remove it"
    )


def test_a_backbone_that_reads_another_modality_than_its_record_says_is_named(tmp_path, capsys):
    config = _config(tmp_path, [TEXT], [{"name": "liar", "pretrained": False}], training={"batch_size": 8})
    one_line(
        capsys,
        cli.main(["validate", config]),
        "backbone 'liar': build() returned a model that reads image, but the record says modality='text'",
    )
