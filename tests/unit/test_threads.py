"""Local workers share the CPU threads (tlbench/threads.py): the arithmetic and the
user's own settings winning."""

from __future__ import annotations

from tlbench import threads


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
    assert mine["OMP_NUM_THREADS"] == "3" and mine["MKL_NUM_THREADS"] == "4"
