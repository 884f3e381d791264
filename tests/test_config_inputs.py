"""What a config may hold: every bad value is refused by `tlbench validate`, in one line,
so that a config validate accepts never fails `tlbench run` on something it could check."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import typing
from pathlib import Path

import pydantic
import pytest
import yaml
from conftest import one_line, tiny_benchmark, without_root_override

from tlbench import cli, config
from tlbench.types import UserError


def _validate(path: Path) -> int:
    return cli.main(["validate", str(path)])


# --------------------------------------------------------------------------- the file itself


def test_a_binary_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "benchmarks.yaml"
    path.write_bytes(bytes(range(128, 256)) * 4)
    one_line(capsys, _validate(path), "not a text file in UTF-8", "save the config as UTF-8 YAML")


def test_a_utf16_config_with_a_byte_order_mark_is_read(write_config, capsys):
    path = write_config()
    path.write_bytes(path.read_text().encode("utf-16"))  # what Windows Notepad saves as "Unicode"
    assert _validate(path) == 0, capsys.readouterr().err


def test_a_config_with_nul_bytes_is_one_line(write_config, capsys):
    path = write_config()
    path.write_bytes(path.read_text().encode("utf-16-le"))  # UTF-16 without a byte-order mark
    one_line(capsys, _validate(path), "contains NUL bytes")


def test_an_unreadable_config_is_one_line(write_config):
    path = write_config()
    path.chmod(0)
    proc = subprocess.run(
        [*without_root_override(), sys.executable, "-m", "tlbench", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"tlbench: error: {path}: cannot read the config (Permission denied); check its permissions"
    ]


def test_a_config_nested_too_deeply_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\ndatasets: " + "[" * 5000 + "]" * 5000 + "\n")
    one_line(capsys, _validate(path), "nested too deeply")
    path.write_text(
        "name: x\nsearch: " + "{a: " * 30 + "1" + "}" * 30 + "\n"
    )  # deep, but not deep enough for the parser to fail
    one_line(capsys, _validate(path), "nested more than 20 levels deep")


def test_a_yaml_alias_bomb_is_refused_in_bounded_memory(tmp_path):
    """'Billion laughs': 9 levels of 9 aliases, under 1 KB, expand to 9^9 strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1024
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="more than 100000 values once YAML aliases are expanded"):
            config.load_config(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # refused while small, not after expanding


def test_an_oversized_config_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    one_line(capsys, _validate(path), "larger than 1000 KB")


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "strategy, needle",
    [
        ({"name": "finetune", "epochs": 1, "lr_head": "0,01"}, "lr_head: '0,01' is not a number; write 0.01"),
        ({"name": "finetune", "epochs": 1, "lr_head": ["1,5e-4", 0.1]}, "'1,5e-4' is not a number; write 1.5e-4"),
        ({"name": "finetune", "epochs": 1, "lr_head": None}, "lr_head: no value (the line ends after the colon)"),
    ],
)
def test_a_decimal_comma_or_an_empty_value_is_one_line(write_config, capsys, strategy, needle):
    one_line(capsys, _validate(write_config(strategies=[strategy])), needle)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"strategies": [{"name": "finetune", "epochs": 1, "lr_head": float("nan")}]}, "strategies[0].lr_head: nan"),
        (
            {"strategies": [{"name": "finetune", "epochs": 1, "lr_backbone": [1e-5, float("inf")]}]},
            "lr_backbone[1]: inf",
        ),
        ({"training": {"weight_decay": float("-inf")}}, "training.weight_decay: -inf"),
        ({"search": {"n_trials": 2, "timeout": float("inf")}}, "search.timeout: inf"),
        ({"training": {"cache": {"memory_mb": float("nan")}}}, "training.cache.memory_mb: nan"),
        (
            {"datasets": [{"name": "synthetic", "classes": 3, "noise": float("nan")}]},
            "datasets[0].noise: nan",
        ),
    ],
)
def test_nan_or_infinity_in_any_number_is_one_line(write_config, capsys, overrides, field):
    one_line(capsys, _validate(write_config(**overrides)), field, "is not a finite number")


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_outside_numpys_range_is_refused(write_config, capsys, seed):
    one_line(capsys, _validate(write_config(seed=seed)), "seed:")


def test_the_largest_seed_runs(write_config, capsys):
    """Seeds derived from it (trial, repeat and sampler seeds) wrap around instead of overflowing numpy."""
    path = write_config(seed=2**32 - 1, repeats=1, search={"n_trials": 1, "startup_trials": 1})
    assert _validate(path) == 0
    assert cli.main(["run", str(path), "--format", "csv"]) == 0, capsys.readouterr().err


def test_a_search_that_would_never_stop_is_refused(write_config, capsys):
    one_line(capsys, _validate(write_config(search={"n_trials": None})), "would never stop")


@pytest.mark.parametrize(
    "device, needle",
    [
        ("mps", "no Apple MPS device"),
        ("cuda:3", "CUDA is not available" if not __import__("torch").cuda.is_available() else "visible"),
    ],
)
def test_a_device_this_machine_does_not_have_is_refused_by_validate(write_config, capsys, device, needle):
    if device == "mps" and __import__("torch").backends.mps.is_available():
        pytest.skip("this machine has MPS")
    one_line(capsys, _validate(write_config(training={"batch_size": 8, "resolution": 32, "device": device})), needle)


def test_an_absurd_resolution_is_refused_by_validate_with_its_memory(write_config, capsys):
    line = one_line(
        capsys, _validate(write_config(training={"batch_size": 8, "resolution": 100_000})), "resolution 100000 px"
    )
    assert "GiB for one training batch" in line and "lower training.resolution or batch_size" in line


def test_a_cache_dir_that_is_a_file_is_refused_by_validate(write_config, capsys, tmp_path):
    (tmp_path / "notafolder").write_text("x")
    path = write_config(training={"batch_size": 8, "resolution": 32, "cache": {"dir": "notafolder"}})
    one_line(capsys, _validate(path), "training.cache.dir", "is a file, not a folder")


def test_a_cache_subfolder_tlbench_did_not_make_is_refused_by_validate(write_config, capsys, tmp_path):
    (tmp_path / "cache" / "tlbench-features").mkdir(parents=True)
    (tmp_path / "cache" / "tlbench-features" / "mine.bin").write_text("x")
    path = write_config(training={"batch_size": 8, "resolution": 32, "cache": {"dir": "cache"}})
    one_line(capsys, _validate(path), "was not made by tlbench's feature cache")
    assert (tmp_path / "cache" / "tlbench-features" / "mine.bin").read_text() == "x"


@pytest.mark.parametrize(
    "params, needle",
    [
        (
            {"lr_head": 5.0},
            "params.lr_head: 5.0 is not among the values the config searches (0.0001..0.1 on a log scale)",
        ),
        ({"lr_head": "fast"}, "lr_head"),
        ({"freeze": 2.0}, "params.freeze: 2.0 is not among the values"),
    ],
)
def test_an_enqueued_recipe_value_the_search_cannot_draw_is_refused(write_config, capsys, params, needle):
    recipe = {"backbone": "timm:test_resnet-scratch", "strategy": "finetune", "params": params}
    path = write_config(
        strategies=[{"name": "finetune", "epochs": 1}], search={"n_trials": 2, "startup_trials": 1, "enqueue": [recipe]}
    )
    one_line(capsys, _validate(path), "search.enqueue[0]", needle)


def test_a_recipe_choice_that_is_not_a_choice_is_refused(write_config, capsys):
    recipe = {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"batch_size": 48}}
    path = write_config(
        training={"batch_size": {"choices": [8, 16]}, "resolution": 32},
        search={"n_trials": 2, "startup_trials": 1, "enqueue": [recipe]},
    )
    one_line(
        capsys, _validate(path), "params.batch_size: 48 is not among the values the config searches (choices 8, 16)"
    )


# --------------------------------------------------------------------------- plugins the config lists


def _plugin(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / name).write_text("from tlbench import hookimpl\nfrom tlbench.types import *\n" + body)
    return name


def test_a_dataset_plugin_whose_labels_exceed_its_classes_is_refused_by_validate(write_config, capsys, tmp_path):
    body = """
@hookimpl
def tlbench_datasets():
    def load(request):
        split = lambda labels: Split(labels=labels, ids=tuple(f"{id(labels)}:{i}" for i in range(len(labels))), load=None)
        return DatasetSplits(train=split((0, 1, 2, 1)), val=split((0, 1)), test=split((1, 0)), classes=("a", "b"))
    yield Dataset(name="offbyone", load=load)
"""
    path = write_config(plugins=[_plugin(tmp_path, "offbyone.py", body)], datasets=[{"name": "offbyone"}])
    one_line(
        capsys, _validate(path), "offbyone.py", "the train split has label 2, but there are 2 classes (labels 0..1)"
    )


@pytest.mark.parametrize(
    "body, needle",
    [
        ("import not_a_module_anywhere\n", "ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
        ("import sys\nsys.exit(3)\n", "it called sys.exit(3) while being imported"),
    ],
)
def test_a_listed_plugin_that_fails_to_import_stops_validate(write_config, capsys, tmp_path, body, needle):
    path = write_config(plugins=[_plugin(tmp_path, "broken.py", body)])
    one_line(
        capsys, _validate(path), "plugins:", "broken.py failed to load", needle, "fix it or remove it from 'plugins:'"
    )


def test_a_strategy_whose_phases_do_not_fit_a_backbone_is_refused_by_validate(write_config, capsys, tmp_path):
    """Dry runs use 4 groups; the real backbone has another count, and validate tries it."""
    body = """
@hookimpl
def tlbench_strategies():
    yield Strategy(name="six", suggest=lambda space, o: {}, phases=lambda p, n: [Phase("all", 1, min(6, n + 2) if n > 4 else 4, 0.0, 0.1)])
"""
    path = write_config(plugins=[_plugin(tmp_path, "six.py", body)], strategies=[{"name": "six"}])
    one_line(capsys, _validate(path), "strategies[0] (six) on timm:test_resnet-scratch", "frozen_groups must be 0..")


# --------------------------------------------------------------------------- every field of the schema


def _fields(model: type[pydantic.BaseModel], prefix: str = "") -> dict[str, typing.Any]:
    """Dotted path -> annotation of every field of the schema, nested models expanded."""
    out = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = [
            a
            for a in (typing.get_args(annotation) or (annotation,))
            if isinstance(a, type) and issubclass(a, pydantic.BaseModel)
        ]
        if nested and typing.get_origin(annotation) is not list:
            out |= _fields(nested[0], f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = annotation
    return out


BAD = {  # a field of the schema -> values it must refuse
    "name": ["has space", "../up", {"a": 1}],
    "run": ["a/b", ""],
    "seed": [-1, 2**32, "zero", 1.5],
    "repeats": [-1, "two"],
    "results_dir": [{"a": 1}, 3],
    "plugins": ["one.py", [1]],
    "datasets": [
        [],
        "synthetic",
        [{"classes": 3}],
        [{"name": "synthetic", "train_samples": 0}],
        [{"name": "synthetic", "per_class": -1}],
        [{"name": "synthetic", "val_samples": "x"}],
        [{"name": "synthetic", "test_samples": 1.5}],
        [{"name": "synthetic", "label": 3}],
    ],
    "backbones": [
        [],
        [{"name": "timm:test_resnet", "pretrained": "sure"}],
        [{"name": "timm:test_resnet", "resolution": 0}],
        [{"name": "timm:test_resnet", "weights": "missing.pt"}],
        [{"name": "timm:test_resnet", "label": ["x"]}],
        [{"name": "timm:test_resnet", "colour": 1}],
        [{"name": "timm:test_resnet", "drop_rate": 2}],
        [{"name": "timm:test_resnet", "drop_path_rate": "some"}],
        [{"name": "timm:test_resnet", "max_length": 0}],
        [{"name": "timm:test_resnet", "max_length": 64}],
    ],
    "strategies": [[], [{"name": "linear_probe", "epochs": 0}], [{"name": "linear_probe", "label": 1}]],
    "search.n_trials": [0, -3, "many", 2.5],
    "search.timeout": [0, -1, "long"],
    "search.sampler": ["grid", 1],
    "search.local_share": [-0.1, 1.5, "half"],
    "search.local_step": ["gp", 1, True],
    "search.group_share": [-0.1, 1.5, "most"],
    "search.group_step": ["often", 2],
    "search.untried_draws": ["often", 2],
    "search.pruner": ["always", None, "hyperband"],  # hyperband: only with prune_within: study
    "search.startup_trials": [0, "few"],
    "search.warmup_epochs": [-1, "one"],
    "search.select_epochs": [0, -2, "last", 2.5, True],
    "search.storage": ["sqlite:///:memory:", "notaurl", 5],
    "search.heartbeat": [0, "often"],
    "search.enqueue": [
        {"backbone": "x"},
        [{"backbone": "nope", "strategy": "linear_probe"}],
        [{"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": 9.0}}],
    ],
    "search.retries": [-1, 101, "twice"],
    "search.screen.enabled": ["sometimes", 3],
    "search.screen.drop": ["maybe", 2],
    "search.screen.score": ["sfda", 1],
    "search.screen.margin": [0, -0.1, 1.5, "wide"],
    "search.prune_within": ["dataset", 1],
    "search.objective": ["best", 1],
    "search.portfolio": [-1, 9, "some", True, 2.0],  # true is not a count
    "search.portfolio_from": ["earlier.json", ["missing.json"], ["afile"], [3]],  # afile: not a tlbench table
    "search.cost": ["flops", 2],
    "search.prune_startup": [0, "few"],
    "search.constraints.forward_gflops": [0, -1, "small"],
    "search.constraints.params_m": [0, "few"],
    "search.constraints.latency_ms": [-1, "fast"],
    "search.constraints.train_seconds": [0, "short"],
    "search.constraints.peak_memory_mb": [-2, "little"],
    "search.budget.gflops": [0, "lots"],
    "search.budget.seconds": [-5, "long"],
    "training.batch_size": [0, 1, -8, "big", [8, 0.5], {"choices": []}, [16, 32]],
    "training.weight_decay": [-0.1, "heavy", [1e-2, 1e-6]],
    "training.augment": ["maybe", 2],
    "training.resolution": [0, -32, 100_000, "hd"],
    "training.max_length": [0, -1, "long", 64],  # 64: no backbone of the config reads text
    "training.device": ["gpu", "cuda:x", [], ["auto", "cpu"], "mps"],
    "training.num_workers": [-1, "all"],
    "training.compile": ["yes please", 3],
    "training.cache.enabled": ["sometimes", 2],
    "training.cache.memory_mb": [0, -1, "lots"],
    "training.cache.dir": [5, "afile"],
    "training.cache.disk_mb": [0, "lots"],
    "training.test_curve": ["each epoch", 2],
    "trackers": [
        "tensorboard",
        [{"nm": "x"}],
        [{"name": "nope"}],
        [{"name": 3}],
        [{"name": "tensorboard"}],
    ],  # the last: not installed here
}


def _with(data: dict, dotted: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


def test_the_bad_value_table_covers_every_field_of_the_schema():
    """A field added to the schema must come with values it refuses (below)."""
    assert sorted(_fields(config.Benchmark)) == sorted(BAD)


@pytest.mark.parametrize("field, value", [(f, v) for f, values in BAD.items() for v in values])
def test_every_field_refuses_its_bad_values_in_validate(tmp_path, write_config, capsys, field, value):
    (tmp_path / "afile").write_text("not a folder")
    path = write_config(_with(tiny_benchmark(), field, value))
    err = one_line(capsys, _validate(path))
    top = field.split(".")[0]
    assert top in err or field.split(".")[-1] in err or "datasets[0]" in err or "backbones[0]" in err, err


@pytest.mark.parametrize("freeze", [[0.5, 1.5], {"choices": [0.0, 0.5, 2.0]}])
def test_a_range_whose_far_end_the_phases_reject_is_refused_by_validate(write_config, capsys, freeze):
    """validate tries both ends of every range and every choice, not one random draw."""
    path = write_config(strategies=[{"name": "finetune", "epochs": 1, "freeze": freeze}])
    one_line(capsys, _validate(path), "strategies[0] (finetune)", "freeze fraction must be in [0, 1]")


def test_a_results_dir_that_is_a_file_is_refused_by_validate(write_config, capsys, tmp_path):
    (tmp_path / "out").write_text("x")
    one_line(capsys, _validate(write_config(results_dir="out/results")), "results_dir:", "is a file, not a folder")


def test_validate_refuses_what_run_would_refuse_about_an_existing_run_folder(write_config, capsys):
    path = write_config(tiny_benchmark(run="r", search={"n_trials": 1, "startup_trials": 1}))
    assert cli.main(["run", str(path), "--format", "csv"]) == 0
    path.write_text(path.read_text().replace("seed: 0", "seed: 1"))
    capsys.readouterr()
    one_line(capsys, _validate(path), "holds a run of a different config")


def test_a_key_given_twice_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(tiny_benchmark()) + "seed: 3\n")  # seed again, at the end
    one_line(capsys, _validate(path), "'seed' appears twice in one mapping; keep one")


@pytest.mark.parametrize("batch_size", [1, {"choices": [1, 8]}, {"low": 1, "high": 8}])
def test_a_batch_size_of_one_is_refused_before_it_trains_nothing(write_config, capsys, batch_size):
    """A batch of one example is skipped (batch norm cannot train on it): batch_size 1 would train no step."""
    one_line(
        capsys,
        _validate(write_config(training={"batch_size": batch_size, "resolution": 32})),
        "training.batch_size",
        "2 or more",
    )


def test_a_folder_given_as_the_config_is_one_line(tmp_path, capsys):
    one_line(capsys, _validate(tmp_path), "is a folder, not a config file")


def test_a_hook_that_returns_a_record_instead_of_yielding_is_told_so(write_config, capsys, tmp_path):
    body = "\n@hookimpl\ndef tlbench_strategies():\n    return Strategy(name='once', suggest=lambda s, o: {}, phases=lambda p, n: [Phase('x', 1, n, 0.0, 0.1)])\n"
    path = write_config(plugins=[_plugin(tmp_path, "returns.py", body)])
    one_line(
        capsys,
        _validate(path),
        "tlbench_strategies() returned a Strategy; hooks yield their records: write 'yield Strategy(...)'",
    )


def test_a_dataset_whose_examples_are_no_images_is_refused_by_validate(write_config, capsys, tmp_path):
    body = """
import numpy as np
@hookimpl
def tlbench_datasets():
    def load(request):
        split = lambda labels, p: Split(labels=labels, ids=tuple(f"{p}{i}" for i in range(len(labels))), load=lambda i: np.zeros((8, 8, 3)))
        return DatasetSplits(train=split((0, 1), "a"), val=split((0, 1), "b"), test=split((0, 1), "c"), classes=("x", "y"))
    yield Dataset(name="arrays", load=load)
"""
    path = write_config(plugins=[_plugin(tmp_path, "arrays.py", body)], datasets=[{"name": "arrays"}])
    one_line(capsys, _validate(path), "dataset 'arrays': train.load(0) returned ndarray, expected a PIL image")
