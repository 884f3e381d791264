"""Ctrl-C and SIGTERM that are never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT
arrives, and an exception raised inside a garbage-collection callback or a
``__del__`` is printed and dropped ("Exception ignored in ..."): that Ctrl-C would
be lost and the run would go on. While :func:`handled` is active, SIGINT also sets
a flag, and :func:`check` turns it into a KeyboardInterrupt at the next safe
point (every training batch, every epoch, after every trial), in every thread.

``run`` and ``worker`` go further (``handled(defer=True)``): a signal only sets the flag,
and the run stops at its next safe point, so that it is never cut inside a storage
write, a trial record half written, Optuna's bookkeeping or a callback. The safe points:
every training, extraction and evaluation batch, every epoch, the start of a trial's
objective, the end of each trial (the study is told to stop; the run stops after
``optimize`` returns), and the coordinator's and the storage's waits. Stretches that
write nothing to the study (a plugin loading a dataset or building a backbone) are
:func:`interruptible`: there the signal stops at once. A second signal while a stop
is pending stops at once wherever the run is (as Python does by default: press Ctrl-C
twice to insist; a SQLite journal left behind is rolled back by the next run).

SIGTERM is what ``docker stop``, Slurm and Kubernetes send before they kill: by
default it ends the process on the spot, like ``kill -9``, and the running trial
is only found as killed at the next start. Here it is handled exactly like Ctrl-C
(the trial is recorded as interrupted, tables and report are written); the
command then exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested = threading.Event()
_signal = [signal.SIGINT]  # the last signal received (one writer: the main thread's handler)
HANDLED = (signal.SIGINT, signal.SIGTERM)


_mode = {"defer": False, "open": 0}  # deferring (run, worker); interruptible stretches the main thread is in


def _on_signal(signum, frame) -> None:
    again = _requested.is_set()
    _signal[0] = signal.Signals(signum)
    _requested.set()
    if not _mode["defer"] or _mode["open"] or again:
        raise KeyboardInterrupt


@contextlib.contextmanager
def handled(defer: bool = False):
    """Install the handlers for the duration (main thread only; elsewhere a no-op).
    ``defer``: a signal stops the command at its next safe point, not where it lands."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    _signal[0] = signal.SIGINT
    _mode.update(defer=defer, open=0)
    previous = {signum: signal.signal(signum, _on_signal) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested.clear()
        _mode.update(defer=False, open=0)


@contextlib.contextmanager
def interruptible():
    """A stretch that writes nothing to a study (a plugin loading data or building a model):
    a signal stops it at once instead of at the next safe point. Elsewhere than the main
    thread, only the check on entry."""
    check()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _mode["open"] += 1
    try:
        yield
    finally:
        _mode["open"] -= 1


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C or SIGTERM came (its own KeyboardInterrupt may have been dropped)."""
    if _requested.is_set():
        raise KeyboardInterrupt


def requested() -> bool:
    return _requested.is_set()


def received() -> signal.Signals:
    """The signal behind the current interruption (SIGINT for a plain KeyboardInterrupt)."""
    return _signal[0]


def what() -> str:
    """How a trial stopped by it is described: 'Ctrl-C' or 'SIGTERM'."""
    return "Ctrl-C" if received() == signal.SIGINT else received().name


def exit_code() -> int:
    return 128 + int(received())
