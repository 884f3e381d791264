"""Local workers share the CPU threads (tlbench/base/threads.py): the arithmetic and the
user's own settings winning."""

from __future__ import annotations

from tlbench.base import threads


def test_each_local_worker_gets_its_share_of_the_cores_and_at_least_one():
    assert threads.share(1, available=2) == 2
    assert threads.share(2, available=2) == 1
    assert threads.share(4, available=2) == 1  # never zero
    assert threads.share(3, available=16) == 5
    assert threads.share(2) >= 1 and threads.cores() >= 1


def test_the_users_thread_settings_win():
    env = threads.worker_environment(2, environ={"PATH": "/bin"}, available=8)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env[threads.INTEROP] == "4" and env["PATH"] == "/bin"
    mine = threads.worker_environment(2, environ={"OMP_NUM_THREADS": "3"}, available=8)
    # one intra-op setting: PyTorch took a MKL_NUM_THREADS of the share over the user's OMP_NUM_THREADS
    assert mine["OMP_NUM_THREADS"] == mine["MKL_NUM_THREADS"] == "3" and mine[threads.INTEROP] == "4"


def test_workers_are_spread_over_the_gpus_round_robin():
    gpus = threads.shared_gpus("auto", environ={}, count=2)
    assert gpus == ["0", "1"]
    seen = [threads.worker_environment(4, environ={}, available=16, index=i, gpus=gpus)[threads.CUDA] for i in range(4)]
    assert seen == ["0", "1", "0", "1"]  # more workers than GPUs: two trials per GPU
    env = threads.worker_environment(4, environ={}, available=16, index=0, gpus=gpus)
    assert env["OMP_NUM_THREADS"] == "4"  # and each its share of the CPU threads


def test_the_users_gpus_and_devices_are_kept():
    mine = threads.shared_gpus("auto", environ={threads.CUDA: "2,3, 5"}, count=8)
    assert mine == ["2", "3", "5"]  # only the GPUs the user made visible
    assert threads.worker_environment(2, environ={}, index=1, gpus=mine)[threads.CUDA] == "3"
    assert threads.shared_gpus("cuda:1", environ={}, count=8) == []  # a config naming its device keeps it
    assert threads.shared_gpus(["cuda:0", "cuda:1"], environ={}, count=8) == []
    assert threads.shared_gpus("auto", environ={}, count=1) == ["0"]
    one = threads.worker_environment(2, environ={}, index=1, gpus=["0"])
    assert threads.CUDA not in one  # one GPU: every worker uses it, as the config says
    assert threads.shared_gpus("auto", environ={}, count=0) == []
