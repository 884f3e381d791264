"""tlbench-text: the packaged MiniLM really loads, the corpora split as documented, and
text runs end to end next to images in one benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tlbench_text.plugin as plugin
import torch
import yaml
from tlbench_text import backbones, corpora

from tlbench import testing
from tlbench.types import BackboneRequest, DatasetRequest, UserError

pytestmark = pytest.mark.e2e


def _minilm(pretrained: bool = True, classes: int = 5, **options):
    return backbones.build_minilm(
        BackboneRequest(model="minilm", num_classes=classes, pretrained=pretrained, options=options)
    )


def _pooled(built, texts, length=32):
    tokenize = built.inputs.transforms(length, False)[1]
    model = built.model.eval()
    with torch.no_grad():
        state = model.embed(torch.stack([tokenize(t) for t in texts]))
        for layer in model.layers:
            state = layer(state)
        return model.pool(state)


TEXTS = ["The cat sat on the mat.", "Stocks fell sharply on Monday after the central bank raised rates again."]


def test_minilm_gives_the_sentence_transformers_embedding_of_the_packaged_model():
    from sentence_transformers import SentenceTransformer

    built = _minilm()
    reference = SentenceTransformer(str(backbones.minilm_folder()), device="cpu").encode(TEXTS, convert_to_tensor=True)
    ours = torch.nn.functional.normalize(
        _pooled(built, TEXTS), dim=-1
    )  # the packaged model ends with a Normalize module
    assert torch.allclose(ours, reference, atol=1e-5)
    assert [len(g) for g in built.groups] == [5] + [16] * 6  # embeddings, then one group per transformer layer
    assert built.inputs.size == 256 and built.inputs.size_field == "max_length"  # sentence-transformers' max_seq_length


def test_random_init_is_the_same_architecture_and_tokenizer_with_other_weights():
    pretrained, scratch = _minilm(), _minilm(pretrained=False)
    assert [n for n, _ in pretrained.model.named_parameters()] == [n for n, _ in scratch.model.named_parameters()]
    assert repr(pretrained.inputs.transforms(16, False)[1]) == repr(scratch.inputs.transforms(16, False)[1])
    a, b = _pooled(pretrained, TEXTS), _pooled(scratch, TEXTS)
    assert not torch.allclose(a, b, atol=1e-2)


def _folder(root: Path, per_class: int = 10) -> Path:
    for c in ("ham", "spam"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.txt").write_text(f"{c} message number {i}", encoding="utf-8")
    return root


def test_the_kit_passes_every_record_and_the_hf_family_builds_a_local_folder(tmp_path):
    checked = testing.check_plugin(
        plugin, backbone_models={"hf": [str(backbones.minilm_folder())]},
        dataset_options={"textfolder": {"dir": str(_folder(tmp_path))}}, resolution=16,
    )  # fmt: skip
    assert len(checked) == 5
    built = backbones.build_hf(BackboneRequest(model=str(backbones.minilm_folder()), num_classes=3, pretrained=True))
    assert torch.allclose(_pooled(built, TEXTS), _pooled(_minilm(classes=3), TEXTS))


def test_a_hub_name_offline_is_one_line_saying_how_to_get_the_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        backbones.build_hf(BackboneRequest(model="nobody/no-such-encoder", num_classes=2, pretrained=True))
    message = str(error.value)
    assert "\n" not in message and "huggingface-cli download nobody/no-such-encoder" in message and "hf:DIR" in message


def test_pooling_cls_uses_the_checkpoint_pooler_as_its_own_group():
    built = _minilm(pooling="cls")
    assert built.groups[-1] == ("pool.pooler.dense.weight", "pool.pooler.dense.bias")
    with pytest.raises(UserError, match="pooling: 'max'"):
        _minilm(pooling="max")


def test_lora_on_attention_adapts_query_key_and_value_of_every_layer_and_keeps_the_tokenizer():
    from tlbench_peft.plugin import lora

    built = _minilm(classes=2)
    adapted = lora(built, {"rank": 4, "alpha": 8, "layers": "attention"})
    factors = sorted(n for n in adapted.trainable if n.endswith(".lora_A"))
    assert len(factors) == 18 and {n.split(".")[-2] for n in factors} == {"query", "key", "value"}
    assert adapted.built.inputs is built.inputs  # the rebuilt record keeps how texts become tensors


def _splits(load, **options):
    return load(DatasetRequest(options=options, seed=0, base_dir=Path(".")))


def _texts(split):
    return [" ".join(split.load(i).lower().split()) for i in range(len(split))]


def test_bbc_news_is_split_fixed_stratified_and_without_a_text_in_two_splits():
    splits = _splits(corpora.load_bbc_news)
    assert splits.classes == ("business", "entertainment", "politics", "sports", "tech")
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) < 2225 and sizes[1] == pytest.approx(0.2 * sum(sizes), abs=5)  # duplicates dropped
    seen = [set(_texts(getattr(splits, n))) for n in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    for c in range(5):
        share = [getattr(splits, n).labels.count(c) / len(getattr(splits, n)) for n in ("train", "test")]
        assert share[0] == pytest.approx(share[1], abs=0.02)
    again = corpora.load_bbc_news(DatasetRequest(options={}, seed=7, base_dir=Path(".")))
    assert again.test.ids == splits.test.ids  # the same articles are tested whatever the run's seed
    assert splits.train.load(0).strip()


def test_tweets_keep_three_noisy_classes_and_min_confidence_keeps_the_surer_ones():
    every = _splits(corpora.load_tweets)
    sure = _splits(corpora.load_tweets, min_confidence=1.0)
    assert every.classes == ("negative", "neutral", "positive")
    n_every, n_sure = (sum(len(getattr(s, n)) for n in ("train", "val", "test")) for s in (every, sure))
    assert 36_000 < n_every < 38_158 and 15_000 < n_sure < 18_144
    with pytest.raises(UserError, match="min_confidence"):
        _splits(corpora.load_tweets, min_confidence="high")


def test_textfolder_reads_your_texts_and_names_a_file_that_is_not_utf8(tmp_path):
    folder = _folder(tmp_path)
    splits = corpora.load_textfolder(DatasetRequest(options={"dir": str(folder)}, seed=0, base_dir=Path(".")))
    assert splits.classes == ("ham", "spam") and len(splits.train) + len(splits.val) + len(splits.test) == 20
    (folder / "spam" / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match="bad.txt: not UTF-8"):
        corpora.load_textfolder(DatasetRequest(options={"dir": str(folder)}, seed=0, base_dir=Path(".")))


def _run(config: dict, folder: Path) -> subprocess.CompletedProcess:
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TLBENCH_LOAD_PLUGINS": "text,peft"}
    return subprocess.run(
        [sys.executable, "-m", "tlbench", "run", str(path)], capture_output=True, text=True, env=env, timeout=900
    )


def test_text_and_images_in_one_run_each_ranked_among_its_own_modality(tmp_path):
    """One benchmark: a text dataset with MiniLM (pretrained and random init; probe,
    fine-tune, LoRA, BitFit, two-stage, each trained once) and an image dataset with a tiny timm model.
    Each study searches only its modality's backbones, the probe trains on cached
    pooled text features, and the ranking keeps the modalities apart."""
    config = {
        "name": "mixed",
        "results_dir": str(tmp_path / "results"),
        "datasets": [
            {"name": "bbc_news", "train_samples": 40, "val_samples": 20, "test_samples": 30},
            {
                "name": "synthetic",
                "label": "shapes",
                "classes": 3,
                "size": 16,
                "train_per_class": 8,
                "val_per_class": 4,
                "test_per_class": 4,
            },
        ],
        "backbones": [
            {"name": "minilm", "max_length": 24},
            {"name": "minilm", "pretrained": False, "max_length": 24},
            {"name": "timm:test_resnet", "pretrained": False},
        ],
        "strategies": [
            {"name": "linear_probe", "epochs": 2},
            {"name": "finetune", "epochs": 1, "freeze": 0.7},
            {"name": "lora", "epochs": 1, "rank": 4, "alpha": 8},
            {"name": "bitfit", "epochs": 1},
            {"name": "two_stage", "head_epochs": 1, "epochs": 1},
        ],
        "training": {"batch_size": 8, "resolution": 16},
        "search": {
            "n_trials": 6,
            "screen": False,
            "portfolio": 0,
            "enqueue": [  # every strategy once on MiniLM
                {"backbone": "minilm", "strategy": "linear_probe", "params": {"lr_head": 0.01}},
                {"backbone": "minilm", "strategy": "finetune", "params": {"lr_backbone": 1e-4, "lr_head": 0.01}},
                {"backbone": "minilm", "strategy": "lora", "params": {"lr_lora": 1e-3, "lr_head": 0.01}},
                {"backbone": "minilm", "strategy": "bitfit", "params": {"lr_bias": 1e-3, "lr_head": 0.01}},
                {
                    "backbone": "minilm",
                    "strategy": "two_stage",
                    "params": {"lr_head": 0.01, "freeze": 0.5, "lr_finetune": 1e-4},
                },
            ],
        },
    }
    done = _run(config, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = next((tmp_path / "results" / "mixed").iterdir())
    trials = pd.read_csv(run / "trials.csv")
    text = trials[trials["dataset"] == "bbc_news"]
    assert set(text["backbone"]) <= {"minilm", "minilm-scratch"} and set(text["modality"]) == {"text"}
    ran = text[(text["backbone"] == "minilm") & (text["state"] == "COMPLETE")]
    assert set(ran["strategy"]) == {"linear_probe", "finetune", "lora", "bitfit", "two_stage"}
    assert set(trials[trials["dataset"] == "shapes"]["backbone"]) == {"timm:test_resnet-scratch"}
    assert (text["max_length"].dropna() == 24).all() and text["resolution"].isna().all()
    probes = text[(text["strategy"] == "linear_probe") & (text["state"] == "COMPLETE")]
    assert probes["feature_cache"].str.contains("pool").any(), probes["feature_cache"].tolist()
    summary = pd.read_csv(run / "summary.csv")
    assert set(summary[summary["dataset"] == "bbc_news"]["modality"]) == {"text"}
    report = (run / "report.md").read_text()
    across = report[report.index("### Across datasets") :]
    assert "Modality" in across and "| text" in across and "| image" in across


def test_a_max_length_the_encoder_cannot_take_is_one_line_from_validate(tmp_path, capsys, monkeypatch):
    from tlbench import cli

    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "text")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "name": "long", "datasets": [{"name": "bbc_news"}], "backbones": [{"name": "minilm", "max_length": 1000}],
        "strategies": [{"name": "linear_probe"}],
    }))  # fmt: skip
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("tlbench: error:")
        and "max_length 1000: the encoder has 512 positions; give at most 512" in err[-1]
    )
    assert "Traceback" not in "\n".join(err)
    path.write_text(path.read_text().replace("max_length: 1000", "max_length: 1"))
    assert cli.main(["validate", str(path)]) == 2
    assert "max_length 1: a text needs at least 3 tokens" in capsys.readouterr().err


def test_tlbench_plugins_says_what_each_text_record_reads(capsys, monkeypatch):
    from tlbench import cli

    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "text")
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "backbone (text)" in out and "dataset (text)" in out and "backbone family (text)" in out
    assert "backbone (image)" not in out  # images are the default, not named


def test_an_hf_folder_is_relative_to_the_config_like_every_other_path(tmp_path, capsys, monkeypatch):
    """hf:enc resolved against the working directory, unlike every other relative path in a
    config (issue 24); now against the config's folder, with ~ and $VARS as everywhere."""
    import shutil

    from tlbench import cli

    home = tmp_path / "project #1"
    shutil.copytree(backbones.minilm_folder(), home / "enc ?x")
    path = home / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rel", "datasets": [{"name": "bbc_news"}], "backbones": [{"name": "hf:enc ?x", "max_length": 32}],
        "strategies": [{"name": "linear_probe"}],
    }))  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "text")
    assert cli.main(["validate", str(path)]) == 0, capsys.readouterr().err
    monkeypatch.setenv("TLB_MODELS", str(home))
    path.write_text(path.read_text().replace("hf:enc ?x", "hf:$TLB_MODELS/enc ?x"))
    assert cli.main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_text_folders_follow_the_image_folders_rules(tmp_path):
    """Suffixes in any case, nested folders read, hidden files skipped at every depth,
    an empty text refused, a huge file read only as far as an encoder can use."""
    root = tmp_path / "texts"
    for c in ("neg", "pos"):
        (root / c / "more").mkdir(parents=True)
        (root / c / "a.txt").write_text(f"{c} one")
        (root / c / "B.TXT").write_text(f"{c} two")
        (root / c / "more" / "c.txt").write_text(f"{c} three")
        (root / c / "._a.txt").write_bytes(b"\x00\x05\x16\x07 mac metadata")
        (root / c / ".hidden.txt").write_text("not data")
        (root / c / ".ipynb_checkpoints").mkdir()
        (root / c / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("not data")
    texts, labels, ids, classes = corpora.read_folder(root, "textfolder")
    assert (
        classes == ("neg", "pos")
        and len(texts) == 6
        and sorted(texts) == sorted(f"{c} {n}" for c in ("neg", "pos") for n in ("one", "two", "three"))
    )
    huge = root / "pos" / "huge.txt"
    huge.write_bytes(("é" * 50_000_000).encode())  # 100 MB
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    texts, *_ = corpora.read_folder(root, "textfolder")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert max(len(t.encode()) for t in texts) <= corpora.MAX_TEXT_BYTES and grown_mb < 50, grown_mb
    huge.unlink()
    (root / "pos" / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match=r"empty.txt: empty text; delete the file or write the text in it"):
        corpora.read_folder(root, "textfolder")


def test_a_text_dataset_too_small_says_texts(tmp_path, monkeypatch, capsys):
    from tlbench import cli

    root = tmp_path / "texts"
    for c in ("neg", "pos"):
        (root / c).mkdir(parents=True)
        (root / c / "a.txt").write_text(f"{c} one")
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "text")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "name": "small", "datasets": [{"name": "textfolder", "dir": "texts"}], "backbones": [{"name": "minilm"}],
        "strategies": [{"name": "linear_probe"}],
    }))  # fmt: skip
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "add texts" in err and "images" not in err


def test_augmentation_with_text_backbones_only_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from tlbench import cli

    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "text")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "name": "aug", "datasets": [{"name": "bbc_news"}], "backbones": [{"name": "minilm"}],
        "strategies": [{"name": "linear_probe"}], "training": {"augment": True},
    }))  # fmt: skip
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "tlbench: error: training.augment: true, but no backbone of this config reads images (texts are not augmented); remove it"
    ]


def _with_vocab(root: Path, tokens: list[str]) -> Path:
    """A copy of the packaged MiniLM folder whose tokenizer is built from ``tokens`` instead."""
    import shutil

    folder = root / "enc"
    shutil.copytree(backbones.minilm_folder(), folder)
    (folder / "tokenizer.json").unlink()  # the fast tokenizer is then built from vocab.txt
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return folder


SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.mark.parametrize(
    "vocab, says",
    [
        (
            SPECIAL + [f"tok{i}" for i in range(40_000)],
            "the tokenizer has 40,005 tokens but the model's embedding table 30,522 rows",
        ),
        (SPECIAL, "as unknown tokens only"),
    ],
)
def test_an_hf_folder_whose_tokenizer_is_not_its_models_is_one_line_at_validate(
    tmp_path, capsys, monkeypatch, vocab, says
):
    """hf: folders checked, never silently degraded (issue 24): a tokenizer that gives ids past
    the embedding table, or reads plain text as [UNK] only, is refused naming the folder."""
    from tlbench import cli

    folder = _with_vocab(tmp_path, vocab)
    with pytest.raises(UserError, match=says):
        backbones.build_hf(BackboneRequest(model=str(folder), num_classes=2, pretrained=True))
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"name": "tok", "datasets": [{"name": "bbc_news"}],
                                    "backbones": [{"name": "hf:enc", "max_length": 32}], "strategies": [{"name": "linear_probe"}]}))  # fmt: skip
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "text")
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and str(folder) in err[0] and "tokenizer files" in err[0]
