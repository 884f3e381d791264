"""How many CPU threads each local worker process may use: the one place that decides it.

PyTorch (through OpenMP/MKL) gives every process as many intra-op threads as the machine
has cores. ``tlbench run --workers N`` on a machine of C cores then runs N x C busy threads
on C cores, and OpenMP threads that spin while they wait turn that into a collapse, not a
fair share: two workers on two cores ran 8x slower than the same two workers with one
thread each (issue 23). So the coordinator gives each of its N workers ``C // N`` threads
(at least one) through the standard variables, which PyTorch and the BLAS libraries read
when they start, before any tensor exists:

- ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``: intra-op threads (``torch.get_num_threads``);
- ``TLBENCH_INTEROP_THREADS``: inter-op threads, applied by the worker at start-up
  (:func:`apply_interop`), since PyTorch has no variable of its own for them.

A variable the user already set wins: it is passed on unchanged. ``tlbench worker`` started
by hand, on this machine or another, is not a local worker of a coordinator and keeps
PyTorch's defaults for its own machine. DataLoader processes (``training.num_workers``) are
the user's setting and are left as they are.

GPUs: with ``training.device: auto`` and several GPUs visible, worker i sees only GPU
i mod G (``CUDA_VISIBLE_DEVICES``, from the GPUs the coordinator may use: the user's
``CUDA_VISIBLE_DEVICES`` when set, else all of them), so each GPU runs its own workers'
trials and ``--workers`` > G puts several trials on one GPU (when one trial leaves it
idle). A config that names its devices (``cuda:1``, a list) keeps them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

INTRA = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by OpenMP / MKL when the library loads
INTEROP = "TLBENCH_INTEROP_THREADS"  # read by apply_interop in the worker


def cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def share(workers: int, available: int | None = None) -> int:
    """Threads for each of ``workers`` local worker processes on ``available`` cores."""
    return max(1, (available if available is not None else cores()) // max(1, workers))


def worker_environment(
    workers: int,
    environ: Mapping[str, str] | None = None,
    available: int | None = None,
    index: int = 0,
    gpus: list[str] | None = None,
) -> dict[str, str]:
    """The environment of local worker ``index`` of ``workers``: ``environ`` (default: this
    process's) with each thread variable the user did not set given the worker's share,
    and, given the ``gpus`` the workers share (:func:`shared_gpus`), the one it uses."""
    env = dict(os.environ if environ is None else environ)
    threads = str(share(workers, available))
    # one intra-op setting: a user's OMP_NUM_THREADS (or MKL_NUM_THREADS) is given to the other
    # too (PyTorch took MKL_NUM_THREADS=1 over a user's OMP_NUM_THREADS=2)
    user = next((env[name] for name in INTRA if name in env), None)
    for name in INTRA:
        env.setdefault(name, user or threads)
    env.setdefault(INTEROP, threads)
    if gpus and len(gpus) > 1:
        env[CUDA] = gpus[index % len(gpus)]
    return env


CUDA = "CUDA_VISIBLE_DEVICES"


def shared_gpus(device, environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs ``--workers`` spreads its workers over: with ``training.device: auto``, the
    ones this process may use (the user's CUDA_VISIBLE_DEVICES, else 0..count-1, where
    ``count`` defaults to torch.cuda.device_count()); none for any other device setting."""
    if device != "auto":
        return []
    env = os.environ if environ is None else environ
    if env.get(CUDA) is not None:
        return [d.strip() for d in env[CUDA].split(",") if d.strip() and not d.strip().startswith("-")]
    if count is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [str(i) for i in range(count)]


def apply_interop() -> None:
    """Set PyTorch's inter-op threads from TLBENCH_INTEROP_THREADS, before any parallel work
    (PyTorch refuses a change once it has started inter-op work)."""
    value = os.environ.get(INTEROP)
    if not value:
        return
    import torch

    try:
        torch.set_num_interop_threads(max(1, int(value)))
    except (RuntimeError, ValueError):  # already started, or not a number: keep PyTorch's choice
        pass
