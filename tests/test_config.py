"""Config mistakes: one clear line naming the field, exit code 2, no traceback (unless -v)."""

from __future__ import annotations

import re

import pytest
from conftest import tiny_benchmark

from tlbench import cli


def _validate(capsys, path, *extra):
    code = cli.main(["validate", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_config_reports_what_it_found(write_config, capsys):
    code, out, err = _validate(capsys, write_config())
    assert code == 0, err
    assert "synthetic (3 classes, 24/12/12 train/val/test)" in out
    assert "timm:test_resnet-scratch" in out


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"search": {"n_trials": "many"}}, "search.n_trials: Input should be a valid integer"),
        ({"search": {"n_trials": 0}}, "search.n_trials: Input should be greater than 0"),
        ({"datasets": [{"name": "synthetic", "train_samples": "x"}]}, "datasets[0].train_samples"),
        (
            {"backbones": [{"name": "timm:test_resnet", "pretrianed": False}]},
            "backbones[0]: pretrianed: unknown option; did you mean 'pretrained'?",
        ),
        ({"strategies": []}, "strategies: List should have at least 1 item"),
        ({"name": "has space"}, "name: String should match pattern"),
        ({"datasets": [{"name": "synthetc"}]}, "datasets[0]: unknown dataset 'synthetc'; did you mean 'synthetic'?"),
        ({"backbones": [{"name": "timm:test_resnt", "pretrained": False}]}, "did you mean 'timm:test_resnet'"),
        ({"strategies": [{"name": "fine_tune"}]}, "unknown strategy 'fine_tune'; did you mean 'finetune'?"),
        ({"strategies": [{"name": "finetune", "lr_haed": 0.1}]}, "lr_haed: unknown option; did you mean 'lr_head'?"),
        (
            {"strategies": [{"name": "finetune", "lr_head": [0.1, 0.001]}]},
            "strategies[0] (finetune): lr_head: bad search range",
        ),
        ({"strategies": [{"name": "finetune", "lr_head": [0, 0.1]}]}, "lr_head: bad search range"),
        ({"strategies": [{"name": "finetune", "freeze": 1.5}]}, "strategies[0] (finetune)"),
        ({"strategies": [{"name": "linear_probe", "epochs": 0}]}, "no phase has epochs > 0"),
        ({"datasets": [{"name": "imagefolder", "path": "nowhere"}]}, "path: folder"),
        ({"datasets": [{"name": "synthetic", "colour": 3}]}, "colour: unknown option; synthetic accepts"),
        ({"backbones": [{"name": "timm:test_resnet", "weights": "missing.safetensors"}]}, "weights: file"),
        ({"training": {"batch_size": 0}}, "training.batch_size: batch size 0: give whole numbers of 2 or more"),
        (
            {"search": {"enqueue": [{"backbone": "timm:test_resnet", "strategy": "linear_probe"}]}},
            "search.enqueue[0]: backbone: 'timm:test_resnet' is not in this config's backbone list",
        ),
        (
            {
                "search": {
                    "enqueue": [
                        {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"freeze": 0.5}}
                    ]
                }
            },
            "params.freeze: not a searched parameter of linear_probe",
        ),
        (
            {
                "backbones": [
                    {"name": "timm:test_resnet", "pretrained": False},
                    {"name": "timm:test_resnet", "pretrained": False},
                ]
            },
            "appears twice; give one of them a distinct 'label:'",
        ),
    ],
)
def test_mistakes_are_one_line_with_exit_code_2(write_config, capsys, change, expected):
    code, out, err = _validate(capsys, write_config(**change))
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndatasets: [\n  - oops\nbackbones: {]\n")
    code, _, err = _validate(capsys, path)
    assert code == 2 and f"{path}: line" in err and "invalid YAML" in err


def test_missing_config_file(tmp_path, capsys):
    code, _, err = _validate(capsys, tmp_path / "nope.yaml")
    assert code == 2 and "no such config file" in err


def test_verbose_shows_the_traceback(write_config, capsys):
    code, _, err = _validate(capsys, write_config(datasets=[{"name": "synthetc"}]), "-v")
    assert code == 2 and "Traceback" in err and "unknown dataset 'synthetc'" in err


def test_yaml_exponents_without_a_dot_still_count_as_numbers(write_config, capsys):
    # PyYAML reads 1e-3 as the string "1e-3"; a search range written that way must still work.
    path = write_config()
    path.write_text(path.read_text().replace("- epochs: 1", "- epochs: 1\n  lr_head: [1e-3, 1e-1]"))
    assert "1e-3" in path.read_text()
    code, _, err = _validate(capsys, path)
    assert code == 0, err


def test_run_name_defaults_to_a_fingerprint_that_ignores_the_budget():
    from tlbench.config import parse_config

    a = parse_config(tiny_benchmark())
    b = parse_config(tiny_benchmark(search={"n_trials": 50, "startup_trials": 1}))
    c = parse_config(tiny_benchmark(seed=1))
    assert a.run_name == b.run_name != c.run_name
    assert parse_config(tiny_benchmark(run="mine")).run_name == "mine"


def test_command_line_overrides_are_validated_like_the_file(write_config, capsys):
    path = write_config()
    assert cli.main(["run", str(path), "--run", "has space"]) == 2
    assert "command line (--run/--n-trials/--storage): run: String should match pattern" in capsys.readouterr().err
    assert cli.main(["run", str(path), "--n-trials", "0"]) == 2
    assert "search.n_trials: Input should be greater than 0" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["gpu", ["cuda:0", "cuda:x"], [], ["auto", "cpu"]])
def test_a_device_that_is_no_device_is_named(write_config, capsys, device):
    code, _, err = _validate(capsys, write_config(training={"device": device}))
    assert code == 2
    assert re.search(r"training.device: .*(is not a device; use auto, cpu|give at least one device)", err), err
