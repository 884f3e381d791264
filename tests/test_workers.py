"""Distributed workers on a real PostgreSQL server (and local workers on the run folder's SQLite).

Like Optuna's own storage tests: several processes run trials of one study at once, and the
study ends with exactly the trials it was given, each once. `.ci/run` starts a server on
loopback and sets TLBENCH_TEST_POSTGRES; elsewhere these tests skip unless it is set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pandas as pd
import pytest
from conftest import SIGNAL_PLUGIN, tiny_benchmark

from tlbench import cli
from tlbench.store.record import TrialRecord

RECIPES = [
    {"backbone": "timm:test_resnet-scratch", "strategy": "linear_probe", "params": {"lr_head": 0.01}},
    {"backbone": "timm:test_resnet-scratch", "strategy": "finetune", "params": {"lr_head": 0.01, "lr_backbone": 0.001}},
]


def synthetic(**overrides) -> list[dict]:
    """The tiny benchmark's synthetic dataset, with ``overrides`` (more training images)."""
    return [tiny_benchmark()["datasets"][0] | overrides]


def bench(**overrides) -> dict:
    data = {
        "name": "dist",
        "run": "shared",
        "datasets": synthetic(),
        "strategies": [{"name": "linear_probe", "epochs": 1}, {"name": "finetune", "epochs": 1, "freeze": 0.0}],
    }
    return tiny_benchmark(**(data | overrides))


@pytest.fixture
def postgres_url():
    """A fresh database on the test server, dropped afterwards."""
    base = os.environ.get("TLBENCH_TEST_POSTGRES")
    required = bool(os.environ.get("TLBENCH_REQUIRE_POSTGRES"))
    if not base:
        reason = "no PostgreSQL server: set TLBENCH_TEST_POSTGRES=postgresql://user@host:port/db (.ci/run starts one)"
        pytest.fail(reason) if required else pytest.skip(reason)
    psycopg = pytest.importorskip("psycopg", reason="pip install 'tlbench[postgres]'")
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {base} is not reachable: {str(exc).strip()}"
        pytest.fail(reason) if required else pytest.skip(reason)
    name = f"tlbench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{base.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _worker(config, url: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "tlbench", "worker", str(config), "--storage", url, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


# A config plugin that tells the test (tests/conftest.py: Signal) when a trial has started:
# its parameters are stored by then. From any process of the run, workers included.
TRIAL_STARTED = (
    SIGNAL_PLUGIN
    + """
import tlbench


@tlbench.hookimpl
def tlbench_trial_started(trial):
    reached()
"""
)


def _signalling(config):
    """``config`` (a written benchmark) with the TRIAL_STARTED plugin next to it."""
    import yaml

    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump(data | {"plugins": ["started.py"]}))
    (config.parent / "started.py").write_text(TRIAL_STARTED)
    return config


def _study(url: str, name: str = "dist/shared/synthetic") -> optuna.Study:
    from tlbench.store import storage

    return optuna.load_study(study_name=name, storage=storage.connect(url))


def test_three_workers_on_postgresql_run_exactly_the_budget_each_trial_once(write_config, postgres_url, capsys):
    n_workers, per_worker = 3, 4
    config = write_config(bench(search={"n_trials": n_workers * per_worker, "startup_trials": 2, "enqueue": RECIPES}))
    workers = [_worker(config, postgres_url, "--name", f"w{i}") for i in range(n_workers)]  # all at once: they race
    outputs = [w.communicate(timeout=400) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err

    trials = _study(postgres_url).trials
    # a worker that lost the race for the last trial records it as surplus (never ran): by design, left out
    ran = [t for t in trials if TrialRecord.from_trial(t).failure != "surplus"]
    assert len([t for t in ran if t.state.name == "COMPLETE"]) == n_workers * per_worker
    assert len(ran) == n_workers * per_worker  # nothing failed, nothing waiting or running
    assert len({t.number for t in trials}) == len(trials)
    recipes = [t for t in ran if TrialRecord.from_trial(t).recipe]
    assert len(recipes) == len(RECIPES)  # enqueued once, by the worker that created the study
    assert len({json.dumps(t.params, sort_keys=True) for t in recipes}) == len(RECIPES)
    assert all(
        TrialRecord.from_trial(t).host and re.fullmatch(r".+:\d+", TrialRecord.from_trial(t).worker) for t in ran
    )
    said = sum(int(re.search(r"done, (\d+) trials run here", err).group(1)) for _, err in outputs)
    assert said == len(trials)  # every worker accounted for what it ran (a surplus one included)

    # the coordinator finds nothing left to run and writes the tables and report from the storage
    code = cli.main(["run", str(config), "--storage", postgres_url, "--format", "csv"])
    out = capsys.readouterr()
    assert code == 0, out.err
    folder = config.parent / "results" / "dist" / "shared"
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == n_workers * per_worker and table["state"].eq("COMPLETE").all()
    assert table["worker"].notna().all() and table["host"].notna().all()
    assert set(table["worker"]) <= {TrialRecord.from_trial(t).worker for t in ran}
    assert len(pd.read_csv(folder / "summary.csv")) == 2  # test_resnet x (linear_probe, finetune)
    assert (folder / "report.md").exists()
    assert json.loads((folder / "run.json").read_text())["storage"] == postgres_url
    assert cli.main(["report", str(folder), "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_a_killed_worker_is_noticed_by_heartbeat_and_its_trial_retried_once(write_config, postgres_url, reached):
    slow = bench(
        strategies=[{"name": "finetune", "epochs": 6, "freeze": 0.0}],
        datasets=synthetic(train_per_class=24),
        search={"n_trials": 3, "startup_trials": 3, "pruner": "none", "heartbeat": 1},
    )
    config = _signalling(write_config(slow))
    first = _worker(config, postgres_url, env=reached.env)
    reached.wait(first)
    (victim,) = [t for t in _study(postgres_url).trials if t.state.name == "RUNNING"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    # lost means silent for two heartbeats (1 s each here): a span of the clock by definition
    time.sleep(2.5)

    second = _worker(config, postgres_url)
    _, err = second.communicate(timeout=400)
    assert second.returncode == 0, err
    assert (
        f"trial {victim.number} interrupted: no heartbeat from {TrialRecord.from_trial(victim).worker} (killed or lost)"
        in err
    )
    trials = {t.number: t for t in _study(postgres_url).trials}
    assert trials[victim.number].state.name == "FAIL"
    retries = [t for t in trials.values() if TrialRecord.from_trial(t).retry_of == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params and retries[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 3  # the budget, the lost trial replaced

    from tlbench.results import runfolder
    from tlbench.store import storage

    frame = runfolder.trials_frame(storage.connect(postgres_url), {"synthetic": "dist/shared/synthetic"})
    reason = frame.set_index("trial").loc[victim.number, "fail_reason"]
    assert reason.startswith("interrupted: no heartbeat from")


# A config plugin that writes, from each worker process, the threads PyTorch gave it.
THREADS_PROBE = """
import json, os
from pathlib import Path

import torch
import tlbench


@tlbench.hookimpl
def tlbench_run_started(run):
    out = Path(__file__).with_name(f"threads-{os.getpid()}.json")
    out.write_text(json.dumps([torch.get_num_threads(), torch.get_num_interop_threads()]))
"""


def test_run_with_local_workers_shares_the_run_folder_sqlite_and_runs_repeats(write_config, capfd):
    from tlbench.base import threads

    config = write_config(
        bench(search={"n_trials": 4, "startup_trials": 2, "enqueue": RECIPES[:1]}, repeats=1, plugins=["probe.py"])
    )
    (config.parent / "probe.py").write_text(THREADS_PROBE)
    code = cli.main(["run", str(config), "--workers", "2", "--format", "csv"])
    out = capfd.readouterr()
    assert code == 0, out.err
    folder = config.parent / "results" / "dist" / "shared"
    trials = pd.read_csv(folder / "trials.csv")
    search_trials = trials[trials["repeat_of"].isna()]
    assert len(search_trials) == 4 and search_trials["state"].eq("COMPLETE").all()
    summary = pd.read_csv(folder / "summary.csv")
    assert summary["repeats"].eq(1).all()  # each selected configuration retrained once, by a worker
    assert len(trials) == 4 + len(summary)
    assert (folder / "report.md").exists()
    assert "worker 1: done" in out.err and "worker 2: done" in out.err
    # each worker ran with its share of the cores (the user's OMP_NUM_THREADS, if set, wins), not all of them
    seen = [json.loads(p.read_text()) for p in config.parent.glob("threads-*.json")]
    share = threads.share(2)
    intra = int(os.environ.get("OMP_NUM_THREADS", share))
    assert len(seen) >= 2 and all(t == [intra, share] for t in seen), seen

    # a second run finds everything done: no worker runs a trial
    code = cli.main(["run", str(config), "--workers", "2", "--format", "csv"])
    out = capfd.readouterr()
    assert code == 0 and "done, 0 trials run here" in out.err and "trials run here" in out.err
    assert len(pd.read_csv(folder / "trials.csv")) == len(trials)


def test_a_worker_without_a_shared_storage_is_one_line_and_exit_2(write_config, capsys):
    config = write_config(bench())
    assert cli.main(["worker", str(config)]) == 2
    err = capsys.readouterr().err
    assert "worker: no shared storage; pass --storage URL" in err and len(err.strip().splitlines()) == 1


def test_a_trial_started_after_its_study_is_full_is_surplus_never_runs_and_is_left_out(write_config, tmp_path):
    from tlbench import benchmark
    from tlbench.engine import basics
    from tlbench.host.progress import Progress
    from tlbench.results import runfolder
    from tlbench.search import preflight, studies
    from tlbench.search.trial import Objective, TrialResources
    from tlbench.store import storage

    config = write_config(bench(search={"n_trials": 2, "startup_trials": 1}))
    plan = cli._load(config)
    splits = preflight.preflight(plan)
    store = storage.connect(f"sqlite:///{tmp_path / 'race.db'}")
    resources = TrialResources(plan, splits)
    benchmark.run_studies(plan, splits, store, Progress(), resources=resources)
    study = studies.open_study(plan, "synthetic", store, alone=False)

    late = study.ask()  # what a worker that lost the race for the last trial holds
    objective = Objective(plan, splits["synthetic"], "synthetic", Progress(), resources)
    with pytest.raises(basics.TrialFailed, match="surplus: not run, the study already had its 2 trials"):
        objective(late)
    study.tell(late, state=optuna.trial.TrialState.FAIL)
    trial = study.trials[late.number]
    assert trial.params == {} and TrialRecord.from_trial(trial).host is None  # it drew nothing and ran nothing
    frame = runfolder.trials_frame(store, {"synthetic": study.study_name})
    assert frame["trial"].tolist() == [0, 1] and frame["state"].eq("COMPLETE").all()
    assert len(studies.budget(study.trials)) == 2


def test_killing_run_with_workers_lets_them_finish_their_trial_keeps_the_folder_locked_then_resumes(
    write_config, capsys, reached
):
    config = write_config(
        bench(
            strategies=[{"name": "finetune", "epochs": 3, "freeze": 0.0}],
            datasets=synthetic(train_per_class=24),
            search={"n_trials": 4, "startup_trials": 4, "pruner": "none"},
        )
    )
    config = _signalling(config)
    folder = config.parent / "results" / "dist" / "shared"
    parent = subprocess.Popen(
        [sys.executable, "-m", "tlbench", "run", str(config), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=reached.env,
    )  # fmt: skip
    reached.wait(parent)  # a worker has started a trial
    parent.kill()  # SIGKILL: no chance to pass anything on
    parent.wait()
    code = cli.main(["run", str(config), "--format", "csv"])
    assert code == 2 and "another tlbench run is using this run folder" in capsys.readouterr().err  # its workers
    _wait_unlocked(folder)
    trials = optuna.load_study(study_name="dist/shared/synthetic", storage=f"sqlite:///{folder / 'study.db'}").trials
    assert not [t for t in trials if t.state.name == "RUNNING"]  # each worker finished its trial, then stopped
    assert len(trials) < 4  # and started no other
    assert cli.main(["run", str(config), "--format", "csv"]) == 0
    table = pd.read_csv(folder / "trials.csv")
    assert table["state"].tolist() == ["COMPLETE"] * 4


def _wait_unlocked(folder, timeout: float = 240) -> None:
    """Block until no process holds the run folder's lock (a shared flock, taken in a thread
    so that the wait is bounded), then let it go."""
    import fcntl
    import threading

    with open(folder / ".lock", "a+") as f:
        free = threading.Event()
        threading.Thread(target=lambda: (fcntl.flock(f, fcntl.LOCK_SH), free.set()), daemon=True).start()
        assert free.wait(timeout), "the workers kept the run folder locked"
        fcntl.flock(f, fcntl.LOCK_UN)
