"""Plugin discovery and validation, with real modules, files and a fake installed distribution."""

from __future__ import annotations

import textwrap

import pytest
from conftest import FAKE_DIST

from tlbench import cli
from tlbench.host.plugins import collect, make_plugin_manager
from tlbench.types import UserError


def test_builtins_provide_the_documented_names():
    registry = collect(make_plugin_manager())
    assert {"imagefolder", "torchvision", "synthetic"} <= set(registry.datasets)
    assert {"linear_probe", "finetune", "two_stage"} <= set(registry.strategies)
    assert {"timm", "torchvision"} <= set(registry.families)
    record, model = registry.backbone("timm:test_resnet")
    assert record.name == "timm" and model == "test_resnet"


def test_unknown_backbone_suggests_the_prefixed_name():
    registry = collect(make_plugin_manager())
    with pytest.raises(UserError, match="timm:test_resnet"):
        registry.backbone("test_resnet")
    with pytest.raises(UserError, match="did you mean 'timm:test_resnet'"):
        registry.backbone("timm:test_resnt")


def _write_plugin(path, body):
    path.write_text("import tlbench\nfrom tlbench.types import *\n" + textwrap.dedent(body))
    return path


DATASET_PLUGIN = """
@tlbench.hookimpl
def tlbench_datasets():
    yield Dataset(name="{name}", load=lambda request: None, description="from a path")
"""


def test_config_plugin_paths_load_files_and_folders(tmp_path):
    _write_plugin(tmp_path / "one.py", DATASET_PLUGIN.format(name="from_file"))
    folder = tmp_path / "more"
    folder.mkdir()
    _write_plugin(folder / "two.py", DATASET_PLUGIN.format(name="from_folder"))
    host = make_plugin_manager(["one.py", "more"], base_dir=tmp_path)
    registry = collect(host)
    assert registry.datasets["from_file"].plugin.endswith("one.py")
    assert registry.datasets["from_folder"].plugin.endswith("two.py")
    assert {i.origin for i in host.info.values()} == {"builtin", "path"}


def test_fake_installed_distribution_is_discovered_by_entry_point(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_DIST))
    monkeypatch.delenv("TLBENCH_LOAD_PLUGINS")
    host = make_plugin_manager()
    assert host.info["fake"].origin == "entry point"
    assert host.info["fake"].version == "0.3"
    assert collect(host).strategies["fake_head_only"].plugin == "fake"


@pytest.mark.parametrize("allowed, loaded", [("", False), ("fake", True), ("tlbench-fake", True), ("other", False)])
def test_environment_variable_restricts_installed_plugins(monkeypatch, allowed, loaded):
    monkeypatch.syspath_prepend(str(FAKE_DIST))
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", allowed)
    host = make_plugin_manager()
    assert ("fake" in host.info) is loaded
    assert "tlbench.host.builtins.datasets" in host.info  # built-ins always load


def test_broken_plugin_is_recorded_by_name_and_the_others_load(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    host = make_plugin_manager(["broken.py"], base_dir=tmp_path)
    assert [(f.name, type(f.error).__name__) for f in host.failures] == [
        (str(tmp_path / "broken.py"), "ModuleNotFoundError")
    ]
    assert "synthetic" in collect(host).datasets


def test_plugins_command_lists_plugins_and_warns_about_broken_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich does not wrap the cells
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    _write_plugin(tmp_path / "good.py", DATASET_PLUGIN.format(name="good_data"))
    config = tmp_path / "b.yaml"
    config.write_text(
        "name: x\nplugins: [broken.py, good.py]\ndatasets: [{name: good_data}]\n"
        "backbones: [{name: timm:test_resnet}]\nstrategies: [{name: finetune}]\n"
    )
    assert cli.main(["plugins", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "good_data" in out and "linear_probe" in out and "timm:<model>" in out
    assert "feature extraction: the backbone is frozen, only the new head trains" in out  # each name's description
    warning = [line for line in err.splitlines() if "broken.py" in line]
    assert len(warning) == 1 and "RuntimeError: boom" in warning[0] and "Traceback" not in err


def test_duplicate_name_names_both_plugins(tmp_path):
    _write_plugin(tmp_path / "a.py", DATASET_PLUGIN.format(name="synthetic"))
    with pytest.raises(UserError) as info:
        collect(make_plugin_manager(["a.py"], base_dir=tmp_path))
    message = str(info.value)
    assert "tlbench.host.builtins.datasets" in message and "a.py" in message and "two plugins" in message


def test_misspelled_hook_fails_loudly(tmp_path):
    _write_plugin(
        tmp_path / "typo.py",
        """
        @tlbench.hookimpl
        def tlbench_dataset():
            yield None
        """,
    )
    with pytest.raises(UserError, match="tlbench_dataset"):
        make_plugin_manager(["typo.py"], base_dir=tmp_path)


def test_wrong_record_type_and_raising_hook_name_the_plugin(tmp_path):
    _write_plugin(
        tmp_path / "wrong.py",
        """
        @tlbench.hookimpl
        def tlbench_backbones():
            yield Strategy(name="oops", suggest=None, phases=None)
        """,
    )
    with pytest.raises(UserError, match=r"wrong\.py.*yielded Strategy, expected tlbench.types.Backbone"):
        collect(make_plugin_manager(["wrong.py"], base_dir=tmp_path))
    _write_plugin(
        tmp_path / "raises.py",
        """
        @tlbench.hookimpl
        def tlbench_strategies():
            raise ValueError("bad day")
        """,
    )
    with pytest.raises(UserError, match=r"raises\.py.*tlbench_strategies\(\) raised ValueError: bad day"):
        collect(make_plugin_manager(["raises.py"], base_dir=tmp_path))


def test_plugin_path_that_does_not_exist_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a .py file or a folder"):
        make_plugin_manager(["missing.py"], base_dir=tmp_path)


def test_readme_plugin_example_works_as_a_config_plugin(tmp_path, capsys):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("## Writing a plugin", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(code)
    config = tmp_path / "b.yaml"
    config.write_text(
        "name: x\nplugins: [example.py]\ndatasets: [{name: synthetic, classes: 2}]\n"
        "backbones: [{name: 'timm:test_resnet', pretrained: false}]\nstrategies: [{name: head_then_all}]\n"
    )
    assert cli.main(["validate", str(config)]) == 0, capsys.readouterr().err


def test_the_kit_checks_a_strategys_adapt_on_a_text_backbone_too():
    """check_strategy runs adapt (and extra_loss) on a tiny text encoder as well as on an
    image model (issue 25); a strategy only for images says so and is checked on images only."""
    from tlbench import testing
    from tlbench.types import Adapted, Phase, Strategy

    def adapt(built, params):
        from torch import nn

        if not any(isinstance(m, nn.Conv2d) for m in built.model.modules()):
            raise UserError("no convolution to adapt")
        return Adapted(built=built)

    record = Strategy(
        "conv_only",
        suggest=lambda space, options: {},
        phases=lambda p, n: [Phase("head", 1, n, 0.0, 0.01)],
        adapt=adapt,
    )
    with pytest.raises(
        testing.ConformanceError, match=r"no convolution to adapt \(on a tiny text encoder; .*\('image',\)"
    ):
        testing.check_strategy(record)
    testing.check_strategy(record, modalities=("image",))
