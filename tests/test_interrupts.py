"""Real kills: SIGKILL or Ctrl-C a running `tlbench run`, run it again, lose nothing, duplicate nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from conftest import SIGNAL_PLUGIN, tiny_benchmark

from tlbench import cli
from tlbench.store.record import TrialRecord

SLOW = tiny_benchmark(
    name="kill",
    datasets=[
        {"name": "synthetic", "classes": 3, "size": 16, "train_per_class": 24, "val_per_class": 4, "test_per_class": 4}
    ],
    strategies=[{"name": "finetune", "epochs": 4, "freeze": 0.0}],
    search={"n_trials": 4, "startup_trials": 4, "pruner": "none"},
)


def _trials(folder) -> list[optuna.trial.FrozenTrial]:
    run = json.loads((folder / "run.json").read_text())
    (name,) = run["studies"].values()
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}").trials


# A config plugin that holds trial 1 after its first epoch until the test's signal stops it,
# and tells the test when it is there (a named pipe: tests/conftest.py, Signal): the signal
# then lands mid-trial every time, and the test waits on an event, not a clock. Trial 1 of a
# rerun is never held again.
PAUSE = (
    SIGNAL_PLUGIN
    + """
import threading
from pathlib import Path

import tlbench

MARK = Path(__file__).with_name("paused")


@tlbench.hookimpl
def tlbench_epoch_done(trial, epoch):
    if trial.number == 1 and epoch == 1 and not MARK.exists():
        MARK.write_text("trial 1 is training")
        reached()
        threading.Event().wait(120)  # until the signal stops it (bounded: a test that never signals still ends)
"""
)


def _held(write_config):
    """The SLOW config with the PAUSE plugin next to it."""
    config = write_config(SLOW | {"plugins": ["pause.py"]})
    (config.parent / "pause.py").write_text(PAUSE)
    return config


def _start_and_stop_mid_trial(config, sig, reached) -> tuple[subprocess.Popen, object]:
    """Start a run, wait until trial 0 has finished and trial 1 is held mid-training, then send ``sig``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlbench", "run", str(config), "--format", "csv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=reached.env,
    )  # fmt: skip
    reached.wait(proc)
    (folder,) = [p.parent for p in (config.parent / "results" / "kill").glob("*/trials.csv")]
    states = [t.state.name for t in _trials(folder)]
    assert states == ["COMPLETE", "RUNNING"], states
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc, folder


def _rerun(config, capsys):
    code = cli.main(["run", str(config), "--format", "csv"])
    return code, capsys.readouterr()


def test_sigkill_then_rerun_keeps_finished_trials_and_retries_the_killed_one(write_config, capsys, reached):
    config = _held(write_config)
    proc, folder = _start_and_stop_mid_trial(config, signal.SIGKILL, reached)
    assert proc.returncode == -signal.SIGKILL
    before = {t.number: t for t in _trials(folder)}
    killed = max(before)
    assert before[killed].state.name == "RUNNING"
    for name in ("trials.csv", "summary.json", "run.json"):  # written atomically: whole or absent, never torn
        if (folder / name).exists() and name.endswith(".csv"):
            pd.read_csv(folder / name)
        elif (folder / name).exists():
            json.loads((folder / name).read_text())

    code, out = _rerun(config, capsys)
    assert code == 0, out.err
    assert f"trial {killed} was interrupted: marked failed, retrying it" in out.err
    after = {t.number: t for t in _trials(folder)}
    for number, t in before.items():  # nothing finished is rerun or changed
        if t.state.name == "COMPLETE":
            assert (after[number].state, after[number].value, after[number].params) == (t.state, t.value, t.params)
    assert after[killed].state.name == "FAIL"
    assert TrialRecord.from_trial(after[killed]).fail_reason.startswith(
        "interrupted: the process running it was killed"
    )
    retries = [t for t in after.values() if TrialRecord.from_trial(t).retry_of == killed]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == before[killed].params
    # the budget, exactly: the killed trial's retry takes its place
    assert sum(t.state.name == "COMPLETE" for t in after.values()) == 4
    assert [t.number for t in after.values() if t.state.name == "FAIL"] == [killed]
    assert not [t for t in after.values() if t.state.name in ("RUNNING", "WAITING")]
    trials = pd.read_csv(folder / "trials.csv")
    assert len(trials) == len(after) and trials["retry_of"].dropna().tolist() == [killed]
    assert (folder / "report.md").exists()

    code, out = _rerun(config, capsys)  # a third run: nothing left to do, nothing retried twice
    assert code == 0 and "retrying" not in out.err and len(_trials(folder)) == len(after)


@pytest.mark.parametrize(
    "sig, code, said",
    [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")],  # SIGTERM: docker stop, Slurm, Kubernetes
)
def test_ctrl_c_or_sigterm_records_the_trial_as_interrupted_writes_the_report_and_exits_128_plus_signal(
    write_config, capsys, sig, code, said, reached
):
    config = _held(write_config)
    proc, folder = _start_and_stop_mid_trial(config, sig, reached)
    err = proc.stderr.read()
    assert proc.returncode == code, err
    assert f"interrupted ({said}): finished trials are kept" in err
    trials = {t.number: t for t in _trials(folder)}
    stopped = max(trials)
    assert trials[stopped].state.name == "FAIL", err
    assert TrialRecord.from_trial(trials[stopped]).fail_reason == f"interrupted by {said}", err
    assert pd.read_csv(folder / "trials.csv")["state"].tolist()[-1] == "FAIL"
    assert (folder / "report.md").exists()

    code, out = _rerun(config, capsys)  # going on retries the interrupted configuration once
    assert code == 0, out.err
    retries = [t for t in _trials(folder) if TrialRecord.from_trial(t).retry_of == stopped]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"


STARTED = (
    SIGNAL_PLUGIN
    + """
import tlbench


@tlbench.hookimpl
def tlbench_run_started(run):  # the run folder is locked by then
    reached()
"""
)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(write_config, capsys, reached):
    config = write_config(SLOW | {"plugins": ["started.py"]})
    (config.parent / "started.py").write_text(STARTED)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlbench", "run", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=reached.env,
    )  # fmt: skip
    try:
        reached.wait(proc)
        code, out = _rerun(config, capsys)
        assert code == 2
        assert "another tlbench run is using this run folder (pid" in out.err
        assert out.err.count("\n") == 1
    finally:
        proc.kill()
        proc.wait()


def test_unwritable_results_folder_is_one_line_and_exit_2(write_config, capsys, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    config = write_config(SLOW | {"results_dir": "a_file/results"})
    code, out = _rerun(config, capsys)
    assert code == 2
    assert "results_dir: " in out.err and "is a file, not a folder; set results_dir to a folder" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_a_ctrl_c_whose_keyboardinterrupt_python_dropped_still_stops_the_run(write_config, capsys, monkeypatch):
    # SIGINT raises KeyboardInterrupt wherever the main thread is; inside a garbage-collection
    # callback Python prints "Exception ignored" and drops it (seen in CI). The handler's flag
    # is what remains: simulate exactly that, a flag with no exception, during trial 1.
    from tlbench.base import interrupts
    from tlbench.host.progress import PlainProgress

    real = PlainProgress.epoch_done

    def epoch_done(self, number, epoch, val_accuracy):
        real(self, number, epoch, val_accuracy)
        if number == 1 and epoch == 1:
            interrupts._requested.set()  # what _on_sigint does before its KeyboardInterrupt is lost

    monkeypatch.setattr(PlainProgress, "epoch_done", epoch_done)
    config = write_config(SLOW)
    code, out = _rerun(config, capsys)
    assert code == 130, out.err
    folder = next((config.parent / "results" / "kill").glob("*"))
    states = {t.number: (t.state.name, TrialRecord.from_trial(t).fail_reason) for t in _trials(folder)}
    assert states == {0: ("COMPLETE", None), 1: ("FAIL", "interrupted by Ctrl-C")}
    assert not interrupts.requested()  # cleared when the command returns


EVENTS = """
import json
from pathlib import Path

import tlbench

LOG = Path(__file__).with_name("events.jsonl")


def _log(kind, trial):
    with LOG.open("a") as f:
        f.write(json.dumps({"event": kind, "number": trial.number, "state": trial.state, "reason": trial.reason}) + "\\n")


@tlbench.hookimpl
def tlbench_trial_started(trial):
    _log("started", trial)


@tlbench.hookimpl
def tlbench_trial_finished(trial):
    _log("finished", trial)
"""


def test_an_interrupted_trial_gets_its_trial_finished_event(write_config, capsys, reached):
    """Every started trial gets exactly one trial_finished, the one Ctrl-C stopped too
    (Optuna calls no callback for it), and its retry in the next run gets its own."""
    config = write_config(SLOW | {"plugins": ["pause.py", "events.py"]})
    (config.parent / "pause.py").write_text(PAUSE)
    (config.parent / "events.py").write_text(EVENTS)
    proc, folder = _start_and_stop_mid_trial(config, signal.SIGINT, reached)
    assert proc.returncode == 130, proc.stderr.read()
    lines = [json.loads(x) for x in (config.parent / "events.jsonl").read_text().splitlines()]
    finished = [x for x in lines if x["event"] == "finished"]
    assert [x["number"] for x in lines if x["event"] == "started"] == [0, 1]
    assert [(x["number"], x["state"]) for x in finished] == [(0, "complete"), (1, "failed")]
    assert finished[1]["reason"] == "interrupted by Ctrl-C"
    code, out = _rerun(config, capsys)
    assert code == 0, out.err
    lines = [json.loads(x) for x in (config.parent / "events.jsonl").read_text().splitlines()]
    started = [x["number"] for x in lines if x["event"] == "started"]
    ended = [x["number"] for x in lines if x["event"] == "finished"]
    assert sorted(started) == sorted(ended) and len(set(ended)) == len(ended)  # exactly one each
