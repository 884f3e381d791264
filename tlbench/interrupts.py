"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT
arrives, and an exception raised inside a garbage-collection callback or a
``__del__`` is printed and dropped ("Exception ignored in ..."): that Ctrl-C would
be lost and the run would go on. While :func:`handled` is active, SIGINT also sets
a flag, and :func:`check` turns it into a KeyboardInterrupt at the next safe
point (every training batch, every epoch, after every trial), in every thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested = threading.Event()


def _on_sigint(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handled():
    """Install the handler for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (its own KeyboardInterrupt may have been dropped)."""
    if _requested.is_set():
        raise KeyboardInterrupt


def requested() -> bool:
    return _requested.is_set()
