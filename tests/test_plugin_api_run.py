"""Plugin API 1.3 as a user meets it through the command line: reserved names refused in
one line, TLBENCH_LOAD_PLUGINS mistakes named, backbones whose groups run backwards
refused by validate, and the event hooks of a real run, in order, with typed records."""

from __future__ import annotations

import json
import math
import textwrap

import pandas as pd
import yaml
from conftest import FAKE_DIST, one_line, tiny_benchmark

from tlbench import cli


def _config(tmp_path, plugin: str | None = None, **overrides) -> str:
    data = tiny_benchmark(**overrides)
    if plugin is not None:
        (tmp_path / "plugin.py").write_text("import tlbench\nfrom tlbench.types import *\n" + textwrap.dedent(plugin))
        data["plugins"] = ["plugin.py"]
    path = tmp_path / "benchmarks.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_dataset_option_named_like_a_host_field_is_refused_in_one_line(tmp_path, capsys):
    plugin = """
    from tlbench.host.builtins.datasets import load_synthetic

    @tlbench.hookimpl
    def tlbench_datasets():
        yield Dataset("mine", load_synthetic, options={"per_class": "examples per class"})
    """
    code = cli.main(["validate", _config(tmp_path, plugin, datasets=[{"name": "mine", "per_class": 3}])])
    one_line(capsys, code, "plugin.py: dataset 'mine': option 'per_class' is a name tlbench reserves for every dataset",
             "(reserved: name, label, train_samples, val_samples, test_samples, per_class)", "rename the option")  # fmt: skip


def test_a_strategy_parameter_named_like_a_training_setting_is_refused(tmp_path, capsys):
    plugin = """
    @tlbench.hookimpl
    def tlbench_strategies():
        yield Strategy("wd", lambda s, o: {"lr": s.suggest("lr", [1e-3, 1e-1], log=True), "weight_decay": 0.1},
                       lambda p, n: [Phase("head", 1, n, 0.0, p["lr"])])
    """
    code = cli.main(["validate", _config(tmp_path, plugin, strategies=[{"name": "wd"}])])
    one_line(
        capsys,
        code,
        "strategy 'wd': suggest() returned a parameter named 'weight_decay', a name the host draws for every trial",
    )


def test_a_misspelt_name_in_the_restriction_stops_validate_and_warns_in_plugins(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_DIST))
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "fak")
    code = cli.main(["validate", _config(tmp_path)])
    one_line(capsys, code, "TLBENCH_LOAD_PLUGINS names 'fak', which is no installed plugin", "did you mean 'fake'?")
    assert cli.main(["plugins"]) == 0
    assert "tlbench: warning: TLBENCH_LOAD_PLUGINS names 'fak'" in capsys.readouterr().err


def test_an_unknown_name_that_an_excluded_plugin_provides_names_that_plugin(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_DIST))
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "")  # every installed plugin left out
    code = cli.main(["validate", _config(tmp_path, strategies=[{"name": "fake_head_only"}])])
    one_line(capsys, code, "strategies[0] (fake_head_only): unknown strategy 'fake_head_only'",
             "it is provided by the installed plugin fake, which TLBENCH_LOAD_PLUGINS='' leaves out: add fake to it, or unset it")  # fmt: skip


BACKWARDS = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, n)
    def forward(self, x):
        return self.head(self.b(self.a(x)).mean((2, 3)))

def build(request):
    net = Net(request.num_classes)
    # output side first: freeze: 0.5 would freeze b and train a
    return BuiltBackbone(net, (("b.weight", "b.bias"), ("a.weight", "a.bias")), ("head.weight", "head.bias"),
                         DataConfig(16, (0.5,) * 3, (0.5,) * 3))

@tlbench.hookimpl
def tlbench_backbones():
    yield Backbone("backwards", build)
"""


def test_groups_that_run_output_to_input_are_refused_by_validate(tmp_path, capsys):
    code = cli.main(["validate", _config(tmp_path, BACKWARDS, backbones=[{"name": "backwards", "pretrained": False}])])
    one_line(
        capsys,
        code,
        "backbone 'backwards': build() returned groups must run from input to output, but group 1 (a.weight, ...) is used before group 0",
    )


def test_an_error_names_its_entry_once(tmp_path, capsys):
    code = cli.main(["validate", _config(tmp_path, datasets=[{"name": "imagefolder", "path": "missing"}])])
    line = one_line(capsys, code, "datasets[0] (imagefolder): ")
    assert line.count("imagefolder") == 1 + line.count("/imagefolder"), line


RECORDER = """
import json

events = []

def _keep(kind, **fields):
    with open(__file__ + ".events", "a") as f:
        f.write(json.dumps({"event": kind, **fields}) + "\\n")

@tlbench.hookimpl
def tlbench_run_started(run):
    _keep("run_started", run=run.run, folder=str(run.folder), datasets=list(run.datasets))

@tlbench.hookimpl
def tlbench_trial_started(trial):
    _keep("trial_started", number=trial.number, state=trial.state, epochs=trial.epochs, params=trial.record.params)

@tlbench.hookimpl
def tlbench_epoch_done(trial, epoch, val_accuracy):
    _keep("epoch_done", number=trial.number, epoch=epoch, val=val_accuracy, curve=list(trial.curve))

@tlbench.hookimpl
def tlbench_trial_finished(run, trial):
    _keep("trial_finished", number=trial.number, state=trial.state, test=trial.record.test_accuracy, curve=list(trial.curve),
          values=list(trial.values), gflops=trial.record.train_gflops)

@tlbench.hookimpl
def tlbench_run_finished(run, interrupted):
    _keep("run_finished", interrupted=interrupted)
"""


def test_a_plugin_gets_every_event_of_a_run_in_order_with_what_the_storage_holds(tmp_path, capsys):
    config = _config(
        tmp_path,
        RECORDER,
        strategies=[{"name": "finetune", "epochs": 2}],
        search={"n_trials": 3, "startup_trials": 1, "screen": False},
    )
    assert cli.main(["run", config, "--format", "csv"]) == 0, capsys.readouterr().err
    events = [json.loads(line) for line in (tmp_path / "plugin.py.events").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and events[-1]["interrupted"] is False
    # one device: trials one after another, each started, its epochs in order, finished (a pruned one ends early)
    expected = []
    for e in events[1:-1]:
        if e["event"] == "trial_finished":
            run = len(e["curve"])
            assert run == 2 or e["state"] == "pruned"
            expected += ["trial_started"] + ["epoch_done"] * run + ["trial_finished"]
    assert kinds[1:-1] == expected and kinds.count("trial_finished") == 3
    assert [e["epoch"] for e in events if e["event"] == "epoch_done"] == [
        k for e in events if e["event"] == "trial_finished" for k in range(1, len(e["curve"]) + 1)
    ]
    trials = pd.read_csv(next((tmp_path / "results" / "tiny").glob("*/trials.csv")))
    finished = {e["number"]: e for e in events if e["event"] == "trial_finished"}
    assert sorted(finished) == sorted(trials["trial"])
    for _, row in trials.iterrows():
        event = finished[row["trial"]]
        assert event["state"] == row["state"].lower()
        if row["state"] == "COMPLETE":
            # the trial's value: the mean of its last 5 epochs (select_epochs' default), here both epochs
            assert event["test"] == row["test_accuracy"] and event["values"] == [sum(event["curve"]) / 2]
            assert event["gflops"] == row["train_gflops"]
    curves = [e["curve"] for e in events if e["event"] == "epoch_done"]
    assert all(len(c) == e["epoch"] for c, e in zip(curves, [e for e in events if e["event"] == "epoch_done"]))
    assert all(e["epochs"] == 2 and "lr_head" in e["params"] for e in events if e["event"] == "trial_started")


STUDY_RECORDER = """
import json

TLBENCH_PLUGIN_API = (1, 6)

def _keep(**fields):
    with open(__file__ + ".events", "a") as f:
        f.write(json.dumps(fields) + "\\n")

@tlbench.hookimpl
def tlbench_study_started(run, dataset, part, done, total):
    _keep(event="study_started", dataset=dataset, part=part, done=done, total=total)

@tlbench.hookimpl
def tlbench_study_finished(dataset, part):
    _keep(event="study_finished", dataset=dataset, part=part)

@tlbench.hookimpl
def tlbench_note(text):
    _keep(event="note", text=text)

@tlbench.hookimpl
def tlbench_trial_finished(trial):
    _keep(event="trial_finished", repeat=trial.record.repeat_of is not None)
"""


def test_a_plugin_gets_the_study_level_events_the_display_shows(tmp_path, capsys):
    """API 1.6: the progress display is one implementation of the study-level hooks; a
    plugin gets the same events: the search and the repeats started and finished, the notes."""
    config = _config(
        tmp_path,
        STUDY_RECORDER,
        strategies=[{"name": "linear_probe", "epochs": 1}],
        search={"n_trials": 3, "screen": False, "budget": {"gflops": 1e-9}},
        repeats=1,
    )
    assert cli.main(["run", config, "--format", "csv"]) == 0, capsys.readouterr().err
    shown = capsys.readouterr().err  # the display (stdout: the tables)
    events = [json.loads(line) for line in (tmp_path / "plugin.py.events").read_text().splitlines()]
    kinds = [(e["event"], e.get("part")) for e in events]
    assert kinds == [
        ("study_started", "search"), ("trial_finished", None), ("study_finished", "search"), ("note", None),
        ("study_started", "repeats"), ("trial_finished", None), ("study_finished", "repeats"),
    ]  # fmt: skip
    assert events[0] == {"event": "study_started", "dataset": "synthetic", "part": "search", "done": 0, "total": 3}
    assert (
        events[3]["text"].startswith("[synthetic] the study stopped: search.budget.gflops")
        and events[3]["text"] in shown
    )
    assert [e["repeat"] for e in events if e["event"] == "trial_finished"] == [False, True]


def test_a_hook_that_raises_is_named_once_and_the_run_goes_on(tmp_path, capsys):
    plugin = """
    @tlbench.hookimpl
    def tlbench_epoch_done(epoch):
        raise RuntimeError("tracker down")
    """
    config = _config(tmp_path, plugin, search={"n_trials": 2, "startup_trials": 1, "screen": False})
    assert cli.main(["run", config]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "tracker down" in line]
    assert (
        len(lines) == 1
        and "tlbench_epoch_done() raised RuntimeError: tracker down; it gets no more events in this run" in lines[0]
    )
    trials = pd.read_csv(next((tmp_path / "results" / "tiny").glob("*/trials.csv")))
    assert trials["state"].eq("COMPLETE").all() and len(trials) == 2


RATES = """
import json

@tlbench.hookimpl
def tlbench_epoch_done(epoch, learning_rates):
    with open(__file__ + ".rates", "a") as f:
        f.write(json.dumps({"epoch": epoch, "rates": learning_rates}) + "\\n")
"""


def test_layerwise_runs_with_a_rate_per_group_and_each_epoch_event_carries_the_rates_applied(tmp_path, capsys):
    config = _config(tmp_path, RATES, strategies=[{"name": "layerwise", "epochs": 2, "decay": 0.5, "freeze": 0.0}],
                     search={"n_trials": 1, "startup_trials": 1, "screen": False, "pruner": "none"})  # fmt: skip
    assert cli.main(["run", config, "--format", "csv"]) == 0, capsys.readouterr().err
    import optuna

    from tlbench.store.record import TrialRecord

    db = next((tmp_path / "results" / "tiny").glob("*/study.db"))
    summaries = optuna.get_all_study_summaries(f"sqlite:///{db}")
    study = optuna.load_study(study_name=summaries[0].study_name, storage=f"sqlite:///{db}")
    record = TrialRecord.from_trial(study.trials[0])
    (phase,) = record.phases
    rates, top = phase["group_lrs"], record.params["lr_backbone"]
    assert len(rates) == record.n_groups and rates[-1] == top and rates[0] == top * 0.5 ** (record.n_groups - 1)
    # API 1.5: each epoch event names every optimizer group's rate at each of the epoch's steps
    events = [json.loads(line) for line in (tmp_path / "plugin.py.rates").read_text().splitlines()]
    assert [e["epoch"] for e in events] == [1, 2]
    last = record.n_groups - 1
    for e in events:
        applied = e["rates"]
        assert set(applied) == {"head"} | {f"group {i}" for i in range(record.n_groups)}
        steps = {len(r) for r in applied.values()}
        assert len(steps) == 1 and steps.pop() == 3  # 24 training examples in batches of 8
        for k in range(3):  # the schedule scales every group alike: the decay between groups stays
            assert math.isclose(applied["group 0"][k], applied[f"group {last}"][k] * 0.5**last)
    assert events[0]["rates"]["head"] != events[1]["rates"]["head"]  # the schedule moved it


def test_an_event_hook_with_an_unknown_argument_is_named(tmp_path, capsys):
    plugin = """
    @tlbench.hookimpl
    def tlbench_epoch_done(trial, foo):
        pass
    """
    code = cli.main(["validate", _config(tmp_path, plugin)])
    one_line(
        capsys, code, "hook tlbench_epoch_done() takes 'foo', but tlbench passes only run, trial, epoch, val_accuracy"
    )


def test_a_misspelt_or_unmarked_tracker_hook_is_refused_with_the_fix(tmp_path):
    """A tracker method tlbench_trial_finish (a typo) or an unmarked tlbench_trial_finished
    would never be called: the kit, and a run, refuse it in one line with the fix."""
    import pytest

    import tlbench
    from tlbench import testing
    from tlbench.types import Tracker

    class Typo:
        @tlbench.hookimpl
        def tlbench_trial_started(self, trial):
            pass

        def tlbench_trial_finish(self, trial):
            pass

    class Unmarked:
        def tlbench_trial_finished(self, trial):
            pass

    for cls, needle in ((Typo, "method tlbench_trial_finish is no event hook, so it would never be called; did you mean tlbench_trial_finished?"),
                        (Unmarked, "method tlbench_trial_finished is not marked @tlbench.hookimpl")):  # fmt: skip
        with pytest.raises(testing.ConformanceError, match=needle.replace("?", r"\?")):
            testing.check_tracker(Tracker(name="t", open=lambda request, cls=cls: cls()))


STALE = """
import tlbench
from tlbench.types import Phase, Strategy

TLBENCH_PLUGIN_API = (1, 2)


@tlbench.hookimpl
def tlbench_strategies():
    yield Strategy(
        name="stale_head", options={"epochs": 1, "lr_head": 0.01, "label": "x"},  # 'label': reserved since 1.3
        suggest=lambda space, o: {"epochs": o["epochs"], "lr_head": o["lr_head"]},
        phases=lambda p, n: [Phase("head", p["epochs"], n, 0.0, p["lr_head"])],
    )
"""


def test_a_stale_installed_plugin_is_a_warning_and_every_command_that_does_not_use_it_works(
    tmp_path, capsys, monkeypatch
):
    """An installed plugin written for API 1.2 declares an option 1.3 reserved: `tlbench
    plugins` and a config of built-ins work, with one warning naming it, its author's fix
    and TLBENCH_LOAD_PLUGINS; a config that uses it is refused in one line."""
    dist = tmp_path / "site"
    (dist / "tlbench_stale-0.1.dist-info").mkdir(parents=True)
    (dist / "tlbench_stale-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tlbench-stale\nVersion: 0.1\n"
    )
    (dist / "tlbench_stale-0.1.dist-info" / "entry_points.txt").write_text("[tlbench]\nstale = tlbench_stale_plugin\n")
    (dist / "tlbench_stale_plugin.py").write_text(STALE)
    monkeypatch.syspath_prepend(str(dist))
    monkeypatch.delenv("TLBENCH_LOAD_PLUGINS", raising=False)
    assert cli.main(["plugins"]) == 0
    err = capsys.readouterr().err
    assert "plugin stale (entry point) failed to load" in err and "option 'label'" in err
    assert "only its author can fix that" in err and "TLBENCH_LOAD_PLUGINS" in err
    assert cli.main(["validate", _config(tmp_path)]) == 0, capsys.readouterr().err
    assert "plugin stale" in capsys.readouterr().err  # still a warning, not a stop
    code = cli.main(["validate", _config(tmp_path, strategies=[{"name": "stale_head"}])])
    one_line(capsys, code, "unknown strategy 'stale_head'", "the installed plugin(s) stale failed to load")


SPY = """
import json
from tlbench import build_timm

def build(request):
    with open(__file__ + ".builds", "a") as f:
        f.write(json.dumps(request.options) + "\\n")
    return build_timm(BackboneRequest("test_resnet", request.num_classes, False, options=request.options))

@tlbench.hookimpl
def tlbench_backbones():
    yield Backbone("spy", build, options={"drop_rate": "dropout before the classifier"})
"""


def test_a_backbone_option_takes_the_searched_grammar_and_each_trial_stores_what_it_was_built_with(tmp_path, capsys):
    """Backbone options are first-class (issue 25): a range is drawn per trial and given to
    build; the screen and its probes build at the middle; a recipe may fix it; every trial
    stores the options it was built with, the tables show the drawn ones, export has them."""
    from tlbench.results.export import export_run

    recipe = {"backbone": "spy-scratch", "strategy": "linear_probe", "params": {"lr_head": 0.05, "drop_rate": 0.1}}
    config = _config(tmp_path, SPY, backbones=[{"name": "spy", "pretrained": False, "drop_rate": [0.0, 0.5]}],
                     search={"n_trials": 4, "sampler": "random", "enqueue": [recipe]})  # fmt: skip
    assert cli.main(["run", config, "--format", "csv"]) == 0, capsys.readouterr().err
    folder = next((tmp_path / "results" / "tiny").iterdir())
    table = export_run(folder)["datasets"]["synthetic"]["trials"]
    drawn = [t["params"]["spy-scratch.drop_rate"] for t in table]
    assert [t["backbone_options"] for t in table] == [{"drop_rate": d} for d in drawn]
    assert table[0]["probe"] and drawn[0] == 0.25  # the screen's probe: the range's middle, as the screen built it
    assert table[1]["recipe"] and drawn[1] == 0.1
    assert all(0.0 <= d <= 0.5 for d in drawn) and len(set(drawn[2:])) == len(drawn[2:])  # the sampler draws the rest
    builds = [json.loads(line)["drop_rate"] for line in (tmp_path / "plugin.py.builds").read_text().splitlines()]
    # build got each trial's value (validate and the screen: the middle)
    assert set(drawn) <= set(builds) and 0.25 in builds
    trials = pd.read_csv(folder / "trials.csv")
    assert all(f"drop_rate={d:.3g}" in c for d, c in zip(drawn, trials["config"]))
    assert trials["feature_cache"][0].startswith("head: memory")  # the probe trained on the screen's own features


def test_a_backbone_option_with_an_ambiguous_range_is_one_line(tmp_path, capsys):
    config = _config(tmp_path, SPY, backbones=[{"name": "spy", "pretrained": False, "drop_rate": [0, 1]}])
    one_line(
        capsys, cli.main(["validate", config]), "backbones[0]: drop_rate: [0, 1] could be the range 0..1 or one of"
    )
